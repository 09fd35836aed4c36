//! SDXL parity of what tests/parity_sdxl.rs does not compare: the negative methods (subtract,
//! three_branch, perp_neg), windows on steps and on sigma, ComfyUI's SDXL block presets and
//! the IP scalings, a derived noise negative, on the tiny SDXL set (two text encoders, a text_time UNet of SDXL's 11
//! cross-attention transformers; CPU, fp32, 32x32). One reference process
//! (tests/reference/sdxl_parity.py) runs the SD1.5 tests' own references, methods_parity.py
//! and blocks_parity.py, whose loop conditions the SDXL UNet as StableDiffusionXLPipeline does;
//! blocks_parity.py numbers the transformers as ComfyUI's `transformer_index` and takes the
//! presets from ComfyUI_IPAdapter_plus's `is_sdxl` branch, its style and composition blocks
//! checked against diffusers' InstantStyle scales. Within 1/255; guards: each method, sigma
//! window, preset and scaling is far from the image it would be if silently read as the
//! default.
mod common;

use common::parity::{self, Setup, WindowParity, branch};
use negimg::derive::noise::derive;
use negimg::derive::{NoiseKind, Recipe};
use negimg::params::{
    AdapterKind, BlockWeights, GenParams, IpScaling, Method, SchedulerKind, Window,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A window cell (see [`parity::window_cell`]), named by its window and scheduler.
fn window_cell(dir: &Path, scheduler: SchedulerKind, window: Window) -> (String, GenParams) {
    let short = if scheduler == SchedulerKind::Ddim {
        "ddim"
    } else {
        "karras"
    };
    (
        format!("{window}_{short}"),
        parity::window_cell(dir, scheduler, window),
    )
}

/// A blocks / scaling cell: a preset acts in both branches, as ComfyUI's weight types do.
fn blocks_cell(dir: &Path, blocks: BlockWeights, scaling: IpScaling) -> (String, GenParams) {
    let mut c = parity::cell(dir, 33);
    c.positive = branch(2.0, 0.0, 1.0);
    c.negative_branch = branch(3.0, 0.25, 1.0);
    c.blocks = blocks.clone();
    c.neg_blocks = blocks.clone();
    c.ip_scaling = scaling;
    (format!("blocks_{blocks}_{scaling}"), c)
}

const PRESETS: [BlockWeights; 4] = [
    BlockWeights::Style,
    BlockWeights::Composition,
    BlockWeights::StrongStyle,
    BlockWeights::StyleAndComposition,
];

/// `neg.png` of `dir` shuffled at strength 0.5, written as `neg_shuffle.png`.
fn derived_negative(dir: &Path) -> PathBuf {
    let source = image::open(dir.join("neg.png")).unwrap().to_rgb8();
    let recipe = Recipe {
        from: Some("neg".into()),
        noise: NoiseKind::Shuffle,
        strength: 0.5,
        blur: 0,
    };
    let path = dir.join("neg_shuffle.png");
    derive(Some(&source), &recipe).unwrap().save(&path).unwrap();
    path
}

fn cases(dir: &Path) -> Vec<(String, GenParams)> {
    let mut out: Vec<_> = [
        Method::Uncond,
        Method::Subtract,
        Method::ThreeBranch,
        Method::PerpNeg,
    ]
    .map(|m| parity::method_cell(dir, m, AdapterKind::Base))
    .into();
    // A derived noise negative (ComfyUI's IPAdapterNoise "shuffle" of neg.png), read from its
    // PNG by both sides.
    let (_, mut derived) = parity::method_cell(dir, Method::Uncond, AdapterKind::Base);
    derived.negative_image = Some(derived_negative(dir));
    out.push(("derived_shuffle_base".into(), derived));
    out.push(parity::method_cell(dir, Method::Uncond, AdapterKind::Plus));
    out.push(parity::method_cell(dir, Method::PerpNeg, AdapterKind::Plus));
    for scheduler in [SchedulerKind::Ddim, SchedulerKind::DpmPp2mKarras] {
        for window in [Window::Steps, Window::Sigma] {
            out.push(window_cell(dir, scheduler, window));
        }
    }
    out.push(blocks_cell(dir, BlockWeights::All, IpScaling::V));
    for preset in PRESETS {
        out.push(blocks_cell(dir, preset, IpScaling::V));
    }
    for scaling in [IpScaling::Kv, IpScaling::KMeanVC] {
        out.push(blocks_cell(dir, BlockWeights::All, scaling));
    }
    out
}

/// Which reference computes the cell (sdxl_parity.py's `ref`): blocks_parity.py for block
/// weights and scalings, methods_parity.py for the rest (`blocks_all_v` included: the same
/// computation in either).
fn reference_of(c: &GenParams) -> serde_json::Value {
    let blocks = !c.blocks.is_all() || !c.neg_blocks.is_all() || !c.ip_scaling.is_v();
    json!({"ref": if blocks { "blocks" } else { "methods" }})
}

fn shared() -> &'static WindowParity {
    static SHARED: OnceLock<WindowParity> = OnceLock::new();
    SHARED.get_or_init(|| {
        let setup = Setup {
            models: common::tiny::tiny_sdxl_models(),
            extra: &reference_of,
            ..Setup::tiny("parity_sdxl_methods", "sdxl_parity.py")
        };
        WindowParity::compute(setup, cases)
    })
}

fn assert_parity(name: &str) {
    shared().parity.assert_parity(name);
}

/// Our image of `a` is more than 2/255 (twice the parity tolerance) from our image of `b`.
fn assert_far(a: &str, b: &str) {
    shared().parity.assert_far(a, b);
}

#[test]
fn parity_sdxl_methods_match_the_reference_and_differ_from_uncond() {
    for adapter in ["base", "plus"] {
        assert_parity(&format!("uncond_{adapter}"));
    }
    for method in ["subtract", "three_branch", "perp_neg"] {
        let name = format!("{method}_base");
        assert_parity(&name);
        assert_far(&name, "uncond_base");
    }
    assert_parity("perp_neg_plus");
    assert_far("perp_neg_plus", "uncond_plus");
}

#[test]
fn parity_sdxl_derived_noise_negative() {
    assert_parity("derived_shuffle_base");
    assert_far("derived_shuffle_base", "uncond_base");
}

/// On SDXL's scheduler, both window rules select the reference's steps, the sigma rule other
/// steps than the steps rule, and both images match the reference's and differ.
#[test]
fn parity_sdxl_windows_on_steps_and_on_sigma() {
    let s = shared();
    for scheduler in ["ddim", "karras"] {
        let (sigma, steps) = (format!("sigma_{scheduler}"), format!("steps_{scheduler}"));
        let ours = s.our_active(&sigma, Window::Sigma);
        eprintln!("{sigma}: active steps (uncond, cond) {ours:?}");
        assert_eq!(ours, s.reference_active(&sigma), "{sigma}: active steps");
        let by_steps = s.our_active(&steps, Window::Steps);
        assert_eq!(
            by_steps,
            s.reference_active(&steps),
            "{steps}: active steps"
        );
        assert_ne!(ours, by_steps, "{sigma}: rules agree");
        assert_parity(&sigma);
        assert_parity(&steps);
        assert_far(&sigma, &steps);
    }
}

/// ComfyUI's SDXL presets select the transformers its numbering says (the reference's), and
/// each image differs from the all-blocks image of the same cell.
#[test]
fn parity_sdxl_block_presets_follow_comfyui() {
    assert_parity("blocks_all_v");
    for preset in PRESETS {
        let name = format!("blocks_{preset}_v");
        assert_parity(&name);
        assert_far(&name, "blocks_all_v");
    }
    // Style and composition act on other transformers.
    assert_far("blocks_style_v", "blocks_composition_v");
}

#[test]
fn parity_sdxl_ip_scalings() {
    for scaling in ["kv", "k_mean_v_c"] {
        let name = format!("blocks_all_{scaling}");
        assert_parity(&name);
        assert_far(&name, "blocks_all_v");
    }
}
