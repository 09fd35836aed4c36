//! Comparison grids, curves, tables and index.html, all from a run folder's files (records,
//! run.json, scores): `plot_run` never regenerates an image.
pub mod curves;
pub mod filmstrip;
pub mod font;
pub mod forest;
pub mod grid;
pub mod html;
pub mod maps;
pub mod when;
pub mod where_maps;

use crate::scoring;
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct PlotOptions {
    pub grid: grid::GridOptions,
    /// Metrics written under each grid image; every one must be the scorer's. `None`:
    /// [`DEFAULT_CAPTIONS`], those the scorer has (a run without positive images has no
    /// `clip_i_pos`). Empty: no captions.
    pub caption_metrics: Option<Vec<String>>,
    /// The scorer whose scores make the captions (default: the first one, by id).
    pub caption_scorer: Option<String>,
}

/// The captions when none are asked for.
pub const DEFAULT_CAPTIONS: [&str; 2] = ["clip_i_pos", "clip_i_neg"];

/// Short caption names of the metrics.
fn short(metric: &str) -> String {
    match metric {
        "clip_i_pos" => "I+".into(),
        "clip_i_neg" => "I−".into(),
        "subtraction" => "Δ".into(),
        "clip_i_base" => "I0".into(),
        m => match m.strip_prefix("clip_t_") {
            Some(k) => format!("T{k}"),
            None => m.into(),
        },
    }
}

/// Regenerates every figure, table and index.html of a run with the default options.
pub fn plot_run(run_dir: &Path) -> Result<()> {
    plot_run_with(run_dir, &PlotOptions::default())
}

pub fn plot_run_with(run_dir: &Path, opts: &PlotOptions) -> Result<()> {
    let info = scoring::read_info(run_dir)?;
    let records = scoring::read_run_records(run_dir)?;
    let ids = scoring::scorers(run_dir)?;
    let mut sections = Vec::new();
    let mut captions: HashMap<String, String> = HashMap::new();
    for figures in ["curves", "forest", "when"] {
        let dir = run_dir.join(figures);
        if dir.is_dir() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
    }
    if let Some(want) = &opts.caption_scorer
        && !ids.contains(want)
    {
        bail!(
            "--caption-scorer {want:?}: {} has scores of {}",
            run_dir.display(),
            if ids.is_empty() {
                "no scorer".to_string()
            } else {
                ids.join(", ")
            }
        );
    }
    if let Some(asked) = opts.caption_metrics.as_ref().filter(|m| !m.is_empty())
        && ids.is_empty()
    {
        bail!(
            "--caption {}: this run has no scores; run `negimg score {}` first",
            asked.join(","),
            run_dir.display()
        );
    }
    let caption_scorer = opts.caption_scorer.clone().or_else(|| ids.first().cloned());
    for id in &ids {
        let summary = scoring::summarize_scorer(run_dir, id)?;
        let scorer = scoring::read_scorer_info(run_dir, id)?;
        let scores = scoring::read_scores(&scoring::scorer_dir(run_dir, id).join("scores.csv"))?;
        let curves = curves::write_curves(run_dir, &info, &records, id, &scores, &scorer.targets)?;
        let forests = forest::write_forests(run_dir, id, &summary, &scorer.targets)?;
        let when = when::write_when(run_dir, &info, &records, id, &summary, &scorer.targets)?;
        if caption_scorer.as_deref() == Some(id.as_str()) {
            let wanted: Vec<String> = match &opts.caption_metrics {
                Some(asked) => {
                    if let Some(m) = asked.iter().find(|m| !scores.metrics.contains(m)) {
                        bail!(
                            "--caption {m:?} is not a metric of scorer {id}; known: {}",
                            scores.metrics.join(", ")
                        );
                    }
                    asked.clone()
                }
                None => DEFAULT_CAPTIONS.map(String::from).to_vec(),
            };
            let cols: Vec<(usize, &String)> = wanted
                .iter()
                .filter_map(|m| Some((scores.metrics.iter().position(|x| x == m)?, m)))
                .collect();
            if !cols.is_empty() {
                for (cell, values) in &scores.values {
                    let text: Vec<String> = cols
                        .iter()
                        .filter(|(i, _)| !values[*i].is_nan())
                        .map(|(i, m)| format!("{} {:.3}", short(m), values[*i]))
                        .collect();
                    captions.insert(cell.clone(), text.join(" "));
                }
            }
        }
        sections.push(html::ScorerSection {
            notes: scoring::score_notes(&scorer),
            info: scorer,
            summary,
            curves,
            forests,
            when,
        });
    }
    let grids_dir = run_dir.join("grids");
    if grids_dir.is_dir() {
        std::fs::remove_dir_all(&grids_dir)
            .with_context(|| format!("cannot clear {}", grids_dir.display()))?;
    }
    let mut shown = 0;
    for kind in maps::MapKind::ALL {
        let drawn = maps::write_heat_pngs(run_dir, &records, kind)?;
        if drawn > 0 {
            log::info!("drew {drawn} {kind:?} map(s) under maps/");
        }
        if Some(kind) == maps::Picture::of(&info.plots).kind() {
            shown = drawn;
        }
    }
    let traces = maps::write_trace_heat_pngs(run_dir, &records)?;
    if traces > 0 {
        log::info!("drew {traces} x̂₀ trace change map(s) under maps/");
    }
    if shown == 0 && !info.plots.show.is_image() {
        // Not an error: `negimg run` plots before scoring when it has no scorer.
        eprintln!(
            "note: [plots] show = {} but {} has no such maps yet (`negimg score` writes \
             change maps, a run with [maps] attention the attention maps): the grids show \
             the images",
            serde_json::to_string(&info.plots.show)?,
            run_dir.display()
        );
    }
    let grids = grid::write_grids(run_dir, &info, &records, &captions, &opts.grid)?;
    let place = where_maps::write_where(run_dir, &info, &records)?.map(|w| where_maps::html(&w));
    let toml = std::fs::read_to_string(run_dir.join("experiment.toml")).ok();
    let page = html::index_html(&info, toml.as_deref(), &grids, place.as_deref(), &sections);
    let path = run_dir.join("index.html");
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    log::info!("wrote {}", path.display());
    Ok(())
}
