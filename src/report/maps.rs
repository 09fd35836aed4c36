//! Change and attention maps as pictures: a heat-map PNG with a legend beside each map
//! the scorer or the run wrote (`maps/<cell-id>/change_luma.png`,
//! `attention_negative.png` beside their `.npy`), and the map or an overlay in place of a
//! cell's image in the grids (`[plots] show`). One colour scale per run and kind: 0 to the
//! largest value of the run's maps, so that cells compare. Maps smaller than the image
//! (attention maps, at the latent grid) are drawn at the image's size (nearest).
use super::font;
use crate::images::load_rgb;
use crate::npy;
use crate::run::attention_maps;
use crate::run::info::{Overlay, PlotsSpec, Show};
use crate::run::records::Record;
use crate::scoring::metrics::Embedder;
use crate::scoring::{change_map_file, patch_change_files, trace_change_file};
use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// The maps drawn as pictures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// The luma change map against the baseline (the scorer's).
    Change,
    /// The negative image's attention map (the run's, with `[maps] attention`).
    NegativeAttention,
    /// The scorer encoder's patch-token cosine distance to the baseline (each scorer of
    /// that encoder writes its own; a grid shows the first scorer's by id).
    PatchChange(Embedder),
}

impl MapKind {
    pub const ALL: [MapKind; 4] = [
        MapKind::Change,
        MapKind::NegativeAttention,
        MapKind::PatchChange(Embedder::Clip),
        MapKind::PatchChange(Embedder::Dino),
    ];

    /// A cell's maps of this kind that exist (one per scorer for patch-token maps, sorted
    /// by scorer id).
    fn files(self, run_dir: &Path, cell_id: &str) -> Vec<PathBuf> {
        let file = match self {
            MapKind::Change => change_map_file(run_dir, cell_id, "luma"),
            MapKind::NegativeAttention => attention_maps::file(run_dir, cell_id, "negative"),
            MapKind::PatchChange(e) => return patch_change_files(run_dir, cell_id, e),
        };
        if file.is_file() { vec![file] } else { vec![] }
    }

    fn unit(self) -> &'static str {
        match self {
            MapKind::Change => "|ΔY|",
            MapKind::NegativeAttention => "|w·out_ip|",
            MapKind::PatchChange(_) => "1−cos",
        }
    }

    /// The `[plots] overlay` map.
    fn overlaid(overlay: Overlay) -> MapKind {
        match overlay {
            Overlay::Change => MapKind::Change,
            Overlay::NegativeAttention => MapKind::NegativeAttention,
            Overlay::ChangeClip => MapKind::PatchChange(Embedder::Clip),
            Overlay::ChangeDino => MapKind::PatchChange(Embedder::Dino),
        }
    }
}

/// What a grid shows of each done cell (`[plots] show`, `overlay`): its image, a map in its
/// place, or a map laid over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Picture {
    Image,
    Map(MapKind),
    Overlay(MapKind),
}

impl Picture {
    pub fn of(plots: &PlotsSpec) -> Picture {
        match plots.show {
            Show::Image => Picture::Image,
            Show::Change => Picture::Map(MapKind::Change),
            Show::NegativeAttention => Picture::Map(MapKind::NegativeAttention),
            Show::ChangeClip => Picture::Map(MapKind::PatchChange(Embedder::Clip)),
            Show::ChangeDino => Picture::Map(MapKind::PatchChange(Embedder::Dino)),
            Show::Overlay => Picture::Overlay(MapKind::overlaid(plots.overlay)),
        }
    }

    /// The map it draws (none for the images alone).
    pub fn kind(self) -> Option<MapKind> {
        match self {
            Picture::Image => None,
            Picture::Map(kind) | Picture::Overlay(kind) => Some(kind),
        }
    }
}

/// Height of the legend strip under a heat map.
const LEGEND_H: u32 = 30;
/// A heat map with a legend is at least this wide.
const LEGEND_MIN_W: u32 = 160;

/// Black -> red -> yellow -> white for `t` in 0..1 ("hot").
pub fn heat(t: f32) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0) * 3.0;
    let ramp = |x: f32| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    Rgb([ramp(t), ramp(t - 1.0), ramp(t - 2.0)])
}

/// The records' maps of `kind` that exist, by record index.
fn map_files(run_dir: &Path, records: &[Record], kind: MapKind) -> Vec<(usize, PathBuf)> {
    records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            kind.files(run_dir, &r.cell_id)
                .into_iter()
                .map(move |f| (i, f))
        })
        .collect()
}

/// The run's colour scale: the largest value of its maps (1 when there are none or all
/// are zero).
pub fn run_scale(run_dir: &Path, records: &[Record], kind: MapKind) -> Result<f32> {
    let mut max = 0.0f32;
    for (_, file) in map_files(run_dir, records, kind) {
        let (_, _, values) = npy::read(&file)?;
        max = values.iter().copied().fold(max, f32::max);
    }
    Ok(if max > 0.0 { max } else { 1.0 })
}

/// The map `file` of `record` in colour, at its image's size.
fn heat_image(run_dir: &Path, record: &Record, file: &Path, scale: f32) -> Result<RgbImage> {
    let (rows, cols, values) = npy::read(file)?;
    let image = run_dir.join(&record.file);
    let size = image::image_dimensions(&image)
        .with_context(|| format!("cannot read {}", image.display()))?;
    Ok(heat_map(rows, cols, &values, scale, size))
}

/// The map of `kind` of `record` that a grid shows (the first, for patch-token maps of
/// several scorers), in colour; `None` without one.
fn shown_heat_image(
    run_dir: &Path,
    record: &Record,
    scale: f32,
    kind: MapKind,
) -> Result<Option<RgbImage>> {
    let files = kind.files(run_dir, &record.cell_id);
    files
        .first()
        .map(|f| heat_image(run_dir, record, f, scale))
        .transpose()
}

/// `values` (row-major `rows × cols`) in colour, 0 to `scale`, drawn at `(w, h)` by
/// nearest neighbour.
pub fn heat_map(
    rows: usize,
    cols: usize,
    values: &[f32],
    scale: f32,
    (w, h): (u32, u32),
) -> RgbImage {
    let map = RgbImage::from_fn(cols as u32, rows as u32, |x, y| {
        heat(values[y as usize * cols + x as usize] / scale)
    });
    if map.dimensions() == (w, h) {
        map
    } else {
        image::imageops::resize(&map, w, h, image::imageops::FilterType::Nearest)
    }
}

/// The heat map with its legend: the colour bar, 0 and the scale.
pub fn with_legend(map: &RgbImage, scale: f32, kind: MapKind) -> RgbImage {
    let w = map.width().max(LEGEND_MIN_W);
    let mut out = RgbImage::from_pixel(w, map.height() + LEGEND_H, Rgb([255, 255, 255]));
    image::imageops::replace(&mut out, map, ((w - map.width()) / 2) as i64, 0);
    let (bar_y, bar_h) = (map.height() + 2, 8);
    for x in 0..w {
        let c = heat(x as f32 / (w - 1) as f32);
        for y in bar_y..bar_y + bar_h {
            out.put_pixel(x, y, c);
        }
    }
    let (px, ink) = (12.0, Rgb([0, 0, 0]));
    let text_y = (bar_y + bar_h + 1) as f32;
    font::draw_text(&mut out, "0", 1.0, text_y, px, ink);
    let right = format!("{scale:.3} {}", kind.unit());
    let x = w as f32 - font::text_width(&right, px) - 1.0;
    font::draw_text(&mut out, &right, x, text_y, px, ink);
    out
}

/// Writes a `.png` beside every map of `kind` of the run; returns how many.
pub fn write_heat_pngs(run_dir: &Path, records: &[Record], kind: MapKind) -> Result<usize> {
    let scale = run_scale(run_dir, records, kind)?;
    let mut written = 0;
    for (i, file) in map_files(run_dir, records, kind) {
        let map = heat_image(run_dir, &records[i], &file, scale)?;
        let png = file.with_extension("png");
        with_legend(&map, scale, kind)
            .save(&png)
            .with_context(|| format!("cannot write {}", png.display()))?;
        written += 1;
    }
    Ok(written)
}

/// Writes a `.png` beside every x̂₀ trace change map of the run (`maps/<cell-id>/
/// trace_change/step-NNN.npy`), on one colour scale over all of them so that steps and
/// cells compare; returns how many.
pub fn write_trace_heat_pngs(run_dir: &Path, records: &[Record]) -> Result<usize> {
    let mut files = Vec::new();
    for r in records {
        let Some(steps) = &r.trace else { continue };
        for step in steps.active(r.steps) {
            let file = trace_change_file(run_dir, &r.cell_id, step);
            if file.is_file() {
                files.push(file);
            }
        }
    }
    let mut maps = Vec::with_capacity(files.len());
    let mut max = 0.0f32;
    for file in &files {
        let map = npy::read(file)?;
        max = map.2.iter().copied().fold(max, f32::max);
        maps.push(map);
    }
    let scale = if max > 0.0 { max } else { 1.0 };
    for (file, (rows, cols, values)) in files.iter().zip(&maps) {
        let map = RgbImage::from_fn(*cols as u32, *rows as u32, |x, y| {
            heat(values[y as usize * cols + x as usize] / scale)
        });
        let png = file.with_extension("png");
        with_legend(&map, scale, MapKind::Change)
            .save(&png)
            .with_context(|| format!("cannot write {}", png.display()))?;
    }
    Ok(files.len())
}

/// What a grid shows for a done cell: its image, its change or negative attention map
/// (the image where it has none: no paired baseline, no maps recorded) or the map laid
/// over the image at half opacity.
pub fn cell_picture(
    run_dir: &Path,
    record: &Record,
    show: Picture,
    scale: f32,
) -> Result<RgbImage> {
    let image = || load_rgb(&run_dir.join(&record.file));
    match show {
        Picture::Image => image(),
        Picture::Map(kind) => match shown_heat_image(run_dir, record, scale, kind)? {
            Some(map) => Ok(map),
            None => image(),
        },
        Picture::Overlay(kind) => {
            let mut img = image()?;
            if let Some(map) = shown_heat_image(run_dir, record, scale, kind)?
                && map.dimensions() == img.dimensions()
            {
                for (p, m) in img.pixels_mut().zip(map.pixels()) {
                    for c in 0..3 {
                        p[c] = (p[c] as u16 + m[c] as u16).div_ceil(2) as u8;
                    }
                }
            }
            Ok(img)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_map_colours_run_from_black_through_red_and_yellow_to_white() {
        assert_eq!(heat(0.0), Rgb([0, 0, 0]));
        assert_eq!(heat(1.0 / 3.0), Rgb([255, 0, 0]));
        assert_eq!(heat(2.0 / 3.0), Rgb([255, 255, 0]));
        assert_eq!(heat(1.0), Rgb([255, 255, 255]));
        assert_eq!(heat(7.0), heat(1.0), "clamped");
    }
}
