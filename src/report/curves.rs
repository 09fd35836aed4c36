//! Curves: one figure per metric, the metric's mean against a numeric axis (weight, cfg,
//! start, end...), one line per series (e.g. adapter x negative mode), a 95% bootstrap
//! band around each line; and per metric the paired difference to the baseline (same seed)
//! with its band. Lines resting on fewer than 5 seeds are marked unreliable (†) in the legend
//! and the title. SVG for papers, PNG for the page.
use super::font::{FAMILY, register_plotters_font};
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use crate::scoring::metrics;
use crate::scoring::stats::{Estimate, ScoreTable, UNRELIABLE_BELOW, UNRELIABLE_MARK};
use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Colour-blind-friendly categorical colours (Tableau 10).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub const SIZE: (u32, u32) = (900, 600);

/// One line of a curve: its label and (x, estimate) points in x order.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, Estimate)>,
}

/// The x axis of the curves: RunInfo.plots.curve_x, else the first numeric axis with more
/// than one value (the seed excluded).
pub fn x_axis(info: &RunInfo) -> Option<String> {
    let numeric = |name: &str| {
        info.axes.iter().any(|a| {
            a.name == name
                && a.values.len() > 1
                && a.values.iter().all(|v| v.parse::<f64>().is_ok())
        })
    };
    if let Some(x) = &info.plots.curve_x {
        return numeric(x).then(|| x.clone());
    }
    info.axes
        .iter()
        .find(|a| a.name != "seed" && numeric(&a.name))
        .map(|a| a.name.clone())
}

/// The axes whose combinations make one line each: RunInfo.plots.series, else every other
/// varying axis but the seed (an axis zipped with `x` is not another line).
pub fn series_axes(info: &RunInfo, records: &[Record], x: &str) -> Vec<String> {
    if !info.plots.series.is_empty() {
        return info.plots.series.clone();
    }
    info.merged_axes(records)
        .into_iter()
        .filter(|a| a.name != "seed" && a.values.len() > 1)
        .filter(|a| !a.name.split(", ").any(|part| part == x))
        .map(|a| a.name)
        .collect()
}

/// Estimates of metric column `m` per series and x value (series in the axes' order).
pub fn curve_data(
    info: &RunInfo,
    records: &[Record],
    scores: &ScoreTable,
    m: usize,
    x: &str,
    series: &[String],
) -> Vec<Series> {
    let value = |_: usize, r: &Record| Some(scores.values.get(&r.cell_id)?[m]);
    collect_series(info, records, &format!("{m}"), x, series, value)
}

/// Estimates of the paired difference `cell - baseline` of metric column `m` (same seed),
/// per series and x value; baseline cells are left out.
pub fn diff_curve_data(
    info: &RunInfo,
    records: &[Record],
    scores: &ScoreTable,
    m: usize,
    x: &str,
    series: &[String],
) -> Vec<Series> {
    let bases = metrics::baselines(info, records);
    let spec = metrics::baseline_spec(info);
    let value = |i: usize, r: &Record| {
        if metrics::is_baseline(r, &spec) {
            return None;
        }
        let base = &records[bases[i]?];
        Some(scores.values.get(&r.cell_id)?[m] - scores.values.get(&base.cell_id)?[m])
    };
    collect_series(
        info,
        records,
        &format!("{m}\u{1e}baseline"),
        x,
        series,
        value,
    )
}

/// Groups `value(index, record)` of the done records by series and x, and estimates them.
fn collect_series(
    info: &RunInfo,
    records: &[Record],
    label_tail: &str,
    x: &str,
    series: &[String],
    value: impl Fn(usize, &Record) -> Option<f64>,
) -> Vec<Series> {
    let axes = info.merged_axes(records);
    let position = |axis: &str, value: &str| {
        axes.iter()
            .find(|a| a.name == axis)
            .and_then(|a| a.values.iter().position(|v| v == value))
            .unwrap_or(usize::MAX)
    };
    // ordered series key -> (label, x bits -> values)
    type Points = BTreeMap<u64, (f64, Vec<f64>)>;
    let mut lines: BTreeMap<Vec<usize>, (String, Points)> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        if r.status != Status::Done {
            continue;
        }
        let (Some(v), Some(xv)) = (value(i, r), r.field(x).and_then(|v| v.parse::<f64>().ok()))
        else {
            continue;
        };
        let keys: Vec<String> = series
            .iter()
            .map(|s| r.axis_value(s).unwrap_or_default())
            .collect();
        let order: Vec<usize> = series
            .iter()
            .zip(&keys)
            .map(|(s, k)| position(s, k))
            .collect();
        let label = series
            .iter()
            .zip(&keys)
            .map(|(s, k)| format!("{s}={k}"))
            .collect::<Vec<_>>()
            .join(", ");
        lines
            .entry(order)
            .or_insert_with(|| (label, BTreeMap::new()))
            .1
            .entry(xv.to_bits())
            .or_insert((xv, Vec::new()))
            .1
            .push(v);
    }
    lines
        .into_values()
        .map(|(label, points)| {
            let mut points: Vec<(f64, Estimate)> = points
                .into_values()
                .map(|(xv, v)| {
                    let e = Estimate::of(&v, &format!("{label}\u{1e}{xv}\u{1e}{label_tail}"));
                    (xv, e)
                })
                .filter(|(_, e)| e.n > 0)
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: if label.is_empty() {
                    "all".into()
                } else {
                    label
                },
                points,
            }
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(hi - lo).is_finite() || hi - lo < 1e-9 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.06;
    (lo - pad, hi + pad)
}

/// A line with a point on fewer than [`UNRELIABLE_BELOW`] seeds.
fn unreliable(s: &Series) -> bool {
    s.points.iter().any(|(_, e)| e.n < UNRELIABLE_BELOW)
}

/// The title, with the unreliable note when a line needs it.
fn titled(title: &str, series: &[Series]) -> String {
    if series.iter().any(unreliable) {
        format!("{title} — {UNRELIABLE_MARK} <{UNRELIABLE_BELOW} seeds: band unreliable")
    } else {
        title.to_string()
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    // The legend gets its own strip on the right so that it never hides a line.
    let widest = series
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0) as u32;
    let legend_w = (widest * 8 + 48).min(root.dim_in_pixel().0 / 3);
    let (plot, legend) = root.split_horizontally(root.dim_in_pixel().0 - legend_w);
    let all = series.iter().flat_map(|s| &s.points);
    let xs: Vec<f64> = all.clone().map(|p| p.0).collect();
    let ys: Vec<f64> = all
        .flat_map(|(_, e)| [e.mean, e.ci_lo, e.ci_hi])
        .filter(|v| v.is_finite())
        .collect();
    let (x0, x1) = padded(
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let (y0, y1) = padded(
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // The band: the upper CI edge left to right, then the lower edge back.
        let band: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(_, e)| e.ci_hi.is_finite())
            .map(|(x, e)| (*x, e.ci_hi))
            .chain(
                s.points
                    .iter()
                    .rev()
                    .filter(|(_, e)| e.ci_lo.is_finite())
                    .map(|(x, e)| (*x, e.ci_lo)),
            )
            .collect();
        if band.len() >= 4 {
            chart.draw_series(std::iter::once(Polygon::new(
                band,
                color.mix(0.18).filled(),
            )))?;
        }
        let line: Vec<(f64, f64)> = s.points.iter().map(|(x, e)| (*x, e.mean)).collect();
        chart.draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?;
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        let y = 60 + 24 * i as i32;
        legend.draw(&PathElement::new(
            vec![(4, y), (28, y)],
            color.stroke_width(3),
        ))?;
        let max_chars = (legend_w.saturating_sub(40) / 7) as usize;
        let label = if unreliable(s) {
            format!("{} {UNRELIABLE_MARK}", s.label)
        } else {
            s.label.clone()
        };
        let text: String = if label.chars().count() > max_chars {
            label
                .chars()
                .take(max_chars.saturating_sub(1))
                .chain(['…'])
                .collect()
        } else {
            label
        };
        legend.draw(&Text::new(text, (34, y - 8), (FAMILY, 14).into_font()))?;
    }
    root.present()
}

/// One metric's figure written as `<stem>.svg` and `<stem>.png`.
pub fn write_curve(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    register_plotters_font();
    if let Some(dir) = stem.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let title = &titled(title, series);
    let svg = stem.with_extension("svg");
    draw(
        SVGBackend::new(&svg, SIZE).into_drawing_area(),
        title,
        x_label,
        y_label,
        series,
    )
    .map_err(|e| anyhow!("cannot draw {}: {e}", svg.display()))?;
    let png = stem.with_extension("png");
    draw(
        BitMapBackend::new(&png, SIZE).into_drawing_area(),
        title,
        x_label,
        y_label,
        series,
    )
    .map_err(|e| anyhow!("cannot draw {}: {e}", png.display()))?;
    Ok(())
}

/// A curve written to disk (paths relative to the run folder).
#[derive(Clone, Debug)]
pub struct CurveFile {
    pub metric: String,
    pub svg: String,
    pub png: String,
}

/// The axis label of a metric.
pub fn metric_label(metric: &str, targets: &[String]) -> String {
    let k = metric
        .strip_prefix("clip_t_")
        .and_then(|k| k.parse::<usize>().ok());
    match (metric, k) {
        ("clip_i_pos", _) => "CLIP-I to the positive image (cosine)".into(),
        ("clip_i_neg", _) => "CLIP-I to the negative image (cosine)".into(),
        ("subtraction", _) => "CLIP-I pos − CLIP-I neg".into(),
        ("clip_i_base", _) => "CLIP-I to the baseline image (cosine)".into(),
        ("dino_i_pos", _) => "DINO-I to the positive image (cosine)".into(),
        ("dino_i_neg", _) => "DINO-I to the negative image (cosine)".into(),
        ("dino_i_base", _) => "DINO-I to the baseline image (cosine)".into(),
        ("mad_base", _) => "mean |pixel − baseline pixel| (0..1)".into(),
        ("ssim_base", _) => "SSIM to the baseline image".into(),
        (m, _) if m.ends_with("_div") => "diversity over seeds (mean 1 − cos)".into(),
        (_, Some(k)) => match targets.get(k - 1) {
            Some(t) => format!("CLIPScore vs \"{}\"", super::font::fit(t, 14.0, 320.0)),
            None => metric.into(),
        },
        _ => metric.into(),
    }
}

/// Every metric's curve of one scorer into `<run>/curves/<scorer-id>/`; none when the run
/// has no numeric axis with more than one value.
pub fn write_curves(
    run_dir: &Path,
    info: &RunInfo,
    records: &[Record],
    scorer_id: &str,
    scores: &ScoreTable,
    targets: &[String],
) -> Result<Vec<CurveFile>> {
    let Some(x) = x_axis(info) else {
        return Ok(Vec::new());
    };
    let series = series_axes(info, records, &x);
    let mut files = Vec::new();
    let mut emit =
        |name: String, rel: String, title: String, y: String, data: &[Series]| -> Result<()> {
            write_curve(&run_dir.join(&rel), &title, &x, &y, data)?;
            files.push(CurveFile {
                metric: name,
                svg: format!("{rel}.svg"),
                png: format!("{rel}.png"),
            });
            Ok(())
        };
    for (m, metric) in scores.metrics.iter().enumerate() {
        if metric.starts_with("clip_t_cos_") {
            continue;
        }
        let data = curve_data(info, records, scores, m, &x, &series);
        if data.is_empty() {
            continue;
        }
        let label = metric_label(metric, targets);
        emit(
            metric.clone(),
            format!("curves/{scorer_id}/{metric}"),
            format!(
                "{}: {metric} vs {x} (mean, 95% CI over seeds)",
                info.experiment
            ),
            label.clone(),
            &data,
        )?;
        if metrics::is_condition_level(metric) {
            continue;
        }
        let diff = diff_curve_data(info, records, scores, m, &x, &series);
        if diff.is_empty() {
            continue;
        }
        emit(
            format!("{metric} − baseline"),
            format!("curves/{scorer_id}/{metric}_vs_baseline"),
            format!(
                "{}: {metric} − baseline vs {x} (paired, 95% CI over seeds)",
                info.experiment
            ),
            format!("Δ {label} to the baseline"),
            &diff,
        )?;
    }
    Ok(files)
}
