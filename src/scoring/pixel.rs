//! Pixel change of an image against its paired baseline image: mean absolute difference
//! (RGB, 0..1) and SSIM.
//!
//! SSIM is Wang et al. (2004) as scikit-image's `structural_similarity(gaussian_weights=True,
//! sigma=1.5, use_sample_covariance=False, data_range=255)` computes it on the luma
//! (0.299 R + 0.587 G + 0.114 B): an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
//! K2 = 0.03, the mean of the SSIM map over the pixels whose window lies inside the image.
//! The `image-compare` crate was not used: its SSIM averages non-overlapping 8x8 uniform
//! windows, which is not the published measure and not comparable across papers.
use image::RgbImage;

/// The pixel-change metric columns of every scorer folder.
pub const METRICS: [&str; 2] = ["mad_base", "ssim_base"];

const SIGMA: f64 = 1.5;
const RADIUS: usize = 5;
const K1: f64 = 0.01;
const K2: f64 = 0.03;
const DATA_RANGE: f64 = 255.0;

/// Mean absolute difference over all channels, on 0..1; NaN when the sizes differ.
pub fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    if a.dimensions() != b.dimensions() {
        return f64::NAN;
    }
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y) as u64)
        .sum();
    sum as f64 / (a.as_raw().len() as f64 * 255.0)
}

fn luma(img: &RgbImage) -> Vec<f64> {
    img.pixels()
        .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
        .collect()
}

/// The normalized 11-tap Gaussian (scipy's `gaussian_filter` kernel for sigma 1.5, truncate 3.5).
fn kernel() -> [f64; 2 * RADIUS + 1] {
    let mut k = [0.0; 2 * RADIUS + 1];
    for (i, v) in k.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *v = (-x * x / (2.0 * SIGMA * SIGMA)).exp();
    }
    let sum: f64 = k.iter().sum();
    k.map(|v| v / sum)
}

/// Gaussian-weighted local means of `x` at every pixel whose window is inside the image
/// (`(w - 10) x (h - 10)` values, row-major).
fn local_mean(x: &[f64], w: usize, h: usize, k: &[f64]) -> Vec<f64> {
    let (ow, oh) = (w - 2 * RADIUS, h - 2 * RADIUS);
    let mut rows = vec![0.0; ow * h];
    for y in 0..h {
        for ox in 0..ow {
            rows[y * ow + ox] = k
                .iter()
                .enumerate()
                .map(|(i, kv)| kv * x[y * w + ox + i])
                .sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for oy in 0..oh {
        for ox in 0..ow {
            out[oy * ow + ox] = k
                .iter()
                .enumerate()
                .map(|(i, kv)| kv * rows[(oy + i) * ow + ox])
                .sum();
        }
    }
    out
}

/// Mean SSIM of the luma of two images; NaN when the sizes differ or a side is under 11 px.
pub fn ssim(a: &RgbImage, b: &RgbImage) -> f64 {
    let (w, h) = (a.width() as usize, a.height() as usize);
    if a.dimensions() != b.dimensions() || w < 2 * RADIUS + 1 || h < 2 * RADIUS + 1 {
        return f64::NAN;
    }
    let (x, y) = (luma(a), luma(b));
    let product = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(u, v)| u * v).collect::<Vec<_>>();
    let k = kernel();
    let mx = local_mean(&x, w, h, &k);
    let my = local_mean(&y, w, h, &k);
    let mxx = local_mean(&product(&x, &x), w, h, &k);
    let myy = local_mean(&product(&y, &y), w, h, &k);
    let mxy = local_mean(&product(&x, &y), w, h, &k);
    let c1 = (K1 * DATA_RANGE).powi(2);
    let c2 = (K2 * DATA_RANGE).powi(2);
    let total: f64 = (0..mx.len())
        .map(|i| {
            let (ux, uy) = (mx[i], my[i]);
            let (vx, vy, vxy) = (mxx[i] - ux * ux, myy[i] - uy * uy, mxy[i] - ux * uy);
            ((2.0 * ux * uy + c1) * (2.0 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        })
        .sum();
    total / mx.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn identical_images_have_no_change() {
        let a = RgbImage::from_fn(20, 16, |x, y| Rgb([(x * 9) as u8, (y * 13) as u8, 7]));
        assert_eq!(mean_abs_diff(&a, &a), 0.0);
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-12);
        let b = RgbImage::from_pixel(20, 16, Rgb([255, 255, 255]));
        let black = RgbImage::from_pixel(20, 16, Rgb([0, 0, 0]));
        assert_eq!(mean_abs_diff(&b, &black), 1.0);
        assert!(
            ssim(&RgbImage::new(8, 8), &RgbImage::new(8, 8)).is_nan(),
            "too small"
        );
    }
}
