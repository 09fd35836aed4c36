//! Scores of the x̂₀ traces (`traces/<image id>/step-NNN.png`): each trace image gets the
//! scorer's per-image metrics ([`metrics::compute`]) and the pixel change ([`pixel`]) as if
//! it were the cell's image, paired to its baseline cell's trace at the same step. Written to
//! `scores/<scorer-id>/trace_scores.csv`: cell_id, step, file, baseline_file, the metrics.
use super::embed::{Embeddings, ImageModel, embed_images};
use super::metrics::{self, Embedder};
use super::pixel;
use crate::images::load_rgb;
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// The trace table's file name in a scorer folder.
pub const FILE: &str = "trace_scores.csv";

/// The (step, file relative to the run folder) of a done record's x̂₀ traces.
pub fn trace_files(r: &Record) -> Vec<(usize, String)> {
    let Some(set) = r.trace.as_ref().filter(|_| r.status == Status::Done) else {
        return Vec::new();
    };
    let id = Path::new(&r.file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    set.active(r.steps)
        .into_iter()
        .map(|step| (step, crate::run::layout::trace_file(&id, step)))
        .collect()
}

/// One traced cell at one step.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRow {
    pub cell_id: String,
    pub step: usize,
    /// The x̂₀ image, relative to the run folder.
    pub file: String,
    /// The baseline cell's x̂₀ at the same step ("" without one).
    pub baseline_file: String,
    pub values: Vec<f64>,
}

/// The metrics of every traced cell at every trace step.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceScores {
    pub metrics: Vec<String>,
    pub rows: Vec<TraceRow>,
}

/// The traced (cell id, step) whose baseline cell exists but has no x̂₀ at that step: their
/// baseline metrics are empty.
pub fn unpaired(info: &RunInfo, records: &[Record]) -> Vec<(String, usize)> {
    let bases = metrics::baselines(info, records);
    let mut out = Vec::new();
    for (r, base) in records.iter().zip(&bases) {
        let Some(base) = base.map(|b| &records[b]) else {
            continue;
        };
        let have: BTreeSet<usize> = trace_files(base).into_iter().map(|(s, _)| s).collect();
        for (step, _) in trace_files(r) {
            if !have.contains(&step) {
                out.push((r.cell_id.clone(), step));
            }
        }
    }
    out
}

/// The sentence that says which traces have no baseline trace (None when all do).
pub fn unpaired_note(unpaired: &[(String, usize)]) -> Option<String> {
    let (cell, step) = unpaired.first()?;
    Some(format!(
        "{} traced x̂₀ have a baseline cell without an x̂₀ at the same step (e.g. cell {cell} \
         at step {step}): their metrics against the baseline are empty; give the baseline \
         the same `trace`",
        unpaired.len()
    ))
}

/// Embeds every trace image of the run with `model`, keyed by file.
pub fn embed_traces(
    run_dir: &Path,
    records: &[Record],
    model: &ImageModel,
    device: tch::Device,
    kind: tch::Kind,
) -> Result<HashMap<String, Vec<f64>>> {
    let files: BTreeSet<String> = records
        .iter()
        .flat_map(trace_files)
        .map(|(_, f)| f)
        .collect();
    let keyed: Vec<(String, std::path::PathBuf)> = files
        .into_iter()
        .map(|f| (f.clone(), run_dir.join(f)))
        .collect();
    embed_images(model, &keyed, device, kind)
}

/// The trace table: for each trace step, the scorer's metrics of each traced cell with the
/// x̂₀ in place of the cell's image (and of its baseline's), by [`metrics::compute`], then
/// the pixel change to the baseline's x̂₀ at that step.
pub fn score(
    run_dir: &Path,
    info: &RunInfo,
    records: &[Record],
    embedder: Embedder,
    embeds: &Embeddings,
    traces: &HashMap<String, Vec<f64>>,
) -> Result<TraceScores> {
    let files: Vec<HashMap<usize, String>> = records
        .iter()
        .map(|r| trace_files(r).into_iter().collect())
        .collect();
    let steps: BTreeSet<usize> = files.iter().flat_map(|f| f.keys().copied()).collect();
    let bases = metrics::baselines(info, records);
    let inputs: HashMap<String, Vec<f64>> = embeds
        .images
        .iter()
        .filter(|(k, _)| k.starts_with("input:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut rows = Vec::new();
    for step in steps {
        // The run's images at this step are the x̂₀: the metrics pair them as they pair images.
        let mut images = inputs.clone();
        for (r, f) in records.iter().zip(&files) {
            if let Some(e) = f.get(&step).and_then(|file| traces.get(file)) {
                images.insert(format!("cell:{}", r.cell_id), e.clone());
            }
        }
        let scored = metrics::compute(
            info,
            records,
            embedder,
            &images,
            &embeds.texts,
            &embeds.captions,
        );
        let index: HashMap<&str, usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.cell_id.as_str(), i))
            .collect();
        for (cell, values) in scored {
            let i = index[cell.as_str()];
            let baseline_file = bases[i]
                .and_then(|b| files[b].get(&step).cloned())
                .unwrap_or_default();
            rows.push(TraceRow {
                cell_id: cell,
                step,
                file: files[i][&step].clone(),
                baseline_file,
                values,
            });
        }
    }
    let change: Vec<Vec<f64>> = rows
        .par_iter()
        .map(|row| pixel_change(run_dir, row))
        .collect::<Result<_>>()?;
    for (row, c) in rows.iter_mut().zip(change) {
        row.values.extend(c);
    }
    let mut names = metrics::metric_names(embedder, embeds.texts.len());
    names.extend(pixel::METRICS.iter().map(|m| m.to_string()));
    Ok(TraceScores {
        metrics: names,
        rows,
    })
}

/// [`pixel::METRICS`] of a trace against its baseline's trace (NaN without one).
fn pixel_change(run_dir: &Path, row: &TraceRow) -> Result<Vec<f64>> {
    if row.baseline_file.is_empty() {
        return Ok(vec![f64::NAN; pixel::METRICS.len()]);
    }
    let img = load_rgb(&run_dir.join(&row.file))?;
    let base = load_rgb(&run_dir.join(&row.baseline_file))?;
    Ok(vec![
        pixel::mean_abs_diff(&img, &base),
        pixel::ssim(&img, &base),
    ])
}

/// Writes the table atomically (columns no row defines are dropped, as in scores.csv).
pub fn write(path: &Path, table: &TraceScores) -> Result<()> {
    let keep: Vec<usize> = (0..table.metrics.len())
        .filter(|&m| table.rows.iter().any(|r| !r.values[m].is_nan()))
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = ["cell_id", "step", "file", "baseline_file"]
        .map(String::from)
        .to_vec();
    header.extend(keep.iter().map(|&m| table.metrics[m].clone()));
    w.write_record(&header)?;
    for r in &table.rows {
        let mut rec = vec![
            r.cell_id.clone(),
            r.step.to_string(),
            r.file.clone(),
            r.baseline_file.clone(),
        ];
        rec.extend(keep.iter().map(|&m| match r.values[m] {
            v if v.is_nan() => String::new(),
            v => format!("{v}"),
        }));
        w.write_record(&rec)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    crate::run::fsio::atomic_write(path, &bytes)
}

/// Reads a trace table; `None` when the scorer folder has none.
pub fn read(path: &Path) -> Result<Option<TraceScores>> {
    if !path.is_file() {
        return Ok(None);
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = reader.headers()?.clone();
    let fixed = ["cell_id", "step", "file", "baseline_file"];
    if header.iter().take(4).ne(fixed) {
        bail!(
            "{}: expected columns {},...",
            path.display(),
            fixed.join(",")
        );
    }
    let metrics: Vec<String> = header.iter().skip(4).map(String::from).collect();
    let mut rows = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let at = || format!("{}: row {}", path.display(), i + 2);
        let row = row.with_context(at)?;
        let number = |s: &str| -> Result<f64> {
            if s.is_empty() {
                Ok(f64::NAN)
            } else {
                s.parse()
                    .with_context(|| format!("{}: {s:?} is not a number", at()))
            }
        };
        let values = row
            .iter()
            .skip(4)
            .map(number)
            .collect::<Result<Vec<f64>>>()?;
        if values.len() != metrics.len() {
            bail!(
                "{}: {} values, expected {}",
                at(),
                values.len(),
                metrics.len()
            );
        }
        rows.push(TraceRow {
            cell_id: row[0].to_string(),
            step: row[1]
                .parse()
                .with_context(|| format!("{}: step {:?}", at(), &row[1]))?,
            file: row[2].to_string(),
            baseline_file: row[3].to_string(),
            values,
        });
    }
    Ok(Some(TraceScores { metrics, rows }))
}

/// Scores the run's x̂₀ traces with the scorer in `scorer` into `out` (a scorer folder);
/// nothing without traces. Says which traces have no baseline trace to pair with.
#[allow(clippy::too_many_arguments)]
pub fn score_run_traces(
    run_dir: &Path,
    info: &RunInfo,
    records: &[Record],
    embedder: Embedder,
    scorer: &Path,
    embeds: &Embeddings,
    out: &Path,
    device: tch::Device,
    kind: tch::Kind,
) -> Result<()> {
    if records.iter().all(|r| trace_files(r).is_empty()) {
        return Ok(());
    }
    let model = ImageModel::load(embedder, scorer, device, kind)
        .with_context(|| format!("cannot load the scorer {}", scorer.display()))?;
    let traces = embed_traces(run_dir, records, &model, device, kind)?;
    let table = score(run_dir, info, records, embedder, embeds, &traces)?;
    if let Some(note) = unpaired_note(&unpaired(info, records)) {
        eprintln!("warning: {note}");
    }
    write(&out.join(FILE), &table)?;
    log::info!("scored {} x̂₀ traces", table.rows.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::CellSpec;
    use crate::params::NegativeMode;
    use crate::run::info::Axis;

    fn info() -> RunInfo {
        RunInfo {
            experiment: "t".into(),
            run_id: "r".into(),
            axes: vec![Axis {
                name: "negative".into(),
                values: vec!["none".into(), "image".into()],
            }],
            plots: Default::default(),
            scoring: Default::default(),
            images: Default::default(),
            captions: Default::default(),
            subjects: Default::default(),
        }
    }

    /// A done cell of 7 steps traced at `trace`, its image `images/<id>.png`.
    fn record(id: &str, negative: NegativeMode, trace: &str) -> Record {
        let cell = CellSpec {
            negative: Some(negative),
            steps: 7,
            seed: 1,
            trace: Some(trace.parse().unwrap()),
            ..Default::default()
        };
        Record::new(
            id,
            &cell,
            Status::Done,
            &format!("images/{id}.png"),
            0.0,
            "",
        )
    }

    #[test]
    fn trace_unpaired_names_the_steps_the_baseline_did_not_trace() {
        let records = [
            record("b", NegativeMode::None, "every 3"),
            record("c", NegativeMode::Image, "every 2"),
        ];
        assert_eq!(
            trace_files(&records[1]),
            [0, 2, 4, 6].map(|s| (s, format!("traces/c/step-{s:03}.png")))
        );
        let gaps = unpaired(&info(), &records);
        assert_eq!(gaps, [("c".to_string(), 2), ("c".to_string(), 4)]);
        let note = unpaired_note(&gaps).unwrap();
        assert!(
            note.starts_with("2 traced x̂₀") && note.contains("step 2"),
            "{note}"
        );
        assert_eq!(unpaired_note(&[]), None);
    }

    #[test]
    fn trace_scores_pair_each_trace_to_the_baseline_trace_at_the_same_step() {
        let dir = tempfile::tempdir().unwrap();
        let records = [
            record("b", NegativeMode::None, "every 2"),
            record("c", NegativeMode::Image, "every 2"),
        ];
        // Embeddings: the cell's x̂₀ equals the baseline's at step 0 and leans away at 2; the
        // baseline's x̂₀ at step 2 differs from its step 0 (a pairing across steps would show).
        let unit = |v: [f64; 3]| metrics::normalized(&v);
        let embeds: HashMap<String, Vec<f64>> = [
            ("traces/b/step-000.png", unit([1.0, 0.0, 0.0])),
            ("traces/c/step-000.png", unit([1.0, 0.0, 0.0])),
            ("traces/b/step-002.png", unit([0.0, 1.0, 0.0])),
            ("traces/c/step-002.png", unit([0.0, 1.0, 1.0])),
            ("traces/b/step-004.png", unit([0.0, 0.0, 1.0])),
            ("traces/c/step-004.png", unit([1.0, 0.0, 1.0])),
            ("traces/b/step-006.png", unit([1.0, 1.0, 0.0])),
            ("traces/c/step-006.png", unit([1.0, 1.0, 0.0])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // Pixels: grey levels that differ by step and cell.
        for file in embeds.keys() {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let level = file.bytes().map(u32::from).sum::<u32>() as u8;
            image::RgbImage::from_pixel(16, 16, image::Rgb([level; 3]))
                .save(&path)
                .unwrap();
        }
        let none = Embeddings {
            images: HashMap::new(),
            texts: Vec::new(),
            captions: HashMap::new(),
        };
        let table = score(
            dir.path(),
            &info(),
            &records,
            Embedder::Dino,
            &none,
            &embeds,
        )
        .unwrap();
        let col = |name: &str| table.metrics.iter().position(|m| m == name).unwrap();
        let cell: Vec<&TraceRow> = table.rows.iter().filter(|r| r.cell_id == "c").collect();
        assert_eq!(
            cell.iter().map(|r| r.step).collect::<Vec<_>>(),
            [0, 2, 4, 6]
        );
        let load = |f: &str| load_rgb(&dir.path().join(f)).unwrap();
        for row in &cell {
            let base_file = format!("traces/b/step-{:03}.png", row.step);
            assert_eq!(row.baseline_file, base_file);
            assert_eq!(row.file, format!("traces/c/step-{:03}.png", row.step));
            let cos = metrics::cosine(&embeds[&row.file], &embeds[&base_file]);
            assert!(
                (row.values[col("dino_i_base")] - cos).abs() < 1e-12,
                "{row:?}"
            );
            let mad = pixel::mean_abs_diff(&load(&row.file), &load(&base_file));
            assert_eq!(row.values[col("mad_base")], mad);
        }
        assert!((cell[0].values[col("dino_i_base")] - 1.0).abs() < 1e-12);
        assert!((cell[1].values[col("dino_i_base")] - 0.5f64.sqrt()).abs() < 1e-12);
        // The baseline is its own baseline; the table keeps its rows (the curves draw them).
        assert_eq!(table.rows.iter().filter(|r| r.cell_id == "b").count(), 4);
        // Written and read back.
        let path = dir.path().join(FILE);
        write(&path, &table).unwrap();
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back.rows.len(), table.rows.len());
        assert_eq!(back.rows[5].file, table.rows[5].file);
    }
}
