//! Batches: which cells share one pipeline call, and how many. The runner is the one owner
//! of the batch size: a run takes `--batch` or the generator's estimate when it starts,
//! records the size in `batch.json`, halves it on out-of-memory (recording the new size) and
//! resumes with the recorded size. Batches are a fixed function of the cells and that size,
//! so a resumed run makes the batches an uninterrupted one makes (floating-point results can
//! depend on a batch's shape).
use super::fsio::atomic_write;
use super::generator::Generator;
use crate::params::GenParams;
use crate::pipeline::{CellOutcome, GenerateError};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// A batch of cells that may share trajectories holds up to this many times the batch
/// size (its UNet calls and decodes still take at most the batch size's rows).
pub const SHARED_BATCH: usize = 16;

/// Splits `cells` into batches, each batch holding cells with the same
/// [`GenParams::batch_key`], in the order of first appearance. Where no two cells of a key
/// may share a trajectory ([`GenParams::trunk_key`]), batches are runs of at most
/// `max_batch` cells, indices in order; otherwise the cells of each trunk are kept together
/// (trunks in order of first appearance, cells in order within them) and packed into
/// batches of at most `max_batch * SHARED_BATCH` cells, so that they share their steps.
pub fn plan_batches(cells: &[GenParams], max_batch: usize) -> Vec<Vec<usize>> {
    let max_batch = max_batch.max(1);
    let by_key = first_appearance(cells.iter().map(GenParams::batch_key).collect());
    by_key
        .into_iter()
        .flat_map(|members| {
            let trunks = first_appearance(members.iter().map(|&i| cells[i].trunk_key()).collect());
            let trunks: Vec<Vec<usize>> = trunks
                .into_iter()
                .map(|t| t.into_iter().map(|k| members[k]).collect())
                .collect();
            if trunks.iter().all(|t| t.len() == 1) {
                members.chunks(max_batch).map(<[usize]>::to_vec).collect()
            } else {
                pack(trunks, max_batch * SHARED_BATCH)
            }
        })
        .collect()
}

/// The indices of `keys` grouped by equal key, groups in order of first appearance.
fn first_appearance<K: PartialEq>(keys: Vec<K>) -> Vec<Vec<usize>> {
    let mut groups: Vec<(K, Vec<usize>)> = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups.into_iter().map(|(_, m)| m).collect()
}

/// Whole trunks (split where longer than `limit`) packed in order into batches of at most
/// `limit` cells.
fn pack(trunks: Vec<Vec<usize>>, limit: usize) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = vec![];
    let mut current: Vec<usize> = vec![];
    for piece in trunks.iter().flat_map(|t| t.chunks(limit)) {
        if current.len() + piece.len() > limit {
            batches.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(piece);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// A run's batch size, as recorded in its `batch.json`.
#[derive(Debug)]
pub struct BatchSize {
    file: PathBuf,
    size: usize,
}

impl BatchSize {
    /// The size the run in `run_dir` was started with; for a new run `requested` (`--batch`)
    /// or else `estimate()`, recorded. A `--batch` that differs from the recorded size is
    /// refused: the resumed images would not be the ones an uninterrupted run makes.
    pub fn resolve(
        run_dir: &Path,
        requested: Option<usize>,
        estimate: impl FnOnce() -> usize,
    ) -> Result<BatchSize> {
        let file = run_dir.join("batch.json");
        let stored = read_size(&file)?;
        let size = match (stored, requested) {
            (Some(s), Some(r)) if s != r => bail!(
                "--batch {r}: this run ({}) was made with batches of {s}, and resumed images must \
                 be those an uninterrupted run makes; leave --batch out, or start a new run with \
                 --new --batch {r}",
                run_dir.display()
            ),
            (Some(s), _) => s,
            (None, r) => r.unwrap_or_else(estimate).max(1),
        };
        let batch = BatchSize { file, size };
        if stored != Some(size) {
            batch.record()?;
        }
        Ok(batch)
    }

    pub fn get(&self) -> usize {
        self.size
    }

    fn record(&self) -> Result<()> {
        atomic_write(
            &self.file,
            &serde_json::to_vec(&serde_json::json!({ "batch": self.size }))?,
        )
    }

    /// Makes the batch `cells` through `g`, at least those `wanted` ([`Generator::generate`]).
    /// On out-of-memory the run's size becomes half the failed batch (recorded) and `None`
    /// comes back: the caller plans its batches again.
    pub fn attempt(
        &mut self,
        g: &mut dyn Generator,
        cells: &[GenParams],
        wanted: &[bool],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Option<Vec<Option<CellOutcome>>>> {
        match g.generate(cells, wanted, progress) {
            Ok(outcomes) if outcomes.len() == cells.len() => Ok(Some(outcomes)),
            Ok(outcomes) => bail!(
                "the pipeline returned {} images for {} cells",
                outcomes.len(),
                cells.len()
            ),
            Err(GenerateError::OutOfMemory(msg)) if cells.len() > 1 => {
                self.size = cells.len().div_ceil(2).min(self.size);
                log::warn!(
                    "out of memory with a batch of {}; the run goes on with batches of {} ({msg})",
                    cells.len(),
                    self.size
                );
                self.record()?;
                Ok(None)
            }
            Err(GenerateError::OutOfMemory(msg)) => {
                bail!("out of memory with a batch of one image: {msg}")
            }
            Err(GenerateError::Other(e)) => Err(e),
        }
    }
}

pub(super) fn read_size(file: &Path) -> Result<Option<usize>> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not valid JSON", file.display()))?;
    match value["batch"].as_u64() {
        Some(n) if n > 0 => Ok(Some(n as usize)),
        _ => bail!("{}: no positive \"batch\" number", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::SchedulerKind;

    #[test]
    fn batches_share_a_key_and_respect_the_size_limit() {
        let mut cells: Vec<GenParams> = (0..7).map(GenParams::new).collect();
        cells[2].steps = 10;
        cells[5].scheduler = SchedulerKind::Euler;
        let batches = plan_batches(&cells, 2);
        assert_eq!(
            batches,
            vec![vec![0, 1], vec![3, 4], vec![6], vec![2], vec![5]]
        );
        for b in &batches {
            assert!(
                b.iter()
                    .all(|&i| cells[i].batch_key() == cells[b[0]].batch_key())
            );
        }
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn shared_trajectory_batches_keep_each_trunk_together() {
        // Two seeds, three probes each, seeds innermost: each seed's probes form one trunk.
        let cells: Vec<GenParams> = (0..6)
            .map(|i| {
                let mut c = GenParams::new(i % 2);
                c.neg_steps_at = Some((i / 2).to_string().parse().unwrap());
                c
            })
            .collect();
        assert_eq!(plan_batches(&cells, 2), vec![vec![0, 2, 4, 1, 3, 5]]);
        assert_eq!(plan_batches(&cells, 1).concat(), vec![0, 2, 4, 1, 3, 5]);
        assert!(
            plan_batches(&cells, 1)
                .iter()
                .all(|b| b.len() <= SHARED_BATCH)
        );
    }

    #[test]
    fn a_run_keeps_its_recorded_size_and_refuses_another() {
        let dir = std::env::temp_dir().join(format!("negimg-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("batch.json"));
        assert_eq!(BatchSize::resolve(&dir, None, || 6).unwrap().get(), 6);
        assert_eq!(BatchSize::resolve(&dir, None, || 2).unwrap().get(), 6);
        assert_eq!(BatchSize::resolve(&dir, Some(6), || 2).unwrap().get(), 6);
        let err = BatchSize::resolve(&dir, Some(3), || 2).unwrap_err();
        assert!(format!("{err:#}").contains("batches of 6"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
