//! The export of each negative method, in one place keyed by method: the Python `guide(eps)`
//! that combines the UNet's predictions for the method's rows (the rows themselves are data,
//! from the method registry's rows). The match is exhaustive: a
//! new method does not build until it has an arm here, its export or a refusal naming it
//! (`bail!("export: method X …")`). A PNG whose method this build lacks is refused by name
//! when it is read (`run::replay`).
use crate::params::Method;
use anyhow::{Result, bail};

/// The Python source of `guide(eps)` for `method`.
pub fn guidance(method: Method) -> Result<&'static str> {
    Ok(match method {
        // Two CFG rows; the methods differ only in what the rows hold.
        Method::Uncond | Method::Subtract | Method::Negtome => include_str!("py/cfg.py"),
        Method::ThreeBranch => include_str!("py/three_branch.py"),
        Method::PerpNeg => include_str!("py/perp_neg.py"),
        // Its second image-attention term in the cond row needs a second adapter in the
        // script; not written yet.
        Method::Sega | Method::Dng => bail!(
            "export: method {method} has no diffusers export yet (its guidance keeps a state \
             across steps); export another method's cell"
        ),
        Method::CondNegative => bail!(
            "export: method cond_negative has no diffusers export yet (its cond row's second \
             IP-Adapter term at -neg_weight); export another method's cell"
        ),
        Method::Nag => bail!(
            "export: method nag has no diffusers export yet (it guides the cond row's \
             cross-attention output); export another method's cell"
        ),
    })
}

/// The Python source of `prepare_merge`: NegToMe's token merge when the cell merges.
pub fn token_merge(merges: bool) -> &'static str {
    if merges {
        include_str!("py/negtome.py")
    } else {
        include_str!("py/no_merge.py")
    }
}
