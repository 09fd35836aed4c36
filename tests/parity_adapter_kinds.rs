//! Full generation with the newer SD1.5 adapter kinds against diffusers (CPU, fp32, tiny
//! random weights written at test time, 32x32, 4 steps), loaded as `load_ip_adapter` loads
//! them (tests/reference/pipeline_parity.py): light, plus_face and full_face on the tiny
//! ViT-H-shaped encoder, and ip-adapter_sd15_vit-G (the base projection over a
//! ViT-bigG-shaped encoder's image_embeds); every negative mode under DDIM and DPM++ 2M
//! Karras, within 1/255. Guards: each kind's image is far from the base adapter's on the same
//! files. Bad input: `negimg plan` refuses a bigG adapter with a ViT-H encoder and the
//! reverse, naming both files. Two reference processes (one per image encoder).
mod common;

use common::parity::{self, Parity, Setup};
use negimg::models::clip_vision::{self, ClipVisionConfig};
use negimg::models::unet::UNet2DConditionConfig;
use negimg::params::{AdapterKind, GenParams, NegativeMode, SchedulerKind};
use negimg::pipeline::write_random_adapter;
use negimg::roles::adapter_file_name;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const MODES: [NegativeMode; 4] = [
    NegativeMode::None,
    NegativeMode::Text,
    NegativeMode::Image,
    NegativeMode::Both,
];
const SCHEDULERS: [SchedulerKind; 2] = [SchedulerKind::Ddim, SchedulerKind::DpmPp2mKarras];

fn unet_config(tiny: &Path) -> UNet2DConditionConfig {
    UNet2DConditionConfig::from_json_file(&tiny.join("pipeline/unet/config.json")).unwrap()
}

/// A models folder in `name`'s scratch: the tiny pipeline, `encoder` (the tiny image encoder
/// when `None`) and a random adapter file per kind of `kinds` fitting both (seeds from 21).
fn models_dir(name: &str, encoder: Option<&ClipVisionConfig>, kinds: &[AdapterKind]) -> PathBuf {
    let tiny = common::tiny::tiny_models();
    let dir = common::scratch(name);
    symlink(tiny.join("pipeline"), dir.join("pipeline")).unwrap();
    let vision = match encoder {
        Some(cfg) => {
            clip_vision::write_random_model(&dir.join("image_encoder"), cfg, 20).unwrap();
            cfg.clone()
        }
        None => {
            symlink(tiny.join("image_encoder"), dir.join("image_encoder")).unwrap();
            ClipVisionConfig::from_file(&tiny.join("image_encoder/config.json")).unwrap()
        }
    };
    let unet = unet_config(&tiny);
    for (i, &kind) in kinds.iter().enumerate() {
        let path = dir.join(adapter_file_name(kind));
        write_random_adapter(&path, kind, &unet, &vision, 21 + i as i64).unwrap();
    }
    dir
}

fn case_name(adapter: AdapterKind, scheduler: SchedulerKind, mode: NegativeMode) -> String {
    format!("{adapter}_{scheduler}_{mode}")
}

/// Every mode and scheduler for each of `kinds`; a (scheduler, mode) has the same seed and
/// inputs for every kind, so that the guards compare like with like.
fn cases(dir: &Path, kinds: &[AdapterKind]) -> Vec<(String, GenParams)> {
    let mut cases = Vec::new();
    for &adapter in kinds {
        for (i, scheduler) in SCHEDULERS.into_iter().enumerate() {
            for (j, mode) in MODES.into_iter().enumerate() {
                let mut c = parity::cell(dir, 40 + (4 * i + j) as u64);
                c.prompt = String::new();
                c.adapter = adapter;
                c.scheduler = scheduler;
                c.negative = mode;
                cases.push((case_name(adapter, scheduler, mode), c));
            }
        }
    }
    cases
}

const KINDS: [AdapterKind; 4] = [
    AdapterKind::Base,
    AdapterKind::Light,
    AdapterKind::PlusFace,
    AdapterKind::FullFace,
];

/// The kinds on the tiny ViT-H-shaped encoder (base included, for the guards).
fn kinds() -> &'static Parity {
    static SHARED: OnceLock<Parity> = OnceLock::new();
    SHARED.get_or_init(|| {
        let models = models_dir("parity_adapter_kinds_models", None, &KINDS);
        let setup = Setup {
            models,
            ..Setup::tiny("parity_adapter_kinds", "pipeline_parity.py")
        };
        Parity::compute(setup, |dir| cases(dir, &KINDS)).0
    })
}

/// ip-adapter_sd15_vit-G: the base kind on a ViT-bigG-shaped encoder.
fn vit_g() -> &'static Parity {
    static SHARED: OnceLock<Parity> = OnceLock::new();
    SHARED.get_or_init(|| {
        let models = models_dir(
            "parity_adapter_vit_g_models",
            Some(&common::tiny::big_g_vision()),
            &[AdapterKind::Base],
        );
        let setup = Setup {
            models,
            ..Setup::tiny("parity_adapter_vit_g", "pipeline_parity.py")
        };
        Parity::compute(setup, |dir| cases(dir, &[AdapterKind::Base])).0
    })
}

/// Parity of every case of `kind`, and its guard: each image far from the base adapter's.
fn parity_and_guard(p: &Parity, kind: AdapterKind, base: &Parity) {
    for scheduler in SCHEDULERS {
        for mode in MODES {
            let name = case_name(kind, scheduler, mode);
            p.assert_parity(&name);
            parity::assert_far(
                &name,
                &p.ours(&name),
                &base.ours(&case_name(AdapterKind::Base, scheduler, mode)),
                "the base adapter's image",
            );
        }
    }
}

#[test]
fn parity_adapter_light_matches_diffusers_and_differs_from_base() {
    parity_and_guard(kinds(), AdapterKind::Light, kinds());
}

#[test]
fn parity_adapter_plus_face_matches_diffusers_and_differs_from_base() {
    parity_and_guard(kinds(), AdapterKind::PlusFace, kinds());
}

#[test]
fn parity_adapter_full_face_matches_diffusers_and_differs_from_base() {
    parity_and_guard(kinds(), AdapterKind::FullFace, kinds());
}

#[test]
fn parity_adapter_base_on_these_files_matches_diffusers() {
    let p = kinds();
    for scheduler in SCHEDULERS {
        for mode in MODES {
            p.assert_parity(&case_name(AdapterKind::Base, scheduler, mode));
        }
    }
}

#[test]
fn parity_adapter_vit_g_matches_diffusers_and_differs_from_vit_h_base() {
    parity_and_guard(vit_g(), AdapterKind::Base, kinds());
}

/// `negimg plan` on an experiment whose base adapter is `adapter` and image encoder `encoder`.
fn plan_with(dir: &Path, adapter: &Path, encoder: &Path) -> std::process::Output {
    let tiny = common::tiny::tiny_models();
    let text = format!(
        "[experiment]\nname = \"mismatch\"\n[models]\npipeline = \"{}\"\n\
         ip_adapter = {{ base = \"{}\" }}\nimage_encoder = \"{}\"\n\
         [defaults]\ndtype = \"fp32\"\nsize = 64\nsteps = 2\n",
        tiny.join("pipeline").display(),
        adapter.display(),
        encoder.display()
    );
    std::fs::write(dir.join("mismatch.toml"), text).unwrap();
    common::negimg(&["--device", "cpu", "plan", "mismatch.toml"], dir)
}

#[test]
fn plan_refuses_a_vit_g_adapter_with_a_vit_h_encoder_and_the_reverse_and_an_sdxl_adapter() {
    let tiny = common::tiny::tiny_models();
    let g = models_dir(
        "adapter_encoder_mismatch_models",
        Some(&common::tiny::big_g_vision()),
        &[AdapterKind::Base],
    );
    let dir = common::scratch("adapter_encoder_mismatch");
    let (g_adapter, g_encoder) = (
        g.join(adapter_file_name(AdapterKind::Base)),
        g.join("image_encoder"),
    );
    let (h_adapter, h_encoder) = (
        tiny.join(adapter_file_name(AdapterKind::Base)),
        tiny.join("image_encoder"),
    );
    for (adapter, encoder, widths) in [
        (&g_adapter, &h_encoder, "reads image_embeds 40 wide"),
        (&h_adapter, &g_encoder, "reads image_embeds 16 wide"),
    ] {
        let out = plan_with(&dir, adapter, encoder);
        let text = common::text(&out);
        assert!(!out.status.success(), "plan accepted it:\n{text}");
        assert!(
            text.contains(&adapter.display().to_string())
                && text.contains(&encoder.display().to_string())
                && text.contains(widths)
                && text.contains("mismatch.toml"),
            "{text}"
        );
    }
    // An adapter with SDXL's 2048-wide tokens on the tiny SD1.5-shaped UNet.
    let wide = dir.join("ip-adapter_sdxl_vit-h.safetensors");
    let vision = ClipVisionConfig::from_file(&h_encoder.join("config.json")).unwrap();
    let widths: Vec<i64> = negimg::models::unet::ip_attn_hidden_sizes(&unet_config(&tiny));
    negimg::models::ip_adapter::write_random(
        &wide,
        AdapterKind::Base,
        2048,
        vision.projection_dim,
        &widths,
        1,
    )
    .unwrap();
    let out = plan_with(&dir, &wide, &h_encoder);
    let text = common::text(&out);
    assert!(!out.status.success(), "plan accepted it:\n{text}");
    assert!(
        text.contains(&wide.display().to_string())
            && text.contains("tokens 2048 wide")
            && text.contains("unet/config.json"),
        "{text}"
    );
}
