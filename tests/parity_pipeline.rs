//! Full generation against diffusers (CPU, fp32, tiny random models, 64x64): every negative
//! mode, both adapters, three schedulers; and the guards against the demo's two defects
//! (a window one step late; the negative weight ignored after step 0).
mod common;

use common::parity::{self, branch, u8_of};
use negimg::params::{AdapterKind, BranchWeight, GenParams, NegativeMode, NoImage, SchedulerKind};
use negimg::pipeline::Pipeline;
use negimg::roles::ModelSet;
use negimg::weights::{TensorFile, TensorSource};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

struct Case {
    name: String,
    cell: GenParams,
    /// Explicit per-step [uncond, cond] IP scales for the reference (a defect model).
    schedule: Option<Vec<[f64; 2]>>,
}

fn full(weight: f64) -> BranchWeight {
    branch(weight, 0.0, 1.0)
}

fn case_json(c: &Case) -> serde_json::Value {
    let mut j = parity::case_json(&c.name, &c.cell);
    j["schedule"] = json!(c.schedule);
    j
}

/// The standard parity cell with no prompt.
fn base_cell(dir: &Path, seed: u64) -> GenParams {
    let mut c = parity::cell(dir, seed);
    c.prompt = String::new();
    c.negative = NegativeMode::Image;
    c
}

struct Reference {
    file: TensorFile,
}

impl Reference {
    fn float(&self, name: &str) -> Tensor {
        self.file
            .get(&format!("{name}.float"), Device::Cpu, Kind::Float)
            .unwrap()
    }
    fn u8(&self, name: &str) -> Tensor {
        self.file
            .get(&format!("{name}.u8"), Device::Cpu, Kind::Int64)
            .unwrap()
    }
}

fn run_reference(dir: &Path, models: &Path, cases: &[Case]) -> Reference {
    let spec: Vec<_> = cases.iter().map(case_json).collect();
    Reference {
        file: parity::run_reference("pipeline_parity.py", dir, models, &spec),
    }
}

fn generate(pipeline: &mut Pipeline, cells: &[GenParams]) -> Vec<Tensor> {
    common::generate_float(pipeline, cells, 4, &mut |_, _| {})
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// Every case of this file, computed by one diffusers process (shared by the tests).
struct Shared {
    dir: PathBuf,
    models: PathBuf,
    cases: Vec<Case>,
    reference: Reference,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = common::scratch("parity_pipeline");
        let models = common::tiny::tiny_models();
        parity::write_pos_neg(&dir, (70, 90));
        let mut cases = mode_cases(&dir);
        cases.extend(defect_cases(&dir));
        let reference = run_reference(&dir, &models, &cases);
        Shared {
            dir,
            models,
            cases,
            reference,
        }
    })
}

fn pipeline(models: &Path) -> Pipeline {
    common::load_pipeline(&ModelSet::from_models_dir(models))
}

fn mode_cases(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let modes = [
        NegativeMode::None,
        NegativeMode::Text,
        NegativeMode::Image,
        NegativeMode::Both,
    ];
    for adapter in [AdapterKind::Base, AdapterKind::Plus] {
        for scheduler in [SchedulerKind::Ddim, SchedulerKind::DpmPp2mKarras] {
            for mode in modes {
                let mut c = base_cell(dir, 10 + cases.len() as u64);
                c.adapter = adapter;
                c.scheduler = scheduler;
                c.negative = mode;
                cases.push(Case {
                    name: format!("{adapter}_{scheduler}_{mode}"),
                    cell: c,
                    schedule: None,
                });
            }
        }
    }
    let mut extra = |name: &str, f: &dyn Fn(&mut GenParams)| {
        let mut c = base_cell(dir, 100 + cases.len() as u64);
        f(&mut c);
        cases.push(Case {
            name: name.into(),
            cell: c,
            schedule: None,
        });
    };
    extra("euler_both", &|c| {
        c.scheduler = SchedulerKind::Euler;
        c.negative = NegativeMode::Both;
    });
    extra("dpmpp_2m_plus_image", &|c| {
        c.scheduler = SchedulerKind::DpmPp2m;
        c.adapter = AdapterKind::Plus;
    });
    extra("negative_only_no_positive", &|c| {
        c.positive_image = None;
        c.cfg = 5.0;
    });
    extra("black_no_image_base", &|c| {
        c.no_image = NoImage::Black;
        c.negative = NegativeMode::None;
    });
    extra("black_no_image_plus", &|c| {
        c.no_image = NoImage::Black;
        c.adapter = AdapterKind::Plus;
        c.negative = NegativeMode::Text;
    });
    extra("text_prompt_weights_windows", &|c| {
        c.prompt = "a house in winter".into();
        c.negative = NegativeMode::Both;
        c.positive = branch(0.6, 0.25, 1.0);
        c.negative_branch = branch(1.4, 0.0, 0.75);
        c.steps = 5;
    });
    cases
}

/// The window cell: 4 steps, cond-branch window start 0.5, so its image is on at steps 2
/// and 3; the demo's defect (one step late) has it on at step 3 only.
fn window_cell(dir: &Path) -> GenParams {
    let mut c = base_cell(dir, 7);
    c.negative = NegativeMode::Image;
    c.positive = branch(2.0, 0.5, 1.0);
    c.negative_branch = full(1.0);
    c
}

/// The negative-weight cell: weight 1, negative weight 0.2 at every step; the demo's defect
/// applies 0.2 at step 0 only and the positive weight afterwards.
fn neg_weight_cell(dir: &Path) -> GenParams {
    let mut c = base_cell(dir, 8);
    c.negative = NegativeMode::Image;
    c.positive = full(1.0);
    c.negative_branch = full(0.2);
    c
}

fn defect_cases(dir: &Path) -> Vec<Case> {
    let case = |name: &str, cell: GenParams, schedule: Option<Vec<[f64; 2]>>| Case {
        name: name.into(),
        cell,
        schedule,
    };
    vec![
        case("window_correct", window_cell(dir), None),
        case(
            "window_one_step_late",
            window_cell(dir),
            Some(vec![[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 2.0]]),
        ),
        case("neg_weight_correct", neg_weight_cell(dir), None),
        case(
            "neg_weight_step0_only",
            neg_weight_cell(dir),
            Some(vec![[0.2, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]),
        ),
    ]
}

#[test]
fn parity_pipeline_matches_diffusers_for_every_mode_adapter_and_scheduler() {
    let s = shared();
    let cases: Vec<&Case> = s.cases.iter().filter(|c| c.schedule.is_none()).collect();
    let cells: Vec<GenParams> = cases.iter().map(|c| c.cell.clone()).collect();
    let images = generate(&mut pipeline(&s.models), &cells);
    let mut report = Vec::new();
    for (case, img) in cases.iter().zip(&images) {
        let float_diff = common::max_abs_diff(img, &s.reference.float(&case.name));
        let u8_diff = common::max_abs_diff(&u8_of(img), &s.reference.u8(&case.name));
        report.push(format!(
            "{}: float {float_diff:.2e}, 8-bit {u8_diff}",
            case.name
        ));
        assert!(
            u8_diff <= 1.0,
            "{}: 8-bit max diff {u8_diff} (float {float_diff})\n{}",
            case.name,
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
}

/// Ours matches diffusers' correct schedule (<= 1/255) and not the defect's (else the test
/// could not catch the defect).
fn assert_matches_and_defect_differs(cell: GenParams, correct: &str, defect: &str) {
    let s = shared();
    let ours = u8_of(&generate(&mut pipeline(&s.models), &[cell])[0]);
    let d_correct = common::max_abs_diff(&ours, &s.reference.u8(correct));
    let d_defect = common::max_abs_diff(&ours, &s.reference.u8(defect));
    assert!(
        d_correct <= 1.0,
        "{correct}: differs from diffusers by {d_correct}/255"
    );
    assert!(
        d_defect > 2.0,
        "{defect}: the defect's image is too close ({d_defect}/255) to tell apart"
    );
}

#[test]
fn parity_window_takes_effect_at_its_first_step_not_one_late() {
    let s = shared();
    assert_matches_and_defect_differs(
        window_cell(&s.dir),
        "window_correct",
        "window_one_step_late",
    );
}

#[test]
fn parity_neg_weight_applies_at_every_step() {
    let s = shared();
    assert_matches_and_defect_differs(
        neg_weight_cell(&s.dir),
        "neg_weight_correct",
        "neg_weight_step0_only",
    );
}
