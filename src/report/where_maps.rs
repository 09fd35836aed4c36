//! The report's "where" section, from a run's attention maps (README, "Attention maps"):
//! per condition (every axis but the seed), its negative attention map averaged over its
//! seeds beside its images, at one colour scale for all conditions; and the per-block maps
//! of one chosen cell, the lowest seed of the condition whose mean map is largest (the
//! strongest negative), negative and positive at one scale. Pictures under `where/`.
use super::maps::{MapKind, heat_map, with_legend};
use super::{font, html};
use crate::npy;
use crate::run::attention_maps;
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use crate::scoring::stats::{condition_axes, key_of};
use anyhow::{Context, Result, bail};
use image::{Rgb, RgbImage};
use std::fmt::Write;
use std::path::Path;

/// The folder of the section's pictures.
pub const DIR: &str = "where";
/// Side of a block's map in the per-block figures (at most; the image's aspect kept).
const BLOCK_SIDE: u32 = 128;
/// Blocks per row of the per-block figures.
const BLOCKS_PER_ROW: u32 = 8;

/// One condition: its label, its done images by seed, and its mean negative map.
pub struct Condition {
    pub label: String,
    /// `(seed, image file)` relative to the run folder, by seed.
    pub images: Vec<(u64, String)>,
    /// `where/condition-N.png`; `None` where no cell of it has a negative map.
    pub map: Option<String>,
    /// How many seeds the mean is over.
    pub seeds_mapped: usize,
    /// The mean value of the mean map (what "strongest" compares).
    pub strength: f32,
}

/// The cell whose per-block maps the section shows.
pub struct Chosen {
    pub condition: String,
    pub seed: u64,
    pub cell_id: String,
    /// `where/blocks-negative.png`, `where/blocks-positive.png`.
    pub negative: String,
    pub positive: String,
    pub blocks: usize,
}

pub struct WhereSection {
    pub conditions: Vec<Condition>,
    /// The conditions' colour scale (the largest value of their mean maps).
    pub scale: f32,
    pub chosen: Option<Chosen>,
}

/// A map read from a `.npy` file: its shape and values.
struct Array {
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn read(path: &Path) -> Result<Option<Array>> {
    if !path.is_file() {
        return Ok(None);
    }
    let (shape, values) = npy::read_shape(path)?;
    Ok(Some(Array { shape, values }))
}

/// The done records with attention maps (a positive map: every cell of a run with maps),
/// grouped by condition in record order.
fn conditions<'r>(run_dir: &Path, info: &RunInfo, records: &'r [Record]) -> Vec<Vec<&'r Record>> {
    let axes = condition_axes(info);
    let mut keys: Vec<Vec<String>> = Vec::new();
    let mut groups: Vec<Vec<&Record>> = Vec::new();
    for r in records.iter().filter(|r| r.status == Status::Done) {
        if !attention_maps::file(run_dir, &r.cell_id, "positive").is_file() {
            continue;
        }
        let key = key_of(r, &axes);
        match keys.iter().position(|k| *k == key) {
            Some(i) => groups[i].push(r),
            None => {
                keys.push(key);
                groups.push(vec![r]);
            }
        }
    }
    for g in &mut groups {
        g.sort_by_key(|r| r.seed);
    }
    groups
}

/// "method: uncond · negative: image" (the seed's the only axis: "all cells").
fn label(info: &RunInfo, record: &Record) -> String {
    let axes = condition_axes(info);
    let parts: Vec<String> = axes
        .iter()
        .zip(key_of(record, &axes))
        .map(|(a, v)| format!("{a}: {v}"))
        .collect();
    if parts.is_empty() {
        "all cells".into()
    } else {
        parts.join(" · ")
    }
}

/// The mean of the cells' negative maps (those that have one) and how many there were.
fn mean_map(run_dir: &Path, cells: &[&Record]) -> Result<Option<(Array, usize)>> {
    let mut sum: Option<Array> = None;
    let mut n = 0;
    for r in cells {
        let file = attention_maps::file(run_dir, &r.cell_id, "negative");
        let Some(map) = read(&file)? else { continue };
        match &mut sum {
            None => sum = Some(map),
            Some(s) if s.shape == map.shape => {
                s.values
                    .iter_mut()
                    .zip(&map.values)
                    .for_each(|(a, b)| *a += b);
            }
            Some(s) => bail!(
                "{}: shape {:?}, another seed's is {:?}",
                file.display(),
                map.shape,
                s.shape
            ),
        }
        n += 1;
    }
    Ok(sum.map(|mut s| {
        s.values.iter_mut().for_each(|v| *v /= n as f32);
        (s, n)
    }))
}

fn largest(values: &[f32]) -> f32 {
    values.iter().copied().fold(0.0, f32::max)
}

fn save(img: &RgbImage, path: &Path) -> Result<()> {
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the section's pictures under `where/` (cleared first); `None` for a run without
/// attention maps.
pub fn write_where(
    run_dir: &Path,
    info: &RunInfo,
    records: &[Record],
) -> Result<Option<WhereSection>> {
    let dir = run_dir.join(DIR);
    if dir.is_dir() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let groups = conditions(run_dir, info, records);
    if groups.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let means: Vec<Option<(Array, usize)>> = groups
        .iter()
        .map(|g| mean_map(run_dir, g))
        .collect::<Result<_>>()?;
    let scale = means
        .iter()
        .flatten()
        .map(|(m, _)| largest(&m.values))
        .fold(0.0, f32::max);
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let mut conditions = Vec::new();
    for (i, (group, mean)) in groups.iter().zip(&means).enumerate() {
        let first = group[0];
        let (map, seeds_mapped, strength) = match mean {
            Some((m, n)) => {
                let image = run_dir.join(&first.file);
                let size = image::image_dimensions(&image)
                    .with_context(|| format!("cannot read {}", image.display()))?;
                let [rows, cols] = m.shape[..] else {
                    bail!("negative attention maps of {} are not 2-d", first.cell_id);
                };
                let picture = heat_map(rows, cols, &m.values, scale, size);
                let file = format!("{DIR}/condition-{i}.png");
                save(
                    &with_legend(&picture, scale, MapKind::NegativeAttention),
                    &run_dir.join(&file),
                )?;
                let strength = m.values.iter().sum::<f32>() / m.values.len().max(1) as f32;
                (Some(file), *n, strength)
            }
            None => (None, 0, 0.0),
        };
        conditions.push(Condition {
            label: label(info, first),
            images: group.iter().map(|r| (r.seed, r.file.clone())).collect(),
            map,
            seeds_mapped,
            strength,
        });
    }
    let chosen = write_chosen(run_dir, info, &groups, &conditions)?;
    Ok(Some(WhereSection {
        conditions,
        scale,
        chosen,
    }))
}

/// The strongest condition (largest mean map; the first of equals) and its lowest seed
/// with a negative map: its per-block maps, negative and positive at one scale.
fn write_chosen(
    run_dir: &Path,
    info: &RunInfo,
    groups: &[Vec<&Record>],
    conditions: &[Condition],
) -> Result<Option<Chosen>> {
    let mut best: Option<usize> = None;
    for (i, c) in conditions.iter().enumerate() {
        if c.map.is_some() && best.is_none_or(|b| c.strength > conditions[b].strength) {
            best = Some(i);
        }
    }
    let Some(best) = best else { return Ok(None) };
    let file = |r: &Record, name| attention_maps::file(run_dir, &r.cell_id, name);
    let Some(cell) = groups[best]
        .iter()
        .find(|r| file(r, "negative_blocks").is_file())
    else {
        return Ok(None);
    };
    let (Some(negative), Some(positive)) = (
        read(&file(cell, "negative_blocks"))?,
        read(&file(cell, "positive_blocks"))?,
    ) else {
        return Ok(None);
    };
    let blocks = negative.shape.first().copied().unwrap_or(0);
    let scale = largest(&negative.values).max(largest(&positive.values));
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let image = run_dir.join(&cell.file);
    let (w, h) = image::image_dimensions(&image)
        .with_context(|| format!("cannot read {}", image.display()))?;
    let side = (
        w.min(BLOCK_SIDE),
        (h * w.min(BLOCK_SIDE)).div_ceil(w.max(1)),
    );
    let mut names = Vec::new();
    for (name, blocks) in [("negative", &negative), ("positive", &positive)] {
        let sheet = block_sheet(blocks, scale, side)
            .with_context(|| format!("{name} blocks of {}", cell.cell_id))?;
        let out = format!("{DIR}/blocks-{name}.png");
        save(
            &with_legend(&sheet, scale, MapKind::NegativeAttention),
            &run_dir.join(&out),
        )?;
        names.push(out);
    }
    let positive = names.pop().unwrap_or_default();
    let negative = names.pop().unwrap_or_default();
    Ok(Some(Chosen {
        condition: label(info, cell),
        seed: cell.seed,
        cell_id: cell.cell_id.clone(),
        negative,
        positive,
        blocks,
    }))
}

/// Each block's map `[blocks, h, w]` as a tile of `side`, labelled with its index
/// (blocks in the UNet's execution order), [`BLOCKS_PER_ROW`] to a row.
fn block_sheet(blocks: &Array, scale: f32, (tw, th): (u32, u32)) -> Result<RgbImage> {
    let [n, rows, cols] = blocks.shape[..] else {
        bail!("shape {:?} is not [blocks, h, w]", blocks.shape);
    };
    let (px, pad) = (12.0, 4);
    let label_h = font::line_height(px);
    let per_row = (n as u32).clamp(1, BLOCKS_PER_ROW);
    let grid_rows = (n as u32).div_ceil(per_row);
    let (cell_w, cell_h) = (tw + pad, th + label_h + pad);
    let mut sheet = RgbImage::from_pixel(
        per_row * cell_w + pad,
        grid_rows * cell_h + pad,
        Rgb([255, 255, 255]),
    );
    for b in 0..n {
        let (x, y) = (
            pad + (b as u32 % per_row) * cell_w,
            pad + (b as u32 / per_row) * cell_h,
        );
        let values = &blocks.values[b * rows * cols..(b + 1) * rows * cols];
        let tile = heat_map(rows, cols, values, scale, (tw, th));
        font::draw_text(
            &mut sheet,
            &format!("block {b}"),
            x as f32,
            y as f32,
            px,
            Rgb([0, 0, 0]),
        );
        image::imageops::replace(&mut sheet, &tile, x as i64, (y + label_h) as i64);
    }
    Ok(sheet)
}

/// The section's HTML.
pub fn html(section: &WhereSection) -> String {
    let mut s = String::new();
    s.push_str(
        "<h2>Where</h2>\n<p>Where the negative image acts inside the UNet: per condition, the \
         negative attention map (‖w·out_ip‖ of the term that carries the negative image, \
         averaged over blocks and steps) averaged over its seeds, beside its images; one \
         colour scale for all conditions. A condition where no row carries a negative image \
         (no negative image, or NegToMe) has no map.</p>\n",
    );
    let _ = writeln!(
        s,
        "<table class=where><tr><th>condition</th><th>mean negative map (0 to {:.3})</th><th>images (seed)</th></tr>",
        section.scale
    );
    for c in &section.conditions {
        let map = match &c.map {
            Some(f) => format!(
                "<a href=\"{0}\"><img src=\"{0}\" width=160 alt=\"mean map\"></a><br>mean of {1} seed(s)",
                html::href(f),
                c.seeds_mapped
            ),
            None => "no negative map".into(),
        };
        let _ = write!(
            s,
            "<tr><td class=k>{}</td><td>{map}</td><td class=k>",
            html::escape(&c.label)
        );
        for (seed, file) in &c.images {
            let _ = write!(
                s,
                "<figure><a href=\"{0}\"><img src=\"{0}\" width=128 alt=\"seed {seed}\"></a><figcaption>{seed}</figcaption></figure>",
                html::href(file)
            );
        }
        s.push_str("</td></tr>\n");
    }
    s.push_str("</table>\n");
    if let Some(c) = &section.chosen {
        let _ = write!(
            s,
            "<h3>Per block: {}, seed {}</h3>\n<p>The {} cross-attention blocks of cell {} (in \
             the UNet's execution order), chosen as the lowest seed of the condition whose mean \
             negative map is largest; negative and positive (the cond row's own term) at one \
             scale.</p>\n",
            html::escape(&c.condition),
            c.seed,
            c.blocks,
            html::escape(&c.cell_id)
        );
        for (what, f) in [("negative", &c.negative), ("positive", &c.positive)] {
            let _ = writeln!(
                s,
                "<figure><a href=\"{0}\"><img src=\"{0}\" alt=\"{what} per block\"></a><figcaption>{what}</figcaption></figure>",
                html::href(f)
            );
        }
    }
    s
}
