//! Change maps: where an image differs from its paired baseline image (README, "Change
//! maps"), and two scalars per map for the statistics.
//!
//! - The luma change map: `|Y(image) − Y(baseline)| / 255` per pixel, with
//!   `Y = 0.299 R + 0.587 G + 0.114 B` (the luma of the SSIM in `pixel.rs`), on 0..1.
//! - `change_entropy`: with `p = m / Σm`, `−Σ p ln p / ln N` over the N pixels (0: all the
//!   change in one pixel, 1: spread evenly); undefined (NaN) for a map without change.
//! - `change_in_region` / `change_out_region`: the share of the map's mass `Σm` inside /
//!   outside the `[scoring] region` mask (white inside, black outside), resized to the map
//!   by nearest neighbour (pixel x of W takes source pixel `floor((x + 0.5) · W_src / W)`).
//! - NaN pixels are not part of a map (a patch-token map's pixels outside the encoder's
//!   crop): N, the mass and the shares count the other pixels only.
use crate::images::BinaryMask as Mask;
use crate::npy;
use anyhow::{Context, Result};
use image::RgbImage;
use std::path::Path;

/// The scalar columns change maps add to scores.csv (the region ones only with a region).
pub const METRICS: [&str; 3] = ["change_entropy", "change_in_region", "change_out_region"];

/// The same scalars of the negative attention map (`maps/<cell-id>/attention_negative.npy`,
/// README "Attention maps"), for runs with `[maps] attention`.
pub const ATTENTION_METRICS: [&str; 3] = [
    "attention_entropy",
    "attention_in_region",
    "attention_out_region",
];

/// The same scalars of a scorer's patch-token change map (`maps/<cell-id>/
/// change_<encoder>-<scorer-id>.npy`, README "Change maps"), in that scorer's scores.csv.
pub const PATCH_METRICS: [&str; 3] = [
    "patch_change_entropy",
    "patch_change_in_region",
    "patch_change_out_region",
];

/// A per-pixel map, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

/// `|Y(a) − Y(b)| / 255`; `None` when the sizes differ.
pub fn luma_change(a: &RgbImage, b: &RgbImage) -> Option<Map> {
    if a.dimensions() != b.dimensions() {
        return None;
    }
    let luma = |p: &image::Rgb<u8>| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
    let values = a
        .pixels()
        .zip(b.pixels())
        .map(|(x, y)| ((luma(x) - luma(y)).abs() / 255.0) as f32)
        .collect();
    Some(Map {
        width: a.width() as usize,
        height: a.height() as usize,
        values,
    })
}

impl Map {
    /// A 2-d map file [`npy::encode`] wrote; `None` when there is none.
    pub fn read_npy(path: &Path) -> Result<Option<Map>> {
        if !path.is_file() {
            return Ok(None);
        }
        let (height, width, values) = npy::read(path)?;
        Ok(Some(Map {
            width,
            height,
            values,
        }))
    }

    /// The values of the map's pixels (NaN ones left out).
    fn defined(&self) -> impl Iterator<Item = f64> + '_ {
        self.values
            .iter()
            .filter(|v| !v.is_nan())
            .map(|&v| v as f64)
    }

    fn mass(&self) -> f64 {
        self.defined().sum()
    }

    /// Normalized Shannon entropy of the map as a distribution (see the module).
    pub fn entropy(&self) -> f64 {
        let total = self.mass();
        let n = self.defined().count();
        if total <= 0.0 || n < 2 {
            return f64::NAN;
        }
        let h: f64 = self
            .defined()
            .map(|v| v / total)
            .filter(|&p| p > 0.0)
            .map(|p| -p * p.ln())
            .sum();
        h / (n as f64).ln()
    }

    /// The share of the map's mass inside `mask` (resized to the map); NaN without change.
    pub fn share_inside(&self, mask: &Mask) -> f64 {
        let total = self.mass();
        if total <= 0.0 {
            return f64::NAN;
        }
        let inside = mask.resized(self.width, self.height);
        let mass: f64 = self
            .values
            .iter()
            .zip(&inside)
            .filter(|(v, m)| **m && !v.is_nan())
            .map(|(&v, _)| v as f64)
            .sum();
        mass / total
    }

    /// The map as a `.npy` file, shape (height, width) (its folder made).
    pub fn write_npy(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let bytes = npy::encode(self.height, self.width, &self.values);
        crate::run::fsio::atomic_write(path, &bytes)
    }
}

/// The scalars of one map, in [`METRICS`] order (NaN for the region without a mask).
pub fn scalars(map: &Map, region: Option<&Mask>) -> Vec<f64> {
    let inside = region.map_or(f64::NAN, |m| map.share_inside(m));
    vec![map.entropy(), inside, 1.0 - inside]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(width: usize, values: &[f32]) -> Map {
        Map {
            width,
            height: values.len() / width,
            values: values.to_vec(),
        }
    }

    #[test]
    fn change_map_entropy_is_one_when_even_and_zero_when_in_one_pixel() {
        assert!((map(2, &[0.5; 4]).entropy() - 1.0).abs() < 1e-12);
        assert_eq!(map(2, &[0.0, 0.7, 0.0, 0.0]).entropy(), 0.0);
        assert!(map(2, &[0.0; 4]).entropy().is_nan(), "no change: undefined");
    }

    #[test]
    fn change_map_scalars_leave_out_nan_pixels() {
        let nan = f32::NAN;
        // Even over the 2 defined pixels (entropy 1 over N = 2), all of it at x = 1.
        let m = map(2, &[nan, 0.5, nan, 0.5]);
        assert!((m.entropy() - 1.0).abs() < 1e-12);
        let white = image::Rgb([255, 255, 255]);
        let img = RgbImage::from_fn(2, 1, |x, _| if x == 1 { white } else { image::Rgb([0; 3]) });
        let mask = Mask::from_image(&img).unwrap();
        assert_eq!(m.share_inside(&mask), 1.0);
        assert!(
            map(2, &[nan, 0.0]).entropy().is_nan(),
            "no change: undefined"
        );
    }

    #[test]
    fn region_share_counts_the_mass_under_the_mask_resized_by_nearest() {
        let white = image::Rgb([255, 255, 255]);
        // A 2x1 mask: right half inside; the 4x2 map has its change at x = 3.
        let img = RgbImage::from_fn(2, 1, |x, _| if x == 1 { white } else { image::Rgb([0; 3]) });
        let mask = Mask::from_image(&img).unwrap();
        assert_eq!(
            mask.resized(4, 2),
            [false, false, true, true, false, false, true, true]
        );
        let m = map(4, &[0.0, 0.1, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0]);
        assert!((m.share_inside(&mask) - 0.75).abs() < 1e-7);
        let s = scalars(&m, Some(&mask));
        assert!((s[1] + s[2] - 1.0).abs() < 1e-12);
        assert!(scalars(&m, None)[1].is_nan());
        let grey = RgbImage::from_pixel(2, 2, image::Rgb([128, 128, 128]));
        let err = format!("{:#}", Mask::from_image(&grey).unwrap_err());
        assert!(
            err.contains("not a binary mask: pixel (0, 0) is (128, 128, 128)"),
            "{err}"
        );
    }
}
