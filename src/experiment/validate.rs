//! Checks that need a whole cell: windows, images a mode needs, models a cell needs.
use super::Models;
use super::cell::CellSpec;
use super::grid::Grid;
use super::source::Source;
use super::values::Param;
use crate::params::Method;
use crate::sampling::methods;
use crate::steps::StepSet;
use anyhow::{Result, anyhow};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub fn cells(src: &Source, grid: &Grid, cells: &[CellSpec], models: &Models) -> Result<()> {
    step_sets_or_windows(src, grid)?;
    let varying = grid.varying();
    for (i, c) in cells.iter().enumerate() {
        let fail = |params: &[Param], msg: String| {
            let at = if varying.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.describe(&varying))
            };
            Err(anyhow!(
                "{}: cell {}{at}: {msg}",
                places(src, grid, params),
                i + 1
            ))
        };
        if c.start > c.end {
            return fail(
                &[Param::Start, Param::End],
                format!("start {} is after end {}", c.start, c.end),
            );
        }
        let neg = c.negative_branch();
        if neg.start > neg.end {
            return fail(
                &[Param::NegStart, Param::NegEnd],
                format!(
                    "the negative window starts at {} after it ends at {}",
                    neg.start, neg.end
                ),
            );
        }
        for (param, set) in [
            (Param::StepsAt, c.steps_at.as_ref()),
            (Param::NegStepsAt, c.neg_steps_at()),
            (Param::Trace, c.trace.as_ref()),
        ] {
            if let Some(Err(e)) = set.map(|s| s.check(c.steps)) {
                return fail(&[param, Param::Steps], e);
            }
        }
        if c.negtome_t_min > c.negtome_t_max {
            return fail(
                &[Param::NegtomeTMin, Param::NegtomeTMax],
                format!(
                    "negtome_t_min {} is above negtome_t_max {}: NegToMe acts at the timesteps \
                     t_min <= t <= t_max, so this range is empty",
                    c.negtome_t_min, c.negtome_t_max
                ),
            );
        }
        if c.negative_mode().uses_image() && c.negative_image.is_none() {
            return fail(
                &[Param::Negative, Param::NegativeImage],
                format!(
                    "negative = \"{}\" needs a negative_image",
                    c.negative_mode()
                ),
            );
        }
        let method = methods::of(c.method);
        if let Err((key, why)) = method.check(&c.params(&|name| PathBuf::from(name))) {
            let key = Param::from_name(key).expect("a method checks its experiment keys");
            return fail(&[Param::Method, key], why);
        }
        if models.adapter(c.adapter).is_none() {
            let which = c.adapter;
            return fail(
                &[Param::Adapter],
                format!("adapter = \"{which}\" needs [models] ip_adapter.{which}"),
            );
        }
    }
    Ok(())
}

/// A branch takes a step set or a window, not both: `steps_at` with `start`/`end`, or
/// `neg_steps_at` with `neg_start`/`neg_end`, set in the file is an error naming both keys.
fn step_sets_or_windows(src: &Source, grid: &Grid) -> Result<()> {
    for (set, window) in [
        (Param::StepsAt, [Param::Start, Param::End]),
        (Param::NegStepsAt, [Param::NegStart, Param::NegEnd]),
    ] {
        let (Some(a), Some(&w)) = (
            grid.origin(set),
            window.iter().find(|&&w| grid.origin(w).is_some()),
        ) else {
            continue;
        };
        let b = grid.origin(w).cloned().into_iter();
        let lines = src.places(&std::iter::once(a.clone()).chain(b).collect::<Vec<_>>());
        return Err(anyhow!(
            "{}: {set} and {w} both choose the steps of one branch; give a step set or a \
             window, not both",
            lines.unwrap_or_else(|| src.path.display().to_string())
        ));
    }
    Ok(())
}

/// `FILE:12 (grid.start) and :14 (defaults.end)`: where the file sets `params` (a
/// parameter of the negative branch that is not set follows the positive one); those it
/// does not set are named as defaults.
fn places(src: &Source, grid: &Grid, params: &[Param]) -> String {
    let follows = |p: Param| match p {
        Param::NegWeight => Some(Param::Weight),
        Param::NegStart => Some(Param::Start),
        Param::NegEnd => Some(Param::End),
        Param::NegStepsAt => Some(Param::StepsAt),
        _ => None,
    };
    let mut written = Vec::new();
    let mut unset = Vec::new();
    for &p in params {
        match grid
            .origin(p)
            .or_else(|| follows(p).and_then(|q| grid.origin(q)))
        {
            Some(at) => written.push(at.clone()),
            None => unset.push(format!("{p} (default)")),
        }
    }
    match src.places(&written) {
        Some(lines) if unset.is_empty() => lines,
        Some(lines) => format!("{lines} and {}", unset.join(" and ")),
        None => format!("{}: {}", src.path.display(), unset.join(", ")),
    }
}

/// `[maps] steps`: a step set (the syntax of `steps_at`) that needs `attention = true` and
/// fits every cell's step count; errors name the file, line and key.
pub fn map_steps(
    src: &Source,
    raw: &super::schema::MapsRaw,
    cells: &[CellSpec],
) -> Result<Option<StepSet>> {
    let Some(text) = &raw.steps else {
        return Ok(None);
    };
    let fail = |msg: String| src.error(text.span(), "maps.steps", msg);
    let set: StepSet = text.get_ref().parse().map_err(fail)?;
    if raw.attention != Some(true) {
        return Err(fail(
            "the steps of the attention maps, but [maps] attention is not true: set \
             attention = true or remove steps"
                .into(),
        ));
    }
    for (i, c) in cells.iter().enumerate() {
        if let Err(e) = set.check(c.steps) {
            return Err(fail(format!("cell {}: {e}", i + 1)));
        }
    }
    Ok(Some(set))
}

/// For `negimg plan`, with `[maps] attention`: the cells where no UNet row carries a
/// negative image into the image attention, which get no negative attention maps (their
/// positive maps are written): once per method whose cells have a negative image it does
/// not put there (NegToMe merges tokens instead), and once for the cells without a
/// negative image.
pub fn maps_without_negative_row(
    maps: &super::outputs::MapsSpec,
    cells: &[CellSpec],
) -> Vec<String> {
    if !maps.attention {
        return vec![];
    }
    let mut without: BTreeMap<Method, usize> = BTreeMap::new();
    let mut no_image = 0;
    for c in cells {
        let params = c.params(&|name| PathBuf::from(name));
        let rows = crate::sampling::guidance::image_rows(&[&params]);
        match (params.uncond_image().is_some(), rows[0].negative.is_none()) {
            (true, true) => *without.entry(c.method).or_default() += 1,
            (false, true) => no_image += 1,
            (_, false) => {}
        }
    }
    let mut notes: Vec<String> = without
        .into_iter()
        .map(|(method, n)| {
            format!(
                "[maps] attention: method {method} puts no negative image in the image attention: \
                 its {n} cell(s) get no negative attention maps"
            )
        })
        .collect();
    if no_image > 0 {
        notes.push(format!(
            "[maps] attention: {no_image} cell(s) without a negative image get no negative \
             attention maps (their positive maps are written)"
        ));
    }
    notes
}

/// For `negimg plan`: the method-specific keys the file sets that some cells' method does
/// not read, one line per key and method: `FILE:12 (defaults.neg_cfg): method uncond does
/// not use neg_cfg (8 of 40 cells)`.
pub fn unused_keys(src: &Source, grid: &Grid, cells: &[CellSpec]) -> Vec<String> {
    let set: Vec<(&'static str, &(String, std::ops::Range<usize>))> = methods::method_keys()
        .into_iter()
        .filter_map(|k| Some((k, grid.origin(Param::from_name(k)?)?)))
        .collect();
    let keys: Vec<&'static str> = set.iter().map(|(k, _)| *k).collect();
    let mut unused: BTreeMap<(&'static str, Method), usize> = BTreeMap::new();
    for c in cells {
        let params = c.params(&|name| PathBuf::from(name));
        for k in methods::unused_keys(&params, &keys) {
            *unused.entry((k, c.method)).or_default() += 1;
        }
    }
    unused
        .into_iter()
        .map(|((key, method), n)| {
            let origin = set
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, o)| (*o).clone());
            let place = src.places(&Vec::from_iter(origin)).unwrap_or_default();
            format!(
                "{place}: method {method} does not use {key} ({n} of {} cells)",
                cells.len()
            )
        })
        .collect()
}
