//! Metrics per image (CLIP, DINOv2, pixel change) and statistics per condition.
//!
//! Layout in a run folder, one folder per scorer so that scorers coexist (a CLIP model, a
//! DINOv2 model); each also has the pixel change against the baseline (mad_base, ssim_base):
//!
//! ```text
//! scores/<scorer-id>/scorer.json   which model, targets, references, metric names
//! scores/<scorer-id>/scores.csv    cell_id, file, one column per metric (empty: undefined)
//! scores/<scorer-id>/summary.csv   one row per condition: n, n_failed, mean/std/CI per metric,
//!                                  the paired difference to the baseline (CI, p, p_holm, win rate)
//! scores/<scorer-id>/paired.csv    differences between negative modes on the same seed
//! scores/<scorer-id>/verdict.csv   per condition: the effect on the negative and the positive
//! scores/<scorer-id>/summary.md    the same as tables for reading
//! scores/<scorer-id>/summary.tex   booktabs tables for papers
//! scores/<scorer-id>/verdict.tex   the verdict table for papers
//! scores/<scorer-id>/trace_scores.csv  the x̂₀ traces' metrics per cell and step (traces.rs)
//! ```
pub mod change;
pub mod cmmd;
pub mod embed;
pub mod metrics;
pub mod patch_change;
pub mod pixel;
pub mod pooled;
pub mod stats;
pub mod tables;
pub mod traces;

use crate::models::aesthetic;
use crate::run::info::RunInfo;
use crate::run::records::{self, Record, read_records};
use anyhow::{Context, Result, bail};
use metrics::Embedder;
use rayon::prelude::*;
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
    /// The aesthetic predictor's head, when the scores have an `aesthetic` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesthetic: Option<String>,
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
    let mut summary = stats::summarize(&info, &records, &scores);
    let set_distances = cmmd::read_csv(&dir.join("cmmd.csv"), summary.axes.len())?;
    for row in &mut summary.rows {
        row.cmmd = set_distances.get(&row.key).copied();
    }
    tables::write_summary_csv(&summary, &dir.join("summary.csv"))?;
    tables::write_paired_csv(&summary, &dir.join("paired.csv"))?;
    if !summary.pooled.is_empty() {
        tables::write_pooled_csv(&summary, &dir.join("pooled.csv"))?;
    }
    let verdict = tables::verdict_rows(&summary);
    tables::write_verdict_csv(&summary, &verdict, &dir.join("verdict.csv"))?;
    let notes = score_notes(&scorer);
    let title = format!("{} — scorer {id}", info.experiment);
    let md = tables::markdown(&summary, &title, &notes);
    fsio_write(&dir.join("summary.md"), &md)?;
    let caption = format!("{} (scorer {id})", info.experiment);
    fsio_write(&dir.join("summary.tex"), &tables::latex(&summary, &caption))?;
    fsio_write(
        &dir.join("verdict.tex"),
        &tables::verdict_latex(&summary, &verdict, &caption),
    )?;
    Ok(summary)
}

fn fsio_write(path: &Path, text: &str) -> Result<()> {
    crate::run::fsio::atomic_write(path, text.as_bytes())
}

/// What the metric names refer to, for the tables.
pub fn score_notes(scorer: &ScorerInfo) -> Vec<String> {
    let mut notes = vec![format!("scorer: {}", scorer.path)];
    let has = |suffix: &str| scorer.metrics.iter().find(|m| m.ends_with(suffix));
    if let (Some(p), Some(m)) = (&scorer.positive_reference, has("_i_pos")) {
        notes.push(format!(
            "{m} reference where a cell has no positive image: {p}"
        ));
    }
    if let (Some(n), Some(m)) = (&scorer.negative_reference, has("_i_neg")) {
        notes.push(format!(
            "{m} reference where a cell has no negative image: {n}"
        ));
    }
    for (k, t) in scorer.targets.iter().enumerate() {
        notes.push(format!(
            "clip_t_{}: CLIPScore 100·max(cos, 0) against \"{t}\"",
            k + 1
        ));
    }
    if let Some(m) = has("_div") {
        notes.push(format!(
            "{m}: diversity over seeds, mean pairwise 1 − cos within a condition (no interval: the pairs are not independent)"
        ));
    }
    if let Some(m) = has("_i_base") {
        notes.push(format!(
            "{m}: cosine to the paired baseline image (same seed)"
        ));
    }
    notes.push(stats::method_note());
    if scorer.metrics.iter().any(|m| m == "subtraction") {
        notes.push(format!(
            "CMMD: MMD² between a condition's images and its baseline images, Gaussian kernel \
             σ = {}, ×{} (google-research cmmd), on this scorer's unit CLIP image embeddings at \
             its own input size (the paper uses ViT-L/14 at 336 px); p: {} seeded label \
             permutations",
            cmmd::SIGMA,
            cmmd::SCALE,
            cmmd::PERMUTATIONS
        ));
    }
    if let Some(head) = scorer
        .aesthetic
        .as_ref()
        .filter(|_| has(aesthetic::METRIC).is_some())
    {
        notes.push(format!(
            "{}: LAION improved aesthetic predictor (linear head 768→1024→128→64→16→1 on the \
             L2-normalised CLIP image embedding), head {head}",
            aesthetic::METRIC
        ));
    }
    if scorer.metrics.iter().any(|m| m == metrics::NEG_PRESENT) {
        notes.push(format!(
            "{}: 1 when CLIP puts the image closer to the subject's negative_caption than to \
             its positive_caption (else \"{}\"); its mean is the presence rate; paired test: \
             McNemar's exact test on the discordant pairs",
            metrics::NEG_PRESENT,
            metrics::NEUTRAL_CAPTION
        ));
    }
    notes
}

/// The models `score_all` scores a run with.
#[derive(Clone, Debug, Default)]
pub struct ScoreModels {
    /// A CLIPModel folder.
    pub clip: Option<PathBuf>,
    /// A Dinov2Model folder.
    pub dino: Option<PathBuf>,
    /// The LAION aesthetic predictor's head, applied to the CLIP scorer's embeddings.
    pub aesthetic: Option<PathBuf>,
}

/// Scores a run with every model given, each into its own folder.
pub fn score_all(
    run_dir: &Path,
    models: &ScoreModels,
    device: tch::Device,
    kind: tch::Kind,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let aesthetic = match (&models.aesthetic, &models.clip) {
        (Some(head), Some(_)) => Some(aesthetic::AestheticHead::load(head)?),
        (Some(head), None) => bail!(
            "aesthetic {} scores the CLIP scorer's embeddings, and no CLIP scorer is given",
            head.display()
        ),
        (None, _) => None,
    };
    if let Some(clip) = &models.clip {
        let id = score_with(
            run_dir,
            Embedder::Clip,
            clip,
            aesthetic.as_ref(),
            device,
            kind,
        )?;
        ids.push(id);
    }
    if let Some(dino) = &models.dino {
        ids.push(score_with(
            run_dir,
            Embedder::Dino,
            dino,
            None,
            device,
            kind,
        )?);
    }
    Ok(ids)
}

/// Scores every done image of a run with the CLIP model in `scorer` (HF CLIPModel layout),
/// writes `scores/<scorer-id>/` and its summaries. Other scorers' folders are left alone.
pub fn score_run(
    run_dir: &Path,
    scorer: &Path,
    device: tch::Device,
    kind: tch::Kind,
) -> Result<()> {
    score_with(run_dir, Embedder::Clip, scorer, None, device, kind).map(|_| ())
}

/// Scores every done image with `embedder`'s model in `scorer` (and the aesthetic head on
/// its embeddings, if given); returns the scorer id.
pub fn score_with(
    run_dir: &Path,
    embedder: Embedder,
    scorer: &Path,
    aesthetic: Option<&aesthetic::AestheticHead>,
    device: tch::Device,
    kind: tch::Kind,
) -> Result<String> {
    let info = read_info(run_dir)?;
    let records = read_run_records(run_dir)?;
    let id = scorer_id(scorer)?;
    let model = embed::ImageModel::load(embedder, scorer, device, kind)
        .with_context(|| format!("cannot load the scorer {}", scorer.display()))?;
    let embeds = embed::embed_run(run_dir, &info, &records, &model, scorer, device, kind)?;
    let region = scoring_region(&info)?;
    let scorer_maps = (embedder, id.as_str());
    let patch = patch_change::write_maps(
        run_dir,
        &info,
        &records,
        &model,
        scorer_maps,
        region.as_ref(),
        device,
        kind,
    )?;
    if !patch.is_empty() {
        log::info!(
            "wrote {} {} patch-token change map(s)",
            patch.len(),
            embedder.prefix()
        );
    }
    if let (Some(head), Some(e)) = (aesthetic, embeds.images.values().next()) {
        head.check_scorer(scorer, e.len())?;
    }
    // The set-level distance needs the embeddings, so it is computed here and kept beside
    // the scores for later summaries.
    if embedder == Embedder::Clip {
        let dir = scorer_dir(run_dir, &id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let set_distances = cmmd::by_condition(&info, &records, &embeds.images);
        cmmd::write_csv(
            &dir.join("cmmd.csv"),
            &stats::condition_axes(&info),
            &set_distances,
        )?;
    }
    let mut rows = metrics::compute(
        &info,
        &records,
        embedder,
        &embeds.images,
        &embeds.texts,
        &embeds.captions,
    );
    let mut names = metrics::metric_names(embedder, embeds.texts.len());
    // The pixel change does not depend on the model; each scorer folder carries it so that
    // its verdict and tables are complete on their own.
    let pixels = change_against_baseline(run_dir, &info, &records)?;
    let width = pixel::METRICS.len() + change::METRICS.len();
    for (cell, values) in &mut rows {
        let change = pixels.get(cell).cloned();
        values.extend(change.unwrap_or_else(|| vec![f64::NAN; width]));
    }
    names.extend(pixel::METRICS.iter().map(|m| m.to_string()));
    names.extend(change::METRICS.iter().map(|m| m.to_string()));
    let attention = attention_scalars(run_dir, &info, &records)?;
    for (cell, values) in &mut rows {
        let scalars = attention.get(cell).cloned();
        values.extend(scalars.unwrap_or_else(|| vec![f64::NAN; change::ATTENTION_METRICS.len()]));
    }
    names.extend(change::ATTENTION_METRICS.iter().map(|m| m.to_string()));
    for (cell, values) in &mut rows {
        let scalars = patch.get(cell).cloned();
        values.extend(scalars.unwrap_or_else(|| vec![f64::NAN; change::PATCH_METRICS.len()]));
    }
    names.extend(change::PATCH_METRICS.iter().map(|m| m.to_string()));
    if let Some(head) = aesthetic {
        for (cell, values) in &mut rows {
            let embedding = embeds.images.get(&format!("cell:{cell}"));
            values.push(embedding.map_or(f64::NAN, |e| head.score(e)));
        }
        names.push(aesthetic::METRIC.to_string());
    }
    let scorer_info = ScorerInfo {
        id: id.clone(),
        path: scorer.display().to_string(),
        targets: if embedder == Embedder::Clip {
            info.scoring.targets.clone()
        } else {
            Vec::new()
        },
        positive_reference: info.scoring.positive_reference.clone(),
        negative_reference: info.scoring.negative_reference.clone(),
        aesthetic: aesthetic.map(|h| h.path().display().to_string()),
        metrics: names,
    };
    write_scorer(run_dir, &records, scorer_info, rows)?;
    let dir = scorer_dir(run_dir, &id);
    traces::score_run_traces(
        run_dir, &info, &records, embedder, scorer, &embeds, &dir, device, kind,
    )?;
    Ok(id)
}

/// The run's `[scoring] region` mask, if it sets one.
fn scoring_region(info: &RunInfo) -> Result<Option<crate::images::BinaryMask>> {
    info.scoring
        .region
        .as_deref()
        .map(crate::images::BinaryMask::load)
        .transpose()
        .context("[scoring] region")
}

/// Against the paired baseline image, by cell id: the mean absolute difference and SSIM
/// ([`pixel::METRICS`]) and the luma change map's scalars ([`change::METRICS`]), the map
/// written to `maps/<cell-id>/change_luma.npy`; NaN without a baseline.
pub fn change_against_baseline(
    run_dir: &Path,
    info: &RunInfo,
    records: &[Record],
) -> Result<HashMap<String, Vec<f64>>> {
    let bases = metrics::baselines(info, records);
    let region = scoring_region(info)?;
    let load = |r: &Record| -> Result<image::RgbImage> {
        let path = run_dir.join(&r.file);
        Ok(image::open(&path)
            .with_context(|| format!("cannot decode image {}", path.display()))?
            .to_rgb8())
    };
    records
        .par_iter()
        .zip(&bases)
        .filter(|(r, _)| r.status == records::Status::Done)
        .map(|(r, base)| {
            let mut values = vec![f64::NAN; pixel::METRICS.len() + change::METRICS.len()];
            if let Some(b) = base {
                let (img, base) = (load(r)?, load(&records[*b])?);
                values[0] = pixel::mean_abs_diff(&img, &base);
                values[1] = pixel::ssim(&img, &base);
                if let Some(map) = change::luma_change(&img, &base) {
                    map.write_npy(&change_map_file(run_dir, &r.cell_id, "luma"))?;
                    let scalars = change::scalars(&map, region.as_ref());
                    values[pixel::METRICS.len()..].copy_from_slice(&scalars);
                }
                write_trace_changes(run_dir, r, &records[*b])?;
            }
            Ok((r.cell_id.clone(), values))
        })
        .collect()
}

/// The luma change map of each x̂₀ trace step that both `r` and its baseline saved,
/// written to [`trace_change_file`].
fn write_trace_changes(run_dir: &Path, r: &Record, base: &Record) -> Result<()> {
    let (Some(steps), Some(base_steps)) = (&r.trace, &base.trace) else {
        return Ok(());
    };
    let image = |rec: &Record, step: usize| -> Result<image::RgbImage> {
        let id = Path::new(&rec.file).file_stem().unwrap_or_default();
        let path = run_dir.join(crate::run::layout::trace_file(&id.to_string_lossy(), step));
        Ok(image::open(&path)
            .with_context(|| format!("cannot decode the x̂₀ trace {}", path.display()))?
            .to_rgb8())
    };
    for step in steps.active(r.steps) {
        if !base_steps.contains(step) {
            continue;
        }
        if let Some(map) = change::luma_change(&image(r, step)?, &image(base, step)?) {
            map.write_npy(&trace_change_file(run_dir, &r.cell_id, step))?;
        }
    }
    Ok(())
}

/// `maps/<cell-id>/trace_change/step-NNN.npy`: the luma change map of the x̂₀ of step
/// `step` (0-based) against the baseline's x̂₀ of the same step.
pub fn trace_change_file(run_dir: &Path, cell_id: &str, step: usize) -> PathBuf {
    run_dir
        .join("maps")
        .join(cell_id)
        .join("trace_change")
        .join(format!("step-{step:03}.npy"))
}

/// The negative attention map's scalars ([`change::ATTENTION_METRICS`]) by cell id, for
/// the cells that have one.
fn attention_scalars(
    run_dir: &Path,
    info: &RunInfo,
    records: &[Record],
) -> Result<HashMap<String, Vec<f64>>> {
    let region = scoring_region(info)?;
    let mut out = HashMap::new();
    for r in records.iter().filter(|r| r.status == records::Status::Done) {
        let file = crate::run::attention_maps::file(run_dir, &r.cell_id, "negative");
        if let Some(map) = change::Map::read_npy(&file)? {
            out.insert(r.cell_id.clone(), change::scalars(&map, region.as_ref()));
        }
    }
    Ok(out)
}

/// `maps/<cell-id>/change_<kind>.npy`.
pub fn change_map_file(run_dir: &Path, cell_id: &str, kind: &str) -> PathBuf {
    run_dir
        .join("maps")
        .join(cell_id)
        .join(format!("change_{kind}.npy"))
}

/// `maps/<cell-id>/change_<clip|dino>-<scorer-id>.npy`: the patch-token change map of the
/// scorer `scorer_id` (named as its `scores/<scorer-id>/` folder), one per scorer so that
/// two scorers of one encoder keep both.
pub fn patch_change_file(
    run_dir: &Path,
    cell_id: &str,
    embedder: Embedder,
    scorer_id: &str,
) -> PathBuf {
    change_map_file(
        run_dir,
        cell_id,
        &format!("{}-{scorer_id}", embedder.prefix()),
    )
}

/// The patch-token change maps of `embedder`'s scorers that a cell has, sorted by scorer id.
pub fn patch_change_files(run_dir: &Path, cell_id: &str, embedder: Embedder) -> Vec<PathBuf> {
    let dir = run_dir.join("maps").join(cell_id);
    let prefix = format!("change_{}-", embedder.prefix());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".npy") && p.is_file()
        })
        .collect();
    files.sort();
    files
}

/// Writes a scorer folder: scores.csv (columns no cell defines are dropped, e.g.
/// clip_i_base without baseline cells), scorer.json, and the summaries.
fn write_scorer(
    run_dir: &Path,
    records: &[Record],
    mut scorer: ScorerInfo,
    rows: Vec<(String, Vec<f64>)>,
) -> Result<()> {
    let names = std::mem::take(&mut scorer.metrics);
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
    scorer.metrics = keep.iter().map(|&m| names[m].clone()).collect();
    let dir = scorer_dir(run_dir, &scorer.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join("scores.csv.tmp");
    write_scores(&tmp, &scorer.metrics, &rows)?;
    std::fs::rename(&tmp, dir.join("scores.csv"))
        .with_context(|| format!("cannot write {}", dir.join("scores.csv").display()))?;
    fsio_write(
        &dir.join("scorer.json"),
        &serde_json::to_string_pretty(&scorer)?,
    )?;
    summarize_scorer(run_dir, &scorer.id)?;
    log::info!("scored {} images with {}", rows.len(), scorer.id);
    Ok(())
}
