//! The grid runner: every pending cell of an experiment (or of one shard of it) through a
//! [`Generator`], each image and its record written atomically, so that a run can be killed
//! at any point and resumed, and N shards can share one run folder.
//!
//! [`run`] goes through phases around a [`RunContext`]: open the folder, identify the models
//! (manifest), put the input images in place, give every cell its id, make the pending
//! cells batch by batch, merge the records.
use super::fsio::{FileLock, atomic_write, clean_stale_temps, free_bytes};
use super::generator::Generator;
use super::ids::{self, HashCache, ModelDigests, ModelFiles};
use super::info::RunInfo;
use super::layout::{self, Choice, RunDir};
use super::maker::{Made, Maker, RunLog, progress_bar};
use super::manifest::{cell_texts, manifest_json};
use super::png;
use super::records::{Record, Status, write_records};
use crate::experiment::Experiment;
use crate::params::GenParams;
use crate::pipeline::CellOutcome;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// `--shard K/N`: cell i belongs to shard K (1-based) iff i mod N = K - 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 1, count: 1 }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let bad = || format!("--shard {s:?}: write K/N with 1 <= K <= N, e.g. 2/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard { index: k, count: n })
    }
}

impl Shard {
    pub fn owns(&self, cell_index: usize) -> bool {
        cell_index % self.count == self.index - 1
    }
}

#[derive(Clone, Debug)]
pub enum RunChoice {
    Latest,
    New,
    Id(String),
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The results root (`results/`).
    pub results: PathBuf,
    pub choice: RunChoice,
    /// Regenerate cells that are done.
    pub force: bool,
    /// Try failed cells again.
    pub retry_failed: bool,
    pub shard: Shard,
    /// Cells per pipeline call for a new run (default: the generator's estimate); a run
    /// keeps the size it started with.
    pub batch: Option<usize>,
    /// For the manifest: `cpu`, `cuda:0`...
    pub device: String,
    /// `fp32`, `fp16`, `bf16`: part of each image's identity.
    pub dtype: String,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub dir: PathBuf,
    pub run_id: String,
    /// Cells of the whole grid, of this shard, and done before this call.
    pub grid_cells: usize,
    pub shard_cells: usize,
    pub skipped: usize,
    pub generated: usize,
    pub failed: usize,
    /// Failed cells of the whole grid, in records.csv.
    pub failed_total: usize,
    /// Every cell of the grid has a record (all shards done).
    pub complete: bool,
    pub interrupted: bool,
    pub seconds: f64,
}

/// Everything the phases of a run share.
struct RunContext<'a> {
    exp: &'a Experiment,
    opts: &'a RunOptions,
    run: RunDir,
    log: RunLog,
    maker: Maker<'a>,
}

/// One grid cell: the key of its record, the id of its image (cells whose effective
/// parameters are the same share the image), its effective parameters (those the image is
/// made with, [`GenParams::effective`]).
struct Cell {
    key: String,
    image: String,
    params: GenParams,
}

/// Each model's files (for the manifest) and digests (for the cell ids).
struct ModelIdentity {
    files: Vec<ModelFiles>,
    digests: ModelDigests,
}

pub fn run(
    exp: &Experiment,
    opts: &RunOptions,
    load: &mut dyn FnMut() -> Result<Box<dyn Generator>>,
    stop: &AtomicBool,
) -> Result<Summary> {
    let started = Instant::now();
    let mut ctx = RunContext::open(exp, opts, load)?;
    let models = ctx.identify_models()?;
    let image_ids = super::inputs::prepare(&mut ctx.input_maker(), &models.digests)?;
    let cells = ctx.cells(&image_ids, &models.digests)?;
    let shard: Vec<usize> = (0..cells.len()).filter(|&i| opts.shard.owns(i)).collect();
    let mut pending: Vec<bool> = shard
        .iter()
        .map(|&i| ctx.is_pending(&cells[i].key))
        .collect();
    // From the start, so a killed run is a run folder that can be scored and inspected.
    ctx.merge_records(&cells)?;
    let to_make = pending.iter().filter(|&&p| p).count();
    let skipped = shard.len() - to_make;
    ctx.log.line(&format!(
        "{} cell(s) in this shard: {skipped} done before, {to_make} to make",
        shard.len()
    ));
    ctx.check_space(
        shard
            .iter()
            .zip(&pending)
            .filter(|(_, p)| **p)
            .map(|(&i, _)| &cells[i].params),
    )?;
    let (mut generated, mut failed) = (0, 0);
    let mut interrupted = false;
    if to_make > 0 {
        let made = ctx.make_cells(
            &cells,
            &shard,
            &mut pending,
            stop,
            &models.files,
            &mut |ok| {
                if ok { generated += 1 } else { failed += 1 }
            },
        )?;
        interrupted = made.interrupted;
        if let Some(r) = made.row_steps {
            let skipped = match r.planned - r.computed {
                0 => String::new(),
                _ => "; the rest lead only to cells made before".to_string(),
            };
            ctx.log.line(&format!(
                "UNet row-steps: {} computed of the {} its batches plan{skipped}",
                r.computed, r.planned
            ));
        }
    }
    let (complete, failed_total) = ctx.merge_records(&cells)?;
    ctx.log.line(&format!(
        "{} {generated} image(s), {failed} failed; the grid is {}",
        if interrupted {
            "interrupted after"
        } else {
            "made"
        },
        if complete {
            "complete"
        } else {
            "not complete yet"
        }
    ));
    Ok(Summary {
        dir: ctx.run.dir.clone(),
        run_id: ctx.run.run_id.clone(),
        grid_cells: cells.len(),
        shard_cells: shard.len(),
        skipped,
        generated,
        failed,
        failed_total,
        complete,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl<'a> RunContext<'a> {
    /// Opens (or makes) the run folder, starts its log, removes partial files of a killed
    /// run and keeps a copy of the experiment file.
    fn open(
        exp: &'a Experiment,
        opts: &'a RunOptions,
        load: &'a mut dyn FnMut() -> Result<Box<dyn Generator>>,
    ) -> Result<RunContext<'a>> {
        let choice = match &opts.choice {
            RunChoice::Latest => Choice::Latest,
            RunChoice::New => Choice::New,
            RunChoice::Id(id) => Choice::Id(id),
        };
        let run = layout::open(&opts.results, &exp.name, choice)?;
        let prefix = if opts.shard.count > 1 {
            format!("[shard {}/{}] ", opts.shard.index, opts.shard.count)
        } else {
            String::new()
        };
        let log = RunLog::open(&run.dir.join("log.txt"), prefix);
        let mut ctx = RunContext {
            exp,
            opts,
            maker: Maker::new(load, run.dir.clone(), opts.batch),
            run,
            log,
        };
        ctx.log.line(&format!(
            "{} run {} of {} ({} cells) on {} {}",
            if ctx.run.created {
                "starting"
            } else {
                "continuing"
            },
            ctx.run.run_id,
            exp.path.display(),
            exp.cells.len(),
            opts.device,
            opts.dtype
        ));
        for d in [ctx.run.images(), ctx.run.cells(), ctx.run.inputs()] {
            let n = clean_stale_temps(&d)?;
            if n > 0 {
                ctx.log.line(&format!(
                    "removed {n} partial file(s) of a killed run in {}",
                    d.display()
                ));
            }
        }
        if !ctx.run.created {
            ctx.check_edited()?;
        }
        atomic_write(&ctx.run.dir.join("experiment.toml"), exp.text.as_bytes())?;
        Ok(ctx)
    }

    /// A run continued after its experiment file was edited: said so, and refused (unless
    /// `--force`) when cells already made are no longer in the grid (their parameters changed).
    fn check_edited(&mut self) -> Result<()> {
        let copy = self.run.dir.join("experiment.toml");
        let Ok(before) = std::fs::read_to_string(&copy) else {
            return Ok(());
        };
        if before == self.exp.text {
            return Ok(());
        }
        let changed = super::records::cell_records(&self.run.cells())
            .iter()
            .filter(|r| !self.exp.cells.iter().any(|c| r.is_of(c)))
            .count();
        let what = format!(
            "{} changed since run {} started",
            self.exp.path.display(),
            self.run.run_id
        );
        if changed > 0 && !self.opts.force {
            bail!(
                "{what}: {changed} cell(s) made in that run are no longer in the grid (their \
                 parameters changed); use --new for a fresh run, or --force to continue this one"
            );
        }
        let note = format!("note: {what}; continuing it with the edited grid");
        eprintln!("{note}");
        self.log.line(&note);
        Ok(())
    }

    /// Model identities (sha256, cached per machine), written to the manifest.
    fn identify_models(&mut self) -> Result<ModelIdentity> {
        let mut cache = HashCache::load(&self.opts.results.join(".cache").join("sha256.json"));
        let files = self
            .exp
            .models
            .iter()
            .map(|(role, m)| ids::model_files(role, m, &mut cache))
            .collect::<Result<Vec<_>>>()?;
        cache.save()?;
        let manifest = manifest_json(self.exp, &self.run.run_id, self.opts, &files)?;
        atomic_write(&self.run.dir.join("manifest.json"), &manifest)?;
        let digests = ids::digests(&files);
        Ok(ModelIdentity { files, digests })
    }

    fn input_maker(&mut self) -> super::inputs::InputMaker<'_, 'a> {
        super::inputs::InputMaker {
            exp: self.exp,
            results: &self.opts.results,
            dtype: &self.opts.dtype,
            progress: self.opts.progress,
            run: &self.run,
            maker: &mut self.maker,
            log: &mut self.log,
        }
    }

    /// Every cell with its record key and image id, in grid order.
    fn cells(
        &self,
        image_ids: &BTreeMap<String, String>,
        digests: &ModelDigests,
    ) -> Result<Vec<Cell>> {
        let inputs_dir = std::fs::canonicalize(self.run.inputs())
            .with_context(|| format!("cannot find {}", self.run.inputs().display()))?;
        let path_of = |name: &str| inputs_dir.join(format!("{name}.png"));
        let image_id = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| image_ids.get(n))
                .map(String::as_str)
        };
        let (images, params): (Vec<String>, Vec<GenParams>) = self
            .exp
            .cells
            .iter()
            .map(|c| {
                let p = c.params(&path_of).effective();
                let id = ids::image_id(
                    &p,
                    image_id(&c.positive_image),
                    image_id(&c.negative_image).filter(|_| p.negative_image.is_some()),
                    digests,
                    &self.opts.dtype,
                );
                (id, p)
            })
            .unzip();
        let falls_back: Vec<bool> = self
            .exp
            .cells
            .iter()
            .map(|c| c.params(&path_of).falls_back())
            .collect();
        let rows: Vec<Record> = self
            .exp
            .cells
            .iter()
            .map(|c| Record::new("", c, Status::Done, "", 0.0, ""))
            .collect();
        let keys = ids::record_ids(&images, &rows, &falls_back);
        Ok(keys
            .into_iter()
            .zip(images)
            .zip(params)
            .map(|((key, image), params)| Cell { key, image, params })
            .collect())
    }

    /// Whether this call makes the cell `id` (it has no record, or `--force` /
    /// `--retry-failed` asks for it again).
    fn is_pending(&self, id: &str) -> bool {
        let keep = match read_cell(&self.run, id) {
            Some(r) if r.status == Status::Done => {
                !self.opts.force && self.run.dir.join(&r.file).exists()
            }
            Some(_) => !(self.opts.force || self.opts.retry_failed),
            None => false,
        };
        !keep
    }

    /// Room for the images of `to_make` before any generation (PNG is at most about raw size).
    fn check_space<'c>(&self, to_make: impl Iterator<Item = &'c GenParams>) -> Result<()> {
        let need: u64 = to_make
            .map(|p| (p.width * p.height * 3 + 4096) as u64)
            .sum::<u64>()
            + (1 << 20);
        match free_bytes(&self.run.dir) {
            Some(free) => check_space(&self.run.dir, need, free),
            None => Ok(()),
        }
    }

    /// Makes the pending cells of the shard, each image once (cells sharing an image get
    /// one record each); `counted(ok)` for each cell made or failed.
    fn make_cells(
        &mut self,
        cells: &[Cell],
        shard: &[usize],
        pending: &mut [bool],
        stop: &AtomicBool,
        files: &[ModelFiles],
        counted: &mut dyn FnMut(bool),
    ) -> Result<Made> {
        // The shard's distinct images (first cell of each) and the image of each shard cell.
        let mut first: Vec<usize> = Vec::new();
        let mut of: BTreeMap<&str, usize> = BTreeMap::new();
        let group: Vec<usize> = shard
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                *of.entry(&cells[i].image).or_insert_with(|| {
                    first.push(j);
                    first.len() - 1
                })
            })
            .collect();
        let params: Vec<GenParams> = first
            .iter()
            .map(|&j| cells[shard[j]].params.clone())
            .collect();
        let mut todo = vec![false; first.len()];
        for (j, &g) in group.iter().enumerate() {
            todo[g] |= pending[j];
        }
        let total = pending.iter().filter(|&&p| p).count();
        let bar = progress_bar(self.opts.progress, total);
        // Without a bar (not on a terminal) the progress lines go to stderr too.
        let lines = self.opts.progress && !std::io::stderr().is_terminal();
        let mut ticker = Ticker::new();
        let (exp, opts, run) = (self.exp, self.opts, &self.run);
        let log = &mut self.log;
        self.maker.set_attention_maps(exp.maps.attention);
        self.maker.set_attention_map_steps(exp.maps.steps.clone());
        let made = self.maker.make(
            &params,
            &mut todo,
            stop,
            &|msg| bar.set_message(msg),
            &mut |g, outcome, trace, maps, seconds| {
                let members: Vec<usize> = (0..shard.len())
                    .filter(|&j| group[j] == g && pending[j])
                    .collect();
                let lead = shard[first[g]];
                let (image, p) = (&cells[lead].image, &cells[lead].params);
                let (file, error) = match &outcome {
                    CellOutcome::Image(img) => {
                        let file = run.image_file(image);
                        let spec = &exp.cells[lead];
                        let (parameters, json) =
                            cell_texts(exp, files, &opts.dtype, image, p, spec)?;
                        let texts = [("parameters", &*parameters), ("negimg", &*json)];
                        atomic_write(&run.dir.join(&file), &png::encode(img, &texts)?)?;
                        for (step, img) in &trace {
                            let path = run.dir.join(run.trace_file(image, *step));
                            if let Some(dir) = path.parent() {
                                std::fs::create_dir_all(dir)?;
                            }
                            let (parameters, json) = png::trace_texts(&parameters, &json, *step)?;
                            let texts = [("parameters", &*parameters), ("negimg", &*json)];
                            atomic_write(&path, &png::encode(img, &texts)?)?;
                        }
                        (file, None)
                    }
                    CellOutcome::Failed(reason) => (String::new(), Some(reason.clone())),
                };
                for j in members {
                    let i = shard[j];
                    let (key, spec) = (&cells[i].key, &exp.cells[i]);
                    let status = match &error {
                        None => Status::Done,
                        Some(reason) => {
                            log.line(&format!("cell {} ({key}) failed: {reason}", i + 1));
                            Status::Failed
                        }
                    };
                    counted(status == Status::Done);
                    let reason = error.as_deref().unwrap_or("");
                    if let Some(maps) = maps.filter(|_| error.is_none()) {
                        super::attention_maps::write(&run.dir, key, maps)?;
                    }
                    let record = Record::new(key, spec, status, &file, seconds, reason);
                    atomic_write(&run.cell_file(key), &serde_json::to_vec_pretty(&record)?)?;
                    pending[j] = false;
                    bar.inc(1);
                }
                let done = total - pending.iter().filter(|&&p| p).count();
                if let Some(line) = ticker.tick(done, total) {
                    if lines {
                        eprintln!("{line}");
                    }
                    log.line(&line);
                    // A killed run can be scored and inspected up to here.
                    merge_records(run, exp, cells)?;
                }
                Ok(())
            },
        )?;
        bar.finish_and_clear();
        Ok(made)
    }

    fn merge_records(&self, cells: &[Cell]) -> Result<(bool, usize)> {
        merge_records(&self.run, self.exp, cells)
    }
}

/// records.csv and run.json from every shard's cell records, in grid order (under the run
/// lock, so shards merge): whether every cell has a record, and how many failed.
fn merge_records(run: &RunDir, exp: &Experiment, cells: &[Cell]) -> Result<(bool, usize)> {
    let _lock = FileLock::acquire(&run.lock())?;
    let records: Vec<Record> = cells
        .iter()
        .filter_map(|c| read_cell(run, &c.key))
        .collect();
    write_records(&run.records(), &records)?;
    let info = RunInfo::of(exp, &run.run_id);
    atomic_write(
        &run.dir.join("run.json"),
        &serde_json::to_vec_pretty(&info)?,
    )?;
    let failed = records
        .iter()
        .filter(|r| r.status == Status::Failed)
        .count();
    Ok((records.len() == cells.len(), failed))
}

fn read_cell(run: &RunDir, id: &str) -> Option<Record> {
    let bytes = std::fs::read(run.cell_file(id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn check_space(dir: &Path, need: u64, free: u64) -> Result<()> {
    if free < need {
        bail!(
            "not enough free disk for the results in {}: {:.1} MiB free, this run needs about \
             {:.1} MiB; free some space or use --results DIR elsewhere",
            dir.display(),
            free as f64 / 1048576.0,
            need as f64 / 1048576.0
        );
    }
    Ok(())
}

/// Progress lines for log.txt (and stderr where no bar is drawn: Slurm, nohup, CI): the
/// first cell, then at most one line every [`Ticker::EVERY`], and the last.
struct Ticker {
    started: Instant,
    last: Option<Instant>,
}

impl Ticker {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn new() -> Ticker {
        Ticker {
            started: Instant::now(),
            last: None,
        }
    }

    fn tick(&mut self, done: usize, total: usize) -> Option<String> {
        let due = self.last.is_none_or(|t| t.elapsed() >= Self::EVERY) || done == total;
        if !due {
            return None;
        }
        self.last = Some(Instant::now());
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = elapsed / done.max(1) as f64 * (total - done) as f64;
        Some(format!(
            "progress: {done}/{total} cells done, {elapsed:.0} s elapsed, ETA {eta:.0} s"
        ))
    }
}
