//! Summary tables: `summary.csv`, `paired.csv` (machine-readable), `summary.md` and
//! `summary.tex` (booktabs) for papers.
use super::metrics::Direction;
use super::stats::{BaseDiff, Estimate, Summary, UNRELIABLE_MARK};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Metrics shown in the markdown and LaTeX tables (the CSV has all of them): the raw
/// `clip_t_cos_K` columns are left out there, their CLIPScore is shown.
pub fn table_metrics(summary: &Summary) -> Vec<usize> {
    (0..summary.metrics.len())
        .filter(|&m| !summary.metrics[m].starts_with("clip_t_cos_"))
        .filter(|&m| summary.rows.iter().any(|r| r.estimates[m].n > 0))
        .collect()
}

fn num(x: f64) -> String {
    if x.is_nan() {
        String::new()
    } else {
        format!("{x}")
    }
}

/// Digits per metric: CLIPScores are on a 0-100 scale, cosines on -1..1.
pub fn digits(metric: &str) -> usize {
    if metric.starts_with("clip_t_") && !metric.starts_with("clip_t_cos_") {
        2
    } else {
        3
    }
}

/// "0.812 [0.801, 0.823]", or "0.812" without an interval, or "–" without values.
pub fn mean_ci(e: &Estimate, d: usize) -> String {
    if e.n == 0 {
        "–".into()
    } else if e.ci_lo.is_nan() {
        format!("{:.d$}", e.mean)
    } else {
        format!("{:.d$} [{:.d$}, {:.d$}]", e.mean, e.ci_lo, e.ci_hi)
    }
}

/// `mean_ci` with the unreliable marker when the interval rests on too few seeds.
pub fn mean_ci_marked(e: &Estimate, d: usize) -> String {
    let text = mean_ci(e, d);
    if e.n > 0 && e.unreliable() {
        format!("{text}{UNRELIABLE_MARK}")
    } else {
        text
    }
}

/// A p-value for reading: two significant digits, "<0.001" below that.
pub fn p_text(p: f64) -> String {
    if p.is_nan() {
        "–".into()
    } else if p < 0.001 {
        "<0.001".into()
    } else if p < 0.01 {
        format!("{p:.3}")
    } else {
        format!("{p:.2}")
    }
}

/// Columns of one metric's paired difference to the baseline in summary.csv.
const BASE_COLUMNS: [&str; 7] = [
    "diff_n",
    "diff",
    "diff_ci_lo",
    "diff_ci_hi",
    "p",
    "p_holm",
    "win_rate",
];

fn base_cells(d: Option<&BaseDiff>) -> Vec<String> {
    match d {
        None => vec![String::new(); BASE_COLUMNS.len()],
        Some(d) => std::iter::once(d.estimate.n.to_string())
            .chain(diff_cells(d))
            .collect(),
    }
}

/// Mean, interval, p, Holm p and win rate of a paired difference, as table cells.
fn diff_cells(d: &BaseDiff) -> [String; 6] {
    [
        d.estimate.mean,
        d.estimate.ci_lo,
        d.estimate.ci_hi,
        d.p,
        d.p_holm,
        d.win_rate,
    ]
    .map(num)
}

/// summary.csv: per condition, per metric the estimate and the paired difference to the
/// baseline (`<m>_diff`, its CI, `<m>_p`, `<m>_p_holm`, `<m>_win_rate`); `baseline` marks the
/// baseline conditions, `unreliable` those with fewer than 5 seeds.
pub fn write_summary_csv(summary: &Summary, path: &Path) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut header: Vec<String> = summary.axes.clone();
    header.extend(["n", "n_failed", "baseline", "unreliable"].map(String::from));
    let set_distance = summary.rows.iter().any(|r| r.cmmd.is_some());
    if set_distance {
        header.extend(["cmmd", "cmmd_p"].map(String::from));
    }
    for m in &summary.metrics {
        for s in ["n", "mean", "std", "ci_lo", "ci_hi"] {
            header.push(format!("{m}_{s}"));
        }
        for s in BASE_COLUMNS {
            header.push(format!("{m}_{s}"));
        }
    }
    w.write_record(&header)?;
    for row in &summary.rows {
        let mut rec = row.key.clone();
        rec.extend([
            row.n.to_string(),
            row.n_failed.to_string(),
            row.is_baseline.to_string(),
            (row.n < super::stats::UNRELIABLE_BELOW).to_string(),
        ]);
        if set_distance {
            let (d, p) = row.cmmd.unwrap_or((f64::NAN, f64::NAN));
            rec.extend([num(d), num(p)]);
        }
        for (m, e) in row.estimates.iter().enumerate() {
            rec.extend([
                e.n.to_string(),
                num(e.mean),
                num(e.std),
                num(e.ci_lo),
                num(e.ci_hi),
            ]);
            rec.extend(base_cells(row.vs_base.get(m).and_then(|d| d.as_ref())));
        }
        w.write_record(&rec)?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn write_paired_csv(summary: &Summary, path: &Path) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut header = summary.paired_axes.clone();
    for h in [
        "metric",
        "a",
        "b",
        "n",
        "mean_b_minus_a",
        "std",
        "ci_lo",
        "ci_hi",
        "b_greater",
    ] {
        header.push(h.into());
    }
    w.write_record(&header)?;
    for p in &summary.paired {
        let mut rec = p.key.clone();
        let e = &p.estimate;
        rec.extend([
            p.metric.clone(),
            p.a.clone(),
            p.b.clone(),
            e.n.to_string(),
            num(e.mean),
            num(e.std),
            num(e.ci_lo),
            num(e.ci_hi),
            num(p.b_greater),
        ]);
        w.write_record(&rec)?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Markdown: one table of conditions, one of paired differences; `title` heads it, `notes`
/// (e.g. the target texts) follow it.
pub fn markdown(summary: &Summary, title: &str, notes: &[String]) -> String {
    let mut s = format!("## {title}\n\n");
    for n in notes {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(
        s,
        "\nMean [95% bootstrap CI over seeds]; n = images scored, failed = cells that failed.\n"
    );
    let metrics = table_metrics(summary);
    let mut header: Vec<String> = summary.axes.clone();
    header.extend(["n".into(), "failed".into()]);
    let set_distance = summary.rows.iter().any(|r| r.cmmd.is_some());
    if set_distance {
        header.push("CMMD (p)".into());
    }
    header.extend(metrics.iter().map(|&m| summary.metrics[m].clone()));
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
    for row in &summary.rows {
        let mut cells: Vec<String> = row.key.iter().map(|k| md_escape(k)).collect();
        cells.extend([row.n.to_string(), row.n_failed.to_string()]);
        if set_distance {
            cells.push(cmmd_text(row.cmmd));
        }
        for &m in &metrics {
            cells.push(mean_ci_marked(
                &row.estimates[m],
                digits(&summary.metrics[m]),
            ));
        }
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    base_markdown(&mut s, summary, &metrics);
    pooled_markdown(&mut s, summary, &metrics);
    let paired: Vec<_> = summary
        .paired
        .iter()
        .filter(|p| !p.metric.starts_with("clip_t_cos_"))
        .collect();
    if !paired.is_empty() {
        let _ = writeln!(
            s,
            "\n### Paired differences between negative modes (same seed)\n\n\
             b − a, mean [95% CI]; \"b > a\" = share of seeds where b scored higher.\n"
        );
        let mut header = summary.paired_axes.clone();
        header.extend(["metric", "b − a", "n", "difference", "b > a"].map(String::from));
        let _ = writeln!(s, "| {} |", header.join(" | "));
        let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
        for p in paired {
            let mut cells: Vec<String> = p.key.iter().map(|k| md_escape(k)).collect();
            cells.extend([
                p.metric.clone(),
                format!("{} − {}", p.b, p.a),
                p.estimate.n.to_string(),
                mean_ci(&p.estimate, digits(&p.metric)),
                format!("{:.0}%", 100.0 * p.b_greater),
            ]);
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
    }
    s
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// LaTeX special characters escaped for text mode.
pub fn tex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            _ => out.push(c),
        }
    }
    out
}

/// LaTeX tables (booktabs), ready for `\input{}`: conditions, then paired differences.
pub fn latex(summary: &Summary, caption: &str) -> String {
    let metrics = table_metrics(summary);
    let mut s = String::from("% Generated by negimg; needs \\usepackage{booktabs}.\n");
    let cols = format!(
        "{}rr{}",
        "l".repeat(summary.axes.len()),
        "r".repeat(metrics.len())
    );
    let _ = writeln!(
        s,
        "\\begin{{table}}[t]\n\\centering\n\\small\n\\begin{{tabular}}{{{cols}}}\n\\toprule"
    );
    let mut header: Vec<String> = summary.axes.iter().map(|a| tex_escape(a)).collect();
    header.extend(["$n$".into(), "failed".into()]);
    header.extend(metrics.iter().map(|&m| tex_escape(&summary.metrics[m])));
    let _ = writeln!(s, "{} \\\\\n\\midrule", header.join(" & "));
    for row in &summary.rows {
        let mut cells: Vec<String> = row.key.iter().map(|k| tex_escape(k)).collect();
        cells.extend([row.n.to_string(), row.n_failed.to_string()]);
        for &m in &metrics {
            cells.push(tex_escape(&mean_ci_marked(
                &row.estimates[m],
                digits(&summary.metrics[m]),
            )));
        }
        let _ = writeln!(s, "{} \\\\", cells.join(" & "));
    }
    let _ = writeln!(
        s,
        "\\bottomrule\n\\end{{tabular}}\n\\caption{{{}. Mean [95\\% bootstrap CI over seeds]; {UNRELIABLE_MARK}: fewer than {} seeds, unreliable.}}\n\\end{{table}}",
        tex_escape(caption),
        super::stats::UNRELIABLE_BELOW
    );
    let paired: Vec<_> = summary
        .paired
        .iter()
        .filter(|p| !p.metric.starts_with("clip_t_cos_"))
        .collect();
    if !paired.is_empty() {
        let cols = format!("{}llrrr", "l".repeat(summary.paired_axes.len()));
        let _ = writeln!(
            s,
            "\n\\begin{{table}}[t]\n\\centering\n\\small\n\\begin{{tabular}}{{{cols}}}\n\\toprule"
        );
        let mut header: Vec<String> = summary.paired_axes.iter().map(|a| tex_escape(a)).collect();
        header.extend(
            ["metric", "$b - a$", "$n$", "difference", "$b > a$"]
                .into_iter()
                .map(String::from),
        );
        let _ = writeln!(s, "{} \\\\\n\\midrule", header.join(" & "));
        for p in paired {
            let mut cells: Vec<String> = p.key.iter().map(|k| tex_escape(k)).collect();
            cells.extend([
                tex_escape(&p.metric),
                format!("{} $-$ {}", tex_escape(&p.b), tex_escape(&p.a)),
                p.estimate.n.to_string(),
                tex_escape(&mean_ci(&p.estimate, digits(&p.metric))),
                format!("{:.0}\\%", 100.0 * p.b_greater),
            ]);
            let _ = writeln!(s, "{} \\\\", cells.join(" & "));
        }
        let _ = writeln!(
            s,
            "\\bottomrule\n\\end{{tabular}}\n\\caption{{{}: paired differences between negative modes on the same seed. Mean [95\\% bootstrap CI]; $b > a$: share of seeds.}}\n\\end{{table}}",
            tex_escape(caption)
        );
    }
    s
}

/// "0.123 (p 0.01)": CMMD to the baseline images, "–" without one.
pub fn cmmd_text(c: Option<(f64, f64)>) -> String {
    match c {
        Some((d, p)) => format!("{d:.3} (p {})", p_text(p)),
        None => "–".into(),
    }
}

/// "−0.041 [−0.060, −0.020]" for a difference, with the unreliable marker.
fn diff_text(d: &BaseDiff, metric: &str) -> String {
    let text = mean_ci_marked(&d.estimate, digits(metric));
    if d.estimate.mean > 0.0 {
        format!("+{text}")
    } else {
        text
    }
}

fn win_text(d: &BaseDiff) -> String {
    if d.win_rate.is_nan() {
        "–".into()
    } else {
        format!("{}/{}", d.wins, d.estimate.n)
    }
}

/// The markdown table of paired differences to the baseline (non-baseline conditions).
fn base_markdown(s: &mut String, summary: &Summary, metrics: &[usize]) {
    let rows: Vec<_> = summary
        .rows
        .iter()
        .filter(|r| !r.vs_base.is_empty())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n### Paired differences to the baseline ({}), same seed\n\n\
         condition − baseline, mean [95% CI]; p_holm; wins = seeds that moved the right way.\n",
        baseline_text(summary)
    );
    diff_header(s, summary, metrics, "wins");
    for row in rows {
        diff_row(s, summary, metrics, &row.key, |m| row.vs_base[m].as_ref());
    }
}

/// The header of a markdown table of paired differences: the axes, then per metric its
/// difference, p_holm and `count` (the column of [`win_text`]).
fn diff_header(s: &mut String, summary: &Summary, metrics: &[usize], count: &str) {
    let mut header: Vec<String> = summary.axes.clone();
    for &m in metrics {
        header.push(format!("{} diff", summary.metrics[m]));
        header.push("p_holm".into());
        header.push(count.into());
    }
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
}

/// A row of a [`diff_header`] table: the condition `key`, then per metric `m` the
/// difference `diff(m)` ("–" in each column where there is none).
fn diff_row<'a>(
    s: &mut String,
    summary: &Summary,
    metrics: &[usize],
    key: &[String],
    diff: impl Fn(usize) -> Option<&'a BaseDiff>,
) {
    let mut cells: Vec<String> = key.iter().map(|k| md_escape(k)).collect();
    for &m in metrics {
        match diff(m) {
            Some(d) => cells.extend([
                diff_text(d, &summary.metrics[m]),
                p_text(d.p_holm),
                win_text(d),
            ]),
            None => cells.extend(["–".into(), "–".into(), "–".into()]),
        }
    }
    let _ = writeln!(s, "| {} |", cells.join(" | "));
}

/// The markdown table of the effects pooled over subjects.
fn pooled_markdown(s: &mut String, summary: &Summary, metrics: &[usize]) {
    if summary.pooled.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n### Pooled over subjects (the subject is the unit)\n\n\
         mean of the subjects' mean differences [95% two-stage bootstrap CI]; p_holm (sign-flip \
         on the subject means, Holm across conditions); significant = subjects with p < {} the \
         right way.\n",
        super::pooled::SUBJECT_ALPHA
    );
    diff_header(s, summary, metrics, "significant");
    for row in &summary.pooled {
        diff_row(s, summary, metrics, &row.key, |m| {
            row.vs_base[m].as_ref().map(|d| &d.diff)
        });
    }
}

/// pooled.csv: one row per pooled condition and metric.
pub fn write_pooled_csv(summary: &Summary, path: &Path) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut header: Vec<String> = summary.axes.clone();
    header.extend(
        [
            "metric",
            "subjects",
            "diff",
            "diff_ci_lo",
            "diff_ci_hi",
            "p",
            "p_holm",
            "significant_share",
            "subject_std",
        ]
        .map(String::from),
    );
    w.write_record(&header)?;
    for row in &summary.pooled {
        for (metric, d) in summary.metrics.iter().zip(&row.vs_base) {
            let Some(d) = d else { continue };
            let e = &d.diff.estimate;
            let mut rec = row.key.clone();
            rec.push(metric.clone());
            rec.push(e.n.to_string());
            rec.extend(
                [
                    e.mean,
                    e.ci_lo,
                    e.ci_hi,
                    d.diff.p,
                    d.diff.p_holm,
                    d.diff.win_rate,
                    e.std,
                ]
                .map(num),
            );
            w.write_record(&rec)?;
        }
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// "negative = none".
pub fn baseline_text(summary: &Summary) -> String {
    summary
        .baseline
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row of the verdict table: a condition against its baseline.
#[derive(Clone, Debug)]
pub struct VerdictRow {
    pub key: Vec<String>,
    /// Paired seeds (the most of the two metrics).
    pub n: usize,
    /// The metric towards the negative reference (`*_i_neg`) and its difference.
    pub neg: Option<(String, BaseDiff)>,
    /// The metric towards the positive reference (`*_i_pos`) and its difference.
    pub pos: Option<(String, BaseDiff)>,
    /// One line for reading: "the mean moved away from the negative, the hoped-for way; 7/8
    /// seeds moved away from it, p_holm=0.03; ...".
    pub reading: String,
    pub unreliable: bool,
}

/// What a row's n counts: seeds, or subjects for a pooled row (whose wins are the subjects
/// with a significant effect).
#[derive(Clone, Copy)]
enum Unit {
    Seeds,
    Subjects,
}

/// "the mean moved towards the negative, not the hoped-for way; 2/8 seeds moved away from
/// it, p_holm=0.5": which way the mean difference went and whether that is the way a
/// working negative moves it, then the seeds (or subjects) that moved the hoped-for way.
fn phrase(metric: &str, d: &BaseDiff, unit: Unit) -> String {
    let (n, wins, mean) = (d.estimate.n, d.wins, d.estimate.mean);
    let unit = match unit {
        Unit::Seeds => "seeds",
        Unit::Subjects => "subjects (significant)",
    };
    if metric == super::metrics::NEG_PRESENT {
        return format!(
            "the negative's concept went from present to absent in {wins}/{n} {unit} \
             (rate {mean:+.2}), p_holm={}",
            p_text(d.p_holm)
        );
    }
    let (hoped, other, moved) = match d.direction {
        Direction::Lower => (
            "away from the negative",
            "towards the negative",
            "moved away from it",
        ),
        Direction::Higher => (
            "towards the positive",
            "away from the positive",
            "moved towards it",
        ),
        Direction::Undirected => {
            return format!(
                "changed {metric} in {n} {unit}, p_holm={}",
                p_text(d.p_holm)
            );
        }
    };
    let how = if mean == 0.0 {
        "the mean did not move".to_string()
    } else if (mean < 0.0) == (d.direction == Direction::Lower) {
        format!("the mean moved {hoped}, the hoped-for way")
    } else {
        format!("the mean moved {other}, not the hoped-for way")
    };
    format!(
        "{how}; {wins}/{n} {unit} {moved}, p_holm={}",
        p_text(d.p_holm)
    )
}

/// The verdict rows of a scorer with `*_i_neg` or `*_i_pos` metrics (none otherwise): the
/// conditions pooled over subjects first (when the run has subjects), then each condition.
pub fn verdict_rows(summary: &Summary) -> Vec<VerdictRow> {
    let find = |suffix: &str| summary.metrics.iter().position(|m| m.ends_with(suffix));
    let (neg, pos) = (find("_i_neg"), find("_i_pos"));
    if neg.is_none() && pos.is_none() {
        return Vec::new();
    }
    let removal = summary
        .metrics
        .iter()
        .position(|m| m == super::metrics::NEG_PRESENT);
    let pick = |diffs: &[Option<BaseDiff>], m: Option<usize>| {
        let m = m?;
        Some((summary.metrics[m].clone(), diffs.get(m)?.clone()?))
    };
    let pooled = summary.pooled.iter().map(|row| {
        let diffs: Vec<Option<BaseDiff>> = row
            .vs_base
            .iter()
            .map(|d| d.as_ref().map(|d| d.diff.clone()))
            .collect();
        (row.key.clone(), diffs, Unit::Subjects)
    });
    let single = summary
        .rows
        .iter()
        .filter(|r| !r.is_baseline)
        .map(|row| (row.key.clone(), row.vs_base.clone(), Unit::Seeds));
    pooled
        .chain(single)
        .filter_map(|(key, diffs, unit)| {
            let (neg, pos) = (pick(&diffs, neg), pick(&diffs, pos));
            if neg.is_none() && pos.is_none() {
                return None;
            }
            let n = [&neg, &pos]
                .iter()
                .filter_map(|x| x.as_ref().map(|(_, d)| d.estimate.n))
                .max()
                .unwrap_or(0);
            let mut parts: Vec<String> = [&neg, &pos, &pick(&diffs, removal)]
                .iter()
                .filter_map(|x| x.as_ref().map(|(m, d)| phrase(m, d, unit)))
                .collect();
            let unreliable = n < super::stats::UNRELIABLE_BELOW;
            if unreliable {
                let what = match unit {
                    Unit::Seeds => "seeds",
                    Unit::Subjects => "subjects",
                };
                parts.push(format!("{UNRELIABLE_MARK} {n} {what}: unreliable"));
            }
            Some(VerdictRow {
                key,
                n,
                reading: parts.join("; "),
                neg,
                pos,
                unreliable,
            })
        })
        .collect()
}

/// Columns of one side (negative, positive) of the verdict table.
const VERDICT_SIDE: [&str; 7] = [
    "metric", "diff", "ci_lo", "ci_hi", "p", "p_holm", "win_rate",
];

/// verdict.csv: one row per non-baseline condition.
pub fn write_verdict_csv(summary: &Summary, rows: &[VerdictRow], path: &Path) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut header: Vec<String> = summary.axes.clone();
    header.push("n".into());
    for side in ["neg", "pos"] {
        header.extend(VERDICT_SIDE.iter().map(|c| format!("{side}_{c}")));
    }
    header.extend(["unreliable".into(), "reading".into()]);
    w.write_record(&header)?;
    for row in rows {
        let mut rec = row.key.clone();
        rec.push(row.n.to_string());
        for side in [&row.neg, &row.pos] {
            match side {
                Some((m, d)) => {
                    rec.push(m.clone());
                    rec.extend(diff_cells(d));
                }
                None => rec.extend(vec![String::new(); VERDICT_SIDE.len()]),
            }
        }
        rec.extend([row.unreliable.to_string(), row.reading.clone()]);
        w.write_record(&rec)?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The verdict table (booktabs), ready for `\input{}`.
pub fn verdict_latex(summary: &Summary, rows: &[VerdictRow], caption: &str) -> String {
    let mut s = String::from("% Generated by negimg; needs \\usepackage{booktabs}.\n");
    let cols = format!("{}r{}", "l".repeat(summary.axes.len()), "rrr".repeat(2));
    let _ = writeln!(
        s,
        "\\begin{{table}}[t]\n\\centering\n\\small\n\\begin{{tabular}}{{{cols}}}\n\\toprule"
    );
    let side_name = |side: usize| {
        rows.iter()
            .find_map(|r| [&r.neg, &r.pos][side].as_ref().map(|(m, _)| m.clone()))
            .unwrap_or_else(|| ["negative", "positive"][side].into())
    };
    let mut header: Vec<String> = summary.axes.iter().map(|a| tex_escape(a)).collect();
    header.push("$n$".into());
    for side in 0..2 {
        header.extend([
            format!("$\\Delta$ {}", tex_escape(&side_name(side))),
            "$p_\\mathrm{Holm}$".into(),
            "wins".into(),
        ]);
    }
    let _ = writeln!(s, "{} \\\\\n\\midrule", header.join(" & "));
    for row in rows {
        let mut cells: Vec<String> = row.key.iter().map(|k| tex_escape(k)).collect();
        cells.push(row.n.to_string());
        for side in [&row.neg, &row.pos] {
            match side {
                Some((m, d)) => cells.extend([
                    tex_escape(&diff_text(d, m)).replace('−', "$-$"),
                    tex_escape(&p_text(d.p_holm)).replace('<', "$<$"),
                    tex_escape(&win_text(d)),
                ]),
                None => cells.extend(["--".into(), "--".into(), "--".into()]),
            }
        }
        let _ = writeln!(s, "{} \\\\", cells.join(" & "));
    }
    let _ = writeln!(
        s,
        "\\bottomrule\n\\end{{tabular}}\n\\caption{{{}: each condition against the baseline ({}) on the same seeds. $\\Delta$: mean difference [95\\% bootstrap CI]; $p_\\mathrm{{Holm}}$: sign-flip permutation test, Holm-corrected across conditions; wins: seeds that moved the right way; {UNRELIABLE_MARK}: fewer than {} seeds, unreliable.}}\n\\end{{table}}",
        tex_escape(caption),
        tex_escape(&baseline_text(summary)),
        super::stats::UNRELIABLE_BELOW
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latex_special_characters_are_escaped() {
        assert_eq!(
            tex_escape(r"a_b & 50% {x} #1 $y ~ ^ \"),
            r"a\_b \& 50\% \{x\} \#1 \$y \textasciitilde{} \textasciicircum{} \textbackslash{}"
        );
    }

    #[test]
    fn verdict_reading_says_which_way_the_mean_moved_and_if_that_was_hoped_for() {
        let diff = |mean: f64, direction: Direction, wins: usize| BaseDiff {
            estimate: Estimate {
                n: 8,
                mean,
                std: 0.1,
                ci_lo: mean - 0.1,
                ci_hi: mean + 0.1,
            },
            p: 0.5,
            p_holm: 0.5,
            direction,
            wins,
            win_rate: wins as f64 / 8.0,
            diffs: Vec::new(),
        };
        let lower = |mean, wins| {
            phrase(
                "clip_i_neg",
                &diff(mean, Direction::Lower, wins),
                Unit::Seeds,
            )
        };
        // The case of the issue: Δ clip_i_neg > 0 with 2 of 8 seeds moving away.
        assert_eq!(
            lower(0.02, 2),
            "the mean moved towards the negative, not the hoped-for way; 2/8 seeds moved \
             away from it, p_holm=0.50"
        );
        assert_eq!(
            lower(-0.02, 7),
            "the mean moved away from the negative, the hoped-for way; 7/8 seeds moved away \
             from it, p_holm=0.50"
        );
        assert!(lower(0.0, 4).starts_with("the mean did not move; 4/8 seeds"));
        let higher = |mean, wins| {
            phrase(
                "clip_i_pos",
                &diff(mean, Direction::Higher, wins),
                Unit::Seeds,
            )
        };
        assert!(higher(0.03, 6).starts_with(
            "the mean moved towards the positive, the hoped-for way; 6/8 seeds moved towards it"
        ));
        assert!(
            higher(-0.03, 1)
                .starts_with("the mean moved away from the positive, not the hoped-for way; 1/8")
        );
        let undirected = phrase(
            "clip_i_base",
            &diff(0.1, Direction::Undirected, 0),
            Unit::Seeds,
        );
        assert!(undirected.starts_with("changed clip_i_base in 8 seeds"));
    }

    #[test]
    fn mean_and_interval_are_formatted_per_metric_scale() {
        let e = Estimate {
            n: 3,
            mean: 0.81234,
            std: 0.01,
            ci_lo: 0.8,
            ci_hi: 0.825,
        };
        assert_eq!(mean_ci(&e, digits("clip_i_pos")), "0.812 [0.800, 0.825]");
        assert_eq!(mean_ci(&e, digits("clip_t_1")), "0.81 [0.80, 0.82]");
        let empty = Estimate { n: 0, ..e };
        assert_eq!(mean_ci(&empty, 3), "–");
    }
}
