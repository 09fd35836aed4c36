//! Full generation against diffusers (CPU, fp32, tiny random models, 64x64): every negative
//! mode, both adapters, three schedulers; and the guards against the demo's two defects
//! (a window one step late; the negative weight ignored after step 0).
mod common;

use negimg::params::{AdapterKind, BranchWeight, GenParams, NegativeMode, NoImage, SchedulerKind};
use negimg::pipeline::{Pipeline, to_rgb8};
use negimg::roles::ModelSet;
use negimg::weights::{TensorFile, TensorSource};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

fn write_image(path: &Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v =
            |k: u32| ((x * (7 + k) + y * (13 + 2 * k) + seed * 31 + (x * y) % (5 + k)) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    });
    img.save(path).unwrap();
}

struct Case {
    name: String,
    cell: GenParams,
    /// Explicit per-step [uncond, cond] IP scales for the reference (a defect model).
    schedule: Option<Vec<[f64; 2]>>,
}

fn full(weight: f64) -> BranchWeight {
    BranchWeight {
        weight,
        start: 0.0,
        end: 1.0,
    }
}

fn branch_json(b: &BranchWeight) -> serde_json::Value {
    json!({"weight": b.weight, "start": b.start, "end": b.end})
}

fn case_json(c: &Case) -> serde_json::Value {
    let p = &c.cell;
    let path = |x: Option<&PathBuf>| x.map(|p| p.to_str().unwrap().to_string());
    json!({
        "name": c.name, "prompt": p.prompt, "uncond_prompt": p.uncond_text(),
        "pos_image": path(p.positive_image.as_ref()), "uncond_image": path(p.uncond_image()),
        "adapter": p.adapter.to_string(), "scheduler": p.scheduler.to_string(), "steps": p.steps,
        "cfg": p.cfg, "seed": p.seed, "size": p.width, "no_image": p.no_image.to_string(),
        "positive": branch_json(&p.positive), "negative": branch_json(&p.negative_branch),
        "schedule": c.schedule,
    })
}

fn base_cell(dir: &Path, seed: u64) -> GenParams {
    let mut c = GenParams::new(seed);
    c.positive_image = Some(dir.join("pos.png"));
    c.negative_image = Some(dir.join("neg.png"));
    c.prompt = String::new();
    c.negative_prompt = "grass, lawn".into();
    c.steps = 4;
    c.width = 32;
    c.height = 32;
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
    let cases_path = dir.join("cases.json");
    std::fs::write(&cases_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let out = dir.join("ref.safetensors");
    common::run_python(
        "pipeline_parity.py",
        &[
            models.to_str().unwrap(),
            cases_path.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    Reference {
        file: TensorFile::open(&out).unwrap(),
    }
}

/// 8-bit pixels of a float image as an Int64 tensor [3, H, W].
fn u8_of(img: &Tensor) -> Tensor {
    let rgb = to_rgb8(img);
    let (w, h) = rgb.dimensions();
    Tensor::from_slice(rgb.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Int64)
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
        write_image(&dir.join("pos.png"), 96, 80, 1);
        write_image(&dir.join("neg.png"), 70, 90, 2);
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
        c.positive = BranchWeight {
            weight: 0.6,
            start: 0.25,
            end: 1.0,
        };
        c.negative_branch = BranchWeight {
            weight: 1.4,
            start: 0.0,
            end: 0.75,
        };
        c.steps = 5;
    });
    cases
}

/// The window cell: 4 steps, cond-branch window start 0.5, so its image is on at steps 2
/// and 3; the demo's defect (one step late) has it on at step 3 only.
fn window_cell(dir: &Path) -> GenParams {
    let mut c = base_cell(dir, 7);
    c.negative = NegativeMode::Image;
    c.positive = BranchWeight {
        weight: 2.0,
        start: 0.5,
        end: 1.0,
    };
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
