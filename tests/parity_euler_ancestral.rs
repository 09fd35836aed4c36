//! `scheduler = "euler_ancestral"` against diffusers' own StableDiffusionPipeline with
//! `EulerAncestralDiscreteScheduler` and `generator=torch.Generator("cpu").manual_seed(seed)`
//! (tests/reference/pipeline_parity.py; CPU, fp32, tiny random models, 32x32): a seed gives
//! diffusers' image, for both adapters and several seeds; a guard that the step noise is
//! drawn (the image is far from `euler`'s of the same cell); cells batched equal cells alone.
mod common;

use common::parity::{self, Parity, Setup, branch};
use negimg::params::{AdapterKind, GenParams, NegativeMode, SchedulerKind};
use std::path::Path;
use std::sync::OnceLock;

fn cell(dir: &Path, seed: u64, adapter: AdapterKind, scheduler: SchedulerKind) -> GenParams {
    let mut c = parity::cell(dir, seed);
    c.adapter = adapter;
    c.scheduler = scheduler;
    c.positive = branch(0.8, 0.0, 1.0);
    c.negative_branch = branch(1.2, 0.0, 1.0);
    c.steps = 5;
    c
}

const ANCESTRAL: SchedulerKind = SchedulerKind::EulerAncestral;

fn cases(dir: &Path) -> Vec<(String, GenParams)> {
    let mut image_only = cell(dir, 33, AdapterKind::Base, ANCESTRAL);
    image_only.negative = NegativeMode::Image;
    image_only.prompt = String::new();
    vec![
        (
            "ea_base".into(),
            cell(dir, 31, AdapterKind::Base, ANCESTRAL),
        ),
        (
            "ea_plus".into(),
            cell(dir, 32, AdapterKind::Plus, ANCESTRAL),
        ),
        ("ea_image_only".into(), image_only),
        (
            "euler_base".into(),
            cell(dir, 31, AdapterKind::Base, SchedulerKind::Euler),
        ),
    ]
}

fn shared() -> &'static Parity {
    static SHARED: OnceLock<Parity> = OnceLock::new();
    SHARED.get_or_init(|| {
        let setup = Setup::tiny("parity_euler_ancestral", "pipeline_parity.py");
        Parity::compute(setup, cases).0
    })
}

#[test]
fn parity_euler_ancestral_matches_diffusers_pipeline_with_its_generator() {
    let s = shared();
    for name in ["ea_base", "ea_plus", "ea_image_only", "euler_base"] {
        s.assert_parity(name);
    }
}

#[test]
fn guard_euler_ancestral_adds_step_noise() {
    let s = shared();
    parity::assert_far(
        "ea_base",
        &s.ours("ea_base"),
        &s.reference("euler_base"),
        "the euler image",
    );
}

#[test]
fn euler_ancestral_batched_equals_alone() {
    let dir = common::scratch("euler_ancestral_batching");
    parity::write_pos_neg(&dir, (70, 90));
    let models = negimg::roles::ModelSet::from_models_dir(&common::tiny::tiny_models());
    let mut pipeline = common::load_pipeline(&models);
    let mut cells: Vec<GenParams> = (0..3)
        .map(|i| cell(&dir, 40 + i, AdapterKind::Base, ANCESTRAL))
        .collect();
    // the same seed twice with other parameters: each cell draws from its own generator
    cells[2].seed = cells[0].seed;
    cells[2].cfg = 3.0;
    let calls = (5, "one batch of 5 steps");
    common::assert_batched_equal_alone(&mut pipeline, &cells, calls, &|i| format!("cell {i}"));
}
