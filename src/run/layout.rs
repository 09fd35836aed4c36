//! The results tree: `results/<experiment>/<run-id>/`, which run to continue, and the paths
//! inside a run.
use super::fsio::FileLock;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a time.
pub fn utc(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

fn civil(t: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Howard Hinnant's days -> civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A new run id: the UTC time, `20261127-013005`.
pub fn new_run_id(now: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(now);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

pub fn check_run_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.starts_with('.')
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("run id {id:?}: letters, digits, '-', '_' and '.' only");
    }
    Ok(())
}

/// The x̂₀ of step `step` (0-based) of image `id`, relative to the run folder.
pub fn trace_file(id: &str, step: usize) -> String {
    format!("traces/{id}/step-{step:03}.png")
}

/// Paths inside one run folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub dir: PathBuf,
    pub run_id: String,
    /// True when this call made the folder.
    pub created: bool,
}

impl RunDir {
    pub fn images(&self) -> PathBuf {
        self.dir.join("images")
    }
    pub fn cells(&self) -> PathBuf {
        self.dir.join("cells")
    }
    pub fn inputs(&self) -> PathBuf {
        self.dir.join("inputs")
    }
    pub fn image_file(&self, id: &str) -> String {
        format!("images/{id}.png")
    }
    /// The x̂₀ of step `step` (0-based) of image `id`.
    pub fn trace_file(&self, id: &str, step: usize) -> String {
        trace_file(id, step)
    }
    pub fn cell_file(&self, id: &str) -> PathBuf {
        self.cells().join(format!("{id}.json"))
    }
    pub fn records(&self) -> PathBuf {
        self.dir.join("records.csv")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join(".lock")
    }
}

pub enum Choice<'a> {
    /// Continue the latest run, or start one if there is none.
    Latest,
    /// Always start a new run.
    New,
    /// This run id (created if missing): how the shards of a Slurm array meet.
    Id(&'a str),
}

/// The runs of an experiment, least recently started first (by their manifest's time, then
/// by id; generated run ids are UTC times).
pub fn runs(exp_dir: &Path) -> Vec<String> {
    let mut runs: Vec<(Option<SystemTime>, String)> = std::fs::read_dir(exp_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.path().join("manifest.json").exists() || e.path().join("cells").is_dir()
                })
                .map(|e| {
                    let started = std::fs::metadata(e.path().join("manifest.json"))
                        .and_then(|m| m.modified())
                        .ok();
                    (started, e.file_name().to_string_lossy().to_string())
                })
                .filter(|(_, n)| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    runs.into_iter().map(|(_, id)| id).collect()
}

/// Chooses (or makes) the run folder, under a lock so that shards started together agree.
pub fn open(results: &Path, experiment: &str, choice: Choice) -> Result<RunDir> {
    let exp_dir = results.join(experiment);
    std::fs::create_dir_all(&exp_dir).with_context(|| {
        format!(
            "cannot create the results folder {} (read-only, or not a folder?)",
            exp_dir.display()
        )
    })?;
    let _lock = FileLock::acquire(&exp_dir.join(".lock"))?;
    let existing = runs(&exp_dir);
    let (run_id, created) = match choice {
        Choice::Id(id) => {
            check_run_id(id)?;
            (id.to_string(), !existing.iter().any(|r| r == id))
        }
        Choice::Latest if !existing.is_empty() => (existing[existing.len() - 1].clone(), false),
        _ => {
            let base = new_run_id(SystemTime::now());
            let mut id = base.clone();
            let mut n = 2;
            while exp_dir.join(&id).exists() {
                id = format!("{base}-{n}");
                n += 1;
            }
            (id, true)
        }
    };
    let run = RunDir {
        dir: exp_dir.join(&run_id),
        run_id,
        created,
    };
    for d in [run.images(), run.cells(), run.inputs()] {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn run_ids_are_utc_times_that_sort() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_738_605); // 2026-11-27 00:16:45 UTC
        assert_eq!(new_run_id(t), "20261127-001645");
        assert_eq!(utc(t), "2026-11-27 00:16:45");
        assert_eq!(
            new_run_id(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229-000000"
        );
        assert!(check_run_id("../x").is_err());
        assert!(check_run_id("job-123").is_ok());
    }
}
