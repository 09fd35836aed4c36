//! Summary tables: `summary.csv`, `paired.csv` (machine-readable), `summary.md` and
//! `summary.tex` (booktabs) for papers.
use super::stats::{Estimate, Summary};
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

pub fn write_summary_csv(summary: &Summary, path: &Path) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut header: Vec<String> = summary.axes.clone();
    header.extend(["n".into(), "n_failed".into()]);
    for m in &summary.metrics {
        for s in ["n", "mean", "std", "ci_lo", "ci_hi"] {
            header.push(format!("{m}_{s}"));
        }
    }
    w.write_record(&header)?;
    for row in &summary.rows {
        let mut rec = row.key.clone();
        rec.extend([row.n.to_string(), row.n_failed.to_string()]);
        for e in &row.estimates {
            rec.extend([
                e.n.to_string(),
                num(e.mean),
                num(e.std),
                num(e.ci_lo),
                num(e.ci_hi),
            ]);
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
    header.extend(metrics.iter().map(|&m| summary.metrics[m].clone()));
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
    for row in &summary.rows {
        let mut cells: Vec<String> = row.key.iter().map(|k| md_escape(k)).collect();
        cells.extend([row.n.to_string(), row.n_failed.to_string()]);
        for &m in &metrics {
            cells.push(mean_ci(&row.estimates[m], digits(&summary.metrics[m])));
        }
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
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
            cells.push(tex_escape(&mean_ci(
                &row.estimates[m],
                digits(&summary.metrics[m]),
            )));
        }
        let _ = writeln!(s, "{} \\\\", cells.join(" & "));
    }
    let _ = writeln!(
        s,
        "\\bottomrule\n\\end{{tabular}}\n\\caption{{{}. Mean [95\\% bootstrap CI over seeds].}}\n\\end{{table}}",
        tex_escape(caption)
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
