//! What the phases of a run share to make images: the [`Maker`] (the generator loaded on
//! first use, the run's batches and batch size), the run's log and the progress bar. Used by
//! the inputs phase (text-to-image inputs) and the runner (the grid's cells).
use super::batching::{BatchSize, plan_batches};
use super::generator::Generator;
use super::layout;
use crate::params::GenParams;
use crate::pipeline::attention_maps::CellMaps;
use crate::pipeline::{CellOutcome, RowSteps};
use crate::steps::StepSet;
use anyhow::{Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

/// Appends timestamped lines to the run's log.txt (and to the debug log).
pub(super) struct RunLog {
    file: Option<std::fs::File>,
    prefix: String,
}

impl RunLog {
    /// Appends to `path` (a log that cannot be opened leaves the debug log only); `prefix`
    /// starts every line (a shard's `[shard K/N] `).
    pub(super) fn open(path: &Path, prefix: String) -> RunLog {
        RunLog {
            file: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok(),
            prefix,
        }
    }

    pub(super) fn line(&mut self, msg: &str) {
        log::info!("{msg}");
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{} {}{msg}", layout::utc(SystemTime::now()), self.prefix);
        }
    }
}

/// The generator, loaded on first use (a run whose cells are all done loads no models),
/// and the run's batch size, decided when the first batch is made.
pub(super) struct Maker<'a> {
    load: &'a mut dyn FnMut() -> Result<Box<dyn Generator>>,
    generator: Option<Box<dyn Generator>>,
    /// The run folder (its batch.json) and `--batch`.
    run_dir: PathBuf,
    requested: Option<usize>,
    batch: Option<BatchSize>,
    /// Whether the batches made next record attention maps.
    attention_maps: bool,
    /// The steps they cover (`[maps] steps`; all when `None`).
    map_steps: Option<StepSet>,
}

/// A cell's decoded x̂₀ traces: (step, image).
pub(super) type Trace = Vec<(usize, image::RgbImage)>;

/// What [`Maker::make`] calls for each cell made: its index, outcome, traces, attention
/// maps (when recorded) and seconds.
pub(super) type CellDone<'d> =
    dyn FnMut(usize, CellOutcome, Trace, Option<&CellMaps>, f64) -> Result<()> + 'd;

/// What one call to [`Maker::make`] did.
pub(super) struct Made {
    pub(super) interrupted: bool,
    /// The UNet row-steps of its batches (none when the generator has no UNet).
    pub(super) row_steps: Option<RowSteps>,
}

impl<'a> Maker<'a> {
    /// `load` is called once, when the first batch is made; the batch size is that of
    /// `run_dir`'s batch.json, else `requested` (`--batch`), else the generator's estimate.
    pub(super) fn new(
        load: &'a mut dyn FnMut() -> Result<Box<dyn Generator>>,
        run_dir: PathBuf,
        requested: Option<usize>,
    ) -> Maker<'a> {
        Maker {
            load,
            generator: None,
            run_dir,
            requested,
            batch: None,
            attention_maps: false,
            map_steps: None,
        }
    }

    fn generator(&mut self) -> Result<&mut Box<dyn Generator>> {
        if self.generator.is_none() {
            self.generator = Some((self.load)()?);
        }
        self.generator
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no generator"))
    }

    /// Whether the batches made next record attention maps (`[maps] attention`).
    pub(super) fn set_attention_maps(&mut self, on: bool) {
        self.attention_maps = on;
    }

    /// The steps the attention maps cover (`[maps] steps`).
    pub(super) fn set_attention_map_steps(&mut self, steps: Option<StepSet>) {
        self.map_steps = steps;
    }

    /// Makes the batches of `params` that hold a pending cell, as planned for all of them
    /// (see [`super::batching`]: the resumed images are those of an uninterrupted run),
    /// skipping the work that leads to no pending cell; `done(j, outcome, trace, maps,
    /// seconds)` for each pending cell j made (`maps`: its attention maps, when recorded),
    /// which then stops being pending. After an out-of-memory failure the batches are planned
    /// again at the halved size. Stops before a batch once `stop` is set.
    pub(super) fn make(
        &mut self,
        params: &[GenParams],
        pending: &mut [bool],
        stop: &AtomicBool,
        progress: &dyn Fn(String),
        done: &mut CellDone,
    ) -> Result<Made> {
        let mut row_steps: Option<RowSteps> = None;
        'plan: loop {
            let size = self.batch_size(params)?;
            for batch in plan_batches(params, size) {
                if !batch.iter().any(|&j| pending[j]) {
                    continue;
                }
                if stop.load(Ordering::SeqCst) {
                    return Ok(Made {
                        interrupted: true,
                        row_steps,
                    });
                }
                let cells: Vec<GenParams> = batch.iter().map(|&j| params[j].clone()).collect();
                let wanted: Vec<bool> = batch.iter().map(|&j| pending[j]).collect();
                let n = cells.len();
                // Loading the models is not generation time (records' seconds, plan's estimate).
                self.generator()?;
                let t = Instant::now();
                let (Some(g), Some(batch_size)) = (self.generator.as_mut(), self.batch.as_mut())
                else {
                    bail!("no generator")
                };
                g.set_call_cells(size);
                g.set_attention_maps(self.attention_maps);
                g.set_attention_map_steps(self.map_steps.clone());
                let Some(outcomes) =
                    batch_size.attempt(g.as_mut(), &cells, &wanted, &mut |s, steps| {
                        progress(format!("batch of {n}: step {s}/{steps}"))
                    })?
                else {
                    continue 'plan;
                };
                if let Some(r) = g.take_row_steps() {
                    *row_steps.get_or_insert_default() += r;
                }
                let seconds = t.elapsed().as_secs_f64() / n as f64;
                let mut traces = g.take_traces();
                traces.resize_with(n, Vec::new);
                let maps = g.take_attention_maps();
                let made = batch.iter().zip(outcomes).zip(traces).enumerate();
                for (k, ((&j, outcome), trace)) in made {
                    if pending[j] {
                        let Some(outcome) = outcome else {
                            bail!("the generator did not make cell {} of its batch", k + 1)
                        };
                        done(j, outcome, trace, maps.get(k), seconds)?;
                        pending[j] = false;
                    }
                }
            }
            return Ok(Made {
                interrupted: false,
                row_steps,
            });
        }
    }

    fn batch_size(&mut self, params: &[GenParams]) -> Result<usize> {
        if self.batch.is_none() {
            let (w, h) = params
                .iter()
                .map(|p| (p.width, p.height))
                .max_by_key(|(w, h)| w * h)
                .unwrap_or((512, 512));
            let estimate = match self.requested {
                Some(n) => n,
                None => self.generator()?.estimate_batch(w, h),
            };
            self.batch = Some(BatchSize::resolve(&self.run_dir, self.requested, || {
                estimate
            })?);
        }
        Ok(self.batch.as_ref().map_or(1, BatchSize::get))
    }
}

pub(super) fn progress_bar(show: bool, len: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} images, {elapsed} elapsed, ETA {eta} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}
