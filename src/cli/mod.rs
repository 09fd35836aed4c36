//! The command line: parse, dispatch to the library, map errors to exit codes.
use anyhow::Result;
use clap::{Parser, Subcommand};
use tch::{Device, Kind};

pub mod bench;
pub mod doctor;
mod estimate;
pub mod export;
pub mod generate;
pub mod models;
pub mod models_fetch;
pub mod plan;
pub mod plot;
pub mod run;
pub mod score;
pub mod slurm;
pub mod status;

#[derive(Parser, Debug)]
#[command(
    name = "negimg",
    version,
    about = "Negative image prompts for Stable Diffusion 1.5: grids, scores, plots"
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Globals {
    /// auto | cpu | cuda | cuda:N
    #[arg(long, global = true, default_value = "auto", env = "NEGIMG_DEVICE")]
    pub device: String,
    /// auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    #[arg(long, global = true, default_value = "auto", env = "NEGIMG_DTYPE")]
    pub dtype: String,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Globals {
    pub fn device(&self) -> Result<Device> {
        crate::device::parse_device(&self.device)
    }
    /// The device and the dtype that goes with it.
    pub fn device_and_dtype(&self) -> Result<(Device, Kind)> {
        let device = self.device()?;
        Ok((device, crate::device::parse_dtype(&self.dtype, device)?))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every cell of an experiment file (resumes the latest run).
    Run(run::RunArgs),
    /// Validate an experiment file and print its cells, counts and a time estimate.
    Plan(plan::PlanArgs),
    /// Generate one image from flags, or remake a run's image from its PNG (--replay).
    Generate(Box<generate::GenerateArgs>),
    /// Write a run's image as a standalone diffusers script (no negimg) that makes it again.
    Export(export::ExportArgs),
    /// (Re)score a finished run with a CLIP scorer.
    Score(score::ScoreArgs),
    /// List a run's cells: done, failed (with the reason) or pending.
    Status(status::StatusArgs),
    /// Regenerate grids, curves, tables and index.html of a run.
    Plot(plot::PlotArgs),
    /// Speed benchmark on random weights of a preset's shapes (SD1.5, SDXL base, tiny).
    Bench(bench::BenchArgs),
    /// Fetch, check or create (random) models.
    Models(models::ModelsArgs),
    /// Write a Slurm job-array script that runs an experiment in shards.
    Slurm(slurm::SlurmArgs),
    /// Report libtorch, CUDA, GPUs, the venv, model folders and free disk.
    Doctor(doctor::DoctorArgs),
}

/// Progress while models load (real weights take a while to read).
pub fn loading(role: crate::roles::Role) {
    eprintln!("  loading {role}");
}

/// Exit status when a run was interrupted (SIGINT) after finishing its writes.
pub const EXIT_INTERRUPTED: i32 = 130;

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let level = match cli.globals.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    match dispatch(cli) {
        Ok(()) => 0,
        Err(e) => {
            if e.downcast_ref::<crate::run::Interrupted>().is_some() {
                eprintln!("negimg: {e}");
                return EXIT_INTERRUPTED;
            }
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let g = &cli.globals;
    match cli.command {
        Command::Run(args) => run::run(args, g),
        Command::Plan(args) => plan::run(args, g),
        Command::Generate(args) => generate::run(*args, g),
        Command::Export(args) => export::run(args, g),
        Command::Score(args) => score::run(args, g),
        Command::Plot(args) => plot::run(args, g),
        Command::Status(args) => status::run(args, g),
        Command::Bench(args) => bench::run(args, g),
        Command::Models(args) => models::run(args, g),
        Command::Slurm(args) => slurm::run(args, g),
        Command::Doctor(args) => doctor::run(args, g),
    }
}
