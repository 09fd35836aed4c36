//! `negimg slurm FILE --jobs N`: an sbatch job-array script whose tasks run the shards of one
//! experiment into one run folder (`--run-id`), each with `--gpus N` GPUs (0: a CPU
//! partition, no `--gres` line) and the `--device`/`--dtype` given to `negimg slurm`.
use super::Globals;
use crate::experiment::{self, LoadOptions};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct SlurmArgs {
    /// Experiment file (TOML).
    pub experiment: PathBuf,
    /// Number of array tasks (shards).
    #[arg(long)]
    pub jobs: usize,
    /// Script to write (default: slurm-<experiment>-<run-id>.sbatch here).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The run the shards share (default: a new one named after the current time).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit per task.
    #[arg(long, default_value = "04:00:00")]
    pub time: String,
    #[arg(long, default_value_t = 8)]
    pub cpus: usize,
    /// GPUs per task (`--gres=gpu:N`); 0 for a CPU partition (no --gres line).
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
    #[arg(long, default_value = "64G")]
    pub mem: String,
    /// The results root the tasks write to.
    #[arg(long, default_value = "results", env = "NEGIMG_RESULTS")]
    pub results: PathBuf,
    /// Accept grids of more than 10000 cells.
    #[arg(long)]
    pub allow_large: bool,
}

pub fn run(args: SlurmArgs, g: &Globals) -> Result<()> {
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let exp = experiment::load(
        &args.experiment,
        &LoadOptions {
            allow_large: args.allow_large,
            download: false,
        },
    )?;
    if args.jobs > exp.cells.len() {
        eprintln!(
            "warning: {} tasks for {} cells: tasks {}..{} will have no cell to make (use --jobs {})",
            args.jobs,
            exp.cells.len(),
            exp.cells.len() + 1,
            args.jobs,
            exp.cells.len().max(1)
        );
    }
    let run_id = match &args.run_id {
        Some(id) => id.clone(),
        None => crate::run::layout::new_run_id(std::time::SystemTime::now()),
    };
    crate::run::layout::check_run_id(&run_id)?;
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        }
    };
    let exe = std::env::current_exe().context("cannot find the negimg executable")?;
    let results = abs(&args.results);
    let logs = results.join(&exp.name).join("slurm");
    let script = script(&ScriptSpec {
        name: &exp.name,
        jobs: args.jobs,
        partition: args.partition.as_deref(),
        time: &args.time,
        cpus: args.cpus,
        gpus: args.gpus,
        mem: &args.mem,
        logs: &logs,
        workdir: &cwd,
        exe: &exe,
        experiment: &abs(&args.experiment),
        results: &results,
        run_id: &run_id,
        device: passed_on(&g.device),
        dtype: passed_on(&g.dtype),
    });
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("slurm-{}-{run_id}.sbatch", exp.name)));
    // Slurm does not create the folder of --output.
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    std::fs::write(&out, script).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "wrote {}: {} tasks over {} cells into {}\nsubmit with: sbatch {}",
        out.display(),
        args.jobs,
        exp.cells.len(),
        results.join(&exp.name).join(&run_id).display(),
        out.display()
    );
    Ok(())
}

/// A `--device`/`--dtype` value for the tasks: none for "auto" (each task decides).
fn passed_on(value: &str) -> Option<&str> {
    (value != "auto").then_some(value)
}

pub struct ScriptSpec<'a> {
    pub name: &'a str,
    pub jobs: usize,
    pub partition: Option<&'a str>,
    pub time: &'a str,
    pub cpus: usize,
    pub gpus: usize,
    pub mem: &'a str,
    pub logs: &'a Path,
    pub workdir: &'a Path,
    pub exe: &'a Path,
    pub experiment: &'a Path,
    pub results: &'a Path,
    pub run_id: &'a str,
    pub device: Option<&'a str>,
    pub dtype: Option<&'a str>,
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

pub fn script(s: &ScriptSpec) -> String {
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name=negimg-{}", s.name),
        format!("#SBATCH --array=1-{}", s.jobs),
        "#SBATCH --ntasks=1".into(),
        format!("#SBATCH --cpus-per-task={}", s.cpus),
        format!("#SBATCH --mem={}", s.mem),
        format!("#SBATCH --time={}", s.time),
        format!("#SBATCH --output={}/%A_%a.log", s.logs.display()),
    ];
    if s.gpus > 0 {
        lines.push(format!("#SBATCH --gres=gpu:{}", s.gpus));
    }
    if let Some(p) = s.partition {
        lines.push(format!("#SBATCH --partition={p}"));
    }
    let mut globals = String::new();
    for (flag, value) in [("--device", s.device), ("--dtype", s.dtype)] {
        if let Some(v) = value {
            globals.push_str(&format!(" {flag} {}", quote(Path::new(v))));
        }
    }
    lines.extend([
        String::new(),
        "# Each task makes one shard of the grid into the same run folder; images and".into(),
        "# records are per-cell files, so nothing needs merging. A task that is requeued or".into(),
        "# resubmitted skips the cells already done. The last task to finish scores and plots."
            .into(),
        "set -euo pipefail".into(),
        format!("cd {}", quote(s.workdir)),
        format!(
            "exec {}{globals} run {} --results {} --run-id {} --shard \"${{SLURM_ARRAY_TASK_ID}}/{}\"",
            quote(s.exe),
            quote(s.experiment),
            quote(s.results),
            s.run_id,
            s.jobs
        ),
        String::new(),
    ]);
    lines.join("\n")
}
