//! The grid runner with a deterministic fake generator: resume, force, new runs, shards,
//! failed (NaN) cells, interrupts, unwritable results, cached inputs, partial files, a
//! shared-trajectory batch partly written, resumed.
mod common;

use anyhow::Result;
use negimg::experiment::{self, Experiment, LoadOptions};
use negimg::params::{GenParams, NegativeMode};
use negimg::pipeline::{CellOutcome, GenerateError};
use negimg::run::records::{Status, read_records};
use negimg::run::{Generator, RunChoice, RunOptions, Shard, runner};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Writes files shaped like a diffusers pipeline, an image encoder and two adapters
/// (contents are dummies: the fake generator never reads them).
fn dummy_models(dir: &Path) {
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("pipeline/model_index.json", "{}");
    for sub in ["unet", "vae"] {
        write(&format!("pipeline/{sub}/config.json"), "{}");
        write(
            &format!("pipeline/{sub}/diffusion_pytorch_model.safetensors"),
            sub,
        );
    }
    write("pipeline/text_encoder/config.json", "{}");
    write("pipeline/text_encoder/model.safetensors", "te");
    write("pipeline/tokenizer/vocab.json", "{}");
    write("pipeline/tokenizer/merges.txt", "");
    write("pipeline/scheduler/scheduler_config.json", "{}");
    write("image_encoder/config.json", "{}");
    write("image_encoder/model.safetensors", "enc");
    write("ip-adapter_sd15.safetensors", "base");
    write("ip-adapter-plus_sd15.safetensors", "plus");
}

/// Two adapters crossed with cfg and weight.
fn experiment() -> String {
    fake_toml(
        "fake",
        "base = \"models/ip-adapter_sd15.safetensors\", plus = \"models/ip-adapter-plus_sd15.safetensors\"",
        r#"negative_image = "lawn"
seeds = { count = 2 }

[grid]
adapter = ["base", "plus"]
cfg = [5, 13, 7]
weight = [0.5, 1]
"#,
    )
}

/// 2 adapters x 3 cfg x 2 weights x 2 seeds.
const CELLS: usize = 24;

/// An experiment `name` with the base adapter, then `cells` ([`fake_toml`]).
fn one_adapter(name: &str, cells: &str) -> String {
    fake_toml(name, "base = \"models/ip-adapter_sd15.safetensors\"", cells)
}

/// An experiment `name` with the adapters `adapters` (the inside of `ip_adapter`'s table),
/// the inputs `house` (made from text) and `lawn`, 3 steps at 16x16 from `house`, then
/// `cells` (more defaults and the grid).
fn fake_toml(name: &str, adapters: &str, cells: &str) -> String {
    format!(
        r#"
[experiment]
name = "{name}"

[models]
pipeline = "models/pipeline"
ip_adapter = {{ {adapters} }}
image_encoder = "models/image_encoder"

[images.house]
generate = {{ prompt = "a house" }}

[images.lawn]
path = "lawn.png"

[defaults]
steps = 3
size = 16
positive_image = "house"
{cells}"#
    )
}

/// Makes an 8x8 image whose colour is a hash of the parameters (input images by file
/// name), so it does not depend on the run folder or the batch. `cfg == fail_cfg` fails.
#[derive(Clone, Default)]
struct Fake {
    cells: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<usize>>>,
    /// Each batch's wanted flags.
    wanted: Arc<Mutex<Vec<Vec<bool>>>>,
    fail_cfg: Option<f64>,
    /// Sets the flag after this many batches (an interrupt during the run).
    stop_after: Option<(usize, Arc<AtomicBool>)>,
}

impl Generator for Fake {
    fn estimate_batch(&self, _width: usize, _height: usize) -> usize {
        3
    }
    /// Makes only the `wanted` cells, as the pipeline may.
    fn generate(
        &mut self,
        cells: &[GenParams],
        wanted: &[bool],
        progress: &mut dyn FnMut(usize, usize),
    ) -> std::result::Result<Vec<Option<CellOutcome>>, GenerateError> {
        progress(1, 1);
        self.wanted.lock().unwrap().push(wanted.to_vec());
        let mut batches = self.batches.lock().unwrap();
        batches.push(cells.len());
        if let Some((n, flag)) = &self.stop_after
            && batches.len() >= *n
        {
            flag.store(true, Ordering::SeqCst);
        }
        self.cells.fetch_add(cells.len(), Ordering::SeqCst);
        Ok(cells
            .iter()
            .zip(wanted)
            .map(|(p, &w)| w.then(|| fake_image(p, self.fail_cfg)))
            .collect())
    }
}

/// The fake's outcome for `p`: a hash of its parameters, or a failure when its cfg is
/// `fail_cfg`.
fn fake_image(p: &GenParams, fail_cfg: Option<f64>) -> CellOutcome {
    for img in [&p.positive_image, &p.negative_image].into_iter().flatten() {
        assert!(img.is_file(), "input {} missing", img.display());
    }
    if Some(p.cfg) == fail_cfg && p.positive.weight > 0.0 {
        return CellOutcome::Failed("NaN in latents at step 2".into());
    }
    let mut q = p.clone();
    q.positive_image = p
        .positive_image
        .as_ref()
        .and_then(|f| f.file_name())
        .map(PathBuf::from);
    q.negative_image = p
        .negative_image
        .as_ref()
        .and_then(|f| f.file_name())
        .map(PathBuf::from);
    let h = negimg::digest::sha256_hex(&serde_json::to_vec(&q).unwrap());
    let b = h.as_bytes();
    CellOutcome::Image(image::RgbImage::from_fn(8, 8, |x, y| {
        image::Rgb([b[0] ^ x as u8, b[1] ^ y as u8, b[2]])
    }))
}

struct Setup {
    dir: PathBuf,
    exp: Experiment,
}

fn setup(name: &str) -> Setup {
    setup_with(name, &experiment())
}

fn setup_with(name: &str, text: &str) -> Setup {
    let dir = common::scratch(name);
    dummy_models(&dir.join("models"));
    image::RgbImage::from_pixel(4, 4, image::Rgb([0, 200, 0]))
        .save(dir.join("lawn.png"))
        .unwrap();
    let file = dir.join("fake.toml");
    std::fs::write(&file, text).unwrap();
    let exp = experiment::load(&file, &LoadOptions::default()).unwrap();
    Setup { dir, exp }
}

fn options(results: &Path) -> RunOptions {
    RunOptions {
        results: results.to_path_buf(),
        choice: RunChoice::Latest,
        force: false,
        retry_failed: false,
        shard: Shard::default(),
        batch: None,
        device: "cpu".into(),
        dtype: "fp32".into(),
        progress: false,
    }
}

fn go(s: &Setup, opts: &RunOptions, fake: &Fake) -> Result<runner::Summary> {
    let stop = AtomicBool::new(false);
    go_with_stop(s, opts, fake, &stop)
}

fn go_with_stop(
    s: &Setup,
    opts: &RunOptions,
    fake: &Fake,
    stop: &AtomicBool,
) -> Result<runner::Summary> {
    let f = fake.clone();
    let mut load = move || -> Result<Box<dyn Generator>> { Ok(Box::new(f.clone())) };
    runner::run(&s.exp, opts, &mut load, stop)
}

/// Every file of the run's images/, by name.
fn images(run: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(run.join("images"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn no_temp_files(run: &Path) {
    for sub in ["images", "cells", "inputs", ""] {
        for e in std::fs::read_dir(run.join(sub)).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            assert!(!n.ends_with(".tmp"), "partial file left: {sub}/{n}");
        }
    }
}

#[test]
fn resume_skips_done_cells_and_leaves_images_unchanged() {
    let s = setup("run_resume_skip");
    let opts = options(&s.dir.join("results"));
    let fake = Fake::default();
    let first = go(&s, &opts, &fake).unwrap();
    assert_eq!(
        (first.generated, first.skipped, first.failed),
        (CELLS, 0, 0)
    );
    assert!(first.complete);
    let run = first.dir.clone();
    for f in [
        "records.csv",
        "run.json",
        "manifest.json",
        "experiment.toml",
        "log.txt",
        "inputs/house.png",
        "inputs/lawn.png",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let records = read_records(&run.join("records.csv")).unwrap();
    assert_eq!(records.len(), CELLS);
    assert!(
        records
            .iter()
            .all(|r| r.status == Status::Done && run.join(&r.file).is_file())
    );
    let before = images(&run);
    assert_eq!(before.len(), CELLS);
    let made = fake.cells.load(Ordering::SeqCst);
    assert_eq!(made, CELLS + 1, "24 cells and the generated input");

    let second = go(&s, &opts, &fake).unwrap();
    assert_eq!(second.dir, run, "continues the latest run");
    assert_eq!((second.generated, second.skipped), (0, CELLS));
    assert_eq!(
        fake.cells.load(Ordering::SeqCst),
        made,
        "nothing generated again"
    );
    assert_eq!(images(&run), before);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["experiment_text"], experiment());
    let models = manifest["models"].as_array().unwrap();
    assert!(
        models
            .iter()
            .any(|m| m["role"] == "pipeline" && m["files"].as_array().unwrap().len() >= 8)
    );
    assert_eq!(
        models
            .iter()
            .find(|m| m["role"] == "ip_adapter.base")
            .unwrap()["files"][0]["sha256"],
        negimg::digest::sha256_hex(b"base")
    );
    // Batches never mix batch keys and respect the generator's limit.
    assert!(fake.batches.lock().unwrap().iter().all(|&n| n <= 3));
}

#[test]
fn force_regenerates_and_new_starts_a_fresh_run() {
    let s = setup("run_resume_force");
    let mut opts = options(&s.dir.join("results"));
    let fake = Fake::default();
    let first = go(&s, &opts, &fake).unwrap();
    opts.force = true;
    let forced = go(&s, &opts, &fake).unwrap();
    assert_eq!(
        (forced.dir.clone(), forced.generated),
        (first.dir.clone(), CELLS)
    );
    assert_eq!(
        images(&first.dir),
        images(&forced.dir),
        "same parameters, same images"
    );
    opts.force = false;
    opts.choice = RunChoice::New;
    let inputs_before = fake.cells.load(Ordering::SeqCst);
    let fresh = go(&s, &opts, &fake).unwrap();
    assert_ne!(fresh.dir, first.dir);
    assert_eq!(fresh.generated, CELLS);
    assert_eq!(
        fake.cells.load(Ordering::SeqCst) - inputs_before,
        CELLS,
        "the generated input image comes from the cache"
    );
    assert_eq!(images(&first.dir), images(&fresh.dir));
}

#[test]
fn shards_running_concurrently_fill_one_run_folder_exactly_once() {
    let s = Arc::new(setup("run_resume_shards"));
    let fakes: Vec<Fake> = (0..3).map(|_| Fake::default()).collect();
    let threads: Vec<_> = (1..=3)
        .map(|k| {
            let s = Arc::clone(&s);
            let fake = fakes[k - 1].clone();
            std::thread::spawn(move || {
                let mut opts = options(&s.dir.join("results"));
                opts.choice = RunChoice::Id("job-7".into());
                opts.shard = Shard { index: k, count: 3 };
                go(&s, &opts, &fake).unwrap()
            })
        })
        .collect();
    let summaries: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        summaries.iter().map(|s| s.shard_cells).sum::<usize>(),
        CELLS
    );
    let run = s.dir.join("results/fake/job-7");
    assert!(summaries.iter().all(|x| x.dir == run));
    let records = read_records(&run.join("records.csv")).unwrap();
    assert_eq!(
        records.len(),
        CELLS,
        "the last shard to finish merges every record"
    );
    let mut ids: Vec<_> = records.iter().map(|r| r.cell_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), CELLS, "every cell exactly once");
    let made: usize = fakes.iter().map(|f| f.cells.load(Ordering::SeqCst)).sum();
    assert!(
        (CELLS + 1..=CELLS + 3).contains(&made),
        "{made}: each cell made by one shard"
    );
    no_temp_files(&run);

    // The same images as one unsharded run.
    let mut opts = options(&s.dir.join("results-single"));
    opts.choice = RunChoice::New;
    let single = go(&s, &opts, &Fake::default()).unwrap();
    assert_eq!(images(&single.dir), images(&run));
}

#[test]
fn nan_cell_is_marked_failed_with_its_reason_and_others_continue() {
    let s = setup("run_resume_nan");
    let mut opts = options(&s.dir.join("results"));
    let fake = Fake {
        fail_cfg: Some(13.0),
        ..Fake::default()
    };
    let sum = go(&s, &opts, &fake).unwrap();
    assert_eq!((sum.generated, sum.failed, sum.failed_total), (16, 8, 8));
    assert!(sum.complete);
    let records = read_records(&sum.dir.join("records.csv")).unwrap();
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r.status == Status::Failed)
        .collect();
    assert_eq!(failed.len(), 8);
    assert!(
        failed
            .iter()
            .all(|r| r.cfg == 13.0 && r.file.is_empty() && r.error.contains("NaN"))
    );
    let log = std::fs::read_to_string(sum.dir.join("log.txt")).unwrap();
    assert!(log.contains("failed: NaN in latents"), "{log}");
    // Failed cells are not retried unless asked; then they are.
    let again = go(&s, &opts, &Fake::default()).unwrap();
    assert_eq!((again.generated, again.failed_total), (0, 8));
    opts.retry_failed = true;
    let retried = go(&s, &opts, &Fake::default()).unwrap();
    assert_eq!((retried.generated, retried.failed_total), (8, 0));
}

#[test]
fn interrupt_finishes_the_batch_in_flight_then_resume_completes() {
    let s = setup("run_resume_interrupt");
    let opts = options(&s.dir.join("results"));
    let stop = Arc::new(AtomicBool::new(false));
    // Batch 1 makes the input image; the flag is set during the first batch of cells.
    let fake = Fake {
        stop_after: Some((2, Arc::clone(&stop))),
        ..Fake::default()
    };
    let sum = go_with_stop(&s, &opts, &fake, &stop).unwrap();
    assert!(sum.interrupted && !sum.complete);
    assert_eq!(sum.generated, 3, "the batch in flight is written");
    let records = read_records(&sum.dir.join("records.csv")).unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| sum.dir.join(&r.file).is_file()));
    let rest = go(&s, &opts, &Fake::default()).unwrap();
    assert_eq!((rest.skipped, rest.generated), (3, CELLS - 3));
    assert!(rest.complete);
    let mut fresh = options(&s.dir.join("results-uninterrupted"));
    fresh.choice = RunChoice::New;
    let whole = go(&s, &fresh, &Fake::default()).unwrap();
    assert_eq!(images(&whole.dir), images(&rest.dir));
}

#[test]
fn partial_files_of_a_killed_run_never_count() {
    let s = setup("run_resume_partial");
    let opts = options(&s.dir.join("results"));
    let first = go(&s, &opts, &Fake::default()).unwrap();
    let run = first.dir.clone();
    let complete = images(&run);
    // A kill between the image and its record, and a half-written temp file of a dead
    // process: the cell is made again and the temp file removed.
    let records = read_records(&run.join("records.csv")).unwrap();
    let victim = &records[5];
    std::fs::remove_file(run.join("cells").join(format!("{}.json", victim.cell_id))).unwrap();
    std::fs::write(run.join(&victim.file), b"truncated").unwrap();
    let host = String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let stale = run.join(format!("images/.x.png.{}.2147483646.tmp", host.trim()));
    std::fs::write(&stale, b"partial").unwrap();
    let fake = Fake::default();
    let again = go(&s, &opts, &fake).unwrap();
    assert_eq!(again.generated, 1);
    // Its batch is made whole (the same batch as the first run), the rest is skipped.
    assert_eq!(fake.cells.load(Ordering::SeqCst), 3);
    assert_eq!(*fake.batches.lock().unwrap(), [3]);
    assert!(!stale.exists());
    assert_eq!(images(&run), complete);
    no_temp_files(&run);
}

#[test]
fn unwritable_or_full_results_folder_fails_before_any_generation() {
    let s = setup("run_resume_unwritable");
    // Running as root ignores permission bits: a results "folder" that is a file cannot
    // be written either.
    let blocker = s.dir.join("results-is-a-file");
    std::fs::write(&blocker, b"").unwrap();
    let fake = Fake::default();
    let err = go(&s, &options(&blocker), &fake).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot create the results folder") && msg.contains("results-is-a-file"),
        "{msg}"
    );
    assert_eq!(fake.cells.load(Ordering::SeqCst), 0);
    let err = runner::check_space(Path::new("results"), 50 << 20, 1 << 20).unwrap_err();
    assert!(err.to_string().contains("not enough free disk"), "{err}");
    assert!(runner::check_space(Path::new("results"), 1 << 20, 50 << 20).is_ok());
}

#[test]
fn shard_specs_parse_and_partition_the_cells() {
    let s: Shard = "2/4".parse().unwrap();
    assert_eq!((s.index, s.count), (2, 4));
    for bad in ["0/4", "5/4", "x", "1/0", "3"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
    let shards: Vec<Shard> = (1..=4).map(|k| Shard { index: k, count: 4 }).collect();
    for i in 0..100 {
        assert_eq!(shards.iter().filter(|s| s.owns(i)).count(), 1);
    }
}

/// `negative = none` ignores the negative image: its two cells share one image file but
/// each has its own record row.
fn crossed() -> String {
    one_adapter(
        "crossed",
        r#"seeds = [1]

[grid]
negative = ["none", "image"]
negative_image = ["lawn", "house"]
"#,
    )
}

#[test]
fn cells_differing_only_in_an_ignored_parameter_keep_one_record_each() {
    let s = setup_with("run_resume_crossed", &crossed());
    let opts = options(&s.dir.join("results"));
    let fake = Fake::default();
    let sum = go(&s, &opts, &fake).unwrap();
    assert!(sum.complete);
    assert_eq!(sum.generated, 4, "every grid cell counted once");
    assert_eq!(
        fake.cells.load(Ordering::SeqCst),
        1 + 3,
        "the input image and three distinct images"
    );
    let records = read_records(&sum.dir.join("records.csv")).unwrap();
    let mut rows: Vec<(NegativeMode, &str)> = records
        .iter()
        .map(|r| (r.negative, r.negative_image.as_str()))
        .collect();
    rows.sort();
    let mut want = vec![
        (NegativeMode::Image, "house"),
        (NegativeMode::Image, "lawn"),
        (NegativeMode::None, "house"),
        (NegativeMode::None, "lawn"),
    ];
    want.sort();
    assert_eq!(rows, want);
    let mut ids: Vec<_> = records.iter().map(|r| r.cell_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "one record key per cell");
    let none: Vec<_> = records
        .iter()
        .filter(|r| r.negative == NegativeMode::None)
        .collect();
    assert_eq!(none[0].file, none[1].file, "one image file for both");
    assert_eq!(images(&sum.dir).len(), 3);
    // Cells whose image is their own keep the image id as record key.
    for r in records.iter().filter(|r| r.negative == NegativeMode::Image) {
        assert_eq!(r.file, format!("images/{}.png", r.cell_id));
    }
    let again = go(&s, &opts, &fake).unwrap();
    assert_eq!((again.generated, again.skipped), (0, 4));
}

#[test]
fn editing_the_experiment_is_said_and_changed_cells_need_new_or_force() {
    let s = setup("run_resume_edited");
    let mut opts = options(&s.dir.join("results"));
    let first = go(&s, &opts, &Fake::default()).unwrap();
    let file = s.dir.join("fake.toml");
    // One more cfg value: the run is extended, and the log says the file changed.
    std::fs::write(&file, experiment().replace("[5, 13, 7]", "[5, 13, 7, 9]")).unwrap();
    let grown = Setup {
        dir: s.dir.clone(),
        exp: experiment::load(&file, &LoadOptions::default()).unwrap(),
    };
    let more = go(&grown, &opts, &Fake::default()).unwrap();
    assert_eq!((more.dir.clone(), more.generated), (first.dir.clone(), 8));
    let log = std::fs::read_to_string(first.dir.join("log.txt")).unwrap();
    assert!(log.contains("changed since run"), "{log}");
    // cfg 7 becomes 8: cells of the run would change, so it is refused.
    std::fs::write(&file, experiment().replace("[5, 13, 7]", "[5, 13, 8]")).unwrap();
    let changed = Setup {
        dir: s.dir.clone(),
        exp: experiment::load(&file, &LoadOptions::default()).unwrap(),
    };
    let err = format!("{:#}", go(&changed, &opts, &Fake::default()).unwrap_err());
    assert!(
        err.contains("--new") && err.contains("no longer in the grid"),
        "{err}"
    );
    opts.choice = RunChoice::New;
    let fresh = go(&changed, &opts, &Fake::default()).unwrap();
    assert_ne!(fresh.dir, first.dir);
}

/// Methods crossed with `negative`: at `negative = none` only `uncond` has a meaning; the
/// other methods have nothing to subtract and are made as that cell.
fn methods_crossed() -> String {
    one_adapter(
        "methods",
        r#"negative_image = "lawn"
seeds = [1]

[grid]
negative = ["none", "image"]
method = "uncond, three_branch, subtract, negtome"
"#,
    )
}

#[test]
fn cells_with_nothing_to_subtract_share_the_baseline_image_and_keep_its_key() {
    let s = setup_with("run_resume_nothing_to_subtract", &methods_crossed());
    let opts = options(&s.dir.join("results"));
    let fake = Fake::default();
    let sum = go(&s, &opts, &fake).unwrap();
    assert!(sum.complete);
    assert_eq!(sum.generated, 8, "every grid cell has its record");
    assert_eq!(
        fake.cells.load(Ordering::SeqCst),
        1 + 1 + 4,
        "the input, one image for the four negative = none cells, four negative images"
    );
    let records = read_records(&sum.dir.join("records.csv")).unwrap();
    let none: Vec<_> = records
        .iter()
        .filter(|r| r.negative == NegativeMode::None)
        .collect();
    assert_eq!(none.len(), 4);
    assert!(none.iter().all(|r| r.file == none[0].file), "one file");
    let methods: Vec<String> = none.iter().map(|r| r.method.to_string()).collect();
    assert_eq!(methods, ["uncond", "three_branch", "subtract", "negtome"]);
    // The image is the baseline's, made as `uncond` (the PNG records what made it).
    let json = negimg::run::png::read_texts(&sum.dir.join(&none[0].file))
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "negimg")
        .map(|(_, v)| v)
        .unwrap();
    let made: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(made["params"].get("method").is_none(), "uncond: {json}");
    // The baseline keeps the key it has in a grid without the other methods.
    let baseline = none[0];
    assert_eq!(baseline.file, format!("images/{}.png", baseline.cell_id));
    let alone = setup_with(
        "run_resume_nothing_to_subtract_alone",
        &methods_crossed().replace(
            "method = \"uncond, three_branch, subtract, negtome\"",
            "method = \"uncond\"",
        ),
    );
    let sum_alone = go(
        &alone,
        &options(&alone.dir.join("results")),
        &Fake::default(),
    )
    .unwrap();
    let alone_records = read_records(&sum_alone.dir.join("records.csv")).unwrap();
    let alone_none = alone_records
        .iter()
        .find(|r| r.negative == NegativeMode::None)
        .unwrap();
    assert_eq!(alone_none.cell_id, baseline.cell_id);
    // With a negative image every method makes its own image.
    let image: std::collections::BTreeSet<_> = records
        .iter()
        .filter(|r| r.negative == NegativeMode::Image)
        .map(|r| r.file.clone())
        .collect();
    assert_eq!(image.len(), 4);
    let again = go(&s, &opts, &fake).unwrap();
    assert_eq!((again.generated, again.skipped), (0, 8));
}

/// A one-step probe grid: the no-negative baseline and the negative at each of 3 steps, 2
/// seeds: per seed one trunk of 4 images sharing their trajectories.
fn probes() -> String {
    one_adapter(
        "probes",
        r#"negative_image = "lawn"
neg_off = "no_image"
seeds = { count = 2 }

[grid]
negative = ["none", "image"]
neg_steps_at = "each 0-2"
"#,
    )
}

/// Each file under images/ and cells/ with its bytes and modification time.
fn written(run: &Path) -> BTreeMap<String, (Vec<u8>, std::time::SystemTime)> {
    ["images", "cells"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(run.join(sub)).unwrap().flatten())
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.path().display().to_string(),
                (std::fs::read(e.path()).unwrap(), meta.modified().unwrap()),
            )
        })
        .collect()
}

#[test]
fn resume_mid_trunk_writes_only_the_cells_not_written_and_leaves_the_finished_ones() {
    let s = setup_with("run_resume_mid_trunk", &probes());
    let opts = options(&s.dir.join("results"));
    let fake = Fake::default();
    let first = go(&s, &opts, &fake).unwrap();
    assert!(first.complete);
    // The input image, then both trunks (2 x 4 distinct images) in one shared batch.
    assert_eq!(*fake.batches.lock().unwrap(), [1, 8]);
    let run = first.dir.clone();
    let whole = images(&run);
    // A kill while that batch's cells were being written: three probes of the batch have
    // neither record nor image (a kill between an image and its record is covered above).
    let records = read_records(&run.join("records.csv")).unwrap();
    let lost: Vec<_> = records
        .iter()
        .filter(|r| r.negative == NegativeMode::Image)
        .take(3)
        .collect();
    for r in &lost {
        std::fs::remove_file(run.join("cells").join(format!("{}.json", r.cell_id))).unwrap();
        std::fs::remove_file(run.join(&r.file)).unwrap();
    }
    let kept = written(&run);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let fake = Fake::default();
    let again = go(&s, &opts, &fake).unwrap();
    assert!(again.complete);
    assert_eq!((again.generated, again.skipped), (3, records.len() - 3));
    // The batch is handed over whole again (its images must be those of the uninterrupted
    // run, and a UNet call of other rows may round differently), with only the three
    // wanted: the work that leads to no other cell is skipped ...
    assert_eq!(*fake.batches.lock().unwrap(), [8]);
    let wanted = fake.wanted.lock().unwrap().concat();
    assert_eq!(wanted.iter().filter(|&&w| w).count(), 3, "{wanted:?}");
    // ... but only the three are written: the finished cells' files are untouched ...
    let now = written(&run);
    for (path, before) in &kept {
        assert_eq!(now.get(path), Some(before), "{path} was written again");
    }
    // ... and the images are those of the uninterrupted run.
    assert_eq!(images(&run), whole);
    no_temp_files(&run);
}
