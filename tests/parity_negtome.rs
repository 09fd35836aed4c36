//! NegToMe against a reference on diffusers' UNet with merging attention processors
//! (tests/reference/negtome_parity.py; CPU, fp32, tiny random models, DDIM), alone
//! (`method = negtome`) and on top of `uncond`; a guard (the merge changes the image); and
//! batching (cells sharing a negative image share one reference row; a batch with two
//! negative images and a cell without NegToMe gives the images the cells give alone).
//!
//! The tiny UNet's only up block with attention runs at the latent size, and the tiny VAE
//! downsamples by 2: 64x64 images have 32x32 latents, the smallest size NegToMe merges at.
mod common;

use negimg::params::{AdapterKind, GenParams, Method, NegativeMode};
use negimg::pipeline::negtome::noise_seed;
use negimg::pipeline::{Pipeline, to_rgb8};
use negimg::roles::ModelSet;
use negimg::weights::{TensorFile, TensorSource};
use serde_json::json;
use std::path::Path;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

fn write_image(path: &Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v =
            |k: u32| ((x * (7 + k) + y * (13 + 2 * k) + seed * 31 + (x * y) % (5 + k)) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    });
    img.save(path).unwrap();
}

/// A NegToMe cell of 64x64 whose merge is active at 3 of its 4 DDIM steps (timesteps 751,
/// 501, 251 but not 1). Tokens of these random weights are near-parallel: at threshold 0.9
/// about a third of them merge, so both sides of the threshold are exercised.
fn cell(dir: &Path, method: Method, adapter: AdapterKind) -> GenParams {
    let mut c = GenParams::new(5);
    c.method = method;
    c.negtome = method != Method::Negtome;
    c.adapter = adapter;
    c.positive_image = Some(dir.join("pos.png"));
    c.negative_image = Some(dir.join("neg.png"));
    c.prompt = "a house in winter".into();
    c.negative_prompt = "grass, lawn".into();
    c.negative = NegativeMode::Both;
    c.positive.weight = 0.8;
    c.negative_branch.weight = 0.6;
    c.negtome_alpha = 0.9;
    c.negtome_threshold = 0.9;
    c.negtome_t_min = 200.0;
    c.negtome_t_max = 1000.0;
    c.steps = 4;
    c.width = 64;
    c.height = 64;
    c
}

fn name(c: &GenParams) -> String {
    format!("{}_{}", c.method, c.adapter)
}

fn case_json(c: &GenParams) -> serde_json::Value {
    let path = |x: Option<&std::path::PathBuf>| x.map(|p| p.to_str().unwrap().to_string());
    let neg = c.negtome_image().unwrap();
    json!({
        "name": name(c), "method": c.method.to_string(), "adapter": c.adapter.to_string(),
        "prompt": c.prompt, "uncond_prompt": c.uncond_text(),
        "pos_image": path(c.positive_image.as_ref()), "neg_image": path(Some(neg)),
        "steps": c.steps, "cfg": c.cfg, "seed": c.seed, "size": c.width,
        "weight": c.positive.weight, "neg_weight": c.negative_branch.weight,
        "alpha": c.negtome_alpha, "threshold": c.negtome_threshold,
        "t_min": c.negtome_t_min, "t_max": c.negtome_t_max,
        "noise_seed": noise_seed(&std::fs::read(neg).unwrap()),
    })
}

struct Shared {
    cells: Vec<GenParams>,
    /// Our float images `[3, H, W]` as plain data (a static cannot hold tensors).
    ours: Vec<(Vec<f32>, Vec<i64>)>,
    reference: TensorFile,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = common::scratch("parity_negtome");
        let models = common::tiny::tiny_models();
        write_image(&dir.join("pos.png"), 96, 80, 1);
        // At the generation size: the VAE's input needs no resampling, so both sides agree.
        write_image(&dir.join("neg.png"), 64, 64, 2);
        let cells = vec![
            cell(&dir, Method::Negtome, AdapterKind::Base),
            cell(&dir, Method::Uncond, AdapterKind::Plus),
        ];
        let spec: Vec<_> = cells.iter().map(case_json).collect();
        let cases = dir.join("cases.json");
        std::fs::write(&cases, serde_json::to_string(&spec).unwrap()).unwrap();
        let out = dir.join("ref.safetensors");
        common::run_python(
            "negtome_parity.py",
            &[
                models.to_str().unwrap(),
                cases.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
        let ours = common::generate_float(&mut pipeline, &cells, cells.len(), &mut |_, _| {})
            .into_iter()
            .map(|r| {
                let t = r.unwrap();
                (Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), t.size())
            })
            .collect();
        Shared {
            cells,
            ours,
            reference: TensorFile::open(&out).unwrap(),
        }
    })
}

fn u8_of(img: &Tensor) -> Tensor {
    let rgb = to_rgb8(img);
    let (w, h) = rgb.dimensions();
    Tensor::from_slice(rgb.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Int64)
}

fn reference(s: &Shared, key: &str) -> Tensor {
    s.reference.get(key, Device::Cpu, Kind::Float).unwrap()
}

fn ours(s: &Shared) -> Vec<(&GenParams, Tensor)> {
    s.cells
        .iter()
        .zip(&s.ours)
        .map(|(c, (data, shape))| (c, Tensor::from_slice(data).view(shape.as_slice())))
        .collect()
}

/// Ours matches the reference within 1/255, and the reference did merge tokens.
#[test]
fn parity_negtome_alone_and_with_uncond() {
    let s = shared();
    for (c, img) in ours(s) {
        let merged = reference(s, &format!("{}.merged", name(c))).double_value(&[0]);
        // 3 active steps x 2 attentions x 2 rows x 3 transformers (up_blocks.1) x 32*32.
        let tokens = (3 * 2 * 2 * 3 * 32 * 32) as f64;
        assert!(
            merged > 0.0 && merged < tokens,
            "{}: the reference merged {merged} of {tokens} tokens",
            name(c)
        );
        let want = reference(s, &format!("{}.float", name(c)));
        let float = common::max_abs_diff(&img, &want);
        let u8_diff = common::max_abs_diff(&u8_of(&img), &u8_of(&want));
        eprintln!(
            "{}: float {float:.2e}, 8-bit {u8_diff}, {merged} tokens merged",
            name(c)
        );
        assert!(
            u8_diff <= 1.0,
            "{}: 8-bit diff {u8_diff} (float {float})",
            name(c)
        );
    }
}

/// The merge changes the image: ours is far (> 2/255, twice the parity tolerance) from the
/// reference's image of the same cell without the merge.
#[test]
fn negtome_guard_merge_is_not_skipped() {
    let s = shared();
    for (c, img) in ours(s) {
        let plain = reference(s, &format!("{}.nomerge", name(c)));
        let d = common::max_abs_diff(&u8_of(&img), &u8_of(&plain));
        eprintln!("{}: {d}/255 from the image without the merge", name(c));
        assert!(d > 2.0, "{}: only {d}/255 from the unmerged image", name(c));
    }
}

/// Batched as the runner does and one by one give the same images within 1e-5 (float64):
/// two
/// negative images (so two reference rows), cells sharing one, different α, thresholds and
/// ranges, a three-row method with NegToMe, and a cell without NegToMe.
#[test]
fn negtome_batched_cells_equal_cells_generated_alone() {
    let dir = common::scratch("negtome_batching");
    let models = common::tiny::tiny_models();
    for (i, (w, h)) in [(64, 64), (80, 72), (64, 64)].into_iter().enumerate() {
        write_image(&dir.join(format!("img{i}.png")), w, h, 10 + i as u32);
    }
    let mut cells = Vec::new();
    for i in 0..5usize {
        let mut c = GenParams::new(300 + i as u64);
        c.steps = 3;
        c.width = 64;
        c.height = 64;
        c.method = [
            Method::Negtome,
            Method::Negtome,
            Method::Uncond,
            Method::PerpNeg,
            Method::Uncond,
        ][i];
        c.negtome = matches!(i, 3 | 4);
        c.positive_image = Some(dir.join("img2.png"));
        // Cells 0, 1 and 4 share img0; cell 3 uses img1; cell 2 does not merge.
        c.negative_image =
            Some(dir.join(["img0.png", "img0.png", "img0.png", "img1.png", "img0.png"][i]));
        c.negative = [NegativeMode::Image, NegativeMode::Both][i % 2];
        c.prompt = ["a red house", "snow"][i % 2].into();
        c.negative_prompt = "grass".into();
        c.negtome_alpha = 0.5 + 0.2 * i as f64;
        c.negtome_threshold = 0.2 + 0.05 * i as f64;
        c.negtome_t_min = [0.0, 400.0, 0.0, 0.0, 600.0][i];
        c.cfg = [7.5, 4.0][i % 2];
        cells.push(c);
    }
    // In float64: the argmax and the threshold are discontinuous, so the float32 rounding
    // differences of batched matmuls (~1e-7) flip near-ties and move fp32 images by up to
    // ~3e-3 on these random weights (measured); float64 shows the rows are the same rows.
    let set = ModelSet::from_models_dir(&models);
    let mut pipeline = Pipeline::load(&set, Device::Cpu, Kind::Double, &mut |_| {}).unwrap();
    let alone = common::generate_float(&mut pipeline, &cells, 1, &mut |_, _| {});
    let mut calls = 0;
    let together =
        common::generate_float(&mut pipeline, &cells, cells.len(), &mut |_, _| calls += 1);
    assert_eq!(calls, 3, "one batch of 3 steps");
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        let d = common::max_abs_diff(a, b);
        assert!(d <= 1e-5, "cell {i}: batched image differs by {d}");
    }
}
