//! `negimg bench`: generation speed on random weights (no download), the same work as
//! `tools/diffusers_baseline.py`: IP-Adapter with a positive and a negative image prompt per
//! image (both encoded every run), DDIM (euler_ancestral for `dng`, which refuses DDIM), CFG
//! 7.5, VAE decode included. Prints one JSON line.
use super::Globals;
use crate::device::cuda_mem_info;
use crate::models::coder_flops::{vae_decode_flops, vae_encode_flops, vision_flops};
use crate::models::unet_flops::{self, unet_row_flops};
use crate::params::{AdapterKind, GenParams, Method, NegativeMode, SchedulerKind};
use crate::pipeline::{CellOutcome, FlopShapes, Pipeline, RandomPreset};
use crate::roles::ModelSet;
use crate::sampling::{make_scheduler, methods, negtome};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tch::Device;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model shapes: tiny, tiny_sd15, tiny_sdxl (a few MB), sd15 (SD1.5 with ViT-H and
    /// ip-adapter_sd15), sdxl (SDXL base with both text encoders, ViT-H and
    /// ip-adapter_sdxl_vit-h: 15.3 GiB of weights in fp32, 7.6 GiB in fp16, built in memory;
    /// measured on a CPU only, see the README's Benchmark). Default sd15 on CUDA, tiny on the
    /// CPU (SD1.5 on a CPU takes minutes per image). `tflops`: the FLOPs counted on the
    /// loaded models' configs (any preset or --models) over the median time.
    #[arg(long)]
    pub preset: Option<RandomPreset>,
    /// Images per batch (one UNet call per step for all of them).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Image side in pixels (default: the preset's native side, 512 for sd15, 1024 for sdxl,
    /// 64 for the tiny presets; with --models, the UNet's sample_size times the VAE's scale).
    #[arg(long)]
    pub size: Option<usize>,
    #[arg(long, value_enum, default_value = "base")]
    pub adapter: super::generate::AdapterArg,
    /// Timed repetitions after one warm-up run; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long, default_value_t = 7.5)]
    pub cfg: f64,
    /// The negative method of every image (uncond, subtract, three_branch, perp_neg,
    /// negtome, cond_negative, sega, dng, nag; at their default parameters): the three-row
    /// methods (three_branch, perp_neg, sega, dng) add a UNet row per step, cond_negative
    /// and nag a second image attention in the cond row, negtome a reference row per image
    /// at its active steps and one VAE encode per image.
    #[arg(long, default_value = "uncond", value_parser = super::generate::parse_method)]
    pub method: Method,
    /// The scheduler (default: ddim, as the peer's; euler_ancestral for dng).
    #[arg(long, value_enum)]
    pub scheduler: Option<super::generate::SchedulerArg>,
    /// Load the models from a folder made by `negimg models init-random` (or laid out like
    /// one) instead of building random weights in memory: to time the same files as the
    /// peer's `diffusers_baseline.py --unet DIR/pipeline/unet --vae ... --ip-adapter ...`.
    #[arg(long, value_name = "DIR", conflicts_with = "preset")]
    pub models: Option<std::path::PathBuf>,
    /// Record attention maps as `[maps] attention = true` does (copied to the CPU once per
    /// batch, inside the timing): to measure their cost against a run without.
    #[arg(long)]
    pub maps: bool,
}

pub fn run(args: BenchArgs, g: &Globals) -> Result<()> {
    let (device, kind) = g.device_and_dtype()?;
    let preset = args.preset.unwrap_or(match device {
        Device::Cuda(_) => RandomPreset::Sd15,
        _ => RandomPreset::Tiny,
    });
    let size = match &args.models {
        Some(dir) => args.size.unwrap_or(models_dir_size(dir)?),
        None => args.size.unwrap_or(preset.default_size()),
    };
    if args.batch == 0 || args.reps == 0 || args.steps == 0 {
        bail!("--batch, --reps and --steps must be at least 1");
    }
    let adapter = args.adapter.kind();
    let scheduler = args.scheduler.map_or(
        default_scheduler(args.method),
        super::generate::scheduler_kind,
    );
    let scratch = Scratch::new()?;
    let mut pipeline = match &args.models {
        Some(dir) => Pipeline::load(
            &models_with_adapter(dir, adapter)?,
            device,
            kind,
            &mut super::loading,
        )?,
        None => Pipeline::random(preset, adapter, device, kind, scratch.path())?,
    };

    pipeline.set_attention_maps(args.maps);
    let memory = MemorySampler::start(device);
    let mut times = Vec::new();
    for rep in 0..=args.reps {
        // Fresh image files every run, so the image encoder runs every time (as the peer's).
        let cells = cells(scratch.path(), rep, &args, (size, scheduler), adapter)?;
        sync(device);
        let t = Instant::now();
        // One batch of --batch cells, as the peer's one pipeline call.
        let out = pipeline.generate(&cells, &mut |_, _| {})?;
        let maps = pipeline.take_attention_maps();
        if args.maps && maps.len() != cells.len() {
            bail!("--maps: {} of {} images have maps", maps.len(), cells.len());
        }
        sync(device);
        let elapsed = t.elapsed().as_secs_f64();
        if let Some(CellOutcome::Failed(reason)) =
            out.iter().find(|o| matches!(o, CellOutcome::Failed(_)))
        {
            log::warn!("a benchmark image failed ({reason}); timing kept");
        }
        if rep > 0 {
            times.push(elapsed);
        }
    }
    let peak = memory.stop();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    // Each image has its own negative image, so NegToMe adds one reference row per image.
    let reference_rows = {
        let sample = cells(scratch.path(), 0, &args, (size, scheduler), adapter)?;
        let refs: Vec<&GenParams> = sample.iter().take(1).collect();
        let sched = make_scheduler(scheduler, pipeline.scheduler_config(), args.steps)?;
        negtome::reference_row_steps(&refs, sched.timesteps())
    };
    let rows = crate::sampling::methods::of(args.method)
        .cost()
        .row_equivalents()
        * args.steps as f64
        + reference_rows as f64;
    let encodes = if reference_rows > 0 { 1.0 } else { 0.0 };
    let flops = image_flops(
        &pipeline.flop_shapes(adapter),
        (size, pipeline.vae_scale()),
        rows,
        encodes,
    );
    let tflops = flops * args.batch as f64 / median / 1e12;
    let note = match (args.preset, preset, device) {
        _ if args.models.is_some() => "models loaded from --models",
        (None, RandomPreset::Tiny, _) => "tiny preset chosen automatically on the CPU",
        (_, RandomPreset::Tiny | RandomPreset::TinySd15 | RandomPreset::TinySdxl, _) => {
            "tiny preset"
        }
        (_, _, Device::Cuda(_)) => {
            "peak memory: highest device memory in use (cudaMemGetInfo, sampled every 5 ms; includes the CUDA context and the allocator's cache)"
        }
        _ => "peak memory is reported on CUDA only",
    };
    let line = serde_json::json!({
        "tool": "negimg",
        "preset": if args.models.is_some() { serde_json::Value::Null } else { serde_json::json!(preset) },
        "models": args.models.as_ref().map(|d| d.display().to_string()),
        "device": match device { Device::Cuda(i) => format!("cuda:{i}"), _ => "cpu".into() },
        "dtype": crate::device::dtype_name(kind),
        "size": size,
        "steps": args.steps,
        "batch": args.batch,
        "adapter": adapter,
        "method": args.method,
        "scheduler": scheduler,
        "maps": args.maps,
        "unet_rows_per_image": rows,
        "reps": args.reps,
        "median_s": round(median, 4),
        "images_per_s": round(args.batch as f64 / median, 3),
        "s_per_step": round(median / args.steps as f64, 5),
        "peak_mem_gib": peak.map(|b| round(b as f64 / (1u64 << 30) as f64, 2)),
        "tflops": significant(tflops, 4),
        "note": note,
    });
    println!("{line}");
    Ok(())
}

/// The models of an init-random folder with only the adapter timed (the peer loads one):
/// the others' image projections would only take memory.
fn models_with_adapter(dir: &Path, adapter: AdapterKind) -> Result<ModelSet<PathBuf>> {
    let mut models = ModelSet::from_models_dir(dir);
    if models.adapter(adapter).is_none() {
        bail!(
            "--models {}: no {adapter} IP-Adapter file in it (--adapter {adapter})",
            dir.display()
        );
    }
    for other in AdapterKind::ALL.into_iter().filter(|&k| k != adapter) {
        models.set_adapter(other, None);
    }
    Ok(models)
}

/// FLOPs of one benchmark image at `size` pixels a side (`vae_scale` pixels per latent
/// pixel), counted on the loaded models' configs: `rows` UNet rows (77 text tokens and the
/// adapter's image tokens) at the latent size, one VAE decode, `encodes` VAE encodes
/// (NegToMe's reference), two image-encoder passes (the positive and the negative image). The
/// text encoders (one pass per prompt, under 1% of an SD1.5 image) are left out.
fn image_flops(
    shapes: &FlopShapes,
    (size, vae_scale): (usize, usize),
    rows: f64,
    encodes: f64,
) -> f64 {
    let side = size as i64;
    let latent = (size / vae_scale) as i64;
    let ctx = unet_flops::Context {
        text_tokens: 77,
        ip_tokens: shapes.ip_tokens.unwrap_or(0),
    };
    unet_row_flops(shapes.unet, latent, latent, ctx) * rows
        + vae_decode_flops(shapes.vae, latent, latent)
        + vae_encode_flops(shapes.vae, side, side) * encodes
        + 2.0 * vision_flops(shapes.image_encoder)
}

/// `x` rounded to `digits` significant digits.
fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// The UNet's native image side (`sample_size` x VAE scale), as diffusers' pipeline defaults it.
fn models_dir_size(dir: &Path) -> Result<usize> {
    let folder = crate::weights::pipeline_folder::PipelineFolder::open(&dir.join("pipeline"))?;
    let unet = crate::models::unet::UNet2DConditionConfig::from_json_file(&folder.unet.config)?;
    let vae = crate::models::vae::AutoencoderKLConfig::from_json_file(&folder.vae.config)?;
    let sample = unet.sample_size.unwrap_or(64);
    Ok(sample as usize * vae.scale_factor() as usize)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// DDIM, or euler_ancestral for a method that refuses DDIM (dng).
fn default_scheduler(method: Method) -> SchedulerKind {
    let mut c = GenParams::new(0);
    c.method = method;
    match methods::of(method).check(&c) {
        Err(("scheduler", _)) => SchedulerKind::EulerAncestral,
        _ => SchedulerKind::Ddim,
    }
}

/// `batch` cells of `size` on `scheduler`, with their own positive and negative image
/// (random pixels); what their method refuses is an error.
fn cells(
    dir: &Path,
    rep: usize,
    a: &BenchArgs,
    (size, scheduler): (usize, SchedulerKind),
    adapter: AdapterKind,
) -> Result<Vec<GenParams>> {
    let mut cells = Vec::new();
    for i in 0..a.batch {
        let mut paths = Vec::new();
        for which in ["pos", "neg"] {
            let path = dir.join(format!("{which}-{rep}-{i}.png"));
            let seed = (rep * 7919 + i * 2 + (which == "neg") as usize) as u32;
            let img = image::RgbImage::from_fn(224, 224, |x, y| {
                let v = x
                    .wrapping_mul(2654435761)
                    .wrapping_add(y.wrapping_mul(40503))
                    .wrapping_add(seed.wrapping_mul(97));
                image::Rgb([(v >> 3) as u8, (v >> 11) as u8, (v >> 19) as u8])
            });
            img.save(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            paths.push(path);
        }
        let mut c = GenParams::new(i as u64);
        c.negative = NegativeMode::Image;
        c.negative_image = paths.pop();
        c.positive_image = paths.pop();
        c.adapter = adapter;
        c.positive.weight = 0.7;
        c.negative_branch.weight = 0.7;
        c.cfg = a.cfg;
        c.steps = a.steps;
        c.scheduler = scheduler;
        c.width = size;
        c.height = size;
        c.method = a.method;
        super::generate::check_method(&c)?;
        cells.push(c);
    }
    Ok(cells)
}

/// Samples the device memory in use on a thread; `stop` gives the highest value seen.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemorySampler {
    fn start(device: Device) -> MemorySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = match device {
            Device::Cuda(i) if cuda_mem_info(i).is_some() => {
                let (stop, peak) = (stop.clone(), peak.clone());
                Some(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some((free, total)) = cuda_mem_info(i) {
                            peak.fetch_max(total - free, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }))
            }
            _ => None,
        };
        MemorySampler { stop, peak, thread }
    }

    fn stop(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take()?;
        let _ = thread.join();
        Some(self.peak.load(Ordering::Relaxed))
    }
}

/// A temporary folder removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("negimg-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_keep_only_the_timed_adapter_and_a_missing_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [AdapterKind::Base, AdapterKind::Plus] {
            std::fs::write(dir.path().join(crate::roles::adapter_file_name(kind)), b"").unwrap();
        }
        let models = models_with_adapter(dir.path(), AdapterKind::Plus).unwrap();
        let kinds: Vec<AdapterKind> = models.adapters().map(|(k, _)| k).collect();
        assert_eq!(kinds, [AdapterKind::Plus]);
        let msg = models_with_adapter(dir.path(), AdapterKind::Light)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&dir.path().display().to_string()) && msg.contains("light"),
            "{msg}"
        );
    }

    /// One SD1.5 image at 512² (30 CFG steps, one VAE encode, two ViT-H passes, no image
    /// tokens) counted on the sd15 preset's configs comes within 2% of the figures torch's
    /// FlopCounterMode gave on the real models (REFERENCE.md: 1.607 TFLOP per CFG step, a
    /// decode 2.51, an encode 1.12, a ViT-H pass 0.33), the constants bench used before.
    #[test]
    fn bench_image_flops_of_sd15_match_the_measured_figures() {
        let shapes = RandomPreset::Sd15.shapes();
        let flop_shapes = FlopShapes {
            unet: &shapes.unet,
            vae: &shapes.vae,
            image_encoder: &shapes.vision,
            ip_tokens: Some(0),
        };
        let ours = image_flops(&flop_shapes, (512, 8), 60.0, 1.0);
        let measured = (1.607 * 30.0 + 2.51 + 1.12 + 2.0 * 0.33) * 1e12;
        assert!(
            (ours / measured - 1.0).abs() < 0.02,
            "{ours:.4e} vs {measured:.4e}"
        );
        let with_tokens = FlopShapes {
            ip_tokens: Some(4),
            ..flop_shapes
        };
        assert!(image_flops(&with_tokens, (512, 8), 60.0, 1.0) > ours);
        assert_eq!(significant(0.0123456, 4), 0.01235);
        assert_eq!(significant(51.3849, 4), 51.38);
    }
}
