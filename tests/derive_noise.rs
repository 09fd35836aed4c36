//! Derived images against ComfyUI_IPAdapter_plus's formulas applied with torch and
//! torchvision at test time (`tests/reference/derive_noise.py`), one test per noise kind.
//! Sources: a wide and a tall picture (cropped and resized), a 224x224 one (not resized) and
//! no source (a black image); strengths from 0 to 1, with and without the final blur.
mod common;

use image::{ImageBuffer, Rgb, RgbImage};
use negimg::derive::noise::{derive, derive_tensor};
use negimg::derive::{NoiseKind, Recipe};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use tch::Tensor;

/// A picture with smooth and sharp detail, so that crops, resizes and warps all show.
fn picture(w: u32, h: u32) -> RgbImage {
    ImageBuffer::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let ring = (((fx - 0.5).powi(2) + (fy - 0.4).powi(2)).sqrt() * 40.0).sin();
        Rgb([
            (255.0 * fx) as u8,
            (127.5 + 127.0 * ring) as u8,
            if (x / 7 + y / 5) % 2 == 0 { 230 } else { 20 },
        ])
    })
}

const SOURCES: [(&str, Option<(u32, u32)>); 4] = [
    ("wide", Some((320, 240))),
    ("tall", Some((200, 263))),
    ("square", Some((224, 224))),
    ("black", None),
];

/// The recipes of one kind: (source name, strength, blur).
fn cases(kind: NoiseKind) -> Vec<(&'static str, f64, u32)> {
    let blur = |b: u32| if kind == NoiseKind::Blur { 5 } else { b };
    vec![
        ("wide", 0.3, blur(0)),
        ("tall", 0.75, blur(4)),
        ("square", 1.0, blur(0)),
        ("black", 0.5, blur(3)),
        ("wide", 0.0, blur(0)),
    ]
}

struct Reference {
    sources: BTreeMap<&'static str, RgbImage>,
    /// (kind, case index) -> the reference image.
    images: BTreeMap<(NoiseKind, usize), Tensor>,
}

// Tensors are only read here, never shared mutably.
unsafe impl Sync for Reference {}
unsafe impl Send for Reference {}

/// Every kind's reference images, computed by one Python run for the whole test binary.
fn reference() -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let dir = common::scratch("derive_noise");
        let mut sources = BTreeMap::new();
        let mut paths: BTreeMap<&str, Option<PathBuf>> = BTreeMap::new();
        for (name, size) in SOURCES {
            paths.insert(
                name,
                size.map(|(w, h)| {
                    let img = picture(w, h);
                    let path = dir.join(format!("{name}.png"));
                    img.save(&path).unwrap();
                    sources.insert(name, img);
                    path
                }),
            );
        }
        let mut recipes = Vec::new();
        let mut keys = Vec::new();
        for kind in NoiseKind::ALL {
            for (i, (source, strength, blur)) in cases(kind).into_iter().enumerate() {
                recipes.push(serde_json::json!({
                    "source": paths[source], "noise": kind, "strength": strength, "blur": blur,
                }));
                keys.push((kind, i));
            }
        }
        std::fs::write(
            dir.join("recipes.json"),
            serde_json::to_vec(&recipes).unwrap(),
        )
        .unwrap();
        common::run_python("derive_noise.py", &[dir.to_str().unwrap()]);
        let mut tensors: BTreeMap<String, Tensor> =
            Tensor::read_safetensors(dir.join("ref.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        let images = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| (key, tensors.remove(&format!("image.{i}")).unwrap()))
            .collect();
        Reference { sources, images }
    })
}

/// Checks every case of `kind`: the float image and the 8-bit PNG pixels within 1/255 of
/// the reference; prints the largest differences.
fn check(kind: NoiseKind) {
    let r = reference();
    let (mut worst_float, mut worst_u8) = (0f64, 0f64);
    let mut bad = Vec::new();
    for (i, (source, strength, blur)) in cases(kind).into_iter().enumerate() {
        let recipe = Recipe {
            from: Some(source.to_string()),
            noise: kind,
            strength,
            blur,
        };
        let src = r.sources.get(source);
        let expected = &r.images[&(kind, i)];
        let got = derive_tensor(src, &recipe);
        assert_eq!(got.size(), [1, 224, 224, 3]);
        let d = common::max_abs_diff(&got, expected);
        let png = derive(src, &recipe).unwrap();
        let pixels = Tensor::from_slice(png.as_raw())
            .view([1, 224, 224, 3])
            .to_kind(tch::Kind::Double)
            / 255.0;
        let d8 = common::max_abs_diff(&pixels, &expected.clamp(0.0, 1.0));
        println!("{kind} {source} strength {strength} blur {blur}: float {d:.2e}, 8-bit {d8:.2e}");
        if d > 1.0 / 255.0 || d8 > 1.0 / 255.0 {
            bad.push(format!(
                "{source} at {strength} (blur {blur}): {d} (float), {d8} (8-bit)"
            ));
        }
        worst_float = worst_float.max(d);
        worst_u8 = worst_u8.max(d8);
    }
    println!("{kind}: largest difference {worst_float:.3e} (float), {worst_u8:.3e} (8-bit)");
    assert!(
        bad.is_empty(),
        "{kind} differs from the reference by more than 1/255:\n{}",
        bad.join("\n")
    );
}

#[test]
fn fade_matches_comfyui() {
    check(NoiseKind::Fade);
}

#[test]
fn dissolve_matches_comfyui() {
    check(NoiseKind::Dissolve);
}

#[test]
fn gaussian_matches_comfyui() {
    check(NoiseKind::Gaussian);
}

#[test]
fn shuffle_matches_comfyui() {
    check(NoiseKind::Shuffle);
}

#[test]
fn legacy_matches_the_older_node() {
    check(NoiseKind::Legacy);
}

#[test]
fn mean_color_matches_the_torch_reference() {
    check(NoiseKind::MeanColor);
}

#[test]
fn grayscale_matches_the_torch_reference() {
    check(NoiseKind::Grayscale);
}

#[test]
fn blur_matches_the_torch_reference() {
    check(NoiseKind::Blur);
}
