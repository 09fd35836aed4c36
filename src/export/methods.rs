//! The export of each negative method, in one place keyed by method: the Python `guide(eps,
//! i)` that combines the UNet's predictions for the method's rows at step `i`, and
//! `after_step(sched, i, x, x_next)`, what the method learns from the step just taken (the
//! rows themselves, a second image-attention term included, are data, from the method
//! registry's rows), and how a cross-attention joins a row's image-attention terms
//! ([`image_terms`]: summed, or NAG's guidance of the cond row). The match is exhaustive: a new method does not build until it has an arm
//! here, its export or a refusal naming it (`bail!("export: method X …")`). A PNG whose
//! method this build lacks is refused by name when it is read (`run::replay`).
use crate::params::Method;
use anyhow::Result;

/// `after_step` of the methods that keep nothing from step to step.
const STATELESS: &str = include_str!("py/stateless.py");

/// The Python source of `guide(eps, i)` and `after_step(sched, i, x, x_next)` for `method`.
pub fn guidance(method: Method) -> Result<[&'static str; 2]> {
    Ok(match method {
        // Two CFG rows; the methods differ only in what the rows hold (cond_negative and nag:
        // a second image-attention term, data in ROWS; nag guides with it in the
        // cross-attention, [`image_terms`]).
        Method::Uncond
        | Method::Subtract
        | Method::Negtome
        | Method::CondNegative
        | Method::Nag => [include_str!("py/cfg.py"), STATELESS],
        Method::ThreeBranch => [include_str!("py/three_branch.py"), STATELESS],
        Method::PerpNeg => [include_str!("py/perp_neg.py"), STATELESS],
        Method::Sega => [include_str!("py/sega.py"), STATELESS],
        // Its posterior update is its after_step.
        Method::Dng => [include_str!("py/dng.py"), ""],
    })
}

/// The Python source of `join_terms`: NAG's guidance of the rows whose second
/// image-attention term is NAG's negative (`nag` in ROWS), or none (the terms are summed).
pub fn image_terms(nag: bool) -> &'static str {
    if nag {
        include_str!("py/nag.py")
    } else {
        include_str!("py/sum_terms.py")
    }
}

/// The Python source of `prepare_merge`: NegToMe's token merge when the cell merges.
pub fn token_merge(merges: bool) -> &'static str {
    if merges {
        include_str!("py/negtome.py")
    } else {
        include_str!("py/no_merge.py")
    }
}
