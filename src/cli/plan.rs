//! `negimg plan FILE`: checks an experiment without loading weights and prints its cells,
//! counts and a time estimate on the chosen device.
use super::Globals;
use crate::experiment::{self, Experiment, ImageSource, LoadOptions};
use crate::run::records::{Status, read_records};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Experiment file (TOML).
    pub experiment: PathBuf,
    /// Print every cell (default: the first 40).
    #[arg(long)]
    pub all: bool,
    /// Accept grids of more than 10000 cells.
    #[arg(long)]
    pub allow_large: bool,
    /// The results root (to base the estimate on earlier runs).
    #[arg(long, default_value = "results", env = "NEGIMG_RESULTS")]
    pub results: PathBuf,
}

pub fn run(args: PlanArgs, g: &Globals) -> Result<()> {
    let exp = experiment::load(
        &args.experiment,
        &LoadOptions {
            allow_large: args.allow_large,
            download: false,
        },
    )?;
    let (device, kind) = super::run::device_and_dtype(&exp, g)?;
    // Printed at the end, and a closed pipe (`plan ... | head`) is not an error.
    let mut out = String::new();
    macro_rules! say {
        ($($t:tt)*) => { writeln!(out, $($t)*).unwrap_or(()) }
    }
    say!("experiment {} ({})", exp.name, exp.path.display());
    if !exp.description.is_empty() {
        say!("  {}", exp.description);
    }
    say!("models:");
    for (role, m) in exp.models.iter() {
        let state = if m.path.exists() {
            m.path.display().to_string()
        } else if m.reference.starts_with("hf:") {
            "not in the Hugging Face cache yet (`run` or `negimg models fetch FILE` downloads it)"
                .to_string()
        } else {
            format!("{} (made by init_random)", m.path.display())
        };
        say!("  {:<16} {} -> {state}", role.name(), m.reference);
    }
    if !exp.images.is_empty() {
        say!("images:");
        let in_family = |n: &String| exp.families.values().any(|m| m.contains(n));
        for (name, source) in exp.images.iter().filter(|(n, _)| !in_family(n)) {
            match source {
                ImageSource::File(p) => say!("  {name:<12} {}", p.display()),
                ImageSource::Generate(s) => say!(
                    "  {name:<12} text-to-image: {:?} (seed {})",
                    s.prompt,
                    s.seed
                ),
                ImageSource::Derive(r) => say!("  {name:<12} derived: {}", r.caption()),
            }
        }
        for (family, members) in &exp.families {
            let recipes: Vec<&crate::derive::Recipe> = members
                .iter()
                .filter_map(|m| match exp.images.get(m) {
                    Some(ImageSource::Derive(r)) => Some(r),
                    _ => None,
                })
                .collect();
            let strengths: Vec<String> = recipes.iter().map(|r| r.strength.to_string()).collect();
            say!(
                "  {family:<12} derived family of {}: {} at strength {} ({} ... {})",
                members.len(),
                recipes
                    .first()
                    .map_or(String::new(), |r| r.family_caption()),
                strengths.join(", "),
                members[0],
                members[members.len() - 1]
            );
        }
    }
    say!("grid: {} = {} cells", exp.grid.shape(), exp.cells.len());
    let varying = exp.grid.varying();
    let shown = if args.all { exp.cells.len() } else { 40 };
    for (i, c) in exp.cells.iter().enumerate().take(shown) {
        say!(
            "  {:>5}  {}",
            i + 1,
            if varying.is_empty() {
                "(defaults)".to_string()
            } else {
                c.describe(&varying)
            }
        );
    }
    if exp.cells.len() > shown {
        say!("  ... {} more (--all prints them)", exp.cells.len() - shown);
    }
    let mut groups: Vec<((usize, usize, usize, _, _), usize)> = Vec::new();
    for c in &exp.cells {
        let key = c.params(&|n| PathBuf::from(n)).batch_key();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => groups.push((key, 1)),
        }
    }
    say!("batches (cells sharing steps, size, scheduler, adapter):");
    for ((steps, w, h, sched, adapter), n) in &groups {
        say!("  {n:>6} cells: {steps} steps {w}x{h} {sched} {adapter}");
    }
    let three_rows = exp.cells.iter().filter(|c| c.method.rows() == 3).count();
    if three_rows > 0 {
        say!(
            "UNet rows per step: {three_rows} cells take 3 (three_branch, perp_neg), {} take 2",
            exp.cells.len() - three_rows
        );
    }
    let negtome = negtome_cost(&exp)?;
    if negtome.cells > 0 {
        say!(
            "NegToMe: {} cells merge against {} reference images: {} more UNet rows summed \
             over the steps (each reference row only at the steps where a cell merges, \
             shared by the cells of a batch), {} VAE encodes",
            negtome.cells,
            negtome.encodes,
            negtome.row_steps,
            negtome.encodes
        );
    }
    // Cells that differ only in what their negative mode ignores make one image.
    let images: std::collections::BTreeSet<String> = exp
        .cells
        .iter()
        .map(|c| serde_json::to_string(&c.params(&|n| PathBuf::from(n)).effective()))
        .collect::<std::result::Result<_, _>>()?;
    if images.len() < exp.cells.len() {
        say!(
            "{} images for {} cells: cells that differ only in a parameter their negative \
             mode ignores share one image file (each keeps its own record)",
            images.len(),
            exp.cells.len()
        );
    }
    let generated_inputs = exp
        .images
        .values()
        .filter(|s| matches!(s, ImageSource::Generate(_)))
        .count();
    let (per_image, how) = estimate(&exp, &negtome, &args.results, device, kind);
    let total = per_image * (images.len() + generated_inputs) as f64;
    say!(
        "estimate on {} {}: {} ({:.2} s per image, {how})",
        crate::device::device_name(device),
        crate::device::dtype_name(kind),
        duration(total),
        per_image
    );
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}

fn duration(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Seconds per image: measured by the latest run of this experiment when it has images,
/// else FLOPs (scaled from SD1.5's by the UNet and VAE parameter counts read from the
/// safetensors headers) over a measured matmul speed.
fn estimate(
    exp: &Experiment,
    negtome: &NegtomeCost,
    results: &Path,
    device: Device,
    kind: Kind,
) -> (f64, String) {
    let exp_dir = results.join(&exp.name);
    if let Some(last) = crate::run::layout::runs(&exp_dir).last()
        && let Ok(records) = read_records(&exp_dir.join(last).join("records.csv"))
    {
        let done: Vec<_> = records
            .iter()
            .filter(|r| r.status == Status::Done)
            .collect();
        if !done.is_empty() {
            // Seconds per unit of cost measured there, times the cost of this grid's images.
            let rate = done.iter().map(|r| r.seconds).sum::<f64>()
                / done
                    .iter()
                    .map(|r| image_cost(r.steps, r.width, r.height))
                    .sum::<f64>();
            let mean_cost = exp
                .cells
                .iter()
                .map(|c| image_cost(c.steps, c.width, c.height))
                .sum::<f64>()
                / exp.cells.len().max(1) as f64;
            return (
                rate * mean_cost,
                format!(
                    "measured by run {last}: {} images, scaled by pixels and steps",
                    done.len()
                ),
            );
        }
    }
    let (unet, vae) = pipeline_params(&exp.models.pipeline.path);
    // SD1.5: 859.5M UNet parameters, 1.607 TFLOP per CFG step (2 UNet rows) at 512x512;
    // VAE decode 2.51 TFLOP. The three-row negative methods take 3 rows per step.
    let unet_row = |pixels: f64| 1.607e12 / 2.0 * pixels / (512.0 * 512.0) * unet / 859.5e6;
    let flops_per_cell = |steps: usize, rows: usize, pixels: f64| {
        let scale = pixels / (512.0 * 512.0);
        (steps * rows) as f64 * unet_row(pixels) + 2.51e12 * scale * vae / 83.65e6
    };
    let n = exp.cells.len().max(1) as f64;
    let flops: f64 = exp
        .cells
        .iter()
        .map(|c| flops_per_cell(c.steps, c.method.rows(), (c.width * c.height) as f64))
        .sum::<f64>()
        / n
        + (negtome.row_flops(&unet_row) + negtome.encode_flops(vae)) / n;
    let speed = matmul_speed(device, kind);
    let steps =
        exp.cells.iter().map(|c| c.steps).sum::<usize>() as f64 / exp.cells.len().max(1) as f64;
    // Convolutions and attention reach about a third of matmul speed (measured on an H200);
    // small models are bound by the cost of each operator call instead.
    let overhead = if device == Device::Cpu { 0.1 } else { 0.01 };
    let seconds = flops / (speed * 0.35) + overhead * (steps + 1.0);
    (
        seconds,
        format!(
            "from {:.1} GFLOP per image at {:.0} GFLOP/s matmul speed; rough",
            flops / 1e9,
            speed / 1e9
        ),
    )
}

/// What NegToMe adds to an experiment, its batches taken as the groups of cells that share
/// a batch key (the runner may split a group into several batches, each with its own
/// reference rows: then this is a lower bound).
#[derive(Debug, Default)]
struct NegtomeCost {
    /// Cells that merge.
    cells: usize,
    /// Reference rows summed over the steps, with their images' pixels.
    row_steps: usize,
    row_pixels: f64,
    /// Distinct (reference image, size): one VAE encode each, with their pixels.
    encodes: usize,
    encode_pixels: f64,
}

impl NegtomeCost {
    fn row_flops(&self, unet_row: &dyn Fn(f64) -> f64) -> f64 {
        // `row_pixels` sums the pixels of every row-step, so one row's cost per pixel does.
        unet_row(self.row_pixels)
    }

    /// SD1.5's VAE encoder: 1.12 TFLOP at 512x512 (torch FlopCounterMode, as the decode's 2.51),
    /// scaled by the VAE's parameters as the decode is.
    fn encode_flops(&self, vae: f64) -> f64 {
        1.12e12 * self.encode_pixels / (512.0 * 512.0) * vae / 83.65e6
    }
}

fn negtome_cost(exp: &Experiment) -> Result<NegtomeCost> {
    let cells: Vec<crate::params::GenParams> = exp
        .cells
        .iter()
        .map(|c| c.params(&|n| PathBuf::from(n)))
        .filter(|p| p.negtome_image().is_some())
        .collect();
    let mut cost = NegtomeCost {
        cells: cells.len(),
        ..Default::default()
    };
    if cells.is_empty() {
        return Ok(cost);
    }
    let folder = exp
        .models
        .pipeline
        .path
        .join("scheduler/scheduler_config.json");
    let sched_cfg = if folder.is_file() {
        crate::sampling::SchedulerConfig::from_file(&folder)?
    } else {
        crate::sampling::SchedulerConfig::sd15_ddim()
    };
    let mut keys = vec![];
    for key in cells.iter().map(|c| c.batch_key()) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for key in keys {
        let group: Vec<&crate::params::GenParams> =
            cells.iter().filter(|c| c.batch_key() == key).collect();
        let (steps, w, h, kind, _) = key;
        let sched = crate::sampling::make_scheduler(kind, &sched_cfg, steps)?;
        let row_steps = crate::sampling::negtome::reference_row_steps(&group, sched.timesteps());
        let pixels = (w * h) as f64;
        let images = crate::sampling::negtome::ReferenceRows::new(&group)
            .images
            .len();
        cost.row_steps += row_steps;
        cost.row_pixels += row_steps as f64 * pixels;
        cost.encodes += images;
        cost.encode_pixels += images as f64 * pixels;
    }
    Ok(cost)
}

/// The relative cost of one image: two UNet rows (CFG's cond and uncond) per step and
/// one VAE decode (about three rows in SD1.5), each proportional to the pixels.
fn image_cost(steps: usize, width: usize, height: usize) -> f64 {
    (width * height) as f64 * (2.0 * steps as f64 + 3.0)
}

/// Parameters of the UNet and the VAE, from the safetensors headers (no weights read).
/// Unknown layouts count as SD1.5.
fn pipeline_params(pipeline: &Path) -> (f64, f64) {
    let count = |sub: &str| -> Option<f64> {
        let files = crate::weights::hub::component_files(
            pipeline,
            crate::weights::hub::Component::Pipeline,
        )
        .ok()?;
        let file = files.iter().find(|f| {
            f.starts_with(pipeline.join(sub)) && f.extension().is_some_and(|e| e == "safetensors")
        })?;
        header_params(file).ok()
    };
    (
        count("unet").unwrap_or(859.5e6),
        count("vae").unwrap_or(83.65e6),
    )
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
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let _ = a.matmul(&b);
    sync();
    let reps = if device == Device::Cpu { 3 } else { 20 };
    let t = std::time::Instant::now();
    for _ in 0..reps {
        let _ = a.matmul(&b);
    }
    sync();
    2.0 * (n as f64).powi(3) * reps as f64 / t.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::records::{Record, write_records};

    #[test]
    fn history_estimate_scales_with_pixels_and_steps() {
        let dir = std::env::temp_dir().join(format!("negimg-plan-{}", std::process::id()));
        let text = |size: usize, steps: usize| {
            format!(
                "[experiment]\nname = \"e\"\n[models]\npipeline = \"m/pipeline\"\n\
                 ip_adapter = {{ base = \"m/ip-adapter_sd15.safetensors\" }}\n\
                 image_encoder = \"m/image_encoder\"\n\
                 init_random = {{ preset = \"tiny\", dir = \"m\" }}\n\
                 [defaults]\nsize = {size}\nsteps = {steps}\nseeds = [1]\n"
            )
        };
        let parse = |t: String| {
            crate::experiment::parse(&dir.join("e.toml"), t, &LoadOptions::default()).unwrap()
        };
        let small = parse(text(64, 2));
        let run = dir.join("results/e/20260101-000000");
        std::fs::create_dir_all(run.join("cells")).unwrap();
        let rec = Record::new("x", &small.cells[0], Status::Done, "images/x.png", 1.0, "");
        write_records(&run.join("records.csv"), &[rec]).unwrap();
        let results = dir.join("results");
        let none = NegtomeCost::default();
        let (same, _) = estimate(&small, &none, &results, Device::Cpu, Kind::Float);
        assert!((same - 1.0).abs() < 1e-9, "{same}");
        let big = parse(text(128, 8));
        let (scaled, how) = estimate(&big, &none, &results, Device::Cpu, Kind::Float);
        let want = 4.0 * (2.0 * 8.0 + 3.0) / (2.0 * 2.0 + 3.0);
        assert!((scaled - want).abs() < 1e-9, "{scaled} vs {want}: {how}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
