//! `method = "dng"` against a reference on diffusers' UNet, VAE and
//! EulerAncestralDiscreteScheduler (tests/reference/dng_parity.py, the posterior update of
//! FelixKoulischer/Dynamic-Negative-Guidance on the ancestral step; CPU, fp32, tiny random
//! models, 32x32), both adapters; the posterior each step guided with equals the
//! reference's; a guard (far from `uncond`'s and from `three_branch`'s image with the static
//! scale); a mixed-method batch equals its cells one by one.
mod common;

use common::parity::{self, Setup, Shared, branch, params_json, set_param};
use negimg::params::{AdapterKind, GenParams, Method, SchedulerKind};
use negimg::sampling::methods::value;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::OnceLock;
use tch::Kind;

const KEYS: [&str; 6] = [
    "dng_guidance_scale",
    "dng_prior",
    "dng_temp",
    "dng_offset",
    "dng_p_min",
    "dng_p_max",
];

/// The cell: 6 euler_ancestral steps; a temperature at which the posterior moves between
/// its clamps on the tiny models (their distances are large: at 0.01 it jumps from clamp to
/// clamp).
fn cell(dir: &Path, method: Method, adapter: AdapterKind) -> GenParams {
    let mut c = parity::cell(dir, 29);
    c.method = method;
    c.adapter = adapter;
    c.scheduler = SchedulerKind::EulerAncestral;
    c.steps = 6;
    c.positive = branch(0.8, 0.0, 1.0);
    c.negative_branch = branch(1.2, 0.0, 1.0);
    for (key, x) in [
        ("dng_guidance_scale", 5.0),
        ("dng_prior", 0.3),
        ("dng_temp", 1e-4),
    ] {
        set_param(&mut c, key, x);
    }
    c
}

fn extra(c: &GenParams) -> Value {
    json!({ "dng": params_json(c, "dng_", &KEYS) })
}

fn cases(dir: &Path) -> Vec<(String, GenParams)> {
    let mut out: Vec<(String, GenParams)> = [AdapterKind::Base, AdapterKind::Plus]
        .into_iter()
        .map(|a| (format!("dng_{a}"), cell(dir, Method::Dng, a)))
        .collect();
    let mut defaults = cell(dir, Method::Dng, AdapterKind::Base);
    defaults.method_params = Default::default();
    out.push(("dng_defaults".into(), defaults));
    out
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut setup = Setup::tiny("parity_dng", "dng_parity.py");
        setup.extra = &extra;
        Shared::compute(setup, cases)
    })
}

#[test]
fn parity_dng_matches_the_reference() {
    let s = &shared().parity;
    for (name, _, _) in s.select(|c| c.method == Method::Dng) {
        s.assert_parity(name);
        let p = s.reference_tensor(&format!("{name}.posterior"), Kind::Double);
        eprintln!(
            "{name}: reference posterior per step {:?}",
            Vec::<f64>::try_from(&p).unwrap()
        );
    }
}

/// Our image of the cell `name` made with `method` instead (`three_branch` with the
/// static scale λ·prior/(1 − prior) of DNG's first step).
fn with_method(name: &str, method: Method) -> tch::Tensor {
    let s = shared();
    let cell = s.parity.cell(name);
    let prior = value(cell, "dng_prior");
    let neg_cfg = value(cell, "dng_guidance_scale") * prior / (1.0 - prior);
    s.with_method(name, method, |c| c.neg_cfg = Some(neg_cfg))
}

#[test]
fn guard_dng_is_neither_uncond_nor_static_three_branch() {
    let s = &shared().parity;
    for name in ["dng_base", "dng_plus"] {
        for other in [Method::Uncond, Method::ThreeBranch] {
            let img = with_method(name, other);
            parity::assert_far(name, &s.ours(name), &img, &format!("the {other} image"));
        }
    }
}

#[test]
fn dng_in_a_mixed_method_batch_equals_alone() {
    let s = shared();
    let dir = common::scratch("dng_batching");
    parity::write_pos_neg(&dir, (70, 90));
    let methods = [
        Method::Dng,
        Method::Uncond,
        Method::ThreeBranch,
        Method::Dng,
    ];
    let mut cells = Vec::new();
    for (i, method) in methods.into_iter().enumerate() {
        let mut c = cell(&dir, method, AdapterKind::Base);
        c.seed += i as u64;
        if method != Method::Dng {
            c.method_params = Default::default();
        }
        cells.push(c);
    }
    set_param(&mut cells[3], "dng_temp", 2e-4);
    common::assert_batched_equal_alone(&mut s.pipeline(), &cells, (6, "one batch"), &|i| {
        format!("cell {i} ({})", methods[i])
    });
}
