//! SSIM and mean absolute difference of the pixel scorer against scikit-image at test time.
mod common;

use image::{Rgb, RgbImage};
use negimg::scoring::pixel::{mean_abs_diff, ssim};

#[test]
fn ssim_matches_scikit_image() {
    let dir = common::scratch("pixel_ssim");
    let base = |w: u32, h: u32| {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 7 + y * 3) as u8,
                ((x * y) % 251) as u8,
                (128.0 + 100.0 * ((x as f64) / 9.0).sin()) as u8,
            ])
        })
    };
    let noisy = |img: &RgbImage, amount: u32| {
        let mut rng = negimg::scoring::stats::SplitMix64::new(amount as u64);
        let mut out = img.clone();
        for p in out.pixels_mut() {
            for c in 0..3 {
                let d = rng.below(2 * amount as usize + 1) as i32 - amount as i32;
                p[c] = (p[c] as i32 + d).clamp(0, 255) as u8;
            }
        }
        out
    };
    let a = base(64, 48);
    let pairs = [
        (a.clone(), noisy(&a, 10)),
        (a.clone(), noisy(&a, 80)),
        (
            base(37, 23),
            RgbImage::from_pixel(37, 23, Rgb([90, 120, 30])),
        ),
        (a.clone(), a.clone()),
    ];
    let mut args = Vec::new();
    for (i, (x, y)) in pairs.iter().enumerate() {
        let (pa, pb) = (dir.join(format!("{i}a.png")), dir.join(format!("{i}b.png")));
        x.save(&pa).unwrap();
        y.save(&pb).unwrap();
        args.push(pa.to_string_lossy().into_owned());
        args.push(pb.to_string_lossy().into_owned());
    }
    let out = dir.join("ssim.json");
    let mut all = vec![out.to_string_lossy().into_owned()];
    all.extend(args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    common::run_python("ssim_reference.py", &refs);
    let want: Vec<f64> = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for ((x, y), w) in pairs.iter().zip(&want) {
        let ours = ssim(x, y);
        assert!((ours - w).abs() < 1e-9, "ours {ours}, scikit-image {w}");
    }
    assert!(want[1] < want[0] && want[0] < 1.0, "more noise, lower SSIM");
    // Mean absolute difference on 0..1, by hand for a known pair.
    let b = RgbImage::from_fn(4, 2, |x, _| Rgb([x as u8 * 10, 0, 0]));
    let c = RgbImage::from_fn(4, 2, |_, _| Rgb([0, 0, 51]));
    let want_mad = ((10 + 20 + 30) as f64 * 2.0 + 51.0 * 8.0) / (24.0 * 255.0);
    assert!((mean_abs_diff(&b, &c) - want_mad).abs() < 1e-15);
}
