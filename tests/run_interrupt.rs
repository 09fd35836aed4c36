//! The real binary on the tiny models: SIGKILL at a random point then a rerun gives every
//! image exactly once, byte-identical to an uninterrupted run;
//! SIGINT finishes the writes in flight and exits 130; a one-step probe grid killed with its
//! shared-trajectory batch partly written resumes leaving its finished cells' files as they
//! were, identical to an uninterrupted run; slurm scripts; plan output.
mod common;

use common::tiny::tiny_models;
use negimg::run::records::{Status, read_records};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// 2 weights x 4 seeds = 8 cells of 2 steps at 64x64.
const CELLS: usize = 8;

fn experiment(dir: &Path) -> PathBuf {
    kill_toml(
        dir,
        r#"[defaults]
prompt = "a house"
steps = 2
size = 64
dtype = "fp32"
negative_image = "lawn"
seeds = { count = 4 }
[grid]
weight = [0.5, 1.0]
"#,
    )
}

/// kill.toml on the tiny models with a negative image `lawn` and `cells` (its defaults and
/// grid).
fn kill_toml(dir: &Path, cells: &str) -> PathBuf {
    let models = common::tiny::models_toml(&tiny_models());
    let text = format!(
        r#"[experiment]
name = "kill"
{models}[images.lawn]
generate = {{ prompt = "a lawn", seed = 2 }}
{cells}"#
    );
    let file = dir.join("kill.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn spawn(dir: &Path, results: &str, extra: &[&str]) -> Child {
    Command::new(common::negimg_bin())
        .args([
            "--device",
            "cpu",
            "run",
            "kill.toml",
            "--no-report",
            "--results",
            results,
        ])
        .args(extra)
        .current_dir(dir)
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run negimg")
}

fn run_to_end(dir: &Path, results: &str, extra: &[&str]) -> String {
    let out = spawn(dir, results, extra).wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "negimg run failed:\n{text}");
    text
}

/// The only run folder under `results/kill`.
fn run_dir(results: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(results.join("kill"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn done_cells(results: &Path) -> usize {
    let Ok(runs) = std::fs::read_dir(results.join("kill")) else {
        return 0;
    };
    runs.flatten()
        .filter_map(|r| std::fs::read_dir(r.path().join("cells")).ok())
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .sum()
}

fn wait_for_cells(results: &Path, n: usize, child: &mut Child) {
    let t = Instant::now();
    while done_cells(results) < n {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {n} cells"
        );
        // A hang guard, not a timing: a machine loaded 10x over its cores took minutes.
        assert!(t.elapsed() < Duration::from_secs(900), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn images(run: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(run.join("images"))
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            assert!(!name.starts_with('.'), "partial file left: images/{name}");
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn check_complete(run: &Path) {
    let records = read_records(&run.join("records.csv")).unwrap();
    assert_eq!(records.len(), CELLS);
    let mut ids: Vec<&str> = records.iter().map(|r| r.cell_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), CELLS, "every image exactly once");
    assert!(records.iter().all(|r| r.status == Status::Done));
    for sub in ["cells", "inputs", ""] {
        for e in std::fs::read_dir(run.join(sub)).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            assert!(!n.ends_with(".tmp"), "partial file left: {sub}/{n}");
        }
    }
}

#[test]
fn sigkill_at_a_random_point_then_rerun_completes_identical_to_an_uninterrupted_run() {
    let dir = common::scratch("run_interrupt_kill");
    experiment(&dir);
    // Uninterrupted.
    run_to_end(&dir, "whole", &["--batch", "2"]);
    let whole = images(&run_dir(&dir.join("whole")));
    assert_eq!(whole.len(), CELLS);

    // Killed after a random number of finished cells, then resumed (the run keeps its
    // batch size, so the resumed batches are those of an uninterrupted run).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    let kill_after = 1 + nanos % (CELLS - 4);
    let mut child = spawn(&dir, "killed", &["--batch", "2"]);
    wait_for_cells(&dir.join("killed"), kill_after, &mut child);
    std::thread::sleep(Duration::from_millis((nanos % 300) as u64));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = done_cells(&dir.join("killed"));
    assert!(before < CELLS, "killed too late ({before} cells done)");
    let out = run_to_end(&dir, "killed", &[]);
    assert!(
        out.contains(&format!(
            "{} made now, {before} kept from before",
            CELLS - before
        )),
        "{out}"
    );
    let run = run_dir(&dir.join("killed"));
    check_complete(&run);
    assert_eq!(
        images(&run),
        whole,
        "killed after {kill_after}: images differ"
    );

    // Again: nothing new, nothing changed.
    let out = run_to_end(&dir, "killed", &[]);
    assert!(
        out.contains(&format!("0 made now, {CELLS} kept from before")),
        "{out}"
    );
    assert_eq!(images(&run), whole);
}

/// The finished cells' files (each record under cells/ and the image it names) with their
/// bytes and modification times. (An image without its record, or a temp file, is a write
/// a kill cut short: the rerun makes that cell again.)
fn written(run: &Path) -> BTreeMap<String, (Vec<u8>, std::time::SystemTime)> {
    let stamp = |p: PathBuf| {
        let modified = std::fs::metadata(&p).unwrap().modified().unwrap();
        (
            p.display().to_string(),
            (std::fs::read(&p).unwrap(), modified),
        )
    };
    std::fs::read_dir(run.join("cells"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .flat_map(|cell| {
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&cell).unwrap()).unwrap();
            let image = run.join(record["file"].as_str().unwrap());
            [stamp(cell), stamp(image)]
        })
        .collect()
}

/// The UNet row-steps the last call of `run` logged: (computed, planned by its batches).
fn row_steps(run: &Path) -> (usize, usize) {
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let line = log
        .lines()
        .rfind(|l| l.contains("UNet row-steps: "))
        .unwrap_or_else(|| panic!("no row-steps line in log.txt:\n{log}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "row-steps:").unwrap();
    let number = |w: &str| w.parse::<usize>().unwrap_or_else(|_| panic!("{line}"));
    (number(words[at + 1]), number(words[at + 5]))
}

#[test]
fn shared_trajectory_resume_after_sigkill_keeps_finished_cells_and_equals_an_uninterrupted_run() {
    let dir = common::scratch("run_interrupt_shared_trajectories");
    // The baseline and the negative at each of 4 steps, 4 seeds: 20 cells, 20 images in 4
    // trunks of 5, which at --batch 2 are made in one batch of shared trajectories.
    kill_toml(
        &dir,
        r#"[defaults]
prompt = "a house"
steps = 4
size = 32
dtype = "fp32"
negative_image = "lawn"
neg_off = "no_image"
seeds = { count = 4 }
[grid]
negative = ["none", "image"]
neg_steps_at = "each 0-3"
"#,
    );
    const PROBE_CELLS: usize = 32;
    run_to_end(&dir, "whole", &["--batch", "2"]);
    let whole = images(&run_dir(&dir.join("whole")));
    assert_eq!(whole.len(), 20);

    let mut child = spawn(&dir, "killed", &["--batch", "2"]);
    // Records are written trunk by trunk (a baseline image has 4 cells): the last trunk is
    // being written, so the resumed batch leads to few cells and skips calls.
    wait_for_cells(&dir.join("killed"), PROBE_CELLS - 4, &mut child);
    child.kill().unwrap(); // SIGKILL, in or just after the writes of the batch
    child.wait().unwrap();
    let run = run_dir(&dir.join("killed"));
    // Whether or not the kill landed in the batch's writes, leave the batch partly
    // written: two of its written probes lose their record and image.
    let cell_files: Vec<PathBuf> = std::fs::read_dir(run.join("cells"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    let mut lost = 0;
    for cell in cell_files {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cell).unwrap()).unwrap();
        if record["negative"] == "image" && lost < 2 {
            std::fs::remove_file(&cell).unwrap();
            std::fs::remove_file(run.join(record["file"].as_str().unwrap())).unwrap();
            lost += 1;
        }
    }
    assert!(lost > 0, "no probe written before the kill");
    let kept = written(&run);
    let before = done_cells(&dir.join("killed"));
    std::thread::sleep(Duration::from_millis(20));
    let out = run_to_end(&dir, "killed", &[]);
    assert!(
        out.contains(&format!(
            "{} made now, {before} kept from before",
            PROBE_CELLS - before
        )),
        "{out}"
    );
    let now = written(&run);
    for (path, was) in &kept {
        assert_eq!(now.get(path), Some(was), "{path} was written again");
    }
    assert_eq!(images(&run), whole, "resumed images differ");
    // The uninterrupted run computes every row-step of its batch; the resumed one keeps the
    // batch's calls but skips those that lead only to the finished cells.
    let whole_steps = row_steps(&run_dir(&dir.join("whole")));
    assert_eq!(whole_steps.0, whole_steps.1, "{whole_steps:?}");
    let resumed = row_steps(&run);
    assert_eq!(
        resumed.1, whole_steps.1,
        "the resumed batch plans the same calls"
    );
    assert!(
        resumed.0 < resumed.1,
        "the resumed run computed {} of {} row-steps",
        resumed.0,
        resumed.1
    );
    let records = read_records(&run.join("records.csv")).unwrap();
    assert_eq!(records.len(), PROBE_CELLS);
    assert!(records.iter().all(|r| r.status == Status::Done));
}

#[test]
fn sigint_finishes_the_writes_in_flight_and_exits_130() {
    let dir = common::scratch("run_interrupt_sigint");
    experiment(&dir);
    let results = dir.join("int");
    let mut child = spawn(&dir, "int", &["--batch", "2"]);
    wait_for_cells(&results, 2, &mut child);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let run = run_dir(&results);
    let records = read_records(&run.join("records.csv")).unwrap();
    assert!(
        !records.is_empty() && records.len() < CELLS,
        "{} records",
        records.len()
    );
    assert_eq!(
        records.len(),
        done_cells(&results),
        "records.csv lists every finished cell"
    );
    assert!(records.iter().all(|r| run.join(&r.file).is_file()));
    assert_eq!(
        images(&run).len(),
        records.len(),
        "no image without its record"
    );
    run_to_end(&dir, "int", &[]);
    check_complete(&run);
}

#[test]
fn second_sigint_stops_at_once_with_one_line_and_exits_130() {
    let dir = common::scratch("run_interrupt_sigint_twice");
    experiment(&dir);
    let results = dir.join("int2");
    let mut child = spawn(&dir, "int2", &["--batch", "4"]);
    // The first batch of four written and a moment passed: the second batch (about a second
    // of work) is in flight, so both signals land while it runs. Signalled after one cell, the
    // first signal could find its batch finishing and the run would end before the second.
    wait_for_cells(&results, 4, &mut child);
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..2 {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(30));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopping now"), "{stderr}");
    for bad in ["panicked", "backtrace", "frame #", "terminate called"] {
        assert!(!stderr.contains(bad), "{bad} in {stderr}");
    }
    // Not on a terminal: progress lines with counts and an ETA.
    assert!(
        stderr.contains("cells done") && stderr.contains("ETA"),
        "{stderr}"
    );
    let log = std::fs::read_to_string(run_dir(&results).join("log.txt")).unwrap();
    assert!(log.contains("cells done") && log.contains("ETA"), "{log}");
    // Killed mid-batch: records.csv and run.json are there, listing the cells written.
    let run = run_dir(&results);
    assert!(run.join("run.json").is_file());
    let records = read_records(&run.join("records.csv")).unwrap();
    assert!(!records.is_empty(), "records.csv lists the first cells");
    assert!(records.iter().all(|r| run.join(&r.file).is_file()));
    // The partial run can be inspected ...
    let run_arg = run.to_str().unwrap();
    let status = common::negimg(&["status", run_arg], &dir);
    let listing = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{listing}");
    let done = done_cells(&results);
    assert!(
        listing.contains(&format!(
            "{CELLS} cells: {done} done, 0 failed, {} pending",
            CELLS - done
        )),
        "{listing}"
    );
    assert_eq!(
        listing.matches(" pending ").count(),
        CELLS - done,
        "{listing}"
    );
    // ... scored: every cell written gets its scores, the pending ones none ...
    let scorer = tiny_models().join("scorer");
    let score = common::negimg(
        &[
            "score",
            run_arg,
            "--scorer",
            scorer.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &dir,
    );
    assert!(
        score.status.success(),
        "{}",
        String::from_utf8_lossy(&score.stderr)
    );
    let id = negimg::scoring::scorer_id(&scorer).unwrap();
    let scores = negimg::scoring::scorer_dir(&run, &id).join("scores.csv");
    let table = negimg::scoring::read_scores(&scores).unwrap();
    let written: Vec<&str> = records
        .iter()
        .filter(|r| r.status == negimg::run::records::Status::Done)
        .map(|r| r.cell_id.as_str())
        .collect();
    assert!(!written.is_empty());
    assert!(
        written.iter().all(|c| table.values.contains_key(*c)),
        "{scores:?}"
    );
    assert!(table.values.len() < CELLS, "pending cells have no scores");
    // ... and plotted.
    let plot = common::negimg(&["plot", run_arg], &dir);
    assert!(
        plot.status.success(),
        "{}",
        String::from_utf8_lossy(&plot.stderr)
    );
    assert!(run.join("index.html").is_file());
}

#[test]
fn slurm_writes_a_job_array_of_shards_sharing_one_run() {
    let dir = common::scratch("run_interrupt_slurm");
    experiment(&dir);
    let out = common::negimg(
        &[
            "slurm",
            "kill.toml",
            "--jobs",
            "4",
            "--run-id",
            "sweep1",
            "--out",
            "job.sbatch",
            "--partition",
            "gpu",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = std::fs::read_to_string(dir.join("job.sbatch")).unwrap();
    for line in [
        "#SBATCH --array=1-4",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --partition=gpu",
        "--run-id sweep1 --shard \"${SLURM_ARRAY_TASK_ID}/4\"",
    ] {
        assert!(script.contains(line), "{line:?} not in:\n{script}");
    }
    assert!(
        dir.join("results/kill/slurm").is_dir(),
        "the log folder sbatch needs"
    );
    // What one array task runs works as is (task 2 of 4 here).
    let task = script
        .lines()
        .last()
        .unwrap()
        .replace("${SLURM_ARRAY_TASK_ID}", "2");
    let out = Command::new("bash")
        .args(["-c", &task.replace("exec ", "")])
        .arg("--")
        .env("NEGIMG_DEVICE", "cpu")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("(2 in shard 2/4)") && text.contains("not complete yet"),
        "{text}"
    );
    let records = read_records(&dir.join("results/kill/sweep1/records.csv")).unwrap();
    assert_eq!(records.len(), 2);
}

#[test]
fn plan_prints_the_cells_counts_and_an_estimate_without_writing() {
    let dir = common::scratch("run_interrupt_plan");
    experiment(&dir);
    let out = common::negimg(&["--device", "cpu", "plan", "kill.toml"], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("grid: weight 2 × seed 4 = 8 cells"), "{text}");
    assert!(text.contains("weight=0.5 seed=0"), "{text}");
    assert!(text.contains("8 cells: 2 steps 64x64 ddim base"), "{text}");
    assert!(text.contains("estimate on cpu fp32"), "{text}");
    assert!(!dir.join("results").exists());
}
