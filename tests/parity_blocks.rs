//! Per-block IP-Adapter weights (`blocks`, `neg_blocks`) and `ip_scaling` against a reference
//! on diffusers' UNet (tests/reference/blocks_parity.py: diffusers' IP-Adapter processors with
//! per-layer scales, and a processor written from ComfyUI's embeds-scaling formulas; CPU,
//! fp32, the tiny random models with SD1.5's 16-block layout, 32x32, DDIM). Guards: each preset
//! and each scaling makes an image far from the `all` / `v` image of the same cell, so a value
//! silently read as the default fails. On another layout, presets fail naming the block count.
mod common;

use negimg::params::{AdapterKind, BlockWeights, BranchWeight, GenParams, IpScaling, NegativeMode};
use negimg::pipeline::to_rgb8;
use negimg::roles::ModelSet;
use negimg::weights::{TensorFile, TensorSource};
use serde_json::json;
use std::path::{Path, PathBuf};
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

/// A named cell: the same seed, images and branch weights for every case.
struct Case {
    name: String,
    cell: GenParams,
}

fn cell(dir: &Path, adapter: AdapterKind) -> GenParams {
    let mut c = GenParams::new(21);
    c.adapter = adapter;
    c.positive_image = Some(dir.join("pos.png"));
    c.negative_image = Some(dir.join("neg.png"));
    c.prompt = "a house in winter".into();
    c.negative_prompt = "grass, lawn".into();
    c.negative = NegativeMode::Both;
    c.positive = BranchWeight {
        weight: 2.0,
        start: 0.0,
        end: 1.0,
    };
    c.negative_branch = BranchWeight {
        weight: 3.0,
        start: 0.25,
        end: 1.0,
    };
    c.steps = 4;
    c.width = 32;
    c.height = 32;
    c
}

const PRESETS: [(&str, BlockWeights); 3] = [
    ("style", BlockWeights::Style),
    ("composition", BlockWeights::Composition),
    ("strong_style", BlockWeights::StrongStyle),
];

const SCALINGS: [IpScaling; 3] = [IpScaling::Kv, IpScaling::KvC, IpScaling::KMeanVC];

fn cases(dir: &Path) -> Vec<Case> {
    let mut out = vec![];
    // Every scaling on the base adapter; the Plus adapter's 16 tokens for the one whose
    // mean over tokens differs most from the base adapter's 4.
    let scaled = SCALINGS
        .into_iter()
        .map(|s| (s, AdapterKind::Base))
        .chain([(IpScaling::KMeanVC, AdapterKind::Plus)]);
    for adapter in [AdapterKind::Base, AdapterKind::Plus] {
        out.push(Case {
            name: format!("all_v_{adapter}"),
            cell: cell(dir, adapter),
        });
    }
    for (s, adapter) in scaled {
        let mut c = cell(dir, adapter);
        c.ip_scaling = s;
        out.push(Case {
            name: format!("ip_scaling_{s}_{adapter}"),
            cell: c,
        });
    }
    // A preset acts in both branches, as ComfyUI's weight types do.
    for (name, preset) in PRESETS {
        let mut c = cell(dir, AdapterKind::Base);
        c.blocks = preset.clone();
        c.neg_blocks = preset;
        out.push(Case {
            name: format!("blocks_{name}"),
            cell: c,
        });
    }
    // Lists, and each branch its own: the negative in the mid and one up block only.
    let mut c = cell(dir, AdapterKind::Base);
    c.blocks = "0:1, 3:0.5, 9:1, 15:2".parse().unwrap();
    c.neg_blocks = "6:1, 12:-0.5".parse().unwrap();
    out.push(Case {
        name: "blocks_list".into(),
        cell: c,
    });
    // Both at once: a preset with a penalized scaling.
    let mut c = cell(dir, AdapterKind::Base);
    c.blocks = BlockWeights::Composition;
    c.ip_scaling = IpScaling::KMeanVC;
    out.push(Case {
        name: "blocks_composition_ip_scaling_k_mean_v_c".into(),
        cell: c,
    });
    out
}

fn case_json(case: &Case) -> serde_json::Value {
    let c = &case.cell;
    let path = |x: Option<&PathBuf>| x.map(|p| p.to_str().unwrap().to_string());
    let branch = |b: &BranchWeight| json!({"weight": b.weight, "start": b.start, "end": b.end});
    json!({
        "name": case.name, "adapter": c.adapter.to_string(),
        "prompt": c.prompt, "uncond_prompt": c.uncond_text(),
        "pos_image": path(c.positive_image.as_ref()), "uncond_image": path(c.uncond_image()),
        "steps": c.steps, "cfg": c.cfg, "seed": c.seed, "size": c.width,
        "positive": branch(&c.positive), "negative": branch(&c.negative_branch),
        "blocks": c.blocks.to_string(), "neg_blocks": c.neg_blocks.to_string(),
        "ip_scaling": c.ip_scaling.to_string(),
    })
}

struct Shared {
    names: Vec<String>,
    /// Our float images `[3, H, W]` (as plain data: a static cannot hold tensors).
    ours: Vec<(Vec<f32>, Vec<i64>)>,
    reference: TensorFile,
}

impl Shared {
    fn ours(&self, name: &str) -> Tensor {
        let i = self.names.iter().position(|n| n == name).unwrap();
        let (data, shape) = &self.ours[i];
        Tensor::from_slice(data).view(shape.as_slice())
    }

    fn reference(&self, name: &str) -> Tensor {
        self.reference
            .get(&format!("{name}.float"), Device::Cpu, Kind::Float)
            .unwrap()
    }
}

/// Every case generated by negimg (in the runner's batches: cells of one `ip_scaling` and
/// adapter share a batch, whatever their blocks) and by the reference.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = common::scratch("parity_blocks");
        let models = common::tiny::tiny_sd15_models();
        write_image(&dir.join("pos.png"), 96, 80, 1);
        write_image(&dir.join("neg.png"), 70, 90, 2);
        let cases = cases(&dir);
        let spec: Vec<_> = cases.iter().map(case_json).collect();
        let cases_file = dir.join("cases.json");
        std::fs::write(&cases_file, serde_json::to_string(&spec).unwrap()).unwrap();
        let out = dir.join("ref.safetensors");
        common::run_python(
            "blocks_parity.py",
            &[
                models.to_str().unwrap(),
                cases_file.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        let cells: Vec<GenParams> = cases.iter().map(|c| c.cell.clone()).collect();
        let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
        let ours = common::generate_float(&mut pipeline, &cells, cells.len(), &mut |_, _| {})
            .into_iter()
            .map(|r| {
                let t = r.unwrap();
                (Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), t.size())
            })
            .collect();
        Shared {
            names: cases.into_iter().map(|c| c.name).collect(),
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

/// Ours matches the reference within 1/255 (the tolerance of the other parity tests).
fn assert_parity(name: &str) {
    let s = shared();
    let (img, want) = (s.ours(name), s.reference(name));
    let float = common::max_abs_diff(&img, &want);
    let u8_diff = common::max_abs_diff(&u8_of(&img), &u8_of(&want));
    eprintln!("{name}: float {float:.2e}, 8-bit {u8_diff}");
    assert!(
        u8_diff <= 1.0,
        "{name}: 8-bit diff {u8_diff} (float {float})"
    );
}

/// Ours is far (> 2/255, twice the parity tolerance) from the reference's image of
/// `default` (the same cell with `blocks = "all"` and `ip_scaling = "v"`).
fn assert_far_from(name: &str, default: &str) {
    let s = shared();
    let d = common::max_abs_diff(&u8_of(&s.ours(name)), &u8_of(&s.reference(default)));
    eprintln!("{name}: {d}/255 from {default}");
    assert!(d > 2.0, "{name}: only {d}/255 from the {default} image");
}

#[test]
fn parity_blocks_all_v() {
    assert_parity("all_v_base");
    assert_parity("all_v_plus");
}

#[test]
fn parity_blocks_style() {
    assert_parity("blocks_style");
}

#[test]
fn parity_blocks_composition() {
    assert_parity("blocks_composition");
}

#[test]
fn parity_blocks_strong_style() {
    assert_parity("blocks_strong_style");
}

#[test]
fn parity_blocks_list_per_branch() {
    assert_parity("blocks_list");
}

#[test]
fn parity_ip_scaling_kv() {
    assert_parity("ip_scaling_kv_base");
}

#[test]
fn parity_ip_scaling_kv_c() {
    assert_parity("ip_scaling_kv_c_base");
}

#[test]
fn parity_ip_scaling_k_mean_v_c() {
    assert_parity("ip_scaling_k_mean_v_c_base");
    assert_parity("ip_scaling_k_mean_v_c_plus");
}

#[test]
fn parity_blocks_composition_with_ip_scaling_k_mean_v_c() {
    assert_parity("blocks_composition_ip_scaling_k_mean_v_c");
}

#[test]
fn guard_blocks_style() {
    assert_far_from("blocks_style", "all_v_base");
}

#[test]
fn guard_blocks_composition() {
    assert_far_from("blocks_composition", "all_v_base");
}

#[test]
fn guard_blocks_strong_style() {
    assert_far_from("blocks_strong_style", "all_v_base");
    // Nor style: blocks 6-8 (mid and first up blocks) are what strong_style adds.
    assert_far_from("blocks_strong_style", "blocks_style");
}

#[test]
fn guard_blocks_list() {
    assert_far_from("blocks_list", "all_v_base");
}

#[test]
fn guard_ip_scaling_kv() {
    assert_far_from("ip_scaling_kv_base", "all_v_base");
}

#[test]
fn guard_ip_scaling_kv_c() {
    assert_far_from("ip_scaling_kv_c_base", "all_v_base");
    // The penalty matters: not the kv image.
    assert_far_from("ip_scaling_kv_c_base", "ip_scaling_kv_base");
}

#[test]
fn guard_ip_scaling_k_mean_v_c() {
    assert_far_from("ip_scaling_k_mean_v_c_base", "all_v_base");
    assert_far_from("ip_scaling_k_mean_v_c_plus", "all_v_plus");
    assert_far_from("ip_scaling_k_mean_v_c_base", "ip_scaling_kv_c_base");
}

/// On the tiny models' 6-block layout a preset fails naming the block count; a list of
/// blocks that exist there runs.
#[test]
fn blocks_presets_on_another_layout_fail_naming_the_block_count() {
    let dir = common::scratch("parity_blocks_layout");
    write_image(&dir.join("pos.png"), 40, 40, 1);
    write_image(&dir.join("neg.png"), 40, 40, 2);
    let models = common::tiny::tiny_models();
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let mut c = cell(&dir, AdapterKind::Base);
    c.steps = 2;
    c.neg_blocks = BlockWeights::Style;
    let err = match pipeline.generate_float(std::slice::from_ref(&c), &mut |_, _| {}) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a preset ran on a 6-block UNet"),
    };
    assert!(
        err.contains("neg_blocks") && err.contains("has 6 cross-attention blocks"),
        "{err}"
    );
    c.neg_blocks = "2:1, 5:0.5".parse().unwrap();
    let out = pipeline
        .generate_float(std::slice::from_ref(&c), &mut |_, _| {})
        .unwrap();
    assert!(out[0].is_ok());
    c.blocks = "6:1".parse().unwrap();
    let err = match pipeline.generate_float(std::slice::from_ref(&c), &mut |_, _| {}) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("block 6 of a 6-block UNet ran"),
    };
    assert!(
        err.contains("block 6") && err.contains("numbered 0-5"),
        "{err}"
    );
}
