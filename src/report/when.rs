//! The report's "when" section: at which sampling steps a negative does its work.
//! - Probe curves: for conditions that differ by the negative branch's step set
//!   (`neg_steps_at` = `"k"`, `"from k"`, `"until k"`) or its window (`neg_start`,
//!   `neg_end`), the paired effect on each metric (the verdict table's difference to the
//!   baseline with its CI: [`crate::scoring::stats::summarize`]'s `vs_base`) against the
//!   step (a window's first or last active step, as the pipeline computes it), one line per
//!   probe shape and value of the other axes.
//! - Trace curves: each metric of the x̂₀ (`trace_scores.csv`) against the step, mean and
//!   95% CI over seeds, for the traced conditions and their baselines.
use super::curves::{CurveFile, Series, metric_label, write_curve};
use super::html::{escape, figure_group, href};
use crate::params::BranchWeight;
use crate::run::info::RunInfo;
use crate::run::records::Record;
use crate::sampling::SchedulerConfig;
use crate::sampling::window::active_steps;
use crate::scoring::metrics;
use crate::scoring::stats::{Estimate, Summary, condition_axes, key_of};
use crate::scoring::traces::{self, TraceScores};
use crate::steps::StepSet;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;

/// The axes whose values place a probe on the step axis.
pub const PROBE_AXES: [&str; 3] = ["neg_steps_at", "neg_start", "neg_end"];

/// Lines per trace figure (the curves' colours): conditions and their baselines.
const LINES_PER_FIGURE: usize = 10;

/// The section's figures and notes for one scorer.
#[derive(Clone, Debug, Default)]
pub struct WhenFiles {
    pub probes: Vec<CurveFile>,
    pub traces: Vec<CurveFile>,
    pub notes: Vec<String>,
}

impl WhenFiles {
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty() && self.traces.is_empty() && self.notes.is_empty()
    }
}

/// Metrics that get curves: per image, and not the raw text cosines.
fn curved(metric: &str) -> bool {
    !metrics::is_condition_level(metric) && !metric.starts_with("clip_t_cos_")
}

/// Where a condition's step set `value` puts it: (shape, k); `None` for a set that names
/// more than one step and is no "from k" or "until k".
pub fn probe_point(value: &str) -> Option<(String, f64)> {
    let (shape, k) = value.parse::<StepSet>().ok()?.probe()?;
    Some((format!("neg_steps_at {shape} k"), k as f64))
}

/// The step (0-based) where a window probe puts the cell `r`: the first step its negative
/// branch is active for `neg_start`, the last for `neg_end`, as the pipeline decides it
/// ([`active_steps`] under the cell's scheduler, steps and window rule on `schedule`);
/// `None` when no step is active.
pub fn window_step(r: &Record, axis: &str, schedule: &SchedulerConfig) -> Option<usize> {
    let branch = BranchWeight {
        weight: 1.0,
        start: r.neg_start,
        end: r.neg_end,
    };
    let active = active_steps(schedule, r.scheduler, r.steps, r.window, &branch).ok()?;
    match axis {
        "neg_start" => active.first().copied(),
        "neg_end" => active.last().copied(),
        _ => None,
    }
}

/// Where the condition `key` (its values of `summary.axes`) sits on the step axis of probe
/// axis `axis`: (shape, step), from its step set, or for a window from a cell of it in
/// `records` on `schedule` ([`window_step`]); `None` leaves it off the curves.
pub fn condition_step(
    summary: &Summary,
    records: &[Record],
    schedule: Option<&SchedulerConfig>,
    axis: &str,
    key: &[String],
) -> Option<(String, f64)> {
    let a = summary.axes.iter().position(|x| x == axis)?;
    if axis == "neg_steps_at" {
        return probe_point(&key[a]);
    }
    let cell = records.iter().find(|r| key_of(r, &summary.axes) == key)?;
    let step = window_step(cell, axis, schedule?)?;
    Some((axis.to_string(), step as f64))
}

/// Where a condition (its key) sits on a probe curve: (shape, step), or off it.
pub type Place<'a> = dyn Fn(&[String]) -> Option<(String, f64)> + 'a;

/// The paired effect of metric column `m` against the step for probe axis `axis`: one
/// series per probe shape and value of the other condition axes (baseline axes excluded),
/// each condition placed by `place(key)` ([`condition_step`]); also the number of
/// conditions left out (no single step to place them at).
pub fn probe_curve_data(
    summary: &Summary,
    m: usize,
    axis: &str,
    place: &Place,
) -> (Vec<Series>, usize) {
    let Some(a) = summary.axes.iter().position(|x| x == axis) else {
        return (Vec::new(), 0);
    };
    let others: Vec<usize> = (0..summary.axes.len())
        .filter(|&i| i != a)
        .filter(|&i| !summary.baseline.iter().any(|(k, _)| *k == summary.axes[i]))
        .collect();
    let mut lines: Vec<Series> = Vec::new();
    let mut left_out = 0;
    for row in summary.rows.iter().filter(|r| !r.is_baseline) {
        let Some(diff) = row.vs_base.get(m).and_then(Option::as_ref) else {
            continue;
        };
        let Some((shape, x)) = place(&row.key) else {
            left_out += 1;
            continue;
        };
        let mut label = vec![shape];
        label.extend(
            others
                .iter()
                .map(|&i| format!("{}={}", summary.axes[i], row.key[i])),
        );
        let label = label.join(", ");
        match lines.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((x, diff.estimate)),
            None => lines.push(Series {
                label,
                points: vec![(x, diff.estimate)],
            }),
        }
    }
    for s in &mut lines {
        s.points.sort_by(|p, q| p.0.total_cmp(&q.0));
    }
    (lines, left_out)
}

/// A condition's x̂₀ curve: its label, its members' trace files, and per step the values.
struct TraceLine {
    label: String,
    files: BTreeSet<String>,
    by_step: BTreeMap<usize, Vec<f64>>,
}

/// The x̂₀ curves of metric column `m`, in figures of at most [`LINES_PER_FIGURE`] lines:
/// each traced condition and its baseline condition (one line for baselines with the same
/// images).
pub fn trace_curve_data(
    info: &RunInfo,
    records: &[Record],
    table: &TraceScores,
    m: usize,
) -> Vec<Vec<Series>> {
    let axes = condition_axes(info);
    let index: HashMap<&str, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.cell_id.as_str(), i))
        .collect();
    let spec = metrics::baseline_spec(info);
    let bases = metrics::baselines(info, records);
    // Axes that vary among the traced cells name the lines.
    let keys: Vec<Vec<String>> = records.iter().map(|r| key_of(r, &axes)).collect();
    let varying: Vec<usize> = (0..axes.len())
        .filter(|&a| {
            let values: BTreeSet<&str> = table
                .rows
                .iter()
                .filter_map(|t| index.get(t.cell_id.as_str()))
                .map(|&i| keys[i][a].as_str())
                .collect();
            values.len() > 1
        })
        .collect();
    let label_of = |key: &[String]| -> String {
        let parts: Vec<String> = varying
            .iter()
            .map(|&a| format!("{}={}", axes[a], key[a]))
            .collect();
        if parts.is_empty() {
            "all".into()
        } else {
            parts.join(", ")
        }
    };
    let mut conditions: HashMap<Vec<String>, TraceLine> = HashMap::new();
    // The conditions in the order their cells come in the records (the grid's order).
    let mut order: Vec<Vec<String>> = Vec::new();
    // The baseline condition of each traced condition.
    let mut base_of: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for t in &table.rows {
        let Some(&i) = index.get(t.cell_id.as_str()) else {
            continue;
        };
        let key = &keys[i];
        if !conditions.contains_key(key) {
            order.push(key.clone());
        }
        let line = conditions.entry(key.clone()).or_insert_with(|| TraceLine {
            label: label_of(key),
            files: BTreeSet::new(),
            by_step: BTreeMap::new(),
        });
        line.files.insert(t.file.clone());
        line.by_step.entry(t.step).or_default().push(t.values[m]);
        if let Some(b) = bases[i].filter(|_| !metrics::is_baseline(&records[i], &spec)) {
            base_of.insert(key.clone(), keys[b].clone());
        }
    }
    let estimate = |line: &TraceLine| -> Vec<(f64, Estimate)> {
        line.by_step
            .iter()
            .map(|(step, v)| {
                let label = format!("{}\u{1e}x0\u{1e}{step}\u{1e}{m}", line.label);
                (*step as f64, Estimate::of(v, &label))
            })
            .filter(|(_, e)| e.n > 0)
            .collect()
    };
    let mut figures: Vec<Vec<Series>> = Vec::new();
    let mut current: Vec<Series> = Vec::new();
    let mut drawn_bases: Vec<BTreeSet<String>> = Vec::new();
    for key in &order {
        let line = &conditions[key];
        let is_base = records
            .iter()
            .zip(&keys)
            .filter(|(_, k)| *k == key)
            .all(|(r, _)| metrics::is_baseline(r, &spec));
        if is_base {
            continue;
        }
        let base = base_of.get(key).and_then(|b| conditions.get(b));
        let new_base = base.filter(|b| !drawn_bases.contains(&b.files));
        let needed = 1 + usize::from(new_base.is_some());
        if !current.is_empty() && current.len() + needed > LINES_PER_FIGURE {
            figures.push(std::mem::take(&mut current));
            drawn_bases.clear();
        }
        let new_base = base.filter(|b| !drawn_bases.contains(&b.files));
        if let Some(b) = new_base {
            drawn_bases.push(b.files.clone());
            current.push(Series {
                label: format!("baseline ({})", b.label),
                points: estimate(b),
            });
        }
        current.push(Series {
            label: line.label.clone(),
            points: estimate(line),
        });
    }
    if !current.is_empty() {
        figures.push(current);
    }
    figures
        .into_iter()
        .map(|f| f.into_iter().filter(|s| !s.points.is_empty()).collect())
        .filter(|f: &Vec<Series>| !f.is_empty())
        .collect()
}

/// Writes the probe and trace curves of one scorer under `<run>/when/<scorer-id>/`.
pub fn write_when(
    run_dir: &Path,
    info: &RunInfo,
    records: &[Record],
    scorer_id: &str,
    summary: &Summary,
    targets: &[String],
) -> Result<WhenFiles> {
    let mut out = WhenFiles::default();
    let emit = |list: &mut Vec<CurveFile>,
                name: String,
                rel: String,
                title: String,
                x: &str,
                y: String,
                data: &[Series]|
     -> Result<()> {
        write_curve(&run_dir.join(&rel), &title, x, &y, data)?;
        list.push(CurveFile {
            metric: name,
            svg: format!("{rel}.svg"),
            png: format!("{rel}.png"),
        });
        Ok(())
    };
    let dir = format!("when/{scorer_id}");
    let schedule = crate::run::info::run_schedule(run_dir);
    for axis in PROBE_AXES {
        let mut left_out = 0;
        let place = |key: &[String]| condition_step(summary, records, schedule.as_ref(), axis, key);
        for (m, metric) in summary.metrics.iter().enumerate() {
            if !curved(metric) {
                continue;
            }
            let (data, skipped) = probe_curve_data(summary, m, axis, &place);
            left_out = left_out.max(skipped);
            if data.iter().map(|s| s.points.len()).sum::<usize>() < 2 {
                continue;
            }
            let x = match axis {
                "neg_steps_at" => "step k (0-based)",
                "neg_start" => "first step of the negative (0-based), from neg_start",
                _ => "last step of the negative (0-based), from neg_end",
            };
            emit(
                &mut out.probes,
                format!("{metric} − baseline by {axis}"),
                format!("{dir}/probe_{axis}_{metric}"),
                format!("{metric} − baseline by {axis} (paired, 95% CI)"),
                x,
                format!("Δ {} to the baseline", metric_label(metric, targets)),
                &data,
            )?;
        }
        if left_out > 0 {
            out.notes.push(match (axis, &schedule) {
                ("neg_steps_at", _) => format!(
                    "{axis}: {left_out} condition(s) name more than one step (not \"k\", \
                     \"from k\" or \"until k\") and are not on the probe curves"
                ),
                (_, Some(_)) => format!(
                    "{axis}: {left_out} condition(s) leave the negative active at no step and \
                     are not on the probe curves"
                ),
                (_, None) => format!(
                    "{axis}: {left_out} condition(s) are not on the probe curves: their steps \
                     come from the pipeline's scheduler configuration, and the pipeline folder \
                     in manifest.json is not there"
                ),
            });
        }
    }
    let table_path = crate::scoring::scorer_dir(run_dir, scorer_id).join(traces::FILE);
    if let Some(table) = traces::read(&table_path)? {
        for (m, metric) in table.metrics.iter().enumerate() {
            if !curved(metric) {
                continue;
            }
            let figures = trace_curve_data(info, records, &table, m);
            let parts = figures.len();
            for (k, data) in figures.iter().enumerate() {
                let (rel, part) = if parts > 1 {
                    (
                        format!("{dir}/trace_{metric}_{}", k + 1),
                        format!(" ({} of {parts})", k + 1),
                    )
                } else {
                    (format!("{dir}/trace_{metric}"), String::new())
                };
                emit(
                    &mut out.traces,
                    format!("x̂₀ {metric}{part}"),
                    rel,
                    format!("{metric} of x̂₀ by step{part} (mean, 95% CI)"),
                    "step (0-based)",
                    format!("x̂₀ {}", metric_label(metric, targets)),
                    data,
                )?;
            }
        }
        out.notes
            .extend(traces::unpaired_note(&traces::unpaired(info, records)));
    }
    Ok(out)
}

/// The page's "When" section (empty when no scorer has figures or notes).
pub fn html(sections: &[(&str, &WhenFiles)], filmstrips: bool) -> String {
    let mut s = String::new();
    if sections.iter().all(|(_, w)| w.is_empty()) && !filmstrips {
        return s;
    }
    s.push_str(
        "<h2>When</h2>\n<p>At which sampling steps the negative acts. Probe curves: the paired \
         difference to the baseline (as in the verdict) of the conditions whose negative acts \
         at one step k, from k or until k, against k, and of those whose window starts \
         (neg_start) or ends (neg_end) at a fraction, against its first or last active step. \
         x̂₀ curves: the metrics of the predicted \
         clean image at each trace step, for each traced condition and its baseline.</p>\n",
    );
    if filmstrips {
        s.push_str(
            "<p>Filmstrips: the grids above show each traced cell as a row of its x̂₀ at the \
             trace steps, then the image (<code>[plots] filmstrip</code>).</p>\n",
        );
    }
    for (id, when) in sections {
        if when.is_empty() {
            continue;
        }
        let _ = writeln!(s, "<h3>When — {}</h3>", escape(id));
        if !when.notes.is_empty() {
            s.push_str("<ul>");
            for n in &when.notes {
                let _ = write!(s, "<li>{}</li>", escape(n));
            }
            s.push_str("</ul>\n");
        }
        let table = format!("scores/{id}/{}", traces::FILE);
        if !when.traces.is_empty() {
            let _ = writeln!(
                s,
                "<p>x̂₀ scores: <a href=\"{}\">{}</a></p>",
                href(&table),
                traces::FILE
            );
        }
        for (heading, figures) in [("Probe curves", &when.probes), ("x̂₀ curves", &when.traces)]
        {
            figure_group(&mut s, "h4", heading, figures);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::CellSpec;
    use crate::params::NegativeMode;
    use crate::run::info::Axis;
    use crate::run::records::Status;
    use crate::scoring::stats::{ScoreTable, summarize};

    fn axis(name: &str, values: &[&str]) -> Axis {
        Axis {
            name: name.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// A run with these condition axes and nothing else.
    fn run_info(axes: Vec<Axis>) -> RunInfo {
        RunInfo {
            experiment: "t".into(),
            run_id: "r".into(),
            axes,
            plots: Default::default(),
            scoring: Default::default(),
            images: Default::default(),
            captions: Default::default(),
            subjects: Default::default(),
        }
    }

    #[test]
    fn when_probe_curves_place_the_verdict_differences_at_their_steps() {
        let sets = ["0", "1", "from 1", "1, 3"];
        let info = run_info(vec![
            axis("negative", &["none", "image"]),
            axis("neg_steps_at", &sets),
            axis("seed", &["1", "2", "3"]),
        ]);
        let mut records = Vec::new();
        let mut values = HashMap::new();
        for (m, mode) in [NegativeMode::None, NegativeMode::Image]
            .into_iter()
            .enumerate()
        {
            for (s, set) in sets.iter().enumerate() {
                for seed in 1..=3u64 {
                    let cell = CellSpec {
                        negative: Some(mode),
                        neg_steps_at: Some(set.parse().unwrap()),
                        seed,
                        steps: 4,
                        ..Default::default()
                    };
                    let id = format!("{m}-{s}-{seed}");
                    let value = seed as f64 * 0.3 - (m * (s + 1)) as f64 * 0.05 * seed as f64;
                    values.insert(id.clone(), vec![value]);
                    records.push(Record::new(&id, &cell, Status::Done, "", 0.0, ""));
                }
            }
        }
        let scores = ScoreTable {
            metrics: vec!["clip_i_neg".into()],
            values,
        };
        let summary = summarize(&info, &records, &scores);
        let place = |key: &[String]| condition_step(&summary, &records, None, "neg_steps_at", key);
        let (series, left_out) = probe_curve_data(&summary, 0, "neg_steps_at", &place);
        assert_eq!(left_out, 1, "\"1, 3\" is no probe");
        let labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["neg_steps_at at k", "neg_steps_at from k"]);
        let xs = |s: &Series| s.points.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(xs(&series[0]), [0.0, 1.0]);
        assert_eq!(xs(&series[1]), [1.0]);
        // Each point is the verdict's paired difference of its condition; its mean is the
        // mean over seeds of image - none.
        for (s, set, x) in [(0, "0", 0.0), (0, "1", 1.0), (1, "from 1", 1.0)] {
            let row = summary
                .rows
                .iter()
                .find(|r| r.key == ["image", set])
                .unwrap();
            let point = series[s].points.iter().find(|p| p.0 == x).unwrap().1;
            assert_eq!(point, row.vs_base[0].as_ref().unwrap().estimate);
            let k = sets.iter().position(|v| *v == set).unwrap();
            let want = -(1..=3)
                .map(|seed| (k + 1) as f64 * 0.05 * seed as f64)
                .sum::<f64>()
                / 3.0;
            assert!((point.mean - want).abs() < 1e-12, "{set}: {point:?}");
        }
    }

    #[test]
    fn when_window_probe_curves_put_each_condition_at_the_pipelines_first_or_last_step() {
        use crate::params::{SchedulerKind, Window};
        use crate::sampling::methods::Branch;
        use crate::sampling::{make_scheduler, step_at};
        let schedule = SchedulerConfig::sd15_ddim();
        let steps = 10;
        let cases = [
            ("neg_start", ["0", "0.25", "0.5", "0.83"], Window::Steps),
            ("neg_start", ["0", "0.25", "0.5", "0.83"], Window::Sigma),
            ("neg_end", ["0.15", "0.4", "0.66", "1"], Window::Steps),
            ("neg_end", ["0.15", "0.4", "0.66", "1"], Window::Sigma),
        ];
        for (axis_name, fractions, window) in cases {
            let info = run_info(vec![
                axis("negative", &["none", "image"]),
                axis(axis_name, &fractions),
                axis("seed", &["1", "2"]),
            ]);
            let cell = |mode: NegativeMode, f: &str, seed: u64| {
                let f: f64 = f.parse().unwrap();
                let (neg_start, neg_end) = match axis_name {
                    "neg_start" => (Some(f), None),
                    _ => (None, Some(f)),
                };
                CellSpec {
                    negative: Some(mode),
                    neg_start,
                    neg_end,
                    seed,
                    steps,
                    scheduler: SchedulerKind::EulerAncestral,
                    window,
                    ..Default::default()
                }
            };
            let mut records = Vec::new();
            let mut values = HashMap::new();
            for (m, mode) in [NegativeMode::None, NegativeMode::Image]
                .into_iter()
                .enumerate()
            {
                for (k, f) in fractions.iter().enumerate() {
                    for seed in 1..=2u64 {
                        let id = format!("{m}-{k}-{seed}");
                        values.insert(id.clone(), vec![seed as f64 + (m * k) as f64]);
                        let c = cell(mode, f, seed);
                        records.push(Record::new(&id, &c, Status::Done, "", 0.0, ""));
                    }
                }
            }
            let scores = ScoreTable {
                metrics: vec!["clip_i_neg".into()],
                values,
            };
            let summary = summarize(&info, &records, &scores);
            let place = |key: &[String]| {
                condition_step(&summary, &records, Some(&schedule), axis_name, key)
            };
            let (series, left_out) = probe_curve_data(&summary, 0, axis_name, &place);
            assert_eq!(left_out, 0, "{axis_name} {window:?}");
            assert_eq!(series.len(), 1, "{axis_name} {window:?}");
            // The step the sampler makes the negative start (or stop) at, from the
            // pipeline's own per-step decision on the cell's parameters.
            let sampler = make_scheduler(SchedulerKind::EulerAncestral, &schedule, steps).unwrap();
            let want: Vec<f64> = fractions
                .iter()
                .map(|f| {
                    let params = cell(NegativeMode::Image, f, 1).params(&|n| n.into());
                    let active: Vec<usize> = (0..steps)
                        .filter(|&i| {
                            Branch::Negative.active(&params, &step_at(sampler.as_ref(), i, steps))
                        })
                        .collect();
                    let step = match axis_name {
                        "neg_start" => active.first(),
                        _ => active.last(),
                    };
                    *step.unwrap() as f64
                })
                .collect();
            let xs: Vec<f64> = series[0].points.iter().map(|p| p.0).collect();
            assert_eq!(xs, want, "{axis_name} {window:?}");
            assert!(xs.iter().any(|&x| x > 1.0), "steps, not fractions: {xs:?}");
        }
    }

    #[test]
    fn when_trace_curves_draw_each_condition_and_its_shared_baseline_once_per_figure() {
        let sets: Vec<String> = (0..11).map(|k| k.to_string()).collect();
        let set_names: Vec<&str> = sets.iter().map(String::as_str).collect();
        let info = run_info(vec![
            axis("negative", &["none", "image"]),
            axis("neg_steps_at", &set_names),
        ]);
        let mut records = Vec::new();
        let mut rows = Vec::new();
        for mode in [NegativeMode::None, NegativeMode::Image] {
            for set in &sets {
                for seed in [1u64, 2] {
                    let cell = CellSpec {
                        negative: Some(mode),
                        neg_steps_at: Some(set.parse().unwrap()),
                        seed,
                        steps: 12,
                        trace: Some("every 6".parse().unwrap()),
                        ..Default::default()
                    };
                    // The baselines of every set are one image per seed (neg_off = no_image).
                    let image = match mode {
                        NegativeMode::None => format!("n{seed}"),
                        _ => format!("i{set}-{seed}"),
                    };
                    let id = format!("{mode:?}-{set}-{seed}");
                    let r = Record::new(
                        &id,
                        &cell,
                        Status::Done,
                        &format!("images/{image}.png"),
                        0.0,
                        "",
                    );
                    for (step, file) in traces::trace_files(&r) {
                        let value = step as f64
                            + seed as f64 / 10.0
                            + if image.starts_with('n') {
                                0.0
                            } else {
                                set.parse::<f64>().unwrap()
                            };
                        rows.push(traces::TraceRow {
                            cell_id: id.clone(),
                            step,
                            file,
                            baseline_file: String::new(),
                            values: vec![value],
                        });
                    }
                    records.push(r);
                }
            }
        }
        let table = TraceScores {
            metrics: vec!["clip_i_pos".into()],
            rows,
        };
        let figures = trace_curve_data(&info, &records, &table, 0);
        let labels: Vec<Vec<&str>> = figures
            .iter()
            .map(|f| f.iter().map(|s| s.label.as_str()).collect())
            .collect();
        let base = "baseline (negative=none, neg_steps_at=0)";
        assert_eq!(labels.len(), 2, "{labels:?}");
        assert_eq!(labels[0].len(), LINES_PER_FIGURE);
        assert_eq!(labels[0][0], base);
        // A figure's baseline line is labelled by the first condition it pairs with.
        assert_eq!(
            labels[1],
            [
                "baseline (negative=none, neg_steps_at=9)",
                "negative=image, neg_steps_at=9",
                "negative=image, neg_steps_at=10"
            ]
        );
        // Steps 0 and 6; each point the mean over the two seeds of its condition's values.
        for line in figures.iter().flatten() {
            let k = match line.label.as_str() {
                l if l.starts_with("baseline") => 0.0,
                l => l.rsplit('=').next().unwrap().parse::<f64>().unwrap(),
            };
            assert_eq!(line.points.len(), 2, "{}", line.label);
            for ((x, e), step) in line.points.iter().zip([0.0, 6.0]) {
                assert_eq!((*x, e.n), (step, 2));
                assert!(
                    (e.mean - (step + 0.15 + k)).abs() < 1e-12,
                    "{}: {e:?}",
                    line.label
                );
            }
        }
    }
}
