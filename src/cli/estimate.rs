//! `negimg plan`'s time estimate: the generation time of a grid's images (model loading
//! excluded), from, in order of preference,
//! 1. the latest run of the experiment on the same device and dtype (its seconds per unit
//!    of cost, times this grid's cost),
//! 2. a calibration on the spot: the UNet and the VAE decoder loaded on the device and
//!    timed at the grid's size and batch rows,
//! 3. FLOP figures over a measured matmul speed, or over an assumed GPU's speed when the
//!    device is not visible here: the UNet's counted from its config (`models::unet_flops`;
//!    a folder's config.json or a single file's header, else the shapes of a
//!    `models init-random` preset: `[models] init_random`'s, SDXL base's where the
//!    experiment says SDXL, else SD1.5's; the plan says which and why), the VAE decode's
//!    SD1.5's scaled by pixels and parameter count.
//!
//! Cost of one image: `rows * steps` UNet row-steps (two rows with CFG, three for the
//! three-row methods) plus one decode, each proportional to the pixels.
use crate::experiment::{CellSpec, Experiment};
use crate::run::records::{Status, read_records};
use crate::sampling::methods;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// What the estimate is for.
pub struct Target<'a> {
    pub exp: &'a Experiment,
    /// NegToMe's reference rows and encodes ([`negtome_cost`]).
    pub negtome: &'a NegtomeCost,
    /// The results root, for the latest run.
    pub results: &'a Path,
    pub device: Device,
    pub kind: Kind,
    /// Whether `device` can be used here (a CUDA device may be named without a GPU).
    pub visible: bool,
    /// Load and time the models when there is no history (`--no-calibrate`: not).
    pub calibrate: bool,
    /// The UNet row-steps the run makes ([`row_steps`]): the share of the one-at-a-time
    /// cost left with shared trajectories.
    pub rows: &'a RowSteps,
}

/// Seconds per image (mean over the grid's cells) and how they were found.
pub struct Estimate {
    pub per_image: f64,
    pub how: String,
}

// SD1.5's VAE decode (../shared/REFERENCE.md): 2.51 TFLOP at 512x512 for 83.65M parameters
// (the UNet's FLOPs are counted from its config, `models::unet_flops`).
const SD15_DECODE: f64 = 2.51e12;
const SD15_VAE_PARAMS: f64 = 83.65e6;
const SD15_PIXELS: f64 = 512.0 * 512.0;
/// SD1.5's VAE encoder at 512x512 (torch FlopCounterMode, as the decode's figure).
const SD15_ENCODE: f64 = 1.12e12;
/// Convolutions and attention reach about a third of matmul speed (the diffusers peer's
/// best on an H200 is about 35% of the fp16 floor).
const EFFICIENCY: f64 = 0.35;
/// The GPU assumed when the device is not visible here: an H200's dense matmul speed.
const ASSUMED_GPU: &str = "H200";
const ASSUMED_FP16_FLOPS: f64 = 760e12;
const ASSUMED_FP32_FLOPS: f64 = 67e12;
/// The longest one calibration call should take; larger sizes are timed smaller.
const CALL_BUDGET_S: f64 = 1.5;

pub fn estimate(t: &Target) -> Estimate {
    let mut notes = Vec::new();
    match from_history(t) {
        Ok(e) => return e,
        Err(why) => notes.push(format!("{why:#}")),
    }
    if !t.visible {
        return from_flops(t, notes);
    }
    if !t.calibrate {
        notes.push("--no-calibrate".into());
        return from_flops(t, notes);
    }
    match calibrate(t) {
        Ok(e) => e,
        Err(why) => {
            notes.push(format!("no calibration: {why:#}"));
            from_flops(t, notes)
        }
    }
}

/// UNet rows of a cell per step (of the method its image is made with).
/// VAE decodes per image: the image, and its x̂₀ traces.
fn decodes(c: &CellSpec) -> f64 {
    1.0 + trace_decodes(c) as f64
}

/// The x̂₀ traces a cell decodes.
pub fn trace_decodes(c: &CellSpec) -> usize {
    c.trace.as_ref().map_or(0, |t| t.active(c.steps).len())
}

fn rows(c: &CellSpec) -> f64 {
    methods::of(c.method.effective(c.negative_mode()))
        .cost()
        .row_equivalents()
}

/// Mean over the grid's cells of `f(cell)`.
fn mean(exp: &Experiment, f: impl Fn(&CellSpec) -> f64) -> f64 {
    exp.cells.iter().map(f).sum::<f64>() / exp.cells.len().max(1) as f64
}

/// The relative cost of one image: `rows * steps` UNet row-steps and one VAE decode (about
/// three rows in SD1.5), each proportional to the pixels.
fn image_cost(steps: usize, rows: f64, width: usize, height: usize) -> f64 {
    (width * height) as f64 * (rows * steps as f64 + 3.0)
}

fn from_history(t: &Target) -> Result<Estimate> {
    let exp_dir = t.results.join(&t.exp.name);
    let Some(last) = crate::run::layout::runs(&exp_dir).last().cloned() else {
        bail!("no earlier run");
    };
    let run = exp_dir.join(&last);
    let records = read_records(&run.join("records.csv"))?;
    let done: Vec<_> = records
        .iter()
        .filter(|r| r.status == Status::Done)
        .collect();
    if done.is_empty() {
        bail!("run {last} has no image yet");
    }
    let (device, dtype) = (
        crate::device::device_name(t.device),
        crate::device::dtype_name(t.kind),
    );
    let manifest: serde_json::Value = std::fs::read(run.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let field = |k: &str| manifest.get(k).and_then(|v| v.as_str()).unwrap_or("?");
    if (field("device"), field("dtype")) != (device.as_str(), dtype) {
        bail!(
            "run {last} ran on {} {}, not {device} {dtype}",
            field("device"),
            field("dtype")
        );
    }
    // Seconds per unit of cost measured there, times the cost of this grid's images.
    let rate = done.iter().map(|r| r.seconds).sum::<f64>()
        / done
            .iter()
            .map(|r| {
                let rows = methods::of(r.method.effective(r.negative))
                    .cost()
                    .row_equivalents();
                image_cost(r.steps, rows, r.width, r.height)
            })
            .sum::<f64>();
    let (ref_pixel_steps, encoded) = t.negtome.per_image(t.exp.cells.len());
    // A decode counts as three rows (image_cost); an encode as its FLOPs' share of that.
    let cost = mean(t.exp, |c| image_cost(c.steps, rows(c), c.width, c.height))
        + ref_pixel_steps
        + encoded * 3.0 * SD15_ENCODE / SD15_DECODE;
    Ok(Estimate {
        per_image: rate * cost,
        how: format!(
            "measured by run {last}: {} images, scaled by pixels, steps and UNet rows",
            done.len()
        ),
    })
}

/// The grid's largest size and the UNet rows of the batch the runner makes there (cells
/// of one size and step count share batches, up to the device's batch size).
fn batch_at_largest(t: &Target) -> ((usize, usize), usize) {
    let largest = t
        .exp
        .cells
        .iter()
        .map(|c| (c.width, c.height))
        .max_by_key(|(w, h)| w * h)
        .unwrap_or((512, 512));
    let at_size: Vec<&CellSpec> = t
        .exp
        .cells
        .iter()
        .filter(|c| (c.width, c.height) == largest)
        .collect();
    let max = crate::device::estimate_max_batch(t.device, t.kind, largest.0, largest.1);
    let cells = at_size.len().clamp(1, max);
    let rows_per_cell = at_size
        .iter()
        .map(|c| {
            methods::of(c.method.effective(c.negative_mode()))
                .rows()
                .len()
        })
        .max()
        .unwrap_or(2);
    (largest, cells * rows_per_cell)
}

/// Parameters of the VAE, from the safetensors headers (no weights read); `None` for a
/// layout without them.
fn vae_params(exp: &Experiment) -> Option<f64> {
    let pipeline = &exp.models.pipeline.path;
    if crate::pipeline::single_file::is_single_file(pipeline) {
        let vae = crate::pipeline::single_file::open_single_file(pipeline)
            .ok()?
            .vae()
            .ok()?;
        let names = vae.names();
        let sizes = names.iter().filter_map(|n| vae.shape(n));
        return Some(sizes.map(|s| s.iter().product::<usize>() as f64).sum());
    }
    let files =
        crate::weights::hub::component_files(pipeline, crate::weights::hub::Component::Pipeline)
            .ok()?;
    let file = files.iter().find(|f| {
        f.starts_with(pipeline.join("vae")) && f.extension().is_some_and(|e| e == "safetensors")
    })?;
    header_params(file).ok()
}

fn header_params(file: &Path) -> Result<f64> {
    let mut f =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let n = u64::from_le_bytes(len);
    anyhow::ensure!(n < 100 << 20, "{}: not a safetensors file", file.display());
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)?;
    Ok(json
        .values()
        .filter_map(|t| t.get("shape")?.as_array().cloned())
        .map(|shape| shape.iter().filter_map(|d| d.as_f64()).product::<f64>())
        .sum())
}

/// NegToMe's reference rows and encodes per image, in FLOPs (per pixel at the first cell's
/// size).
fn negtome_flops(t: &Target, m: &ModelFacts) -> f64 {
    let (ref_pixel_steps, encoded) = t.negtome.per_image(t.exp.cells.len());
    let (w, h) = t
        .exp
        .cells
        .first()
        .map_or((512, 512), |c| (c.width, c.height));
    let (row, decode) = m.flops_at(w, h);
    let pixels = (w * h) as f64;
    (ref_pixel_steps * row + encoded * decode * SD15_ENCODE / SD15_DECODE) / pixels
}

/// What the FLOP figures are computed from: the UNet's config (and where it came from) and
/// the VAE's parameter count, where the files are here.
struct ModelFacts {
    unet: crate::models::unet::UNet2DConditionConfig,
    /// Which UNet config, and why that one.
    unet_how: String,
    vae_params: Option<f64>,
    /// Image tokens of the grid's adapter.
    ip_tokens: i64,
}

impl ModelFacts {
    fn of(exp: &Experiment) -> ModelFacts {
        let (unet, unet_how) = unet_config_for_flops(exp);
        ModelFacts {
            unet,
            unet_how,
            vae_params: vae_params(exp),
            ip_tokens: exp.cells.first().map_or(4, |c| {
                crate::models::ip_adapter::typical_tokens(
                    c.adapter,
                    crate::models::clip_vision::ClipVisionConfig::vit_h().num_positions(),
                )
            }),
        }
    }

    /// FLOPs of one UNet row-step at `width` x `height`, counted from the UNet's config.
    fn row_flops(&self, width: usize, height: usize) -> f64 {
        crate::models::unet_flops::unet_row_flops(
            &self.unet,
            (height / 8) as i64,
            (width / 8) as i64,
            crate::models::unet_flops::Context {
                text_tokens: 77,
                ip_tokens: self.ip_tokens,
            },
        )
    }

    /// FLOPs of one UNet row-step and of one decode at `width` x `height`: the decode's
    /// SD1.5's scaled by pixels and by the VAE's parameters (SDXL's VAE has SD1.5's layout).
    fn flops_at(&self, width: usize, height: usize) -> (f64, f64) {
        let vae = self.vae_params.unwrap_or(SD15_VAE_PARAMS);
        let scale = (width * height) as f64 / SD15_PIXELS;
        (
            self.row_flops(width, height),
            SD15_DECODE * scale * vae / SD15_VAE_PARAMS,
        )
    }
}

/// The UNet config to count FLOPs on, and why: the pipeline's own (a folder's config.json, a
/// single file's header), else the shapes of `[models] init_random`'s preset, else SDXL
/// base's where something in the experiment says SDXL ([`sdxl_sign`]), else SD1.5's; the
/// last three from `models init-random`'s presets.
fn unet_config_for_flops(exp: &Experiment) -> (crate::models::unet::UNet2DConditionConfig, String) {
    use crate::pipeline::random::RandomPreset;
    let pipeline = &exp.models.pipeline.path;
    if let Ok(Some(header)) = crate::pipeline::source::read_header(pipeline) {
        return (
            header.unet,
            format!("UNet FLOPs counted from {}", header.unet_origin),
        );
    }
    if let Some(config) = hub_unet_config(&exp.models.pipeline.reference) {
        let origin = config.display();
        match crate::models::unet::UNet2DConditionConfig::from_json_file(&config) {
            Ok(unet) => return (unet, format!("UNet FLOPs counted from {origin}")),
            Err(e) => log::warn!("{e:#}"),
        }
    }
    let counted_on = |preset: RandomPreset, name: &str, why: &str| {
        (
            preset.shapes().unet,
            format!(
                "unet config not on disk: UNet FLOPs counted on the `{name}` preset's shapes \
                 ({why})"
            ),
        )
    };
    let init = exp
        .init_random
        .as_ref()
        .filter(|i| pipeline.starts_with(&i.dir));
    if let Some((init, preset)) = init.and_then(|i| Some((i, i.preset.parse().ok()?))) {
        return counted_on(preset, &init.preset, "[models] init_random, not made yet");
    }
    match sdxl_sign(exp) {
        Some(why) => counted_on(RandomPreset::Sdxl, "sdxl", &format!("SDXL base: {why}")),
        None => counted_on(
            RandomPreset::Sd15,
            "sd15",
            "SD1.5: no adapter of SDXL's width or file name, no micro-conditioning key",
        ),
    }
}

/// The `unet/config.json` of a hub pipeline whose weights are not cached: fetched alone with
/// model_index.json into the cache where the hub can be used ([`hub::config_files`]); `None`
/// for a local pipeline, offline or unreachable with the files not cached, or where the
/// fetch fails (a warning says why).
///
/// [`hub::config_files`]: crate::weights::hub::config_files
fn hub_unet_config(reference: &str) -> Option<std::path::PathBuf> {
    let hf = crate::weights::hub::HfRef::parse(reference).ok()??;
    let files = ["model_index.json", "unet/config.json"];
    match crate::weights::hub::config_files(&hf, &files) {
        Ok(folder) => folder.map(|f| f.join("unet/config.json")),
        Err(e) => {
            log::warn!("{e:#}: the estimate does not use the pipeline's UNet config");
            None
        }
    }
}

/// What says, without the pipeline's UNet config, that the experiment's pipeline is SDXL:
/// an adapter file on disk that makes SDXL's 2048-wide tokens (one of SD1.5's 768 says it is
/// not), SDXL's micro-conditioning keys, or an adapter named as one of h94/IP-Adapter's
/// `sdxl_models/` files.
fn sdxl_sign(exp: &Experiment) -> Option<String> {
    use crate::models::unet::UNet2DConditionConfig;
    let (sdxl_width, sd15_width) = (
        UNet2DConditionConfig::sdxl().context_dim(),
        UNet2DConditionConfig::sd15().context_dim(),
    );
    let paths = exp.models.paths();
    for (kind, path) in paths.adapters() {
        let Ok(file) = crate::models::ip_adapter::AdapterFile::open_as(path, kind) else {
            continue;
        };
        if file.cross_dim == sdxl_width {
            return Some(format!(
                "the adapter {} makes {sdxl_width}-wide tokens",
                path.display()
            ));
        }
        if file.cross_dim == sd15_width {
            return None;
        }
    }
    if exp.cells.iter().any(|c| {
        c.params(&|n| std::path::PathBuf::from(n))
            .has_micro_conditioning()
    }) {
        return Some("the cells set SDXL's micro-conditioning keys".into());
    }
    let sdxl_names: Vec<&str> = crate::params::AdapterKind::ALL
        .into_iter()
        .filter_map(crate::roles::sdxl_adapter_file_name)
        .chain([crate::roles::SDXL_BIG_G_ADAPTER])
        .collect();
    paths.adapters().find_map(|(_, path)| {
        let name = path.file_name()?.to_str()?;
        sdxl_names
            .contains(&name)
            .then(|| format!("an adapter is named {name}, as h94/IP-Adapter's SDXL adapter"))
    })
}

fn from_flops(t: &Target, mut notes: Vec<String>) -> Estimate {
    let m = ModelFacts::of(t.exp);
    let ((w, h), _) = batch_at_largest(t);
    notes.push(format!(
        "UNet row-step at {w}x{h}: {:.4e} FLOP; {}",
        m.row_flops(w, h),
        m.unet_how
    ));
    if m.vae_params.is_none() {
        notes.push("VAE weights not here: SD1.5's VAE decode figure".into());
    }
    let flops = mean(t.exp, |c| {
        let (row, decode) = m.flops_at(c.width, c.height);
        rows(c) * c.steps as f64 * row * t.rows.share() + decode * decodes(c)
    }) + negtome_flops(t, &m);
    let steps = mean(t.exp, |c| c.steps as f64);
    let half = matches!(t.kind, Kind::Half | Kind::BFloat16);
    let (speed, speed_how) = if t.visible {
        let s = matmul_speed(t.device, t.kind);
        (
            s,
            format!("a measured matmul speed of {:.0} GFLOP/s", s / 1e9),
        )
    } else {
        let s = if half {
            ASSUMED_FP16_FLOPS
        } else {
            ASSUMED_FP32_FLOPS
        };
        notes.insert(
            0,
            format!(
                "{} is not visible here",
                crate::device::device_name(t.device)
            ),
        );
        (
            s,
            format!(
                "an assumed {ASSUMED_GPU}'s {:.0} TFLOP/s {}",
                s / 1e12,
                crate::device::dtype_name(t.kind)
            ),
        )
    };
    // Small models are bound by the cost of each operator call instead.
    let overhead = if t.device == Device::Cpu { 0.1 } else { 0.01 };
    Estimate {
        per_image: flops / (speed * EFFICIENCY) + overhead * (steps + 1.0),
        how: format!(
            "FLOP-based estimate, not measured: {:.1} GFLOP per image at {:.0}% of {speed_how}; {}",
            flops / 1e9,
            EFFICIENCY * 100.0,
            notes.join("; ")
        ),
    }
}

/// FLOP/s of a square matmul on `device` in `kind`.
fn matmul_speed(device: Device, kind: Kind) -> f64 {
    let n: i64 = if device == Device::Cpu { 1024 } else { 4096 };
    let kind = if device == Device::Cpu && kind == Kind::Half {
        Kind::Float
    } else {
        kind
    };
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let _ = a.matmul(&b);
    sync(device);
    let reps = if device == Device::Cpu { 3 } else { 20 };
    let t = Instant::now();
    for _ in 0..reps {
        let _ = a.matmul(&b);
    }
    sync(device);
    2.0 * (n as f64).powi(3) * reps as f64 / t.elapsed().as_secs_f64()
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Seconds of `f`, after one untimed call (first calls allocate and pick kernels): the
/// median of up to five timed calls within [`CALL_BUDGET_S`] (on a busy machine single
/// calls jump both ways).
fn time_call(device: Device, f: &dyn Fn() -> Tensor) -> f64 {
    let _ = f();
    sync(device);
    let mut times: Vec<f64> = Vec::new();
    while times.len() < 5 && times.iter().sum::<f64>() < CALL_BUDGET_S {
        let t = Instant::now();
        let _ = f();
        sync(device);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Loads the UNet and the VAE decoder on the device and times one UNet call at the batch
/// rows of the grid's largest size and one decode, then scales by pixels, steps and rows.
/// A size whose calls would take more than [`CALL_BUDGET_S`] (FLOP figures at a measured
/// matmul speed) is timed at fewer rows and pixels.
fn calibrate(t: &Target) -> Result<Estimate> {
    let models = t.exp.models.paths();
    if !models.pipeline.exists() {
        bail!("{} is not here yet", models.pipeline.display());
    }
    let fp16 = t.kind == Kind::Half;
    let source = crate::pipeline::source::open(&models.pipeline, fp16)?;
    let unet = source.unet(t.device, t.kind)?;
    let vae_file = match &models.vae {
        Some(path) => crate::pipeline::source::VaeFile::from_path(path, fp16)?,
        None => source.vae()?.context("the pipeline has no VAE")?,
    };
    let vae = vae_file.load(t.device, t.kind)?;
    let f = vae.config().scale_factor() as usize;
    let ((w, h), batch_rows) = batch_at_largest(t);
    // Keep each call short: fewer rows, then fewer pixels (same aspect).
    let (row_flops, decode_flops) = ModelFacts::of(t.exp).flops_at(w, h);
    let speed = matmul_speed(t.device, t.kind) * EFFICIENCY;
    let call_rows = if batch_rows as f64 * row_flops / speed > CALL_BUDGET_S {
        2.min(batch_rows)
    } else {
        batch_rows
    };
    let slowest = (call_rows as f64 * row_flops).max(decode_flops) / speed;
    let shrink = (CALL_BUDGET_S / slowest).sqrt().min(1.0);
    let side = |x: usize| (((x as f64 * shrink) as usize / f).max(1) * f).min(x);
    let (cw, ch) = (side(w), side(h));
    let (lh, lw) = ((ch / f) as i64, (cw / f) as i64);
    let cfg = unet.config();
    let opts = (t.kind, t.device);
    let latents = Tensor::randn([call_rows as i64, cfg.in_channels, lh, lw], opts);
    let text = Tensor::randn([call_rows as i64, 77, cfg.context_dim()], opts);
    let uses_images = t
        .exp
        .cells
        .iter()
        .any(|c| c.positive_image.is_some() || c.negative_image.is_some());
    let tokens = t.exp.cells.first().map_or(4, |c| {
        crate::models::ip_adapter::typical_tokens(
            c.adapter,
            crate::models::clip_vision::ClipVisionConfig::vit_h().num_positions(),
        )
    });
    let image_tokens = Tensor::randn([call_rows as i64, tokens, cfg.context_dim()], opts);
    let scale = Tensor::ones([call_rows as i64], (Kind::Float, t.device));
    let ip = uses_images.then(|| crate::models::unet::IpInput::uniform(&image_tokens, &scale));
    // SDXL's UNet also takes the pooled text and the six time ids.
    let pooled = cfg
        .pooled_text_dim()
        .map(|p| Tensor::randn([call_rows as i64, p], opts));
    let time_ids = Tensor::ones([call_rows as i64, 6], opts) * (cw.max(ch) as f64);
    let call = || {
        let hooks = crate::models::unet::Hooks {
            text_time: pooled
                .as_ref()
                .map(|text_embeds| crate::models::unet::TextTime {
                    text_embeds,
                    time_ids: &time_ids,
                }),
            ..Default::default()
        };
        unet.forward_hooked(&latents, 500.0, &text, ip, hooks)
    };
    let unet_s = tch::no_grad(|| time_call(t.device, &call));
    let z = Tensor::randn([1, vae.config().latent_channels, lh, lw], opts);
    let decode_s = tch::no_grad(|| time_call(t.device, &|| vae.decode(&z)));
    let per_row_step = unet_s / call_rows as f64;
    let pixels = (cw * ch) as f64;
    let per_image = mean(t.exp, |c| {
        let scale = (c.width * c.height) as f64 / pixels;
        scale * (rows(c) * c.steps as f64 * per_row_step * t.rows.share() + decode_s * decodes(c))
    });
    let (ref_pixel_steps, encoded) = t.negtome.per_image(t.exp.cells.len());
    let per_image = per_image
        + (ref_pixel_steps * per_row_step + encoded * decode_s * SD15_ENCODE / SD15_DECODE)
            / pixels;
    let scaled = if (cw, ch) == (w, h) {
        String::new()
    } else {
        format!(" (scaled to {w}x{h} by pixels)")
    };
    Ok(Estimate {
        per_image,
        how: format!(
            "calibrated on the spot: {:.2} ms per UNet row-step at {cw}x{ch} with {call_rows} rows, \
             {:.1} ms per decode{scaled}",
            per_row_step * 1e3,
            decode_s * 1e3
        ),
    })
}

/// The UNet row-steps of a grid's distinct images, made one cell at a time and with shared
/// trajectories in the batches the runner makes of them at a batch size, each also weighted
/// by its pixels.
#[derive(Debug, Default)]
pub struct RowSteps {
    pub alone: usize,
    pub shared: usize,
    pub alone_pixels: f64,
    pub shared_pixels: f64,
}

impl RowSteps {
    /// The share of the one-at-a-time UNet cost that sharing leaves (1 without sharing).
    pub fn share(&self) -> f64 {
        if self.alone_pixels > 0.0 {
            self.shared_pixels / self.alone_pixels
        } else {
            1.0
        }
    }
}

/// [`RowSteps`] of `exp` on the schedule of `sched_cfg`, the runner's batches at `batch`
/// cells (`run::batching::plan_batches`), the trees of `sampling::trajectory`.
pub fn row_steps(
    exp: &Experiment,
    sched_cfg: &crate::sampling::SchedulerConfig,
    batch: usize,
) -> Result<RowSteps> {
    use crate::sampling::trajectory::{Trajectories, row_steps_alone};
    let mut seen = std::collections::BTreeSet::new();
    let mut cells: Vec<crate::params::GenParams> = vec![];
    for c in &exp.cells {
        let p = c.params(&|n| std::path::PathBuf::from(n)).effective();
        if seen.insert(serde_json::to_string(&p)?) {
            cells.push(p);
        }
    }
    let mut out = RowSteps::default();
    for b in crate::run::batching::plan_batches(&cells, batch) {
        let group: Vec<&crate::params::GenParams> = b.iter().map(|&i| &cells[i]).collect();
        let (steps, w, h, kind, ..) = group[0].batch_key();
        let sched = crate::sampling::make_scheduler(kind, sched_cfg, steps)?;
        let s = sched.as_ref();
        let at = |i| crate::sampling::step_at(s, i, steps);
        let alone = row_steps_alone(&group);
        let shared = Trajectories::new(&group, &at, s.timesteps()).row_steps(&group);
        let pixels = (w * h) as f64;
        out.alone += alone;
        out.shared += shared;
        out.alone_pixels += alone as f64 * pixels;
        out.shared_pixels += shared as f64 * pixels;
    }
    Ok(out)
}

/// What NegToMe adds to an experiment, its batches taken as the groups of cells that share
/// a batch key (the runner may split a group into several batches, each with its own
/// reference rows: then this is a lower bound).
#[derive(Debug, Default)]
pub struct NegtomeCost {
    /// Cells that merge.
    pub cells: usize,
    /// Of those, the cells none of whose steps has a timestep in their active range (they
    /// make the image their method makes without NegToMe).
    pub never_active: usize,
    /// Reference rows summed over the steps, with their images' pixels.
    pub row_steps: usize,
    pub row_pixels: f64,
    /// Distinct (reference image, size): one VAE encode each, with their pixels.
    pub encodes: usize,
    pub encode_pixels: f64,
}

impl NegtomeCost {
    /// Per image of the grid (`n` cells): reference row-steps times their pixels, and
    /// VAE-encoded pixels.
    fn per_image(&self, n: usize) -> (f64, f64) {
        let n = n.max(1) as f64;
        (self.row_pixels / n, self.encode_pixels / n)
    }
}

pub fn negtome_cost(
    exp: &Experiment,
    sched_cfg: &crate::sampling::SchedulerConfig,
) -> Result<NegtomeCost> {
    let cells: Vec<crate::params::GenParams> = exp
        .cells
        .iter()
        .map(|c| c.params(&|n| std::path::PathBuf::from(n)))
        .filter(|p| p.negtome_image().is_some())
        .collect();
    let mut cost = NegtomeCost {
        cells: cells.len(),
        ..Default::default()
    };
    if cells.is_empty() {
        return Ok(cost);
    }
    let mut encoded = std::collections::BTreeSet::new();
    let mut keys = vec![];
    for key in cells.iter().map(|c| c.batch_key()) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for key in keys {
        let group: Vec<&crate::params::GenParams> =
            cells.iter().filter(|c| c.batch_key() == key).collect();
        let (steps, w, h, kind, ..) = key;
        let sched = crate::sampling::make_scheduler(kind, sched_cfg, steps)?;
        let row_steps = crate::sampling::negtome::reference_row_steps(&group, sched.timesteps());
        cost.never_active += group
            .iter()
            .filter(|c| !sched.timesteps().iter().any(|&t| c.negtome_active(t)))
            .count();
        let pixels = (w * h) as f64;
        cost.row_steps += row_steps;
        cost.row_pixels += row_steps as f64 * pixels;
        for image in crate::sampling::negtome::ReferenceRows::new(&group).images {
            encoded.insert((image, w, h));
        }
    }
    // The run encodes each image once per size, whatever the batches.
    cost.encodes = encoded.len();
    cost.encode_pixels = encoded.iter().map(|(_, w, h)| (w * h) as f64).sum();
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::LoadOptions;
    use crate::run::records::{Record, write_records};

    /// A one-cell grid of `method` with a negative text, so that three-row methods have
    /// something to subtract.
    fn parse(dir: &Path, size: usize, steps: usize, method: &str) -> Experiment {
        let text = format!(
            "[experiment]\nname = \"e\"\n[models]\npipeline = \"m/pipeline\"\n\
             ip_adapter = {{ base = \"m/ip-adapter_sd15.safetensors\" }}\n\
             image_encoder = \"m/image_encoder\"\n\
             init_random = {{ preset = \"tiny\", dir = \"m\" }}\n\
             [defaults]\nsize = {size}\nsteps = {steps}\nseeds = [1]\nmethod = \"{method}\"\n\
             negative = \"text\"\nnegative_prompt = \"grass\"\n"
        );
        crate::experiment::parse(&dir.join("e.toml"), text, &LoadOptions::default()).unwrap()
    }

    static NO_NEGTOME: NegtomeCost = NegtomeCost {
        cells: 0,
        never_active: 0,
        row_steps: 0,
        row_pixels: 0.0,
        encodes: 0,
        encode_pixels: 0.0,
    };

    static ALONE: RowSteps = RowSteps {
        alone: 0,
        shared: 0,
        alone_pixels: 0.0,
        shared_pixels: 0.0,
    };

    fn target<'a>(exp: &'a Experiment, results: &'a Path) -> Target<'a> {
        Target {
            exp,
            negtome: &NO_NEGTOME,
            results,
            device: Device::Cpu,
            kind: Kind::Float,
            visible: true,
            calibrate: false,
            rows: &ALONE,
        }
    }

    #[test]
    fn negtome_cells_with_no_step_in_their_range_are_counted() {
        let dir = std::env::temp_dir().join(format!("negimg-negtome-{}", std::process::id()));
        let text = "[experiment]\nname = \"e\"\n[models]\npipeline = \"m/pipeline\"\n\
             ip_adapter = { base = \"m/ip-adapter_sd15.safetensors\" }\n\
             image_encoder = \"m/image_encoder\"\n\
             init_random = { preset = \"tiny\", dir = \"m\" }\n\
             [images.lawn]\ngenerate = { prompt = \"a lawn\" }\n\
             [defaults]\nsize = 64\nseeds = [1]\nmethod = \"negtome\"\n\
             negative_image = \"lawn\"\n[grid]\nsteps = [4, 25]\n";
        let exp =
            crate::experiment::parse(&dir.join("e.toml"), text.into(), &LoadOptions::default())
                .unwrap();
        let sd15 = crate::sampling::SchedulerConfig::sd15_ddim();
        let cost = negtome_cost(&exp, &sd15).unwrap();
        // DDIM: 4 steps start at timestep 751, below 800; 25 steps start at 961.
        assert_eq!((cost.cells, cost.never_active), (2, 1));
        // One image at one size: encoded once although the cells make two batches.
        assert_eq!(cost.encodes, 1);
    }

    #[test]
    fn history_estimate_scales_with_pixels_steps_and_rows() {
        let dir = std::env::temp_dir().join(format!("negimg-plan-{}", std::process::id()));
        let small = parse(&dir, 64, 2, "uncond");
        let run = dir.join("results/e/20260101-000000");
        std::fs::create_dir_all(run.join("cells")).unwrap();
        let rec = Record::new("x", &small.cells[0], Status::Done, "images/x.png", 1.0, "");
        write_records(&run.join("records.csv"), &[rec]).unwrap();
        let manifest = serde_json::json!({"device": "cpu", "dtype": "fp32"});
        std::fs::write(run.join("manifest.json"), manifest.to_string()).unwrap();
        let results = dir.join("results");
        let same = estimate(&target(&small, &results));
        assert!((same.per_image - 1.0).abs() < 1e-9, "{}", same.how);
        let big = parse(&dir, 128, 8, "uncond");
        let scaled = estimate(&target(&big, &results));
        let want = 4.0 * (2.0 * 8.0 + 3.0) / (2.0 * 2.0 + 3.0);
        assert!((scaled.per_image - want).abs() < 1e-9, "{}", scaled.how);
        let three = parse(&dir, 128, 8, "perp_neg");
        let three = estimate(&target(&three, &results));
        let want = 4.0 * (3.0 * 8.0 + 3.0) / (2.0 * 2.0 + 3.0);
        assert!((three.per_image - want).abs() < 1e-9, "{}", three.how);
        // NegToMe's reference rows (8 row-steps) and one encode, at 128x128.
        let pixels = 128.0 * 128.0;
        let negtome = NegtomeCost {
            cells: 1,
            never_active: 0,
            row_steps: 8,
            row_pixels: 8.0 * pixels,
            encodes: 1,
            encode_pixels: pixels,
        };
        let with = estimate(&Target {
            negtome: &negtome,
            ..target(&big, &results)
        });
        let extra = (8.0 + 3.0 * SD15_ENCODE / SD15_DECODE) * pixels / (64.0 * 64.0 * 7.0);
        let want = scaled.per_image + extra;
        assert!((with.per_image - want).abs() < 1e-9, "{}", with.how);
        // A run on another device says nothing of this one.
        let cuda = Target {
            device: Device::Cuda(0),
            kind: Kind::Half,
            visible: false,
            ..target(&small, &results)
        };
        let other = estimate(&cuda);
        assert!(other.how.contains("ran on cpu fp32"), "{}", other.how);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
