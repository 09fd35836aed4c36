//! Patch-token change maps (README, "Change maps"): where the scorer's image encoder sees a
//! cell's image differ from its paired baseline image.
//!
//! Both images go through the scorer's own preprocessing and encoder (CLIP's vision tower or
//! DINOv2, as for the scores); the map is, per patch of the encoder's grid, the cosine
//! distance `1 − cos(t, t_base) = ½‖t/‖t‖ − t_base/‖t_base‖‖²` between the two images'
//! patch tokens (`last_hidden_state` without the class token), upsampled bilinearly (torch's
//! `interpolate(mode="bilinear", align_corners=False)`) onto the part of the image the
//! encoder sees: its centre crop, in image pixels (rounded). The map has the image's size;
//! pixels outside the crop are NaN (none for square images under CLIP; DINOv2 crops 224 of
//! 256). Written to `maps/<cell-id>/change_<clip|dino>-<scorer-id>.npy`, one per scorer.
use super::change::{self, Map};
use super::embed::ImageModel;
use super::metrics::{self, Embedder};
use crate::images::{BinaryMask, load_rgb};
use crate::models::preprocess::Preprocess;
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use anyhow::{Result, bail};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// Image pairs per encoder batch (each pair two images).
const PAIRS: usize = super::embed::BATCH / 2;

/// Per-patch `1 − cos` of two token sets `[patches, D]`, on the encoder's square grid
/// `[g, g]` (row-major patches), in float64 on the CPU.
pub fn token_distances(tokens: &Tensor, base: &Tensor) -> Result<Tensor> {
    let n = tokens.size()[0];
    let g = (n as f64).sqrt().round() as i64;
    if g * g != n || tokens.size() != base.size() {
        bail!(
            "patch tokens {:?} and {:?} are not one square grid",
            tokens.size(),
            base.size()
        );
    }
    let unit = |t: &Tensor| {
        let t = t.to_kind(Kind::Double).to_device(Device::Cpu);
        let norm = t.norm_scalaropt_dim(2, [-1i64].as_slice(), true);
        t / norm
    };
    let diff = unit(tokens) - unit(base);
    let d = (&diff * &diff).sum_dim_intlist([-1i64].as_slice(), false, Kind::Double) * 0.5;
    Ok(d.view([g, g]))
}

/// Where the encoder's centre crop lies in a `width x height` image: `(left, top, side)`
/// in image pixels (the crop of the resized image mapped back, rounded).
pub fn crop_region(width: usize, height: usize, p: &Preprocess) -> (usize, usize, usize) {
    let short = width.min(height) as f64;
    let resized = |long: usize| (p.resize as f64 * long as f64 / short) as usize;
    let (nw, nh) = (resized(width), resized(height));
    let scale = short / p.resize as f64;
    let left = ((nw.saturating_sub(p.crop)) / 2) as f64 * scale;
    let top = ((nh.saturating_sub(p.crop)) / 2) as f64 * scale;
    let side = (p.crop as f64 * scale).round() as usize;
    let side = side.min(width).min(height);
    let left = (left.round() as usize).min(width - side);
    let top = (top.round() as usize).min(height - side);
    (left, top, side)
}

/// The distance grid `[g, g]` upsampled onto the crop of a `width x height` map (NaN
/// outside it).
pub fn upsample(grid: &Tensor, width: usize, height: usize, p: &Preprocess) -> Result<Map> {
    let (left, top, side) = crop_region(width, height, p);
    let s = side as i64;
    let up = grid
        .to_kind(Kind::Float)
        .unsqueeze(0)
        .unsqueeze(0)
        .upsample_bilinear2d([s, s], false, None, None)
        .view([s * s]);
    let up: Vec<f32> = Vec::try_from(&up)?;
    let mut values = vec![f32::NAN; width * height];
    for y in 0..side {
        let row = (top + y) * width + left;
        values[row..row + side].copy_from_slice(&up[y * side..(y + 1) * side]);
    }
    Ok(Map {
        width,
        height,
        values,
    })
}

/// Writes the patch-token change map of every done cell with a paired baseline (the
/// baseline against itself included: zero) as the scorer `scorer` (its encoder and id)
/// ([`super::patch_change_file`]); returns each map's scalars ([`change::PATCH_METRICS`],
/// over the crop; the region `[scoring] region` resized to the image) by cell id.
#[allow(clippy::too_many_arguments)]
pub fn write_maps(
    run_dir: &std::path::Path,
    info: &RunInfo,
    records: &[Record],
    model: &ImageModel,
    (embedder, scorer): (Embedder, &str),
    region: Option<&BinaryMask>,
    device: Device,
    kind: Kind,
) -> Result<HashMap<String, Vec<f64>>> {
    let bases = metrics::baselines(info, records);
    let pairs: Vec<(&Record, &Record)> = records
        .iter()
        .zip(&bases)
        .filter(|(r, _)| r.status == Status::Done)
        .filter_map(|(r, b)| Some((r, &records[(*b)?])))
        .collect();
    let p = model.preprocess();
    let mut scalars = HashMap::new();
    for chunk in pairs.chunks(PAIRS) {
        // Each distinct file once per batch: a baseline against itself is exactly zero.
        let mut files: Vec<&str> = chunk
            .iter()
            .flat_map(|(r, b)| [r.file.as_str(), b.file.as_str()])
            .collect();
        files.sort();
        files.dedup();
        let images = files
            .iter()
            .map(|f| load_rgb(&run_dir.join(f)))
            .collect::<Result<Vec<_>>>()?;
        let tokens = model.patch_tokens(&p.batch(&images, device, kind));
        let row = |f: &str| files.binary_search(&f).expect("file in the batch") as i64;
        for (r, b) in chunk {
            let (i, j) = (row(&r.file), row(&b.file));
            let grid = token_distances(&tokens.get(i), &tokens.get(j))?;
            let img = &images[i as usize];
            let map = upsample(&grid, img.width() as usize, img.height() as usize, &p)?;
            map.write_npy(&super::patch_change_file(
                run_dir, &r.cell_id, embedder, scorer,
            ))?;
            scalars.insert(r.cell_id.clone(), change::scalars(&map, region));
        }
    }
    Ok(scalars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_change_map_crop_is_the_whole_square_image_under_clip_and_centred_under_dino() {
        assert_eq!(crop_region(32, 32, &Preprocess::clip(224)), (0, 0, 32));
        assert_eq!(crop_region(48, 32, &Preprocess::clip(224)), (8, 0, 32));
        assert_eq!(crop_region(32, 48, &Preprocess::clip(224)), (0, 8, 32));
        // 256 -> crop 224 of a 32 px image: 28 px from (2, 2).
        assert_eq!(crop_region(32, 32, &Preprocess::dinov2()), (2, 2, 28));
        assert_eq!(crop_region(512, 512, &Preprocess::dinov2()), (32, 32, 448));
    }

    #[test]
    fn patch_change_map_distance_is_zero_for_equal_tokens_and_one_minus_cos_otherwise() {
        let a = Tensor::from_slice(&[1.0f32, 0.0, 3.0, 4.0, 1.0, 1.0, 0.0, 2.0]).view([4, 2]);
        let b = Tensor::from_slice(&[0.0f32, 1.0, 3.0, 4.0, -1.0, -1.0, 0.0, 5.0]).view([4, 2]);
        let d = token_distances(&a, &b).unwrap();
        assert_eq!(d.size(), [2, 2]);
        let got: Vec<f64> = Vec::try_from(d.view([4])).unwrap();
        let want = [1.0, 0.0, 2.0, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        let same: Vec<f64> = Vec::try_from(token_distances(&a, &a).unwrap().view([4])).unwrap();
        assert_eq!(same, [0.0; 4]);
        assert!(token_distances(&a.narrow(0, 0, 3), &b.narrow(0, 0, 3)).is_err());
    }
}
