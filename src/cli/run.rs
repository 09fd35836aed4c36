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
    /// Exit 0 although cells failed (they are listed in records.csv either way).
    #[arg(long)]
    pub allow_failed: bool,
}

/// Set by Ctrl-C: the run stops after the batch in flight.
static STOP: AtomicBool = AtomicBool::new(false);

/// The device and dtype: `--dtype` wins, else `[defaults] dtype`, else auto.
pub fn device_and_dtype(exp: &Experiment, g: &Globals) -> Result<(Device, Kind)> {
    let device = g.device()?;
    Ok((device, dtype_for(exp, g, device)?))
}

/// The dtype on `device`: `--dtype` wins, else `[defaults] dtype`, else auto.
pub fn dtype_for(exp: &Experiment, g: &Globals, device: Device) -> Result<Kind> {
    let spec = match (&exp.dtype, g.dtype.as_str()) {
        (Some(d), "auto") => d.as_str(),
        (_, d) => d,
    };
    crate::device::parse_dtype(spec, device)
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
            eprintln!("\nstopping now (images and records written so far are kept)");
            // _exit, not exit: exit runs libtorch's static destructors while the main thread
            // is still inside a UNet call, which aborts with a long trace.
            // SAFETY: ends the process at once; every file is written atomically.
            unsafe { libc::_exit(super::EXIT_INTERRUPTED) };
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
    println!("{}", summary_line(&s, args.shard));
    if s.interrupted {
        return Err(run::Interrupted.into());
    }
    if !s.complete {
        println!("other shards have cells left; the grid is not complete yet");
        return failed_cells(&s, args.allow_failed);
    }
    if !args.no_report {
        report(&exp, &s, device, kind)?;
    }
    failed_cells(&s, args.allow_failed)
}

/// One line for the call, each cell counted once: made now (done or failed), kept from
/// before, and the grid's failed cells (one count of failures).
fn summary_line(s: &run::runner::Summary, shard: Shard) -> String {
    let of_shard = if shard.count > 1 {
        format!(
            " ({} in shard {}/{})",
            s.shard_cells, shard.index, shard.count
        )
    } else {
        String::new()
    };
    let failed = if s.failed_total > 0 {
        format!(
            "; {} cell(s) of the grid failed: see the status and error columns of {}",
            s.failed_total,
            s.dir.join("records.csv").display()
        )
    } else {
        String::new()
    };
    format!(
        "{}: {} cells{of_shard}; {} made now, {} kept from before ({:.1} s){failed}",
        s.dir.display(),
        s.grid_cells,
        s.generated + s.failed,
        s.skipped,
        s.seconds
    )
}

/// A run with failed cells is an error unless `--allow-failed`.
fn failed_cells(s: &run::runner::Summary, allow_failed: bool) -> Result<()> {
    if s.failed_total > 0 && !allow_failed {
        anyhow::bail!(
            "{} cell(s) failed (--retry-failed tries them again, --allow-failed exits 0)",
            s.failed_total
        );
    }
    Ok(())
}

/// Scores and plots a complete run.
fn report(exp: &Experiment, s: &run::runner::Summary, device: Device, kind: Kind) -> Result<()> {
    if exp.models.scorer.is_none() {
        println!("no [models] scorer: CLIP scores skipped");
    }
    let models = crate::scoring::ScoreModels {
        clip: exp.models.scorer.as_ref().map(|m| m.path.clone()),
        dino: exp.models.scorer_dino.as_ref().map(|m| m.path.clone()),
        aesthetic: exp.models.aesthetic.as_ref().map(|m| m.path.clone()),
    };
    crate::scoring::score_all(&s.dir, &models, device, kind)
        .with_context(|| format!("scoring {}", s.dir.display()))?;
    crate::report::plot_run(&s.dir).with_context(|| format!("plotting {}", s.dir.display()))?;
    println!("report: {}", s.dir.join("index.html").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(generated: usize, failed: usize, failed_total: usize) -> run::runner::Summary {
        run::runner::Summary {
            dir: "results/x/1".into(),
            run_id: "1".into(),
            grid_cells: 8,
            shard_cells: 8,
            skipped: 8 - generated - failed,
            generated,
            failed,
            failed_total,
            complete: true,
            interrupted: false,
            seconds: 1.0,
        }
    }

    #[test]
    fn failed_cells_fail_the_run_unless_allowed_and_are_counted_once() {
        // A rerun that kept 4 failed cells from before.
        let s = summary(0, 0, 4);
        let err = failed_cells(&s, false).unwrap_err().to_string();
        assert!(
            err.contains("4 cell(s) failed") && err.contains("--allow-failed"),
            "{err}"
        );
        assert!(failed_cells(&s, true).is_ok());
        assert!(failed_cells(&summary(8, 0, 0), false).is_ok());
        let line = summary_line(&s, Shard::default());
        assert!(!line.contains("0 failed"), "{line}");
        assert_eq!(line.matches("failed").count(), 1, "{line}");
        assert!(line.contains("4 cell(s) of the grid failed"), "{line}");
    }
}
