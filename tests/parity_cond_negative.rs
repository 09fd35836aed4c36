//! `method = "cond_negative"` against diffusers' own pipeline with the same IP-Adapter loaded
//! twice and scales `[weight, -neg_weight]` (tests/reference/cond_negative_parity.py; CPU,
//! fp32, tiny random models, 32x32, DDIM), both adapters; a guard (its image is far from the
//! `uncond` image of the same cell); and a batch mixing it with the other methods equals
//! one-by-one generation.
mod common;

use common::parity::{self, Parity, Setup, branch};
use negimg::params::{AdapterKind, GenParams, Method, NegativeMode};
use negimg::pipeline::Pipeline;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

fn cell(dir: &Path, method: Method, adapter: AdapterKind) -> (String, GenParams) {
    let mut c = parity::cell(dir, 23);
    c.method = method;
    c.adapter = adapter;
    c.negative = NegativeMode::Both;
    c.positive = branch(0.8, 0.0, 1.0);
    c.negative_branch = branch(0.6, 0.0, 1.0);
    (format!("{method}_{adapter}"), c)
}

/// cond_negative and uncond cells on both adapters, by negimg (one batch per adapter) and by
/// the reference (which makes every case as cond_negative: only the cond_negative cells are
/// compared with it, the uncond cells serve the guard); the pipeline for the batching test.
fn shared() -> &'static (Parity, Mutex<Pipeline>) {
    static SHARED: OnceLock<(Parity, Mutex<Pipeline>)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let setup = Setup::tiny("parity_cond_negative", "cond_negative_parity.py");
        let cells = |dir: &Path| {
            [AdapterKind::Base, AdapterKind::Plus]
                .into_iter()
                .flat_map(|a| [Method::CondNegative, Method::Uncond].map(|m| cell(dir, m, a)))
                .collect()
        };
        let (parity, pipeline) = Parity::compute(setup, cells);
        (parity, Mutex::new(pipeline))
    })
}

#[test]
fn parity_cond_negative_two_adapters_at_weight_and_minus_neg_weight() {
    let (s, _) = shared();
    for (name, _, _) in s.select(|c| c.method == Method::CondNegative) {
        s.assert_parity(name);
    }
}

#[test]
fn guard_cond_negative_is_not_uncond() {
    let (s, _) = shared();
    for (name, c, img) in s.select(|c| c.method == Method::CondNegative) {
        let uncond = s.ours(&format!("uncond_{}", c.adapter));
        parity::assert_far(name, &img, &uncond, "the uncond image");
    }
}

/// cond_negative cells (with and without a negative image, with windows) batched with every
/// other method give the images they give alone.
#[test]
fn cond_negative_batched_with_other_methods_equals_alone() {
    let (s, pipeline) = shared();
    let dir = s.cell("uncond_base").positive_image.clone().unwrap();
    let dir = dir.parent().unwrap();
    let mut cells = Vec::new();
    for (i, method) in [
        Method::CondNegative,
        Method::Uncond,
        Method::PerpNeg,
        Method::CondNegative,
        Method::Subtract,
        Method::CondNegative,
    ]
    .into_iter()
    .enumerate()
    {
        let (_, mut c) = cell(dir, method, AdapterKind::Base);
        c.seed = 40 + i as u64;
        c.steps = 3;
        c.negative_branch = branch(0.3 + 0.2 * i as f64, 0.25 * (i % 2) as f64, 1.0);
        if i == 5 {
            c.negative = NegativeMode::Text;
        }
        cells.push(c);
    }
    let mut pipeline = pipeline.lock().unwrap();
    let label = |i: usize| format!("cell {i} ({})", cells[i].method);
    common::assert_batched_equal_alone(&mut pipeline, &cells, (3, "one batch"), &label);
}
