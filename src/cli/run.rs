//! `negimg run FILE`: every cell of an experiment into `results/<experiment>/<run-id>/`,
//! resuming the latest run; then scores and plots when the grid is complete.
use super::Globals;
use crate::experiment::{self, Experiment, LoadOptions};
use crate::run::{self, RunChoice, RunOptions, Shard};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Device, Kind};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Experiment file (TOML).
    pub experiment: PathBuf,
    /// Start a new run instead of continuing the latest one.
    #[arg(long, conflicts_with = "run_id")]
    pub new: bool,
    /// Continue (or start) the run with this id; the shards of a Slurm array use it to
    /// share one folder.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Regenerate the cells that are already done.
    #[arg(long)]
    pub force: bool,
    /// Try the cells that failed (NaN...) again.
    #[arg(long)]
    pub retry_failed: bool,
    /// Make only shard K of N (1 <= K <= N): cells i with i mod N = K - 1.
    #[arg(long, default_value = "1/1")]
    pub shard: Shard,
    /// Most cells per UNet batch (default: estimated from free memory). A run keeps the size
    /// it started with, so resumed images are identical; other sizes agree within float
    /// rounding (an 8-bit pixel may differ by 1).
    #[arg(long)]
    pub batch: Option<usize>,
    /// The results root.
    #[arg(long, default_value = "results", env = "NEGIMG_RESULTS")]
    pub results: PathBuf,
    /// Accept grids of more than 10000 cells.
    #[arg(long)]
    pub allow_large: bool,
    /// Do not score and plot at the end.
    #[arg(long)]
    pub no_report: bool,
}

/// Set by Ctrl-C: the run stops after the batch in flight.
static STOP: AtomicBool = AtomicBool::new(false);

/// The device and dtype: `--dtype` wins, else `[defaults] dtype`, else auto.
pub fn device_and_dtype(exp: &Experiment, g: &Globals) -> Result<(Device, Kind)> {
    let device = g.device()?;
    let spec = match (&exp.dtype, g.dtype.as_str()) {
        (Some(d), "auto") => d.as_str(),
        (_, d) => d,
    };
    Ok((device, crate::device::parse_dtype(spec, device)?))
}

/// Creates `[models] init_random` models when their folder is missing.
pub fn ensure_random_models(exp: &Experiment) -> Result<()> {
    let Some(init) = &exp.init_random else {
        return Ok(());
    };
    let missing = exp.models.iter().any(|(_, m)| !m.path.exists());
    if !missing {
        return Ok(());
    }
    if let Some(parent) = init.dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // Shards started together make the models once.
    let _lock = run::fsio::FileLock::acquire(&init.dir.with_extension("lock"))?;
    if exp.models.iter().any(|(_, m)| !m.path.exists()) {
        eprintln!(
            "making random {} models in {} (init_random)",
            init.preset,
            init.dir.display()
        );
        init_random(&init.preset, &init.dir)?;
    }
    Ok(())
}

fn init_random(preset: &str, dir: &Path) -> Result<()> {
    super::models::init_random(preset.parse()?, dir, 0)
}

pub fn run(args: RunArgs, g: &Globals) -> Result<()> {
    let exp = experiment::load(
        &args.experiment,
        &LoadOptions {
            allow_large: args.allow_large,
            download: true,
        },
    )?;
    let (device, kind) = device_and_dtype(&exp, g)?;
    ensure_random_models(&exp)?;
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopping now");
            std::process::exit(super::EXIT_INTERRUPTED);
        }
        eprintln!("\nfinishing the images in flight (Ctrl-C again to stop at once)");
    })
    .context("cannot install the Ctrl-C handler")?;
    let opts = RunOptions {
        results: args.results.clone(),
        choice: match (&args.run_id, args.new) {
            (Some(id), _) => RunChoice::Id(id.clone()),
            (None, true) => RunChoice::New,
            (None, false) => RunChoice::Latest,
        },
        force: args.force,
        retry_failed: args.retry_failed,
        shard: args.shard,
        batch: args.batch,
        device: crate::device::device_name(device),
        dtype: crate::device::dtype_name(kind).to_string(),
        progress: true,
    };
    let models = exp.models.paths();
    let mut load = || -> Result<Box<dyn run::Generator>> {
        eprintln!(
            "loading models on {} ({})",
            crate::device::device_name(device),
            crate::device::dtype_name(kind)
        );
        let p = crate::pipeline::Pipeline::load(&models, device, kind, &mut super::loading)?;
        Ok(Box::new(p))
    };
    let s = run::runner::run(&exp, &opts, &mut load, &STOP)?;
    println!(
        "{}: {} cells{}; {} done before, {} made, {} failed ({:.1} s)",
        s.dir.display(),
        s.grid_cells,
        if args.shard.count > 1 {
            format!(
                " ({} in shard {}/{})",
                s.shard_cells, args.shard.index, args.shard.count
            )
        } else {
            String::new()
        },
        s.skipped,
        s.generated,
        s.failed,
        s.seconds
    );
    if s.failed_total > 0 {
        println!(
            "{} cell(s) failed: see the status and error columns of {}",
            s.failed_total,
            s.dir.join("records.csv").display()
        );
    }
    if s.interrupted {
        return Err(run::Interrupted.into());
    }
    if !s.complete {
        println!("other shards have cells left; the grid is not complete yet");
        return Ok(());
    }
    if args.no_report {
        return Ok(());
    }
    if exp.models.scorer.is_none() {
        println!("no [models] scorer: CLIP scores skipped");
    }
    let models = crate::scoring::ScoreModels {
        clip: exp.models.scorer.as_ref().map(|m| m.path.clone()),
        dino: exp.models.scorer_dino.as_ref().map(|m| m.path.clone()),
    };
    crate::scoring::score_all(&s.dir, &models, device, kind)
        .with_context(|| format!("scoring {}", s.dir.display()))?;
    crate::report::plot_run(&s.dir).with_context(|| format!("plotting {}", s.dir.display()))?;
    println!("report: {}", s.dir.join("index.html").display());
    Ok(())
}
