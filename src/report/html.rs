//! `index.html`: one static, self-contained page per run (relative links only, inline CSS),
//! readable straight from the file system: the experiment, the inputs, the grids, the
//! summary tables and the curves of every scorer.
use super::curves::CurveFile;
use super::grid::GridFile;
use crate::run::info::RunInfo;
use crate::scoring::ScorerInfo;
use crate::scoring::stats::Summary;
use crate::scoring::stats::{BaseDiff, method_note};
use crate::scoring::tables::{
    VerdictRow, baseline_text, cmmd_text, digits, mean_ci, mean_ci_marked, p_text, table_metrics,
    verdict_rows,
};
use std::fmt::Write as _;

/// What the page shows of one scorer.
pub struct ScorerSection {
    pub info: ScorerInfo,
    pub notes: Vec<String>,
    pub summary: Summary,
    pub curves: Vec<CurveFile>,
    /// Forest plots (subjects and their pooled effect), one per metric.
    pub forests: Vec<CurveFile>,
    /// The "when" section's curves (`when.rs`).
    pub when: super::when::WhenFiles,
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A relative link with each path segment percent-encoded where needed.
pub fn href(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `figures` under a `<{tag}>` heading, each PNG linking to its SVG; nothing when there are
/// none.
pub fn figure_group(s: &mut String, tag: &str, heading: &str, figures: &[CurveFile]) {
    if figures.is_empty() {
        return;
    }
    let _ = writeln!(s, "<{tag}>{heading}</{tag}>");
    for c in figures {
        let _ = writeln!(
            s,
            "<figure class=curve><a href=\"{0}\"><img src=\"{1}\" alt=\"{2}\"></a><figcaption>{2} (<a href=\"{0}\">SVG</a>)</figcaption></figure>",
            href(&c.svg),
            href(&c.png),
            escape(&c.metric)
        );
    }
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:24px auto;max-width:1500px;padding:0 16px;color:#222;background:#fff}\
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc;padding-bottom:4px}\
pre{background:#f6f6f6;padding:12px;overflow:auto;font-size:13px}\
figure{display:inline-block;margin:0 16px 16px 0;vertical-align:top}figure img{border:1px solid #ddd}\
.inputs img{max-height:256px}.grid img{max-width:100%}.curve img{width:720px;max-width:100%}\
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f0f0f0}td.k{text-align:left}table.sortable th{cursor:pointer}tr.unreliable td{color:#777}.missing{background:#fdd;color:#900;padding:8px;display:none}";

/// Sorts a `table.sortable` by the clicked column (`data-v` numbers, else the text).
const SORT: &str = "document.querySelectorAll('table.sortable').forEach(function(t){t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){var rows=Array.prototype.slice.call(t.querySelectorAll('tr')).slice(1);var up=th.getAttribute('data-up')!=='1';th.setAttribute('data-up',up?'1':'0');\
var val=function(r){var c=r.children[i];var v=c.getAttribute('data-v');return v!==null&&v!==''?parseFloat(v):c.textContent;};\
rows.sort(function(a,b){var x=val(a),y=val(b);var d=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));return up?d:-d;});rows.forEach(function(r){t.appendChild(r);});});});});";

/// Logs (and shows) every image that did not load: a broken link is visible, not silent.
const CHECK: &str = "window.addEventListener('load',function(){var bad=[];for(var i=0;i<document.images.length;i++){var im=document.images[i];if(!im.complete||im.naturalWidth===0){bad.push(im.getAttribute('src'));}}\
if(bad.length){console.error('images not loaded: '+bad.join(', '));var b=document.getElementById('missing');b.textContent='Missing files: '+bad.join(', ');b.style.display='block';}});";

fn summary_table(s: &mut String, summary: &Summary) {
    let metrics = table_metrics(summary);
    s.push_str("<table><tr>");
    for a in &summary.axes {
        let _ = write!(s, "<th>{}</th>", escape(a));
    }
    s.push_str("<th>n</th><th>failed</th>");
    let set_distance = summary.rows.iter().any(|r| r.cmmd.is_some());
    if set_distance {
        s.push_str("<th>CMMD to baseline (p)</th>");
    }
    for &m in &metrics {
        let _ = write!(s, "<th>{}</th>", escape(&summary.metrics[m]));
    }
    s.push_str("</tr>\n");
    for row in &summary.rows {
        s.push_str("<tr>");
        for k in &row.key {
            let _ = write!(s, "<td class=k>{}</td>", escape(k));
        }
        let _ = write!(s, "<td>{}</td><td>{}</td>", row.n, row.n_failed);
        if set_distance {
            let _ = write!(s, "<td>{}</td>", escape(&cmmd_text(row.cmmd)));
        }
        for &m in &metrics {
            let text = mean_ci_marked(&row.estimates[m], digits(&summary.metrics[m]));
            let _ = write!(s, "<td>{}</td>", escape(&text));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
}

/// The differences between negative modes: long, so after the curves.
fn paired_table(s: &mut String, summary: &Summary) {
    let paired: Vec<_> = summary
        .paired
        .iter()
        .filter(|p| !p.metric.starts_with("clip_t_cos_"))
        .collect();
    if paired.is_empty() {
        return;
    }
    s.push_str("<h4>Paired differences between negative modes (same seed)</h4><table><tr>");
    for a in &summary.paired_axes {
        let _ = write!(s, "<th>{}</th>", escape(a));
    }
    s.push_str("<th>metric</th><th>b − a</th><th>n</th><th>difference [95% CI]</th><th>b &gt; a</th></tr>\n");
    for p in paired {
        s.push_str("<tr>");
        for k in &p.key {
            let _ = write!(s, "<td class=k>{}</td>", escape(k));
        }
        let _ = writeln!(
            s,
            "<td class=k>{}</td><td class=k>{} − {}</td><td>{}</td><td>{}</td><td>{:.0}%</td></tr>",
            escape(&p.metric),
            escape(&p.b),
            escape(&p.a),
            p.estimate.n,
            escape(&mean_ci(&p.estimate, digits(&p.metric))),
            100.0 * p.b_greater
        );
    }
    s.push_str("</table>\n");
}

fn num_attr(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        String::new()
    }
}

/// One side (negative or positive) of a verdict row: difference [CI], p_holm, wins.
fn verdict_side(s: &mut String, side: &Option<(String, BaseDiff)>) {
    match side {
        Some((m, d)) => {
            let _ = write!(
                s,
                "<td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}/{}</td>",
                num_attr(d.estimate.mean),
                escape(&mean_ci_marked(&d.estimate, digits(m))),
                num_attr(d.p_holm),
                escape(&p_text(d.p_holm)),
                num_attr(d.win_rate),
                d.wins,
                d.estimate.n
            );
        }
        None => s.push_str("<td>–</td><td>–</td><td>–</td>"),
    }
}

/// The verdict table of one scorer: each condition against its baseline, sortable.
fn verdict_table(s: &mut String, sc: &ScorerSection, rows: &[VerdictRow]) {
    let summary = &sc.summary;
    let name = |side: usize, fallback: &str| {
        rows.iter()
            .find_map(|r| [&r.neg, &r.pos][side].as_ref().map(|(m, _)| m.clone()))
            .unwrap_or_else(|| fallback.into())
    };
    let _ = write!(
        s,
        "<h3>{} — against the baseline ({})</h3>\n<table class=sortable><tr>",
        escape(&sc.info.id),
        escape(&baseline_text(summary))
    );
    for a in &summary.axes {
        let _ = write!(s, "<th>{}</th>", escape(a));
    }
    let _ = writeln!(
        s,
        "<th>n</th><th>Δ {0} [95% CI]</th><th>p_holm</th><th>wins</th><th>Δ {1} [95% CI]</th><th>p_holm</th><th>wins</th><th>reading</th></tr>",
        escape(&name(0, "negative")),
        escape(&name(1, "positive"))
    );
    for row in rows {
        let class = if row.unreliable {
            " class=unreliable"
        } else {
            ""
        };
        let _ = write!(s, "<tr{class}>");
        for k in &row.key {
            let _ = write!(s, "<td class=k>{}</td>", escape(k));
        }
        let _ = write!(s, "<td data-v=\"{0}\">{0}</td>", row.n);
        verdict_side(s, &row.neg);
        verdict_side(s, &row.pos);
        let _ = writeln!(s, "<td class=k>{}</td></tr>", escape(&row.reading));
    }
    s.push_str("</table>\n");
}

/// The page. `experiment_toml` is the experiment file's text, if the run folder has it;
/// `where_section` the "where" section's HTML (a run with attention maps).
pub fn index_html(
    info: &RunInfo,
    experiment_toml: Option<&str>,
    grids: &[GridFile],
    where_section: Option<&str>,
    scorers: &[ScorerSection],
) -> String {
    let mut s = String::new();
    let title = format!("{} — {}", info.experiment, info.run_id);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{}</title><style>{STYLE}</style></head><body>\n\
         <div id=missing class=missing></div>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    s.push_str(
        "<p>Files: <a href=\"records.csv\">records.csv</a> · <a href=\"run.json\">run.json</a>",
    );
    if experiment_toml.is_some() {
        s.push_str(" · <a href=\"experiment.toml\">experiment.toml</a>");
    }
    s.push_str("</p>\n");
    let verdicts: Vec<(&ScorerSection, Vec<VerdictRow>)> = scorers
        .iter()
        .map(|sc| (sc, verdict_rows(&sc.summary)))
        .filter(|(_, rows)| !rows.is_empty())
        .collect();
    if !verdicts.is_empty() {
        let _ = write!(
            s,
            "<h2>Verdict</h2>\n<p>Each condition against its baseline on the same seeds (click a column to sort). {}</p>\n",
            escape(&method_note())
        );
        if verdicts.iter().any(|(sc, _)| !sc.summary.pooled.is_empty()) {
            let _ = writeln!(
                s,
                "<p>Rows with subject = pooled come first. {}</p>",
                escape(&crate::scoring::pooled::method_note())
            );
        }
        for (sc, rows) in &verdicts {
            verdict_table(&mut s, sc, rows);
        }
    }
    if let Some(text) = experiment_toml {
        let _ = write!(s, "<h2>Experiment</h2>\n<pre>{}</pre>\n", escape(text));
    }
    if !info.images.is_empty() {
        s.push_str("<h2>Inputs</h2>\n<div class=inputs>");
        for (name, file) in &info.images {
            let _ = write!(
                s,
                "<figure><a href=\"{0}\"><img src=\"{0}\" alt=\"{1}\"></a><figcaption>{1}</figcaption></figure>",
                href(file),
                escape(&match info.captions.get(name) {
                    Some(c) => format!("{name} ({c})"),
                    None => name.clone(),
                })
            );
        }
        s.push_str("</div>\n");
    }
    if !grids.is_empty() {
        s.push_str("<h2>Grids</h2>\n");
        for g in grids {
            let _ = writeln!(
                s,
                "<div class=grid><h3>{0}</h3><a href=\"{1}\"><img src=\"{2}\" alt=\"{0}\"></a><p><a href=\"{1}\">full-size PNG</a></p></div>",
                escape(&g.title),
                href(&g.png),
                href(&g.jpg)
            );
        }
    }
    s.push_str(where_section.unwrap_or_default());
    for sc in scorers {
        let id = &sc.info.id;
        let dir = format!("scores/{id}");
        let _ = write!(s, "<h2>Scores — {}</h2>\n<ul>", escape(id));
        for n in &sc.notes {
            let _ = write!(s, "<li>{}</li>", escape(n));
        }
        s.push_str("</ul>\n<p>Mean [95% bootstrap CI over seeds]. Files:");
        for f in [
            "summary.csv",
            "verdict.csv",
            "verdict.tex",
            "paired.csv",
            "summary.md",
            "summary.tex",
            "scores.csv",
        ] {
            let _ = write!(s, " <a href=\"{}\">{f}</a>", href(&format!("{dir}/{f}")));
        }
        if !sc.summary.pooled.is_empty() {
            let _ = write!(
                s,
                " <a href=\"{}\">pooled.csv</a>",
                href(&format!("{dir}/pooled.csv"))
            );
        }
        s.push_str("</p>\n");
        summary_table(&mut s, &sc.summary);
        for (heading, figures) in [("Curves", &sc.curves), ("Forest plots", &sc.forests)] {
            figure_group(&mut s, "h3", heading, figures);
        }
        paired_table(&mut s, &sc.summary);
    }
    let when: Vec<(&str, &super::when::WhenFiles)> = scorers
        .iter()
        .map(|sc| (sc.info.id.as_str(), &sc.when))
        .collect();
    s.push_str(&super::when::html(&when, grids.iter().any(|g| g.filmstrip)));
    if scorers.is_empty() {
        s.push_str("<h2>Scores</h2><p>Not scored yet: <code>negimg score RUN_DIR</code>.</p>\n");
    }
    let _ = write!(s, "<script>{SORT}{CHECK}</script>\n</body></html>\n");
    s
}
