//! Forest plots: per metric, each subject's paired difference to the baseline with its 95%
//! interval over seeds, and under each condition's subjects the pooled effect (the subject as
//! the unit, two-stage bootstrap interval) as a diamond. SVG for papers, PNG for the page.
use super::curves::{CurveFile, metric_label};
use super::font::{FAMILY, register_plotters_font};
use crate::scoring::metrics;
use crate::scoring::pooled::PooledRow;
use crate::scoring::stats::{Estimate, Summary};
use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Pixels per row of the plot.
const ROW_PX: u32 = 20;
const WIDTH: u32 = 1000;
/// The label column on the left.
const LABEL_PX: u32 = 360;

/// One line of a forest plot.
struct Line {
    label: String,
    estimate: Estimate,
    pooled: bool,
}

/// The lines of metric `m`: per pooled condition, its subjects, then the pooled effect.
fn lines(summary: &Summary, rows: &[PooledRow], m: usize) -> Vec<Line> {
    let subject_at = summary.axes.iter().position(|a| a == "subject");
    let mut out = Vec::new();
    for row in rows {
        let Some(pooled) = &row.vs_base[m] else {
            continue;
        };
        let condition: Vec<String> = summary
            .axes
            .iter()
            .zip(&row.key)
            .enumerate()
            .filter(|(i, _)| Some(*i) != subject_at)
            .map(|(_, (a, v))| format!("{a}={v}"))
            .collect();
        let condition = condition.join(" ");
        for (subject, d) in &pooled.subjects {
            out.push(Line {
                label: format!("  {subject}"),
                estimate: d.estimate,
                pooled: false,
            });
        }
        out.push(Line {
            label: format!("pooled {condition}"),
            estimate: pooled.diff.estimate,
            pooled: true,
        });
    }
    out
}

/// Every metric's forest plot of one scorer into `<run>/forest/<scorer-id>/`; none without
/// pooled rows.
pub fn write_forests(
    run_dir: &Path,
    scorer_id: &str,
    summary: &Summary,
    targets: &[String],
) -> Result<Vec<CurveFile>> {
    let mut files = Vec::new();
    if summary.pooled.is_empty() {
        return Ok(files);
    }
    register_plotters_font();
    for (m, metric) in summary.metrics.iter().enumerate() {
        if metric.starts_with("clip_t_cos_") || metrics::is_condition_level(metric) {
            continue;
        }
        let data = lines(summary, &summary.pooled, m);
        if data.is_empty() {
            continue;
        }
        let rel = format!("forest/{scorer_id}/{metric}");
        let stem = run_dir.join(&rel);
        if let Some(dir) = stem.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let title = format!("{metric} − baseline by subject (95% CI); ◆ pooled");
        let x_label = format!("Δ {}", metric_label(metric, targets));
        let size = (WIDTH, 110 + ROW_PX * data.len() as u32);
        let svg = stem.with_extension("svg");
        draw(
            SVGBackend::new(&svg, size).into_drawing_area(),
            &title,
            &x_label,
            &data,
        )
        .map_err(|e| anyhow!("cannot draw {}: {e}", svg.display()))?;
        let png = stem.with_extension("png");
        draw(
            BitMapBackend::new(&png, size).into_drawing_area(),
            &title,
            &x_label,
            &data,
        )
        .map_err(|e| anyhow!("cannot draw {}: {e}", png.display()))?;
        files.push(CurveFile {
            metric: format!("{metric} by subject"),
            svg: format!("{rel}.svg"),
            png: format!("{rel}.png"),
        });
    }
    Ok(files)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    data: &[Line],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (labels, plot) = root.split_horizontally(LABEL_PX);
    let values: Vec<f64> = data
        .iter()
        .flat_map(|l| [l.estimate.mean, l.estimate.ci_lo, l.estimate.ci_hi, 0.0])
        .filter(|v| v.is_finite())
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.08).max(1e-6);
    let rows = data.len() as f64;
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(44)
        .build_cartesian_2d((lo - pad)..(hi + pad), -0.5..(rows - 0.5))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc(x_label)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, -0.5), (0.0, rows - 0.5)],
        BLACK.mix(0.5).stroke_width(1),
    )))?;
    let (blue, red) = (RGBColor(31, 119, 180), RGBColor(214, 39, 40));
    for (i, line) in data.iter().enumerate() {
        // First line at the top.
        let y = rows - 1.0 - i as f64;
        let e = &line.estimate;
        let color = if line.pooled { red } else { blue };
        if e.ci_lo.is_finite() && e.ci_hi.is_finite() {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(e.ci_lo, y), (e.ci_hi, y)],
                color.stroke_width(if line.pooled { 3 } else { 2 }),
            )))?;
        }
        if e.mean.is_finite() {
            if line.pooled {
                let (px, py) = chart.backend_coord(&(e.mean, y));
                let (x0, y0) = plot.get_base_pixel();
                let (px, py) = (px - x0, py - y0);
                plot.draw(&Polygon::new(
                    vec![(px - 7, py), (px, py - 7), (px + 7, py), (px, py + 7)],
                    color.filled(),
                ))?;
            } else {
                chart.draw_series(std::iter::once(Circle::new((e.mean, y), 4, color.filled())))?;
            }
        }
        let (_, py) = chart.backend_coord(&(0.0, y));
        let (_, y0) = labels.get_base_pixel();
        let text = super::font::fit(&line.label, 13.0, LABEL_PX as f32 - 12.0);
        let style = (FAMILY, 13).into_font().color(&BLACK);
        labels.draw(&Text::new(text, (6, py - y0 - 7), style))?;
    }
    root.present()
}
