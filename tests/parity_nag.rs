//! `method = "nag"` against a reference on diffusers' UNet with an attention processor for
//! Normalized Attention Guidance on every cross-attention (tests/reference/nag_parity.py;
//! CPU, fp32, tiny random models, 32x32, DDIM): both adapters, τ low enough to cap, a
//! negative window that switches NAG off half-way, and the defaults; a guard (far from
//! `uncond`'s image of the same cell and from the same cell at `nag_scale = 1`, no
//! guidance); a batch mixing it with `cond_negative` (the other user of a second image
//! term) and the other methods equals one-by-one generation.
mod common;

use common::parity::{self, Setup, Shared, branch, params_json, set_param};
use negimg::params::{AdapterKind, GenParams, Method, NegativeMode};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::OnceLock;

const KEYS: [&str; 3] = ["nag_scale", "nag_tau", "nag_alpha"];

fn cell(dir: &Path, method: Method, adapter: AdapterKind) -> GenParams {
    let mut c = parity::cell(dir, 31);
    c.method = method;
    c.adapter = adapter;
    c.positive = branch(0.8, 0.0, 1.0);
    c.negative_branch = branch(1.2, 0.0, 1.0);
    for (key, x) in [("nag_scale", 4.0), ("nag_tau", 1.2), ("nag_alpha", 0.6)] {
        set_param(&mut c, key, x);
    }
    c
}

fn extra(c: &GenParams) -> Value {
    json!({ "nag": params_json(c, "nag_", &KEYS) })
}

fn cases(dir: &Path) -> Vec<(String, GenParams)> {
    let mut out: Vec<(String, GenParams)> = [AdapterKind::Base, AdapterKind::Plus]
        .into_iter()
        .map(|a| (format!("nag_{a}"), cell(dir, Method::Nag, a)))
        .collect();
    let mut window = cell(dir, Method::Nag, AdapterKind::Base);
    window.negative_branch = branch(1.2, 0.0, 0.5);
    out.push(("nag_window".into(), window));
    let mut defaults = cell(dir, Method::Nag, AdapterKind::Base);
    defaults.method_params = Default::default();
    out.push(("nag_defaults".into(), defaults));
    out
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut setup = Setup::tiny("parity_nag", "nag_parity.py");
        setup.extra = &extra;
        Shared::compute(setup, cases)
    })
}

#[test]
fn parity_nag_matches_the_attention_processor_reference() {
    let s = &shared().parity;
    let names: Vec<&str> = s.select(|_| true).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names.len(), 4);
    for name in names {
        s.assert_parity(name);
    }
}

#[test]
fn guard_nag_is_neither_uncond_nor_unguided() {
    let s = shared();
    for name in ["nag_base", "nag_plus", "nag_defaults"] {
        let ours = s.parity.ours(name);
        let uncond = s.with_method(name, Method::Uncond, |_| {});
        parity::assert_far(name, &ours, &uncond, "the uncond image");
        // Scale 1 is NAG's identity: the cell without guidance in attention.
        let one = s.with_method(name, Method::Nag, |c| set_param(c, "nag_scale", 1.0));
        parity::assert_far(name, &ours, &one, "the image at nag_scale = 1");
    }
}

/// NAG cells (with and without a negative image, with windows and their own parameters)
/// batched with cond_negative and other methods give the images they give alone.
#[test]
fn nag_batched_with_other_methods_equals_alone() {
    let s = shared();
    let dir = common::scratch("nag_batching");
    parity::write_pos_neg(&dir, (70, 90));
    let methods = [
        Method::Nag,
        Method::CondNegative,
        Method::Uncond,
        Method::Nag,
        Method::ThreeBranch,
        Method::Nag,
    ];
    let mut cells = Vec::new();
    for (i, method) in methods.into_iter().enumerate() {
        let mut c = cell(&dir, method, AdapterKind::Base);
        c.seed += i as u64;
        c.steps = 3;
        c.negative_branch = branch(0.4 + 0.2 * i as f64, 0.3 * (i % 2) as f64, 1.0);
        if method != Method::Nag {
            c.method_params = Default::default();
        }
        cells.push(c);
    }
    set_param(&mut cells[3], "nag_alpha", 0.3);
    cells[5].negative = NegativeMode::Text;
    let label = |i: usize| format!("cell {i} ({})", methods[i]);
    common::assert_batched_equal_alone(&mut s.pipeline(), &cells, (3, "one batch"), &label);
}
