//! CLIP metrics per image and statistics per condition.
//!
//! Layout in a run folder, one folder per scorer so that scorers coexist:
//!
//! ```text
//! scores/<scorer-id>/scorer.json   which model, targets, references, metric names
//! scores/<scorer-id>/scores.csv    cell_id, file, one column per metric (empty: undefined)
//! scores/<scorer-id>/summary.csv   one row per condition: n, n_failed, mean/std/CI per metric
//! scores/<scorer-id>/paired.csv    differences between negative modes on the same seed
//! scores/<scorer-id>/summary.md    the same as tables for reading
//! scores/<scorer-id>/summary.tex   booktabs tables for papers
//! ```
pub mod embed;
pub mod metrics;
pub mod stats;
pub mod tables;

use crate::run::info::RunInfo;
use crate::run::records::{Record, read_records};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stats::ScoreTable;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What `scores/<id>/scorer.json` records about a scorer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScorerInfo {
    pub id: String,
    /// The model folder used.
    pub path: String,
    /// CLIP-T target texts; `clip_t_K` is against `targets[K-1]`.
    pub targets: Vec<String>,
    pub positive_reference: Option<String>,
    pub negative_reference: Option<String>,
    /// The metric columns of scores.csv.
    pub metrics: Vec<String>,
}

pub fn read_info(run_dir: &Path) -> Result<RunInfo> {
    let path = run_dir.join("run.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} (is this a run folder?)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
}

pub fn read_run_records(run_dir: &Path) -> Result<Vec<Record>> {
    read_records(&run_dir.join("records.csv"))
}

pub fn scores_root(run_dir: &Path) -> PathBuf {
    run_dir.join("scores")
}

pub fn scorer_dir(run_dir: &Path, id: &str) -> PathBuf {
    scores_root(run_dir).join(id)
}

/// The scorers that have scored this run (ids, sorted).
pub fn scorers(run_dir: &Path) -> Result<Vec<String>> {
    let root = scores_root(run_dir);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for entry in
        std::fs::read_dir(&root).with_context(|| format!("cannot list {}", root.display()))?
    {
        let entry = entry?;
        if entry.path().join("scores.csv").is_file() {
            ids.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    ids.sort();
    Ok(ids)
}

/// A readable, stable identity for a scorer folder: its name (`org--name` for a hub
/// snapshot) and a short hash of its config.json and weight files (name, size, first MiB).
pub fn scorer_id(dir: &Path) -> Result<String> {
    let full =
        std::fs::canonicalize(dir).with_context(|| format!("cannot find {}", dir.display()))?;
    let comps: Vec<String> = full
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let name = match comps.iter().rposition(|c| c == "snapshots") {
        Some(i) if i > 0 => comps[i - 1].trim_start_matches("models--").to_string(),
        _ => comps.last().cloned().unwrap_or_default(),
    };
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let config = dir.join("config.json");
    let mut hasher = Sha256::new();
    hasher.update(
        std::fs::read(&config).with_context(|| format!("cannot read {}", config.display()))?,
    );
    let mut weights: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    for w in &weights {
        let mut head = Vec::new();
        std::fs::File::open(w)
            .with_context(|| format!("cannot read {}", w.display()))?
            .take(1 << 20)
            .read_to_end(&mut head)?;
        hasher.update(w.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.update(std::fs::metadata(w)?.len().to_le_bytes());
        hasher.update(&head);
    }
    let hash: String = hasher.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("{name}-{hash}"))
}

/// Writes `scores.csv`: cell_id, file, then the metric columns.
pub fn write_scores(
    path: &Path,
    metrics: &[String],
    rows: &[(String, String, Vec<f64>)],
) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut header = vec!["cell_id".to_string(), "file".to_string()];
    header.extend(metrics.iter().cloned());
    w.write_record(&header)?;
    for (cell, file, values) in rows {
        let mut rec = vec![cell.clone(), file.clone()];
        rec.extend(values.iter().map(|v| {
            if v.is_nan() {
                String::new()
            } else {
                format!("{v}")
            }
        }));
        w.write_record(&rec)?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads `scores.csv` of one scorer.
pub fn read_scores(path: &Path) -> Result<ScoreTable> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: no header", path.display()))?
        .clone();
    if header.get(0) != Some("cell_id") || header.get(1) != Some("file") {
        bail!("{}: expected columns cell_id,file,...", path.display());
    }
    let metrics: Vec<String> = header.iter().skip(2).map(String::from).collect();
    let mut values = HashMap::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{}: row {} is malformed", path.display(), i + 2))?;
        let v = row
            .iter()
            .skip(2)
            .map(|s| {
                if s.is_empty() {
                    Ok(f64::NAN)
                } else {
                    s.parse::<f64>().with_context(|| {
                        format!("{}: row {}: {s:?} is not a number", path.display(), i + 2)
                    })
                }
            })
            .collect::<Result<Vec<f64>>>()?;
        if v.len() != metrics.len() {
            bail!(
                "{}: row {} has {} values, expected {}",
                path.display(),
                i + 2,
                v.len(),
                metrics.len()
            );
        }
        values.insert(row[0].to_string(), v);
    }
    Ok(ScoreTable { metrics, values })
}

pub fn read_scorer_info(run_dir: &Path, id: &str) -> Result<ScorerInfo> {
    let path = scorer_dir(run_dir, id).join("scorer.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
}

/// (Re)computes the statistics of one scorer from its scores.csv and the records, and writes
/// summary.csv, paired.csv, summary.md and summary.tex beside it.
pub fn summarize_scorer(run_dir: &Path, id: &str) -> Result<stats::Summary> {
    let info = read_info(run_dir)?;
    let records = read_run_records(run_dir)?;
    let dir = scorer_dir(run_dir, id);
    let scores = read_scores(&dir.join("scores.csv"))?;
    let scorer = read_scorer_info(run_dir, id)?;
    let summary = stats::summarize(&info, &records, &scores);
    tables::write_summary_csv(&summary, &dir.join("summary.csv"))?;
    tables::write_paired_csv(&summary, &dir.join("paired.csv"))?;
    let notes = score_notes(&scorer);
    let title = format!("{} — scorer {id}", info.experiment);
    let md = tables::markdown(&summary, &title, &notes);
    let path = dir.join("summary.md");
    std::fs::write(&path, md).with_context(|| format!("cannot write {}", path.display()))?;
    let tex = tables::latex(&summary, &format!("{} (scorer {id})", info.experiment));
    let path = dir.join("summary.tex");
    std::fs::write(&path, tex).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(summary)
}

/// What the metric names refer to, for the tables.
pub fn score_notes(scorer: &ScorerInfo) -> Vec<String> {
    let mut notes = vec![format!("scorer: {}", scorer.path)];
    if let Some(p) = &scorer.positive_reference {
        notes.push(format!(
            "clip_i_pos reference where a cell has no positive image: {p}"
        ));
    }
    if let Some(n) = &scorer.negative_reference {
        notes.push(format!(
            "clip_i_neg reference where a cell has no negative image: {n}"
        ));
    }
    for (k, t) in scorer.targets.iter().enumerate() {
        notes.push(format!(
            "clip_t_{}: CLIPScore 100·max(cos, 0) against \"{t}\"",
            k + 1
        ));
    }
    notes
}

/// Scores every done image of a run with the CLIP model in `scorer` (HF CLIPModel layout),
/// writes `scores/<scorer-id>/` and its summaries. Other scorers' folders are left alone.
pub fn score_run(
    run_dir: &Path,
    scorer: &Path,
    device: tch::Device,
    kind: tch::Kind,
) -> Result<()> {
    let info = read_info(run_dir)?;
    let records = read_run_records(run_dir)?;
    let id = scorer_id(scorer)?;
    let embeds = embed::embed_run(run_dir, &info, &records, scorer, device, kind)?;
    let rows = metrics::compute(&info, &records, &embeds.images, &embeds.texts);
    let names = metrics::metric_names(info.scoring.targets.len());
    // Columns no cell defines (e.g. clip_i_base without `negative = none` cells) are dropped.
    let keep: Vec<usize> = (0..names.len())
        .filter(|&m| rows.iter().any(|(_, v)| !v[m].is_nan()))
        .collect();
    let files: HashMap<&str, &str> = records
        .iter()
        .map(|r| (r.cell_id.as_str(), r.file.as_str()))
        .collect();
    let rows: Vec<(String, String, Vec<f64>)> = rows
        .into_iter()
        .map(|(cell, v)| {
            let file = files.get(cell.as_str()).unwrap_or(&"").to_string();
            (cell, file, keep.iter().map(|&m| v[m]).collect())
        })
        .collect();
    let metrics: Vec<String> = keep.iter().map(|&m| names[m].clone()).collect();
    let dir = scorer_dir(run_dir, &id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_scores(&dir.join("scores.csv"), &metrics, &rows)?;
    let scorer_info = ScorerInfo {
        id: id.clone(),
        path: scorer.display().to_string(),
        targets: info.scoring.targets.clone(),
        positive_reference: info.scoring.positive_reference.clone(),
        negative_reference: info.scoring.negative_reference.clone(),
        metrics,
    };
    let path = dir.join("scorer.json");
    std::fs::write(&path, serde_json::to_string_pretty(&scorer_info)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    summarize_scorer(run_dir, &id)?;
    log::info!("scored {} images with {id}", rows.len());
    Ok(())
}
