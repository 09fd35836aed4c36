//! The pieces of the image parity tests: the input images, the standard cell, the cases JSON
//! a reference script in tests/reference/ reads, running negimg and the script on the same
//! cases, and the image-difference assertions (parity within 1/255; a guard's distance).
use negimg::models::unet::{
    IpLayout, UNet2DConditionConfig, UNet2DConditionModel, ip_attn_layers, write_random_model,
};
use negimg::params::{
    AdapterKind, BranchWeight, GenParams, Method, NegativeMode, SchedulerKind, Window,
};
use negimg::pipeline::{Pipeline, to_rgb8};
use negimg::sampling::SchedulerConfig;
use negimg::sampling::window::active_steps;
use negimg::weights::{TensorFile, TensorSource};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use tch::{Device, Kind, Tensor};

/// The tensor `name` of `file` as float32 on the CPU (reference outputs and test inputs).
pub fn get(file: &TensorFile, name: &str) -> Tensor {
    file.get(name, Device::Cpu, Kind::Float).unwrap()
}

/// A deterministic test image of `w` x `h` whose pattern depends on `seed`.
pub fn write_image(path: &Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v =
            |k: u32| ((x * (7 + k) + y * (13 + 2 * k) + seed * 31 + (x * y) % (5 + k)) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    });
    img.save(path).unwrap();
}

/// Writes the standard inputs into `dir`: `pos.png` (96x80) and `neg.png` (`neg_size`).
pub fn write_pos_neg(dir: &Path, neg_size: (u32, u32)) {
    write_image(&dir.join("pos.png"), 96, 80, 1);
    write_image(&dir.join("neg.png"), neg_size.0, neg_size.1, 2);
}

/// The parity tests' cell: `pos.png` and `neg.png` of `dir`, "a house in winter" against
/// "grass, lawn" with both negatives, 4 steps at 32x32.
pub fn cell(dir: &Path, seed: u64) -> GenParams {
    let mut c = GenParams::new(seed);
    c.positive_image = Some(dir.join("pos.png"));
    c.negative_image = Some(dir.join("neg.png"));
    c.prompt = "a house in winter".into();
    c.negative_prompt = "grass, lawn".into();
    c.negative = NegativeMode::Both;
    c.steps = 4;
    c.width = 32;
    c.height = 32;
    c
}

pub fn branch(weight: f64, start: f64, end: f64) -> BranchWeight {
    BranchWeight { weight, start, end }
}

/// The method tests' cell, named `METHOD_ADAPTER`: the same seed, images and weights for
/// every method, a third-row CFG scale for the three-row methods.
pub fn method_cell(dir: &Path, method: Method, adapter: AdapterKind) -> (String, GenParams) {
    let mut c = cell(dir, 21);
    c.method = method;
    c.adapter = adapter;
    c.positive = branch(0.8, 0.0, 1.0);
    c.negative_branch = branch(1.2, 0.25, 1.0);
    c.neg_embed_scale = 0.7;
    c.neg_cfg = (negimg::sampling::methods::of(method).rows().len() == 3).then_some(4.0);
    (format!("{method}_{adapter}"), c)
}

/// The window tests' cell: the image negative with the cond branch active early (0-0.6) and
/// the uncond branch late (0.3-1), so that the sigma rule selects other steps than the steps
/// rule.
pub fn window_cell(dir: &Path, scheduler: SchedulerKind, window: Window) -> GenParams {
    let mut c = cell(dir, 5);
    c.negative = NegativeMode::Image;
    c.positive = branch(1.5, 0.0, 0.6);
    c.negative_branch = branch(1.5, 0.3, 1.0);
    c.scheduler = scheduler;
    c.window = window;
    c
}

fn branch_json(b: &BranchWeight) -> Value {
    json!({"weight": b.weight, "start": b.start, "end": b.end})
}

/// The case of `c` named `name` as the reference scripts read it: each reads the keys it
/// documents.
pub fn case_json(name: &str, c: &GenParams) -> Value {
    let path = |x: Option<&PathBuf>| x.map(|p| p.to_str().unwrap().to_string());
    let mut case = json!({
        "name": name, "method": c.method.to_string(), "adapter": c.adapter.to_string(),
        "prompt": c.prompt, "uncond_prompt": c.uncond_text(),
        "pos_image": path(c.positive_image.as_ref()), "uncond_image": path(c.uncond_image()),
        "steps": c.steps, "cfg": c.cfg, "neg_cfg": c.neg_cfg(),
        "neg_embed_scale": c.neg_embed_scale, "seed": c.seed, "size": c.width,
        "positive": branch_json(&c.positive), "negative": branch_json(&c.negative_branch),
        "scheduler": c.scheduler.to_string(), "window": c.window.to_string(),
        "no_image": c.no_image.to_string(),
        "blocks": c.blocks.to_string(), "neg_blocks": c.neg_blocks.to_string(),
        "ip_scaling": c.ip_scaling.to_string(),
    });
    // SDXL's micro-conditioning, only where set (diffusers' (h, w) / (top, left) tuples).
    if c.has_micro_conditioning() {
        let ids = c.time_ids();
        case["original_size"] = json!([ids[0], ids[1]]);
        case["crops_coords_top_left"] = json!([ids[2], ids[3]]);
        case["target_size"] = json!([ids[4], ids[5]]);
    }
    // The uncond row's, all three resolved (diffusers reads them only when both sizes are
    // given, and its negative crop defaults to (0, 0), not to the cond row's).
    if c.has_negative_micro_conditioning() {
        let ids = c.negative_time_ids();
        case["negative_original_size"] = json!([ids[0], ids[1]]);
        case["negative_crops_coords_top_left"] = json!([ids[2], ids[3]]);
        case["negative_target_size"] = json!([ids[4], ids[5]]);
    }
    case
}

/// Runs `tests/reference/<script> MODELS CASES.json OUT.safetensors` on `cases` (written to
/// `dir`) and opens its output.
pub fn run_reference(script: &str, dir: &Path, models: &Path, cases: &[Value]) -> TensorFile {
    let cases_file = dir.join("cases.json");
    std::fs::write(&cases_file, serde_json::to_string(cases).unwrap()).unwrap();
    let out = dir.join("ref.safetensors");
    super::run_python(
        script,
        &[
            models.to_str().unwrap(),
            cases_file.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    TensorFile::open(&out).unwrap()
}

/// A UNet parity set-up in a fresh scratch folder: a random UNet (`unet/`, seed 7), the
/// adapter file `ip-adapter.safetensors` (the test writes it) and the inputs
/// `inputs.safetensors` ([`UnetSetup::write_inputs`]), which a reference script reads.
pub struct UnetSetup {
    pub dir: PathBuf,
    pub cfg: UNet2DConditionConfig,
    pub unet: PathBuf,
    pub adapter: PathBuf,
    pub inputs: PathBuf,
}

impl UnetSetup {
    /// Writes the random UNet of `cfg` in the scratch folder `name`.
    pub fn new(name: &str, cfg: UNet2DConditionConfig) -> Self {
        let dir = super::scratch(name);
        let unet = dir.join("unet");
        write_random_model(&unet, &cfg, 7, false).unwrap();
        UnetSetup {
            adapter: dir.join("ip-adapter.safetensors"),
            inputs: dir.join("inputs.safetensors"),
            dir,
            cfg,
            unet,
        }
    }

    /// Writes the named tensors `draw` makes (under the generator of seed 3) as the inputs,
    /// and opens them.
    pub fn write_inputs(&self, draw: impl FnOnce() -> Vec<(&'static str, Tensor)>) -> TensorFile {
        let generator = negimg::weights::random::seeded_generator(3);
        let tensors = draw();
        drop(generator);
        Tensor::write_safetensors(&tensors, &self.inputs).unwrap();
        TensorFile::open(&self.inputs).unwrap()
    }

    /// Runs `tests/reference/<script>` on the UNet folder, the adapter and the inputs,
    /// writing `ref.safetensors`, and opens its output.
    pub fn reference(&self, script: &str) -> TensorFile {
        let out = self.dir.join("ref.safetensors");
        let args = [&self.unet, &self.adapter, &self.inputs, &out]
            .map(|p| p.to_str().unwrap().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        super::run_python(script, &args);
        TensorFile::open(&out).unwrap()
    }

    /// The UNet on the CPU in float32, without IP layers.
    pub fn load_plain(&self) -> UNet2DConditionModel {
        UNet2DConditionModel::load(&self.unet, Device::Cpu, Kind::Float, None).unwrap()
    }

    /// The UNet with IP layers, before its adapter is loaded.
    pub fn load_ip_layers(&self) -> UNet2DConditionModel {
        let ip = Some(IpLayout::for_config(&self.cfg));
        UNet2DConditionModel::load(&self.unet, Device::Cpu, Kind::Float, ip).unwrap()
    }

    /// The UNet with the adapter loaded.
    pub fn load_with_adapter(&self) -> UNet2DConditionModel {
        let mut unet = self.load_ip_layers();
        unet.load_ip_adapter(&TensorFile::open(&self.adapter).unwrap())
            .unwrap();
        unet
    }
}

/// The variables of the UNet of `cfg` are exactly the state-dict keys and shapes of the
/// model diffusers builds from its config (scratch folder `name`), and its IP layers follow
/// diffusers' `attn_processors` order; their names.
pub fn assert_unet_layout_is_diffusers(name: &str, cfg: &UNet2DConditionConfig) -> Vec<String> {
    let reference = super::diffusers_model_keys(name, "unet", &cfg.to_config_json());
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _unet = UNet2DConditionModel::new(vs.root(), cfg, None).unwrap();
    assert_eq!(super::var_shapes(&vs), super::shapes_of(&reference));
    let names: Vec<String> = ip_attn_layers(cfg).into_iter().map(|(n, _)| n).collect();
    let cross: Vec<String> = serde_json::from_value(reference["cross_attention"].clone()).unwrap();
    assert_eq!(names, cross);
    names
}

/// A float image `[3, H, W]` as plain data (a static cannot hold tensors).
struct Plain {
    data: Vec<f32>,
    shape: Vec<i64>,
}

impl Plain {
    fn of(t: &Tensor) -> Self {
        Plain {
            data: Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(),
            shape: t.size(),
        }
    }

    fn tensor(&self) -> Tensor {
        Tensor::from_slice(&self.data).view(self.shape.as_slice())
    }
}

/// Named cells generated by negimg (in the runner's batches, as few as their batch keys
/// allow) and by a reference script, for tests that share one computation.
pub struct Parity {
    cases: Vec<(String, GenParams)>,
    ours: Vec<Plain>,
    reference: TensorFile,
}

/// Where and on what a [`Parity`] computation runs.
pub struct Setup<'a> {
    /// The scratch folder's name (see [`super::scratch`]).
    pub scratch: &'a str,
    pub models: PathBuf,
    /// The size of `neg.png` (see [`write_pos_neg`]).
    pub neg_size: (u32, u32),
    /// The reference script in tests/reference/.
    pub script: &'a str,
    /// What the script reads besides [`case_json`]'s keys (a JSON object).
    pub extra: &'a dyn Fn(&GenParams) -> Value,
}

fn no_extra(_: &GenParams) -> Value {
    json!({})
}

impl<'a> Setup<'a> {
    /// `script` on the tiny models with `neg.png` of 70x90 and no extra keys.
    pub fn tiny(scratch: &'a str, script: &'a str) -> Self {
        Setup {
            scratch,
            models: super::tiny::tiny_models(),
            neg_size: (70, 90),
            script,
            extra: &no_extra,
        }
    }
}

impl Parity {
    /// Writes the input images to a fresh scratch folder and makes the `cases` of that
    /// folder; runs the script on them (their JSON by [`case_json`] and `extra`) and
    /// generates them in one call of the runner's batching with a pipeline of
    /// `setup.models` (also returned).
    pub fn compute(
        setup: Setup,
        cases: impl FnOnce(&Path) -> Vec<(String, GenParams)>,
    ) -> (Parity, Pipeline) {
        let dir = super::scratch(setup.scratch);
        write_pos_neg(&dir, setup.neg_size);
        let cases = cases(&dir);
        let spec: Vec<Value> = cases
            .iter()
            .map(|(name, c)| {
                let mut j = case_json(name, c);
                if let Value::Object(more) = (setup.extra)(c) {
                    j.as_object_mut().unwrap().extend(more);
                }
                j
            })
            .collect();
        let reference = run_reference(setup.script, &dir, &setup.models, &spec);
        let models = negimg::roles::ModelSet::from_models_dir(&setup.models);
        let mut pipeline = super::load_pipeline(&models);
        let cells: Vec<GenParams> = cases.iter().map(|(_, c)| c.clone()).collect();
        let ours = super::generate_float(&mut pipeline, &cells, cells.len(), &mut |_, _| {})
            .into_iter()
            .map(|r| Plain::of(&r.unwrap()))
            .collect();
        let parity = Parity {
            cases,
            ours,
            reference,
        };
        (parity, pipeline)
    }

    fn index(&self, name: &str) -> usize {
        self.cases
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no case {name}"))
    }

    /// Our image of case `name`.
    pub fn ours(&self, name: &str) -> Tensor {
        self.ours[self.index(name)].tensor()
    }

    pub fn cell(&self, name: &str) -> &GenParams {
        &self.cases[self.index(name)].1
    }

    /// Every case whose cell satisfies `keep`, with our image.
    pub fn select(&self, keep: impl Fn(&GenParams) -> bool) -> Vec<(&str, &GenParams, Tensor)> {
        self.cases
            .iter()
            .zip(&self.ours)
            .filter(|((_, c), _)| keep(c))
            .map(|((n, c), img)| (n.as_str(), c, img.tensor()))
            .collect()
    }

    /// The reference's image of case `name` (`{name}.float`).
    pub fn reference(&self, name: &str) -> Tensor {
        self.reference_tensor(&format!("{name}.float"), Kind::Float)
    }

    /// Any tensor the reference wrote.
    pub fn reference_tensor(&self, key: &str, kind: Kind) -> Tensor {
        self.reference.get(key, Device::Cpu, kind).unwrap()
    }

    /// Our image of `name` matches the reference's within 1/255.
    pub fn assert_parity(&self, name: &str) {
        assert_parity(name, &self.ours(name), &self.reference(name));
    }

    /// Our image of `a` is more than 2/255 (twice the parity tolerance) from our image of `b`.
    pub fn assert_far(&self, a: &str, b: &str) {
        assert_far(a, &self.ours(a), &self.ours(b), b);
    }

    /// NegToMe, every cell: the reference merged some of the `tokens` it may merge (its
    /// `<name>.merged` count), not none and not all, and ours matches it within 1/255.
    pub fn assert_negtome_parity(&self, tokens: f64) {
        for (name, _, _) in self.select(|_| true) {
            let merged = self
                .reference_tensor(&format!("{name}.merged"), Kind::Float)
                .double_value(&[0]);
            eprintln!("{name}: {merged} of {tokens} tokens merged");
            assert!(
                merged > 0.0 && merged < tokens,
                "{name}: the reference merged {merged} of {tokens} tokens"
            );
            self.assert_parity(name);
        }
    }

    /// NegToMe, every cell: ours is far (> 2/255, twice the parity tolerance) from the
    /// reference's image of the same cell without the merge (`<name>.nomerge`).
    pub fn assert_negtome_merge_not_skipped(&self) {
        for (name, _, img) in self.select(|_| true) {
            let plain = self.reference_tensor(&format!("{name}.nomerge"), Kind::Float);
            assert_far(name, &img, &plain, "the image without the merge");
        }
    }
}

/// A [`Parity`] computation with its pipeline's scheduler, for the window tests: the active
/// steps of each window rule, ours and the reference's.
pub struct WindowParity {
    pub parity: Parity,
    schedule: SchedulerConfig,
}

impl WindowParity {
    /// [`Parity::compute`], keeping the pipeline's scheduler config.
    pub fn compute(setup: Setup, cases: impl FnOnce(&Path) -> Vec<(String, GenParams)>) -> Self {
        let (parity, pipeline) = Parity::compute(setup, cases);
        WindowParity {
            parity,
            schedule: pipeline.scheduler_config().clone(),
        }
    }

    /// The active steps negimg computes for each row (uncond, cond) of `name` under `window`.
    pub fn our_active(&self, name: &str, window: Window) -> Vec<Vec<usize>> {
        let c = self.parity.cell(name);
        [c.negative_branch, c.positive]
            .iter()
            .map(|b| active_steps(&self.schedule, c.scheduler, c.steps, window, b).unwrap())
            .collect()
    }

    /// The reference's (ComfyUI formula) active steps of each row of `name`.
    pub fn reference_active(&self, name: &str) -> Vec<Vec<usize>> {
        let on = self
            .parity
            .reference_tensor(&format!("{name}.active"), Kind::Int64);
        let rows = Vec::<Vec<i64>>::try_from(&on).unwrap();
        rows.iter()
            .map(|r| (0..r.len()).filter(|&i| r[i] == 1).collect())
            .collect()
    }
}

/// A [`Parity`] computation that a test binary's tests share, with its pipeline (the
/// set-up of the method parity tests).
pub struct Shared {
    pub parity: Parity,
    pipeline: Mutex<Pipeline>,
}

impl Shared {
    /// [`Parity::compute`], its pipeline kept for the tests that generate more.
    pub fn compute(setup: Setup, cases: impl FnOnce(&Path) -> Vec<(String, GenParams)>) -> Self {
        let (parity, pipeline) = Parity::compute(setup, cases);
        Shared {
            parity,
            pipeline: Mutex::new(pipeline),
        }
    }

    /// The pipeline (still usable after another test panicked holding it).
    pub fn pipeline(&self) -> MutexGuard<'_, Pipeline> {
        self.pipeline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Our image of the cell `name` made with `method` instead, at that method's default
    /// parameters, then changed by `change`.
    pub fn with_method(
        &self,
        name: &str,
        method: negimg::params::Method,
        change: impl FnOnce(&mut GenParams),
    ) -> Tensor {
        let mut c = self.parity.cell(name).clone();
        c.method = method;
        c.method_params = Default::default();
        change(&mut c);
        super::generate_float(&mut self.pipeline(), &[c], 1, &mut |_, _| {})
            .remove(0)
            .unwrap()
    }
}

/// Sets method parameter `key` of `c` to `x`.
pub fn set_param(c: &mut GenParams, key: &str, x: f64) {
    let default = negimg::sampling::methods::param(key).unwrap().default;
    c.method_params.set(key, x, default);
}

/// The values in `c` of the method parameters `keys`, each named without `prefix`, as a
/// reference script reads them.
pub fn params_json(c: &GenParams, prefix: &str, keys: &[&str]) -> serde_json::Map<String, Value> {
    keys.iter()
        .map(|k| {
            let x = negimg::sampling::methods::value(c, k);
            (k.trim_start_matches(prefix).to_string(), json!(x))
        })
        .collect()
}

/// 8-bit pixels of a float image as an Int64 tensor [3, H, W].
pub fn u8_of(img: &Tensor) -> Tensor {
    let rgb = to_rgb8(img);
    let (w, h) = rgb.dimensions();
    Tensor::from_slice(rgb.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Int64)
}

/// `img` matches `want` within 1/255 in 8 bits (the tolerance of every parity test).
pub fn assert_parity(name: &str, img: &Tensor, want: &Tensor) {
    let float = super::max_abs_diff(img, want);
    let u8_diff = super::max_abs_diff(&u8_of(img), &u8_of(want));
    eprintln!("{name}: float {float:.2e}, 8-bit {u8_diff}");
    assert!(
        u8_diff <= 1.0,
        "{name}: 8-bit diff {u8_diff} (float {float})"
    );
}

/// A guard: `img` is more than 2/255 (twice the parity tolerance) in 8 bits from `other`
/// (described as `what`).
pub fn assert_far(name: &str, img: &Tensor, other: &Tensor, what: &str) {
    let d = super::max_abs_diff(&u8_of(img), &u8_of(other));
    eprintln!("{name}: {d}/255 from {what}");
    assert!(d > 2.0, "{name}: only {d}/255 from {what}");
}
