//! `negimg plot RUN_DIR`: grids, curves, tables and index.html from the run's files.
use super::Globals;
use crate::report::{PlotOptions, plot_run_with};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// The run folder (results/<experiment>/<run-id>).
    pub run_dir: PathBuf,
    /// Metrics written under each grid image, comma-separated ("" for none); default:
    /// clip_i_pos and clip_i_neg, those the scorer has.
    #[arg(long)]
    pub caption: Option<String>,
    /// Scorer id (folder under scores/) for the captions; default: the first.
    #[arg(long)]
    pub caption_scorer: Option<String>,
    /// Size cap of one grid sheet in pixels (width and height); larger grids are split.
    #[arg(long, default_value_t = 8192)]
    pub max_sheet: u32,
    /// Seeds side by side in a grid cell up to this many, on pages beyond.
    #[arg(long, default_value_t = 4)]
    pub max_side_by_side: usize,
}

pub fn run(args: PlotArgs, _g: &Globals) -> Result<()> {
    let mut opts = PlotOptions {
        caption_metrics: args.caption.map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect()
        }),
        caption_scorer: args.caption_scorer,
        ..PlotOptions::default()
    };
    opts.grid.max_width = args.max_sheet;
    opts.grid.max_height = args.max_sheet;
    opts.grid.max_side_by_side = args.max_side_by_side;
    plot_run_with(&args.run_dir, &opts)?;
    println!("report: {}", args.run_dir.join("index.html").display());
    Ok(())
}
