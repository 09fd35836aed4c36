//! `negimg slurm`: the job-array script (device, dtype, GPUs, more tasks than cells), and the
//! smoke experiment run as three array tasks under a real single-node Slurm
//! (scripts/slurm-local.sh starts one as root; without it that test is skipped, saying so).
mod common;

use negimg::run::records::{Status, read_records};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The smoke experiment in `dir/experiments/`, its `../models/tiny` the shared tiny models.
fn smoke(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::os::unix::fs::symlink(common::tiny::tiny_models(), dir.join("models/tiny")).unwrap();
    let exp = dir.join("experiments/smoke.toml");
    std::fs::copy(common::repo().join("experiments/smoke.toml"), &exp).unwrap();
    exp
}

fn negimg(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = common::negimg(args, dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn slurm_script_passes_device_dtype_and_gpus_and_warns_of_idle_tasks() {
    let dir = common::scratch("slurm_script");
    let exp = smoke(&dir);
    let exp = exp.to_str().unwrap();
    let script = dir.join("cpu.sbatch");
    let (ok, out, err) = negimg(
        &dir,
        &[
            "--device",
            "cpu",
            "--dtype",
            "fp32",
            "slurm",
            exp,
            "--jobs",
            "50",
            "--gpus",
            "0",
            "--out",
            script.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(!text.contains("--gres"), "{text}");
    let exec = text.lines().find(|l| l.starts_with("exec ")).unwrap();
    assert!(
        exec.contains(" --device 'cpu' --dtype 'fp32' run "),
        "{exec}"
    );
    assert!(
        err.contains("warning: 50 tasks for 48 cells") && err.contains("--jobs 48"),
        "{err}"
    );

    let script = dir.join("gpu.sbatch");
    let args = [
        "slurm",
        exp,
        "--jobs",
        "3",
        "--out",
        script.to_str().unwrap(),
    ];
    let (ok, out, err) = negimg(&dir, &args);
    assert!(ok, "{out}{err}");
    assert!(!err.contains("warning"), "{err}");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --gres=gpu:1\n"), "{text}");
    assert!(
        !text.contains("--device"),
        "auto is each task's own: {text}"
    );
    let script = dir.join("gpu2.sbatch");
    let args = [
        "slurm",
        exp,
        "--jobs",
        "3",
        "--gpus",
        "2",
        "--out",
        script.to_str().unwrap(),
    ];
    let (ok, out, err) = negimg(&dir, &args);
    assert!(ok, "{out}{err}");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --gres=gpu:2\n"), "{text}");
}

/// Why Slurm cannot be used here, or None when a node is up.
fn slurm_missing() -> Option<String> {
    let out = match Command::new("sinfo").args(["-h", "-o", "%T"]).output() {
        Ok(out) => out,
        Err(e) => return Some(format!("sinfo cannot be run ({e})")),
    };
    let states = String::from_utf8_lossy(&out.stdout).to_string();
    let up = states
        .lines()
        .any(|s| s.starts_with("idle") || s.starts_with("mixed") || s.starts_with("alloc"));
    (!up).then(|| {
        format!(
            "no Slurm node is up (sinfo: {:?} {})",
            states.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

#[test]
fn slurm_array_of_three_tasks_makes_the_smoke_run_under_real_slurm() {
    if let Some(why) = slurm_missing() {
        eprintln!(
            "SKIPPED slurm_array_of_three_tasks_makes_the_smoke_run_under_real_slurm: {why}; \
             start one with `sudo scripts/slurm-local.sh`"
        );
        return;
    }
    let dir = common::scratch("slurm_array");
    let exp = smoke(&dir);
    let results = dir.join("results");
    let script = dir.join("smoke.sbatch");
    let (ok, out, err) = negimg(
        &dir,
        &[
            "--device",
            "cpu",
            "--dtype",
            "fp32",
            "slurm",
            exp.to_str().unwrap(),
            "--jobs",
            "3",
            "--gpus",
            "0",
            "--cpus",
            "1",
            "--mem",
            "2G",
            "--time",
            "00:30:00",
            "--run-id",
            "slurm-test",
            "--results",
            results.to_str().unwrap(),
            "--out",
            script.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let sub = Command::new("sbatch")
        .arg("--parsable")
        .arg(&script)
        .current_dir(&dir)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        sub.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&sub.stderr)
    );
    let job = String::from_utf8_lossy(&sub.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-j", &job, "-o", "%i %T"])
            .output()
            .unwrap();
        let queued = String::from_utf8_lossy(&q.stdout).to_string();
        if queued.trim().is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let _ = Command::new("scancel").arg(&job).status();
            panic!("job {job} still queued after 20 minutes:\n{queued}");
        }
        std::thread::sleep(Duration::from_secs(3));
    }

    // Three array tasks, each with its log.
    let logs_dir = results.join("smoke/slurm");
    let mut logs: Vec<(PathBuf, String)> = (1..=3)
        .map(|k| {
            let path = logs_dir.join(format!("{job}_{k}.log"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, text)
        })
        .collect();
    let all = logs
        .iter()
        .map(|(p, t)| format!("== {}\n{t}", p.display()))
        .collect::<Vec<_>>()
        .join("\n");
    let made: usize = logs
        .iter()
        .map(|(_, t)| {
            let line = t
                .lines()
                .find(|l| l.contains(" cells (") && l.contains(" made now, "))
                .unwrap_or_else(|| panic!("no summary line:\n{all}"));
            let before_made = line.split(" made now, ").next().unwrap();
            before_made
                .rsplit(' ')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(made, 48, "each cell made by exactly one task:\n{all}");

    // One run folder, every cell once.
    let runs: Vec<_> = std::fs::read_dir(results.join("smoke"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && e.file_name() != "slurm")
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(runs, vec!["slurm-test".to_string()], "{all}");
    let run = results.join("smoke/slurm-test");
    let records = read_records(&run.join("records.csv")).unwrap();
    assert_eq!(records.len(), 48, "{all}");
    assert!(records.iter().all(|r| r.status == Status::Done), "{all}");
    let ids: std::collections::BTreeSet<_> = records.iter().map(|r| &r.cell_id).collect();
    assert_eq!(ids.len(), 48, "a cell recorded twice");

    // The report, made by the task that finished last (and only by it).
    assert!(run.join("index.html").is_file(), "{all}");
    logs.sort_by_key(|(p, _)| std::fs::metadata(p).unwrap().modified().unwrap());
    let reporting: Vec<_> = logs
        .iter()
        .filter(|(_, t)| t.contains("report: "))
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(reporting, vec![logs[2].0.clone()], "{all}");
}
