//! `method = "sega"` against diffusers' own SemanticStableDiffusionPipeline
//! (tests/reference/sega_parity.py; CPU, fp32, tiny random models, 32x32): both adapters,
//! DDIM and euler_ancestral, warm-up, cool-down and momentum in play, and the defaults; a
//! guard (far from `uncond`'s and `three_branch`'s image of the same cell); a mixed-method
//! batch equals its cells one by one.
mod common;

use common::parity::{self, Setup, Shared, branch, params_json, set_param};
use negimg::params::{AdapterKind, GenParams, Method, SchedulerKind};
use negimg::sampling::methods::{param, value};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::OnceLock;

const KEYS: [&str; 6] = [
    "sega_guidance_scale",
    "sega_threshold",
    "sega_warmup_steps",
    "sega_cooldown_steps",
    "sega_momentum_scale",
    "sega_mom_beta",
];

/// 5 steps; warm-up 1 and cool-down 3, so that the momentum builds up before the concept
/// applies and outlives its masked term.
fn cell(dir: &Path, method: Method, adapter: AdapterKind, scheduler: SchedulerKind) -> GenParams {
    let mut c = parity::cell(dir, 23);
    c.method = method;
    c.adapter = adapter;
    c.scheduler = scheduler;
    c.steps = 5;
    c.positive = branch(0.8, 0.0, 1.0);
    c.negative_branch = branch(1.2, 0.0, 1.0);
    for (key, x) in [
        ("sega_guidance_scale", 4.0),
        ("sega_threshold", 0.8),
        ("sega_warmup_steps", 1.0),
        ("sega_cooldown_steps", 3.0),
        ("sega_momentum_scale", 0.3),
        ("sega_mom_beta", 0.5),
    ] {
        set_param(&mut c, key, x);
    }
    c
}

/// The cell's SEGA parameters as the reference reads them (`sega_X` as `X`; the default
/// cool-down as diffusers' `None`).
fn extra(c: &GenParams) -> Value {
    let mut s = params_json(c, "sega_", &KEYS);
    if value(c, "sega_cooldown_steps") == param("sega_cooldown_steps").unwrap().default {
        s.insert("cooldown_steps".into(), Value::Null);
    }
    json!({ "sega": s })
}

fn cases(dir: &Path) -> Vec<(String, GenParams)> {
    let mut out = Vec::new();
    for adapter in [AdapterKind::Base, AdapterKind::Plus] {
        for scheduler in [SchedulerKind::Ddim, SchedulerKind::EulerAncestral] {
            let c = cell(dir, Method::Sega, adapter, scheduler);
            out.push((format!("sega_{adapter}_{scheduler}"), c));
        }
    }
    let mut defaults = cell(dir, Method::Sega, AdapterKind::Base, SchedulerKind::Ddim);
    defaults.method_params = Default::default();
    defaults.steps = 12; // past the default warm-up of 10 steps
    out.push(("sega_defaults".into(), defaults));
    out
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut setup = Setup::tiny("parity_sega", "sega_parity.py");
        setup.extra = &extra;
        Shared::compute(setup, cases)
    })
}

#[test]
fn parity_sega_matches_diffusers_semantic_pipeline() {
    let s = &shared().parity;
    for (name, _, _) in s.select(|c| c.method == Method::Sega) {
        s.assert_parity(name);
    }
}

#[test]
fn guard_sega_is_neither_uncond_nor_three_branch() {
    let s = shared();
    for name in [
        "sega_base_ddim",
        "sega_plus_euler_ancestral",
        "sega_defaults",
    ] {
        for other in [Method::Uncond, Method::ThreeBranch] {
            let img = s.with_method(name, other, |_| {});
            let ours = s.parity.ours(name);
            parity::assert_far(name, &ours, &img, &format!("the {other} image"));
        }
    }
}

#[test]
fn sega_in_a_mixed_method_batch_equals_alone() {
    let s = shared();
    let dir = common::scratch("sega_batching");
    parity::write_pos_neg(&dir, (70, 90));
    let mut cells = Vec::new();
    for (i, method) in [
        Method::Sega,
        Method::Uncond,
        Method::ThreeBranch,
        Method::Sega,
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = cell(&dir, method, AdapterKind::Base, SchedulerKind::Ddim);
        c.seed += i as u64;
        if method != Method::Sega {
            c.method_params = Default::default();
        }
        cells.push(c);
    }
    set_param(&mut cells[3], "sega_threshold", 0.5);
    let methods: Vec<Method> = cells.iter().map(|c| c.method).collect();
    common::assert_batched_equal_alone(&mut s.pipeline(), &cells, (5, "one batch"), &|i| {
        format!("cell {i} ({})", methods[i])
    });
}
