//! SDXL against diffusers 0.42 (CPU, fp32, tiny random weights in SDXL's layout written at
//! test time): the `text_time` UNet's forward with and without an IP-Adapter, and its
//! variables and IP layer order against the model diffusers builds from our config.
mod common;

use common::parity::{self, get, u8_of};
use negimg::models::clip_vision::ClipVisionConfig;
use negimg::models::unet::{Hooks, IpInput, TextTime, UNet2DConditionConfig};
use negimg::params::{AdapterKind, GenParams, MicroPair, NegativeMode, SchedulerKind};
use negimg::pipeline::write_random_adapter;
use negimg::roles::ModelSet;
use negimg::weights::TensorSource;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

#[test]
fn parity_sdxl_unet_one_step_with_and_without_ip_adapter() {
    let setup = parity::UnetSetup::new("parity_sdxl_unet", UNet2DConditionConfig::tiny_sdxl());
    let cfg = &setup.cfg;
    let vision = ClipVisionConfig::tiny();
    write_random_adapter(&setup.adapter, AdapterKind::Base, cfg, &vision, 11).unwrap();

    let pooled = cfg.pooled_text_dim().unwrap();
    let time_ids = Tensor::from_slice(&[64f32, 64., 0., 0., 64., 64.]).view([1, 6]);
    let x = setup.write_inputs(|| {
        let f = (Kind::Float, Device::Cpu);
        vec![
            ("latents", Tensor::randn([3, 4, 8, 8], f)),
            ("text", Tensor::randn([3, 77, 64], f)),
            ("text_embeds", Tensor::randn([3, pooled], f)),
            // Rows with other sizes and crops: each id enters the embedding.
            (
                "time_ids",
                Tensor::cat(
                    &[
                        time_ids.shallow_clone(),
                        Tensor::from_slice(&[48f32, 80., 8., 16., 64., 64.]).view([1, 6]),
                        Tensor::from_slice(&[1024f32, 1024., 0., 0., 512., 768.]).view([1, 6]),
                    ],
                    0,
                ),
            ),
            (
                "image_embeds",
                Tensor::randn([3, 1, vision.projection_dim], f),
            ),
            ("scales", Tensor::from_slice(&[0.0f32, 0.6, 1.3])),
            ("timesteps", Tensor::from_slice(&[981i64, 501, 1])),
            ("t", Tensor::from_slice(&[501.0f64])),
        ]
    });
    let reference = setup.reference("unet_parity.py");
    let (latents, text) = (get(&x, "latents"), get(&x, "text"));
    let (text_embeds, time_ids) = (get(&x, "text_embeds"), get(&x, "time_ids"));
    let hooks = || Hooks {
        text_time: Some(TextTime {
            text_embeds: &text_embeds,
            time_ids: &time_ids,
        }),
        ..Default::default()
    };

    let plain = setup.load_plain();
    assert!(plain.takes_text_time());
    let timesteps = x.get("timesteps", Device::Cpu, Kind::Int64).unwrap();
    let eps = tch::no_grad(|| plain.forward_rows(&latents, &timesteps, &text, None, hooks()));
    let expected = get(&reference, "eps_plain");
    let diff = common::max_abs_diff(&eps, &expected);
    eprintln!("SDXL UNet without IP, per-row timesteps and time ids: max abs diff {diff:e}");
    assert!(diff <= TOL, "SDXL UNet differs from diffusers by {diff}");
    // The added embedding acts: other time ids give another output.
    let same_ids = time_ids.get(0).unsqueeze(0).expand([3, 6], false);
    let other = tch::no_grad(|| {
        let hooks = Hooks {
            text_time: Some(TextTime {
                text_embeds: &text_embeds,
                time_ids: &same_ids,
            }),
            ..Default::default()
        };
        plain.forward_rows(&latents, &timesteps, &text, None, hooks)
    });
    assert!(common::max_abs_diff(&other.get(2), &eps.get(2)) > 1e-4);

    let unet = setup.load_with_adapter();
    let tokens = get(&reference, "tokens");
    assert_eq!(tokens.size()[2], 64, "the projection's width is the UNet's");
    let scales = get(&x, "scales");
    let t501 = Tensor::from_slice(&[501.0f32]);
    let eps = tch::no_grad(|| {
        let ip = IpInput::uniform(&tokens, &scales);
        unet.forward_rows(&latents, &t501, &text, Some(ip), hooks())
    });
    let expected = get(&reference, "eps_ip");
    let diff = common::max_abs_diff(&eps, &expected);
    eprintln!("SDXL UNet with IP, scales [0, 0.6, 1.3]: max abs diff {diff:e}");
    assert!(
        diff <= TOL,
        "SDXL UNet with IP differs from diffusers by {diff}"
    );
    let plain_501 = tch::no_grad(|| plain.forward_rows(&latents, &t501, &text, None, hooks()));
    assert!(common::max_abs_diff(&eps.get(0), &plain_501.get(0)) < 1e-6);
    let ip_effect = common::max_abs_diff(&eps.get(2), &plain_501.get(2));
    eprintln!("IP effect on the scale-1.3 row: {ip_effect:e}");
    assert!(ip_effect > 1e-5, "the adapter does not act ({ip_effect})");
}

/// SDXL's layout (three levels, depths 1/2/n, 5/10/20 heads, linear projections, cross
/// width 2048, `text_time`; channels narrowed and the deepest stack shortened to keep the
/// build quick): the variables are exactly diffusers' keys and shapes, and the IP layers
/// follow diffusers' `attn_processors` order (every transformer layer of every block).
#[test]
fn parity_sdxl_unet_layout_keys_and_ip_order() {
    let cfg = UNet2DConditionConfig {
        block_out_channels: vec![160, 160, 320],
        transformer_layers_per_block: negimg::models::unet::OneOrMany::Many(vec![1, 2, 3]),
        ..UNet2DConditionConfig::sdxl()
    };
    let names = parity::assert_unet_layout_is_diffusers("parity_sdxl_unet_keys", &cfg);
    // 2 x 2 + 3 x 2 down, 3 x 2 x 3 + 2 x 3 up... every inner layer counts.
    assert_eq!(names.len(), 2 * 2 + 3 * 2 + 3 * 3 + 2 * 3 + 3);
    // The real SDXL: 70 cross-attention layers, as ip-adapter_sdxl's 140 keys.
    assert_eq!(
        negimg::models::unet::ip_attn_layers(&UNet2DConditionConfig::sdxl()).len(),
        70
    );
}

/// A `text_time` config needs both widths, and other added embeddings are refused by name.
#[test]
fn sdxl_unet_config_errors_name_the_key() {
    let cases = [
        (
            r#"{"addition_embed_type": "text_time"}"#,
            "addition_time_embed_dim",
        ),
        (
            r#"{"addition_embed_type": "text_image", "addition_time_embed_dim": 8}"#,
            "text_image",
        ),
        (
            r#"{"addition_time_embed_dim": 8}"#,
            "addition_time_embed_dim is set",
        ),
        (
            r#"{"reverse_transformer_layers_per_block": [[1], [1], [1], [1]]}"#,
            "reverse_transformer_layers_per_block",
        ),
    ];
    let dir = common::scratch("sdxl_unet_config_errors");
    for (json, want) in cases {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        let err = format!(
            "{:#}",
            UNet2DConditionConfig::from_json_file(&path).unwrap_err()
        );
        assert!(err.contains(want) && err.contains("config.json"), "{err}");
    }
    let back: UNet2DConditionConfig =
        serde_json::from_str(&UNet2DConditionConfig::sdxl().to_config_json()).unwrap();
    assert_eq!(back, UNet2DConditionConfig::sdxl());
    back.validate().unwrap();
}

/// Full generation on the tiny SDXL set against diffusers' `StableDiffusionXLPipeline` with
/// the same IP-Adapter files: every negative mode, both adapters, DDIM and DPM++ 2M Karras,
/// within 1/255, also with the micro-conditioning of both halves set (`original_size`
/// ..., `negative_original_size` ...). The modes without a negative text condition on zeros
/// (`force_zeros_for_empty_prompt`), as diffusers does for a negative prompt not given.
#[test]
fn parity_sdxl_pipeline_matches_diffusers_for_every_mode_adapter_and_scheduler() {
    let dir = common::scratch("parity_sdxl_pipeline");
    let models = common::tiny::tiny_sdxl_models();
    parity::write_pos_neg(&dir, (70, 90));
    let mut cells: Vec<(String, GenParams)> = Vec::new();
    for adapter in [AdapterKind::Base, AdapterKind::Plus] {
        for scheduler in [SchedulerKind::Ddim, SchedulerKind::DpmPp2mKarras] {
            for mode in [
                NegativeMode::None,
                NegativeMode::Text,
                NegativeMode::Image,
                NegativeMode::Both,
            ] {
                let mut c = parity::cell(&dir, 20 + cells.len() as u64);
                c.adapter = adapter;
                c.scheduler = scheduler;
                c.negative = mode;
                cells.push((format!("{adapter}_{scheduler}_{mode}"), c));
            }
        }
    }
    // SDXL's micro-conditioning away from its defaults, in the same batch as cells at the
    // defaults (each row takes its own cell's time ids): the same seed and settings as the
    // first cell of each adapter, so the guard below compares like with like.
    let micro = [
        (
            0,
            Some(MicroPair(256, 320)),
            MicroPair(16, 8),
            Some(MicroPair(96, 64)),
        ),
        (8, None, MicroPair(0, 24), Some(MicroPair(48, 40))),
    ];
    for (of, original, crop, target) in micro {
        let mut c = cells[of].1.clone();
        c.original_size = original;
        c.crops_coords_top_left = crop;
        c.target_size = target;
        cells.push((format!("micro_{}", cells[of].0), c));
    }
    // The uncond row's micro-conditioning (diffusers' negative_original_size ...): set alone
    // on a cell at the defaults, and a crop alone on a cell with micro-conditioning (its
    // negative sizes follow that cell's sizes); each beside its twin without them.
    let negative = [
        (3, Some(MicroPair(512, 512)), None, Some(MicroPair(16, 24))),
        (17, None, Some(MicroPair(8, 4)), None),
    ];
    for (of, original, crop, target) in negative {
        let mut c = cells[of].1.clone();
        c.negative_original_size = original;
        c.negative_crops_coords_top_left = crop;
        c.negative_target_size = target;
        cells.push((format!("negmicro_{}", cells[of].0), c));
    }
    let spec: Vec<_> = cells.iter().map(|(n, c)| parity::case_json(n, c)).collect();
    let reference = parity::run_reference("pipeline_parity.py", &dir, &models, &spec);
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let batch: Vec<GenParams> = cells.iter().map(|(_, c)| c.clone()).collect();
    let images = common::generate_float(&mut pipeline, &batch, 4, &mut |_, _| {});
    let mut report = Vec::new();
    let mut images_by_name = std::collections::BTreeMap::new();
    for ((name, _), img) in cells.iter().zip(images) {
        let img = img.unwrap();
        let want = reference
            .get(&format!("{name}.u8"), Device::Cpu, Kind::Int64)
            .unwrap();
        let float = reference
            .get(&format!("{name}.float"), Device::Cpu, Kind::Float)
            .unwrap();
        let u8_diff = common::max_abs_diff(&u8_of(&img), &want);
        let float_diff = common::max_abs_diff(&img, &float);
        report.push(format!("{name}: float {float_diff:.2e}, 8-bit {u8_diff}"));
        assert!(
            u8_diff <= 1.0,
            "{name}: 8-bit max diff {u8_diff}\n{}",
            report.join("\n")
        );
        images_by_name.insert(name.clone(), img);
    }
    eprintln!("{}", report.join("\n"));
    // Guard: the micro-conditioning acts (its image is not the default one's); the uncond
    // row's alone: more than 2/255 from its twin without it.
    for (name, img) in &images_by_name {
        if let Some(plain) = name.strip_prefix("micro_") {
            let d = common::max_abs_diff(img, &images_by_name[plain]);
            eprintln!("{name} vs {plain}: max abs diff {d:.3}");
            assert!(
                d > 0.05,
                "{name}: micro-conditioning changed the image by {d} only"
            );
        }
        if let Some(plain) = name.strip_prefix("negmicro_") {
            parity::assert_far(name, img, &images_by_name[plain], plain);
        }
    }
}

/// Copies the tiny SDXL pipeline folder to `dst` with `edit` applied to its model_index.json.
fn edited_copy(src: &Path, dst: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let status = std::process::Command::new("cp")
        .args(["-r"])
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(status.success());
    let index = dst.join("pipeline/model_index.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&index, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

fn load_error(models: &Path) -> String {
    let set = ModelSet::from_models_dir(models);
    match negimg::pipeline::Pipeline::load(&set, Device::Cpu, Kind::Float, &mut |_| {}) {
        Ok(_) => panic!("{} loaded", models.display()),
        Err(e) => format!("{e:#}"),
    }
}

/// An SDXL folder without its second text encoder fails naming the folder; one whose
/// model_index.json lists `text_encoder_2` that is not there names that folder. And
/// `force_zeros_for_empty_prompt` acts: turned off, an empty negative prompt is encoded,
/// and the image changes.
#[test]
fn sdxl_missing_text_encoder_2_and_force_zeros() {
    let dir = common::scratch("sdxl_text_encoder_2");
    let models = common::tiny::tiny_sdxl_models();
    let unlisted = dir.join("unlisted");
    edited_copy(&models, &unlisted, |j| {
        j.as_object_mut().unwrap().remove("text_encoder_2");
    });
    let err = load_error(&unlisted);
    assert!(
        err.contains("text_encoder_2") && err.contains("unlisted/pipeline"),
        "{err}"
    );
    let missing = dir.join("missing");
    edited_copy(&models, &missing, |_| {});
    std::fs::remove_dir_all(missing.join("pipeline/text_encoder_2")).unwrap();
    let err = load_error(&missing);
    assert!(err.contains("missing/pipeline/text_encoder_2"), "{err}");

    let encoded = dir.join("encoded");
    edited_copy(&models, &encoded, |j| {
        j["force_zeros_for_empty_prompt"] = false.into();
    });
    parity::write_pos_neg(&dir, (70, 90));
    let mut cell = parity::cell(&dir, 5);
    cell.negative = NegativeMode::Image;
    assert_eq!(cell.uncond_text(), "");
    let image = |models: &Path| {
        let mut p = common::load_pipeline(&ModelSet::from_models_dir(models));
        let out = common::generate_float(&mut p, std::slice::from_ref(&cell), 1, &mut |_, _| {});
        u8_of(out[0].as_ref().unwrap())
    };
    let diff = common::max_abs_diff(&image(&models), &image(&encoded));
    eprintln!("force_zeros on vs off: {diff}/255");
    assert!(
        diff > 2.0,
        "force_zeros_for_empty_prompt has no effect ({diff})"
    );
}

/// experiments/winter-sdxl-tiny.toml (winter-sdxl.toml's grid on the tiny SDXL set) plans
/// and runs on the CPU: input images made text-to-image by the SDXL pipeline, both adapters.
#[test]
fn sdxl_winter_tiny_experiment_runs() {
    // Planned before any run: the estimate times the SDXL UNet (with its added conditioning).
    let fresh = common::scratch("sdxl_winter_tiny_plan");
    std::fs::create_dir_all(fresh.join("experiments")).unwrap();
    let exp = "experiments/winter-sdxl-tiny.toml";
    std::fs::copy(common::repo().join(exp), fresh.join(exp)).unwrap();
    std::fs::create_dir_all(fresh.join("models")).unwrap();
    let link = fresh.join("models/tiny_sdxl");
    if !link.exists() {
        std::os::unix::fs::symlink(common::tiny::tiny_sdxl_models(), &link).unwrap();
    }
    let plan = common::plan(exp, &fresh);
    assert!(
        plan.contains("= 4 cells") && plan.contains("calibrated on the spot"),
        "{plan}"
    );
    let (dir, run) = common::run_copied_experiment("sdxl_winter_tiny", "winter-sdxl-tiny", 4);
    let plan = common::plan(exp, &dir);
    assert!(plan.contains("measured by run"), "{plan}");
    let records = std::fs::read_to_string(run.join("records.csv")).unwrap();
    assert_eq!(records.lines().count(), 5, "{records}");
}
