//! The grid runner: every pending cell of an experiment (or of one shard of it) through a
//! [`Generator`], each image and its record written atomically, so that a run can be killed
//! at any point and resumed, and N shards can share one run folder.
use super::fsio::{FileLock, atomic_write, clean_stale_temps, free_bytes};
use super::ids::{self, HashCache, ModelDigests, ModelFiles};
use super::info::RunInfo;
use super::layout::{self, Choice, RunDir};
use super::png;
use super::records::{Record, Status, write_records};
use crate::experiment::{Experiment, ImageSource};
use crate::params::GenParams;
use crate::pipeline::CellOutcome;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

/// What makes images from cells: the pipeline, or a fake in tests of the runner.
pub trait Generator {
    /// Most cells worth passing in one call.
    fn max_batch(&self) -> usize;
    /// One outcome per cell, in order. Cells may have different `batch_key`s.
    fn generate(
        &mut self,
        cells: &[GenParams],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<CellOutcome>>;
}

impl Generator for crate::pipeline::Pipeline {
    fn max_batch(&self) -> usize {
        crate::pipeline::Pipeline::max_batch(self)
    }
    fn generate(
        &mut self,
        cells: &[GenParams],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<CellOutcome>> {
        self.generate_all(cells, progress)
    }
}

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
    /// Most cells per pipeline call (default: the generator's own estimate).
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

/// Appends timestamped lines to the run's log.txt (and to the debug log).
struct RunLog {
    file: Option<std::fs::File>,
    prefix: String,
}

impl RunLog {
    fn line(&mut self, msg: &str) {
        log::info!("{msg}");
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{} {}{msg}", layout::utc(SystemTime::now()), self.prefix);
        }
    }
}

#[derive(Serialize)]
struct Manifest<'a> {
    experiment: &'a str,
    run_id: &'a str,
    description: &'a str,
    tags: &'a [String],
    experiment_file: String,
    experiment_text: &'a str,
    negimg_version: &'a str,
    git_revision: &'a str,
    libtorch: String,
    device: &'a str,
    dtype: &'a str,
    updated: String,
    cells: usize,
    models: &'a [ModelFiles],
    /// Derived input images and their recipes.
    derived: BTreeMap<&'a str, &'a crate::derive::Recipe>,
}

/// The JSON chunk of each PNG: the cell, with images by name and models by reference.
#[derive(Serialize)]
struct CellJson<'a> {
    experiment: &'a str,
    cell_id: &'a str,
    params: GenParams,
    positive_image: Option<&'a str>,
    negative_image: Option<&'a str>,
    models: BTreeMap<&'a str, &'a str>,
    dtype: &'a str,
    negimg_version: &'a str,
}

pub fn run(
    exp: &Experiment,
    opts: &RunOptions,
    load: &mut dyn FnMut() -> Result<Box<dyn Generator>>,
    stop: &AtomicBool,
) -> Result<Summary> {
    let started = Instant::now();
    let choice = match &opts.choice {
        RunChoice::Latest => Choice::Latest,
        RunChoice::New => Choice::New,
        RunChoice::Id(id) => Choice::Id(id),
    };
    let run = layout::open(&opts.results, &exp.name, choice)?;
    let mut log = RunLog {
        file: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run.dir.join("log.txt"))
            .ok(),
        prefix: if opts.shard.count > 1 {
            format!("[shard {}/{}] ", opts.shard.index, opts.shard.count)
        } else {
            String::new()
        },
    };
    log.line(&format!(
        "{} run {} of {} ({} cells) on {} {}",
        if run.created {
            "starting"
        } else {
            "continuing"
        },
        run.run_id,
        exp.path.display(),
        exp.cells.len(),
        opts.device,
        opts.dtype
    ));
    for d in [run.images(), run.cells(), run.inputs()] {
        let n = clean_stale_temps(&d)?;
        if n > 0 {
            log.line(&format!(
                "removed {n} partial file(s) of a killed run in {}",
                d.display()
            ));
        }
    }
    atomic_write(&run.dir.join("experiment.toml"), exp.text.as_bytes())?;

    // Model identities (sha256, cached per machine) for the manifest and the cell ids.
    let mut cache = HashCache::load(&opts.results.join(".cache").join("sha256.json"));
    let mut files = Vec::new();
    for (role, m) in exp.models.all() {
        files.push(ids::model_files(role, m, &mut cache)?);
    }
    cache.save()?;
    let digests = ModelDigests::from_files(&files);
    let (libtorch, _) = crate::cli::doctor::libtorch();
    let manifest = Manifest {
        experiment: &exp.name,
        run_id: &run.run_id,
        description: &exp.description,
        tags: &exp.tags,
        experiment_file: exp.path.display().to_string(),
        experiment_text: &exp.text,
        negimg_version: env!("CARGO_PKG_VERSION"),
        git_revision: crate::cli::doctor::git_revision(),
        libtorch,
        device: &opts.device,
        dtype: &opts.dtype,
        updated: layout::utc(SystemTime::now()),
        cells: exp.cells.len(),
        models: &files,
        derived: crate::derive::inputs::recipes(exp),
    };
    atomic_write(
        &run.dir.join("manifest.json"),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;

    let mut generator: Option<Box<dyn Generator>> = None;
    let image_ids = inputs(exp, opts, &run, &digests, &mut generator, load, &mut log)?;

    // Cells, their ids, and which ones this call makes.
    let inputs_dir = std::fs::canonicalize(run.inputs())
        .with_context(|| format!("cannot find {}", run.inputs().display()))?;
    let path_of = |name: &str| inputs_dir.join(format!("{name}.png"));
    let image_id = |name: &Option<String>| {
        name.as_ref()
            .and_then(|n| image_ids.get(n))
            .map(String::as_str)
    };
    let cells: Vec<(String, GenParams)> = exp
        .cells
        .iter()
        .map(|c| {
            let p = c.params(&path_of);
            let id = ids::image_id(
                &p,
                image_id(&c.positive_image),
                image_id(&c.negative_image).filter(|_| p.negative.uses_image()),
                &digests,
                &opts.dtype,
            );
            (id, p)
        })
        .collect();
    // The shard's cells, and which of them this call makes.
    let shard: Vec<usize> = (0..cells.len()).filter(|&i| opts.shard.owns(i)).collect();
    let pending: Vec<bool> = shard
        .iter()
        .map(|&i| {
            let id = &cells[i].0;
            let keep = match read_cell(&run, id) {
                Some(r) if r.status == Status::Done => {
                    !opts.force && run.dir.join(&r.file).exists()
                }
                Some(_) => !(opts.force || opts.retry_failed),
                None => false,
            };
            !keep
        })
        .collect();
    let to_make = pending.iter().filter(|&&p| p).count();
    let shard_cells = shard.len();
    let skipped = shard_cells - to_make;
    log.line(&format!(
        "{shard_cells} cell(s) in this shard: {skipped} done before, {to_make} to make"
    ));

    // Room for the images before any generation (PNG is at most about raw size).
    let need: u64 = shard
        .iter()
        .zip(&pending)
        .filter(|(_, p)| **p)
        .map(|(&i, _)| (cells[i].1.width * cells[i].1.height * 3 + 4096) as u64)
        .sum::<u64>()
        + (1 << 20);
    if let Some(free) = free_bytes(&run.dir) {
        check_space(&run.dir, need, free)?;
    }

    let (mut generated, mut failed) = (0, 0);
    let mut interrupted = false;
    if to_make > 0 {
        if generator.is_none() {
            generator = Some(load()?);
        }
        let Some(g) = generator.as_mut() else {
            bail!("no generator")
        };
        // Batches are a fixed function of the shard's cells and the run's batch size, and a
        // batch with any cell to make is made whole: floating-point results can depend on
        // the batch's shape, and this way a resumed run gives the bytes an uninterrupted
        // one gives.
        let batch_size = run_batch_size(&run, opts.batch, g.max_batch())?;
        let params: Vec<GenParams> = shard.iter().map(|&i| cells[i].1.clone()).collect();
        let bar = progress_bar(opts.progress, to_make);
        for batch in crate::sampling::batch::plan_batches(&params, batch_size) {
            if !batch.iter().any(|&j| pending[j]) {
                continue;
            }
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let cell_params: Vec<GenParams> = batch.iter().map(|&j| params[j].clone()).collect();
            let t = Instant::now();
            let n = cell_params.len();
            let outcomes = g.generate(&cell_params, &mut |step, steps| {
                bar.set_message(format!("batch of {n}: step {step}/{steps}"));
            })?;
            if outcomes.len() != n {
                bail!(
                    "the pipeline returned {} images for {n} cells",
                    outcomes.len()
                );
            }
            let seconds = t.elapsed().as_secs_f64() / n as f64;
            for (&j, outcome) in batch.iter().zip(outcomes) {
                if !pending[j] {
                    continue;
                }
                let i = shard[j];
                let (id, p) = &cells[i];
                let spec = &exp.cells[i];
                let record = match outcome {
                    CellOutcome::Image(img) => {
                        let file = run.image_file(id);
                        let bytes = encode_cell(exp, &files, opts, id, p, spec, &img)?;
                        atomic_write(&run.dir.join(&file), &bytes)?;
                        generated += 1;
                        Record::new(id, spec, Status::Done, &file, seconds, "")
                    }
                    CellOutcome::Failed(reason) => {
                        failed += 1;
                        log.line(&format!("cell {} ({id}) failed: {reason}", i + 1));
                        Record::new(id, spec, Status::Failed, "", seconds, &reason)
                    }
                };
                atomic_write(&run.cell_file(id), &serde_json::to_vec_pretty(&record)?)?;
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
    }

    // records.csv and run.json from every shard's cell records, in grid order.
    let (complete, failed_total) = {
        let _lock = FileLock::acquire(&run.lock())?;
        let records: Vec<Record> = cells
            .iter()
            .filter_map(|(id, _)| read_cell(&run, id))
            .collect();
        write_records(&run.records(), &records)?;
        let info = RunInfo {
            experiment: exp.name.clone(),
            run_id: run.run_id.clone(),
            axes: exp.axes(),
            plots: exp.plots.clone(),
            scoring: exp.scoring.clone(),
            images: exp
                .images
                .keys()
                .map(|n| (n.clone(), format!("inputs/{n}.png")))
                .collect(),
            captions: crate::derive::inputs::captions(exp),
        };
        atomic_write(
            &run.dir.join("run.json"),
            &serde_json::to_vec_pretty(&info)?,
        )?;
        (
            records.len() == cells.len(),
            records
                .iter()
                .filter(|r| r.status == Status::Failed)
                .count(),
        )
    };
    log.line(&format!(
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
        dir: run.dir.clone(),
        run_id: run.run_id.clone(),
        grid_cells: cells.len(),
        shard_cells,
        skipped,
        generated,
        failed,
        failed_total,
        complete,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The run's batch size: `--batch` when given (and remembered), else the one the run
/// started with, else the generator's estimate (remembered).
fn run_batch_size(run: &RunDir, requested: Option<usize>, estimate: usize) -> Result<usize> {
    let file = run.dir.join("batch.json");
    let stored: Option<usize> = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["batch"].as_u64())
        .map(|n| n as usize);
    let size = requested.or(stored).unwrap_or(estimate).max(1);
    if stored != Some(size) {
        atomic_write(
            &file,
            &serde_json::to_vec(&serde_json::json!({ "batch": size }))?,
        )?;
    }
    Ok(size)
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

fn progress_bar(show: bool, len: usize) -> indicatif::ProgressBar {
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

fn encode_cell(
    exp: &Experiment,
    files: &[ModelFiles],
    opts: &RunOptions,
    id: &str,
    p: &GenParams,
    spec: &crate::experiment::CellSpec,
    img: &image::RgbImage,
) -> Result<Vec<u8>> {
    let negative_image = spec
        .negative_image
        .as_deref()
        .filter(|_| p.negative.uses_image());
    let parameters = png::a1111_parameters(
        p,
        spec.positive_image.as_deref(),
        negative_image,
        &exp.models.pipeline.reference,
    );
    // Paths of the run folder stay out, so the file is the same in any run folder.
    let mut params = p.clone();
    params.positive_image = spec
        .positive_image
        .as_ref()
        .map(|n| format!("inputs/{n}.png").into());
    params.negative_image = spec
        .negative_image
        .as_ref()
        .map(|n| format!("inputs/{n}.png").into());
    let json = CellJson {
        experiment: &exp.name,
        cell_id: id,
        params,
        positive_image: spec.positive_image.as_deref(),
        negative_image: spec.negative_image.as_deref(),
        models: files
            .iter()
            .map(|f| (f.role.as_str(), f.reference.as_str()))
            .collect(),
        dtype: &opts.dtype,
        negimg_version: env!("CARGO_PKG_VERSION"),
    };
    png::encode(
        img,
        &[
            ("parameters", &parameters),
            ("negimg", &serde_json::to_string(&json)?),
        ],
    )
}

/// Writes `bytes` unless the file already has them (inputs are shared by every shard).
pub(crate) fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() != Some(bytes) {
        atomic_write(path, bytes)?;
    }
    Ok(())
}

/// Puts every `[images.NAME]` into `inputs/NAME.png` (files converted to PNG; `generate`
/// images made text-to-image once and cached in `results/.cache/inputs/`; `derive` images
/// last, from those), and returns
/// each image's identity for the cell ids.
fn inputs(
    exp: &Experiment,
    opts: &RunOptions,
    run: &RunDir,
    digests: &ModelDigests,
    generator: &mut Option<Box<dyn Generator>>,
    load: &mut dyn FnMut() -> Result<Box<dyn Generator>>,
    log: &mut RunLog,
) -> Result<BTreeMap<String, String>> {
    let cache_dir = opts.results.join(".cache").join("inputs");
    let mut ids = BTreeMap::new();
    let mut to_make: Vec<(String, GenParams, PathBuf)> = Vec::new();
    for (name, source) in &exp.images {
        let dest = run.inputs().join(format!("{name}.png"));
        match source {
            ImageSource::File(file) => {
                let bytes = std::fs::read(file)
                    .with_context(|| format!("[images.{name}]: cannot read {}", file.display()))?;
                let img = image::load_from_memory(&bytes)
                    .with_context(|| format!("[images.{name}]: cannot decode {}", file.display()))?
                    .to_rgb8();
                write_if_changed(&dest, &png::encode(&img, &[])?)?;
                ids.insert(name.clone(), ids::sha256_hex(&bytes));
            }
            ImageSource::Generate(spec) => {
                let p = exp.input_params(spec);
                let id = ids::image_id(&p, None, None, digests, &opts.dtype);
                let cached = cache_dir.join(format!("{id}.png"));
                if cached.exists() {
                    let bytes = std::fs::read(&cached)
                        .with_context(|| format!("cannot read {}", cached.display()))?;
                    write_if_changed(&dest, &bytes)?;
                } else {
                    to_make.push((name.clone(), p, cached));
                }
                ids.insert(name.clone(), id);
            }
            // Made last, from the images above (crate::derive::inputs).
            ImageSource::Derive(_) => {}
        }
    }
    if to_make.is_empty() {
        return crate::derive::inputs::write_all(exp, &run.inputs(), &cache_dir, ids);
    }
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("cannot create {}", cache_dir.display()))?;
    let names: Vec<&str> = to_make.iter().map(|(n, _, _)| n.as_str()).collect();
    log.line(&format!(
        "making input image(s) {} text-to-image",
        names.join(", ")
    ));
    if generator.is_none() {
        *generator = Some(load()?);
    }
    let Some(g) = generator.as_mut() else {
        bail!("no generator")
    };
    let params: Vec<GenParams> = to_make.iter().map(|(_, p, _)| p.clone()).collect();
    let outcomes = g.generate(&params, &mut |_, _| {})?;
    for ((name, _, cached), outcome) in to_make.iter().zip(outcomes) {
        match outcome {
            CellOutcome::Image(img) => {
                let bytes = png::encode(&img, &[])?;
                atomic_write(cached, &bytes)?;
                write_if_changed(&run.inputs().join(format!("{name}.png")), &bytes)?;
            }
            CellOutcome::Failed(reason) => {
                bail!("[images.{name}]: the text-to-image input could not be made: {reason}")
            }
        }
    }
    crate::derive::inputs::write_all(exp, &run.inputs(), &cache_dir, ids)
}
