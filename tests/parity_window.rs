//! `window = "sigma"` and negative weights against a reference on diffusers' UNet and
//! schedulers (tests/reference/methods_parity.py; CPU, fp32, tiny random models, 32x32), for
//! DDIM and dpmpp_2m_karras, with guards: windows chosen so that the sigma rule selects other
//! steps than the steps rule (negimg's active-step sets equal the reference's ComfyUI formula
//! and differ from the steps rule's, and the images differ), and a negative weight whose image
//! is neither the weight-0 nor the positive-weight image.
mod common;

use negimg::params::{AdapterKind, BranchWeight, GenParams, NegativeMode, SchedulerKind, Window};
use negimg::pipeline::to_rgb8;
use negimg::roles::ModelSet;
use negimg::sampling::SchedulerConfig;
use negimg::sampling::window::active_steps;
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

/// The cond branch active early (0-0.6), the uncond branch late (0.3-1): with 4 DDIM steps
/// (timesteps 751, 501, 251, 1) the steps rule takes steps 0-2 and 2-3, the sigma rule 0-1
/// and 1-3.
fn cell(dir: &Path, name: &str, scheduler: SchedulerKind, window: Window) -> (String, GenParams) {
    let mut c = GenParams::new(5);
    c.adapter = AdapterKind::Base;
    c.positive_image = Some(dir.join("pos.png"));
    c.negative_image = Some(dir.join("neg.png"));
    c.prompt = "a house in winter".into();
    c.negative = NegativeMode::Image;
    c.positive = BranchWeight {
        weight: 1.5,
        start: 0.0,
        end: 0.6,
    };
    c.negative_branch = BranchWeight {
        weight: 1.5,
        start: 0.3,
        end: 1.0,
    };
    c.scheduler = scheduler;
    c.window = window;
    c.steps = 4;
    c.width = 32;
    c.height = 32;
    (name.to_string(), c)
}

/// A full window with the cond weight `w` (negative weights: ComfyUI's range goes to -1).
fn weighted(dir: &Path, name: &str, w: f64) -> (String, GenParams) {
    let (_, mut c) = cell(dir, name, SchedulerKind::Ddim, Window::Steps);
    c.positive = BranchWeight {
        weight: w,
        start: 0.0,
        end: 1.0,
    };
    c.negative_branch.weight = 0.5;
    (name.to_string(), c)
}

fn case_json(name: &str, c: &GenParams) -> serde_json::Value {
    let path = |x: Option<&PathBuf>| x.map(|p| p.to_str().unwrap().to_string());
    let branch = |b: &BranchWeight| json!({"weight": b.weight, "start": b.start, "end": b.end});
    json!({
        "name": name, "method": c.method.to_string(), "adapter": c.adapter.to_string(),
        "prompt": c.prompt, "uncond_prompt": c.uncond_text(),
        "pos_image": path(c.positive_image.as_ref()), "uncond_image": path(c.uncond_image()),
        "steps": c.steps, "cfg": c.cfg, "neg_cfg": c.neg_cfg(),
        "neg_embed_scale": c.neg_embed_scale, "seed": c.seed, "size": c.width,
        "positive": branch(&c.positive), "negative": branch(&c.negative_branch),
        "scheduler": c.scheduler.to_string(), "window": c.window.to_string(),
    })
}

struct Shared {
    cells: Vec<(String, GenParams)>,
    /// Our float images `[3, H, W]` as plain data (a static cannot hold tensors).
    ours: Vec<(Vec<f32>, Vec<i64>)>,
    reference: TensorFile,
    schedule: SchedulerConfig,
}

impl Shared {
    fn ours(&self, name: &str) -> Tensor {
        let i = self.cells.iter().position(|(n, _)| n == name).unwrap();
        let (data, shape) = &self.ours[i];
        Tensor::from_slice(data).view(shape.as_slice())
    }
    fn cell(&self, name: &str) -> &GenParams {
        &self.cells.iter().find(|(n, _)| n == name).unwrap().1
    }
    fn reference(&self, name: &str, what: &str, kind: Kind) -> Tensor {
        self.reference
            .get(&format!("{name}.{what}"), Device::Cpu, kind)
            .unwrap()
    }
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = common::scratch("parity_window");
        let models = common::tiny::tiny_models();
        write_image(&dir.join("pos.png"), 96, 80, 1);
        write_image(&dir.join("neg.png"), 70, 90, 2);
        let (ddim, karras) = (SchedulerKind::Ddim, SchedulerKind::DpmPp2mKarras);
        let cells = vec![
            cell(&dir, "sigma_ddim", ddim, Window::Sigma),
            cell(&dir, "steps_ddim", ddim, Window::Steps),
            cell(&dir, "sigma_karras", karras, Window::Sigma),
            cell(&dir, "steps_karras", karras, Window::Steps),
            weighted(&dir, "negative_weight", -0.5),
            weighted(&dir, "zero_weight", 0.0),
            weighted(&dir, "positive_weight", 0.5),
        ];
        let spec: Vec<_> = cells.iter().map(|(n, c)| case_json(n, c)).collect();
        let cases = dir.join("cases.json");
        std::fs::write(&cases, serde_json::to_string(&spec).unwrap()).unwrap();
        let out = dir.join("ref.safetensors");
        common::run_python(
            "methods_parity.py",
            &[
                models.to_str().unwrap(),
                cases.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
        let params: Vec<GenParams> = cells.iter().map(|(_, c)| c.clone()).collect();
        // One batch: sigma- and steps-window cells share UNet calls.
        let ours = common::generate_float(&mut pipeline, &params, params.len(), &mut |_, _| {})
            .into_iter()
            .map(|r| {
                let t = r.unwrap();
                (Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), t.size())
            })
            .collect();
        Shared {
            cells,
            ours,
            reference: TensorFile::open(&out).unwrap(),
            schedule: pipeline.scheduler_config().clone(),
        }
    })
}

fn u8_of(img: &Tensor) -> Tensor {
    let rgb = to_rgb8(img);
    let (w, h) = rgb.dimensions();
    Tensor::from_slice(rgb.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Int64)
}

/// Ours matches the reference image of `name` within 1/255.
fn assert_parity(name: &str) {
    let s = shared();
    let (img, want) = (s.ours(name), s.reference(name, "float", Kind::Float));
    let float = common::max_abs_diff(&img, &want);
    let u8_diff = common::max_abs_diff(&u8_of(&img), &u8_of(&want));
    eprintln!("{name}: float {float:.2e}, 8-bit {u8_diff}");
    assert!(
        u8_diff <= 1.0,
        "{name}: 8-bit diff {u8_diff} (float {float})"
    );
}

/// Our image of `a` is more than 2/255 (twice the parity tolerance) from our image of `b`.
fn assert_far(a: &str, b: &str) {
    let s = shared();
    let d = common::max_abs_diff(&u8_of(&s.ours(a)), &u8_of(&s.ours(b)));
    eprintln!("{a}: {d}/255 from {b}");
    assert!(d > 2.0, "{a}: only {d}/255 from {b}");
}

/// The active steps negimg computes for each row (uncond, cond) of `name` under `window`.
fn our_active(name: &str, window: Window) -> Vec<Vec<usize>> {
    let s = shared();
    let c = s.cell(name);
    [c.negative_branch, c.positive]
        .iter()
        .map(|b| active_steps(&s.schedule, c.scheduler, c.steps, window, b).unwrap())
        .collect()
}

/// The reference's (ComfyUI formula) active steps of each row of `name`.
fn reference_active(name: &str) -> Vec<Vec<usize>> {
    let on = shared().reference(name, "active", Kind::Int64);
    let rows = Vec::<Vec<i64>>::try_from(&on).unwrap();
    rows.iter()
        .map(|r| (0..r.len()).filter(|&i| r[i] == 1).collect())
        .collect()
}

/// The sigma rule's steps are the reference's and not the steps rule's, and the image
/// matches the reference's and differs from the steps-window image of the same cell.
fn assert_sigma_window(scheduler: &str) {
    let (sigma, steps) = (format!("sigma_{scheduler}"), format!("steps_{scheduler}"));
    let ours = our_active(&sigma, Window::Sigma);
    eprintln!("{sigma}: active steps (uncond, cond) {ours:?}");
    assert_eq!(ours, reference_active(&sigma), "{sigma}: active steps");
    assert_eq!(
        our_active(&sigma, Window::Steps),
        reference_active(&steps),
        "{steps}: active steps"
    );
    assert_ne!(
        ours,
        our_active(&sigma, Window::Steps),
        "{sigma}: rules agree"
    );
    assert_parity(&sigma);
    assert_far(&sigma, &steps);
}

#[test]
fn parity_window_sigma_ddim() {
    assert_sigma_window("ddim");
}

#[test]
fn parity_window_sigma_dpmpp_2m_karras() {
    assert_sigma_window("karras");
}

#[test]
fn parity_window_steps_both_schedulers() {
    assert_parity("steps_ddim");
    assert_parity("steps_karras");
}

#[test]
fn parity_negative_weight() {
    assert_parity("negative_weight");
    // Not dropped to 0, nor taken as its absolute value.
    assert_far("negative_weight", "zero_weight");
    assert_far("negative_weight", "positive_weight");
}
