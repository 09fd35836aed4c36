//! Change maps as pictures: a heat-map PNG with a legend beside each map the scorer wrote
//! (`maps/<cell-id>/change_<kind>.png` beside its `.npy`), and the map or an overlay in
//! place of a cell's image in the grids (`[plots] show`). One colour scale per run: 0 to
//! the largest value of the run's maps, so that cells compare.
use super::font;
use crate::images::load_rgb;
use crate::npy;
use crate::run::info::Show;
use crate::run::records::Record;
use crate::scoring::change_map_file;
use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// The map kind the pictures show (the one the scorer writes).
const KIND: &str = "luma";
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

/// The records' maps that exist, by record index.
fn map_files(run_dir: &Path, records: &[Record]) -> Vec<(usize, PathBuf)> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| (i, change_map_file(run_dir, &r.cell_id, KIND)))
        .filter(|(_, f)| f.is_file())
        .collect()
}

/// The run's colour scale: the largest value of its maps (1 when there are none or all
/// are zero).
pub fn run_scale(run_dir: &Path, records: &[Record]) -> Result<f32> {
    let mut max = 0.0f32;
    for (_, file) in map_files(run_dir, records) {
        let (_, _, values) = npy::read(&file)?;
        max = values.iter().copied().fold(max, f32::max);
    }
    Ok(if max > 0.0 { max } else { 1.0 })
}

fn heat_image(run_dir: &Path, record: &Record, scale: f32) -> Result<Option<RgbImage>> {
    let file = change_map_file(run_dir, &record.cell_id, KIND);
    if !file.is_file() {
        return Ok(None);
    }
    let (rows, cols, values) = npy::read(&file)?;
    Ok(Some(RgbImage::from_fn(cols as u32, rows as u32, |x, y| {
        heat(values[y as usize * cols + x as usize] / scale)
    })))
}

/// The heat map with its legend: the colour bar, 0 and the scale.
fn with_legend(map: &RgbImage, scale: f32) -> RgbImage {
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
    let right = format!("{scale:.3} |ΔY|");
    let x = w as f32 - font::text_width(&right, px) - 1.0;
    font::draw_text(&mut out, &right, x, text_y, px, ink);
    out
}

/// Writes `maps/<cell-id>/change_luma.png` beside every map of the run; returns how many.
pub fn write_heat_pngs(run_dir: &Path, records: &[Record]) -> Result<usize> {
    let scale = run_scale(run_dir, records)?;
    let mut written = 0;
    for (i, file) in map_files(run_dir, records) {
        if let Some(map) = heat_image(run_dir, &records[i], scale)? {
            let png = file.with_extension("png");
            with_legend(&map, scale)
                .save(&png)
                .with_context(|| format!("cannot write {}", png.display()))?;
            written += 1;
        }
    }
    Ok(written)
}

/// What a grid shows for a done cell: its image, its change map (the image where it has
/// none: no paired baseline) or the map laid over the image at half opacity.
pub fn cell_picture(run_dir: &Path, record: &Record, show: Show, scale: f32) -> Result<RgbImage> {
    let image = || load_rgb(&run_dir.join(&record.file));
    match show {
        Show::Image => image(),
        Show::Change => match heat_image(run_dir, record, scale)? {
            Some(map) => Ok(map),
            None => image(),
        },
        Show::Overlay => {
            let mut img = image()?;
            if let Some(map) = heat_image(run_dir, record, scale)?
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
