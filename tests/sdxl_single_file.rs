//! Single-file SDXL checkpoints (the SGM layout of sd_xl_base_1.0.safetensors) load to the
//! tensors and the images of the diffusers folder they were made from, and to diffusers'
//! `StableDiffusionXLPipeline.from_single_file` images within 1/255.
//!
//! The single file is written at test time from a tiny SDXL folder by
//! tests/reference/sgm_write_sdxl.py, which checks it with diffusers' converters and
//! `from_single_file` (offline): both must give back the folder's weights exactly.
mod common;

use common::parity::{self, u8_of};
use common::tiny::{SdxlSingleFileSet, copy_dir, sdxl_single_file_set};
use negimg::models::clip_text::ClipTextConfig;
use negimg::models::unet::UNet2DConditionConfig;
use negimg::models::vae::AutoencoderKLConfig;
use negimg::params::{AdapterKind, GenParams, NegativeMode, SchedulerKind};
use negimg::pipeline::single_file::{
    Family, infer_sdxl_text_2_config, infer_sdxl_unet_config, infer_sdxl_vae_config,
    infer_text_config, open_single_file,
};
use negimg::pipeline::write_random_adapter;
use negimg::roles::ModelSet;
use negimg::weights::{TensorFile, TensorSource};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

fn fixture() -> &'static SdxlSingleFileSet {
    static FIXTURE: OnceLock<SdxlSingleFileSet> = OnceLock::new();
    FIXTURE.get_or_init(|| sdxl_single_file_set("sdxl_single_file"))
}

#[test]
fn sdxl_single_file_has_the_folder_tensors() {
    let fx = fixture();
    let ckpt = open_single_file(&fx.single_file()).unwrap();
    assert_eq!(ckpt.family(), Family::Sdxl);
    let folder = fx.folder();
    let weights =
        |component: &str, file: &str| TensorFile::open(folder.join(component).join(file)).unwrap();
    common::assert_same_tensors(
        ckpt.unet().unwrap().as_ref(),
        &weights("unet", "diffusion_pytorch_model.safetensors"),
        "unet",
    );
    common::assert_same_tensors(
        ckpt.vae().unwrap().as_ref(),
        &weights("vae", "diffusion_pytorch_model.safetensors"),
        "vae",
    );
    common::assert_same_tensors(
        ckpt.text_encoder().unwrap().as_ref(),
        &weights("text_encoder", "model.safetensors"),
        "text_encoder",
    );
    // q/k/v split from the fused in_proj, the projection transposed (32 x 48: not square).
    let text_2 = ckpt.text_encoder_2().unwrap();
    common::assert_same_tensors(
        text_2.as_ref(),
        &weights("text_encoder_2", "model.safetensors"),
        "text_encoder_2",
    );
    assert_eq!(text_2.shape("text_projection.weight"), Some(vec![32, 48]));
}

/// Images of a text+image negative (DDIM), an image negative and an empty negative text
/// (DPM++ 2M Karras, so force_zeros_for_empty_prompt acts).
fn cells(dir: &Path) -> Vec<(String, GenParams)> {
    parity::write_pos_neg(dir, (70, 90));
    let cases = [
        (NegativeMode::Both, SchedulerKind::Ddim),
        (NegativeMode::Image, SchedulerKind::Ddim),
        (NegativeMode::None, SchedulerKind::DpmPp2mKarras),
    ];
    cases
        .into_iter()
        .zip(40..)
        .map(|((mode, scheduler), seed)| {
            let mut c = parity::cell(dir, seed);
            c.adapter = AdapterKind::Base;
            c.negative = mode;
            c.scheduler = scheduler;
            (format!("{mode}_{scheduler}"), c)
        })
        .collect()
}

#[test]
fn sdxl_single_file_generates_the_folder_images_and_diffusers_from_single_file_images() {
    let fx = fixture();
    let dir = common::scratch("sdxl_single_file_images");
    let cells = cells(&dir);
    let batch: Vec<GenParams> = cells.iter().map(|(_, c)| c.clone()).collect();
    let generate = |models: &ModelSet<PathBuf>| common::generate_images(models, &batch, 4);
    let from_folder = generate(&ModelSet::from_models_dir(&fx.folder_set));
    let single = ModelSet {
        pipeline: fx.single_file(),
        ..ModelSet::from_models_dir(&fx.single_set)
    };
    let from_single = generate(&single);
    assert!(
        common::max_abs_diff(&from_folder[0], &from_folder[2]) > 1e-3,
        "the cells should differ"
    );
    for ((name, _), (a, b)) in cells.iter().zip(from_folder.iter().zip(&from_single)) {
        // The same tensors through the same ops in the same order.
        assert_eq!(
            common::max_abs_diff(a, b),
            0.0,
            "{name}: folder vs single file"
        );
    }

    let spec: Vec<_> = cells.iter().map(|(n, c)| parity::case_json(n, c)).collect();
    let reference = parity::run_reference("pipeline_parity.py", &dir, &fx.single_set, &spec);
    let mut report = Vec::new();
    for ((name, _), img) in cells.iter().zip(&from_single) {
        let want = reference
            .get(&format!("{name}.u8"), Device::Cpu, Kind::Int64)
            .unwrap();
        let float = parity::get(&reference, &format!("{name}.float"));
        let u8_diff = common::max_abs_diff(&u8_of(img), &want);
        report.push(format!(
            "{name}: float {:.2e}, 8-bit {u8_diff}",
            common::max_abs_diff(img, &float)
        ));
        assert!(u8_diff <= 1.0, "{name}: 8-bit diff {u8_diff}\n{report:?}");
    }
    eprintln!("{}", report.join("\n"));
}

/// Copies the fixture's single file alone (no configs folder) to `dir`.
fn bare_copy(dir: &Path) -> PathBuf {
    let path = dir.join("bare.safetensors");
    std::fs::copy(fixture().single_file(), &path).unwrap();
    path
}

#[test]
fn sdxl_single_file_configs_come_from_the_configs_folder_else_from_shapes() {
    let fx = fixture();
    let dir = common::scratch("sdxl_single_file_configs");
    let path = bare_copy(&dir);
    let ckpt = open_single_file(&path).unwrap();
    let configs = path.with_extension("configs");
    // The tiny widths (32, 48) are not multiples of SDXL's 64-wide heads: the errors say
    // where the config goes.
    for (what, err) in [
        ("unet", ckpt.unet_config().err()),
        ("text_encoder_2", ckpt.text_encoder_2_config().err()),
    ] {
        let msg = format!("{:#}", err.unwrap());
        let folder = configs.join(what).display().to_string();
        assert!(msg.contains(&folder) && msg.contains("head"), "{msg}");
    }
    // The VAE's shapes tell all but its scaling factor, which is SDXL's; an empty negative
    // prompt conditions on zeros, as SDXL base's model_index.json says.
    let vae = ckpt.vae_config().unwrap();
    assert_eq!(
        vae.scaling_factor,
        AutoencoderKLConfig::sdxl().scaling_factor
    );
    assert!(ckpt.force_zeros_for_empty_prompt().unwrap());

    // Configs beside the file win over the shapes, one component at a time.
    let folder = fx.folder();
    for component in ["unet", "text_encoder_2"] {
        std::fs::create_dir_all(configs.join(component)).unwrap();
        std::fs::copy(
            folder.join(component).join("config.json"),
            configs.join(component).join("config.json"),
        )
        .unwrap();
    }
    let unet = UNet2DConditionConfig::from_json_file(&folder.join("unet/config.json")).unwrap();
    assert_eq!(ckpt.unet_config().unwrap(), unet);
    let text_2 = ckpt.text_encoder_2_config().unwrap();
    assert_eq!((text_2.hidden_size, text_2.projection_dim), (48, 32));
    // ... and model_index.json's force_zeros_for_empty_prompt.
    std::fs::write(
        configs.join("model_index.json"),
        r#"{"force_zeros_for_empty_prompt": false}"#,
    )
    .unwrap();
    assert!(!ckpt.force_zeros_for_empty_prompt().unwrap());
    std::fs::write(
        configs.join("model_index.json"),
        r#"{"force_zeros_for_empty_prompt": "yes"}"#,
    )
    .unwrap();
    let msg = format!("{:#}", ckpt.force_zeros_for_empty_prompt().err().unwrap());
    assert!(
        msg.contains("model_index.json") && msg.contains("force_zeros_for_empty_prompt"),
        "{msg}"
    );
}

#[test]
fn sdxl_single_file_shapes_of_sdxl_base_infer_exactly_its_configs() {
    let parts = common::reference_shapes(
        "sdxl_single_file_shapes",
        &UNet2DConditionConfig::sdxl(),
        &AutoencoderKLConfig::sdxl(),
        &ClipTextConfig::sd15(),
        Some(&ClipTextConfig::vit_big_g()),
    );
    let json = |c: &ClipTextConfig| serde_json::to_value(c).unwrap();
    let text_2 = infer_sdxl_text_2_config(&parts["text_encoder_2"]).unwrap();
    assert_eq!(json(&text_2), json(&ClipTextConfig::vit_big_g()));
    assert_eq!(
        infer_sdxl_unet_config(&parts["unet"], text_2.projection_dim).unwrap(),
        UNet2DConditionConfig::sdxl()
    );
    assert_eq!(
        infer_sdxl_vae_config(&parts["vae"]).unwrap(),
        AutoencoderKLConfig::sdxl()
    );
    assert_eq!(
        json(&infer_text_config(&parts["text_encoder"]).unwrap()),
        json(&ClipTextConfig::sd15())
    );
}

#[test]
fn sdxl_single_file_shape_mismatch_names_the_file_and_both_tensor_names() {
    let fx = fixture();
    let dir = common::scratch("sdxl_single_file_mismatch");
    let path = bare_copy(&dir);
    let configs = path.with_extension("configs");
    copy_dir(&fx.single_set.join("pipeline.configs"), &configs, &[]);
    // A second text encoder config whose MLP is wider than the file's.
    let config = configs.join("text_encoder_2/config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["intermediate_size"] = 40.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let models = ModelSet {
        pipeline: path.clone(),
        ..ModelSet::from_models_dir(&fx.single_set)
    };
    let err = negimg::pipeline::Pipeline::load(&models, Device::Cpu, Kind::Float, &mut |_| {})
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("\"text_model.encoder.layers.0.mlp.fc1.")
            && msg.contains("\"conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc."),
        "{msg}"
    );
}

/// Writes a checkpoint of the named tensors (scalars) at `dir/name`.
fn keys_only(dir: &Path, name: &str, keys: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let tensors: Vec<(&str, Tensor)> = keys
        .iter()
        .map(|&k| (k, Tensor::zeros([2], (Kind::Float, Device::Cpu))))
        .collect();
    Tensor::write_safetensors(&tensors, &path).unwrap();
    path
}

#[test]
fn sdxl_single_file_refiner_sd2_and_half_sdxl_are_refused_by_name() {
    let dir = common::scratch("sdxl_single_file_refused");
    let unet = "model.diffusion_model.input_blocks.0.0.weight";
    let cases = [
        (
            "refiner.safetensors",
            "conditioner.embedders.0.model.text_projection",
            "refiner",
        ),
        (
            "sd2.safetensors",
            "cond_stage_model.model.token_embedding.weight",
            "SD2",
        ),
        (
            "half.safetensors",
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
            "conditioner.embedders.1.model.",
        ),
    ];
    for (file, key, says) in cases {
        let path = keys_only(&dir, file, &[unet, key]);
        let msg = format!("{:#}", open_single_file(&path).err().unwrap());
        assert!(
            msg.contains(file) && msg.contains(key) && msg.contains(says),
            "{msg}"
        );
    }
}

/// `NAME.toml` in `dir` on `pipeline`, one base `adapter` and `encoder`, `[defaults]` from
/// `defaults`: its file name and text.
fn plan_experiment(
    dir: &Path,
    name: &str,
    [pipeline, adapter, encoder]: [&Path; 3],
    defaults: &str,
) -> (String, String) {
    let text = format!(
        "[experiment]\nname = \"{name}\"\n\n[models]\npipeline = \"{}\"\n\
         ip_adapter = {{ base = \"{}\" }}\nimage_encoder = \"{}\"\n\n\
         [defaults]\nsteps = 2\nsize = 32\nseeds = [1]\n{defaults}",
        pipeline.display(),
        adapter.display(),
        encoder.display()
    );
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), &text).unwrap();
    (file, text)
}

/// `FILE:LINE` of the first line of `text` that contains `needle`.
fn place(file: &str, text: &str, needle: &str) -> String {
    let line = text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    format!("{file}:{line}")
}

/// `negimg plan FILE` (no calibration: nothing loads): success and output.
fn plan(file: &str, dir: &Path) -> (bool, String) {
    let out = common::negimg(&["--device", "cpu", "plan", file, "--no-calibrate"], dir);
    (out.status.success(), common::text(&out))
}

/// Where a refusal must point: the first line containing `needle`, then `key` (`": models.pipeline"`,
/// `" (defaults.crops_coords_top_left)"`).
struct At<'a> {
    needle: &'a str,
    key: &'a str,
}

const ADAPTER_KEY: At = At {
    needle: "ip_adapter",
    key: ": models.ip_adapter.base",
};
const PIPELINE_KEY: At = At {
    needle: "pipeline =",
    key: ": models.pipeline",
};

/// Plans `name` on `set` with `defaults`: refused, naming the file, line and key of each of
/// `at` and each of `named`.
fn assert_refused(
    dir: &Path,
    name: &str,
    set: [&Path; 3],
    defaults: &str,
    at: &[At],
    named: &[String],
) {
    let (file, text) = plan_experiment(dir, name, set, defaults);
    let (ok, out) = plan(&file, dir);
    assert!(!ok, "plan accepted it:\n{out}");
    let places = at
        .iter()
        .map(|a| format!("{}{}", place(&file, &text, a.needle), a.key));
    for named in places.chain(named.iter().cloned()) {
        assert!(out.contains(&named), "{named:?} not in:\n{out}");
    }
}

/// `negimg plan` reads a single file's family and UNet config from its header (and its
/// configs folder) before anything loads: the plan-time checks of diffusers folders hold for
/// single files, each naming the experiment file, the key and its line, and the checkpoint.
#[test]
fn sdxl_single_file_plan_checks_from_the_header() {
    let fx = fixture();
    let sd15 = common::tiny::tiny_models();
    let dir = common::scratch("sdxl_single_file_plan");
    let single = fx.single_file();
    let sdxl_adapter = fx.single_set.join("ip-adapter_sdxl_vit-h.safetensors");
    let sdxl_encoder = fx.single_set.join("image_encoder");
    let sd15_adapter = sd15.join("ip-adapter_sd15.safetensors");
    let sd15_encoder = sd15.join("image_encoder");
    let micro = "crops_coords_top_left = [8, 4]\n";
    let shown = |p: &Path| p.display().to_string();

    // The valid SDXL single file plans, micro-conditioning included; the estimate counts
    // the UNet from the configs folder beside it and the VAE's parameters in the file.
    let (file, _) = plan_experiment(
        &dir,
        "valid",
        [&single, &sdxl_adapter, &sdxl_encoder],
        micro,
    );
    let (ok, text) = plan(&file, &dir);
    assert!(ok, "{text}");
    let configs = single.with_extension("configs").join("unet/config.json");
    assert!(
        text.contains(&format!("UNet FLOPs counted from {}", configs.display()))
            && !text.contains("VAE weights not here"),
        "{text}"
    );

    // An SD1.5 adapter on the SDXL single file.
    assert_refused(
        &dir,
        "sd15_adapter",
        [&single, &sd15_adapter, &sdxl_encoder],
        "",
        &[ADAPTER_KEY],
        &[
            shown(&sd15_adapter),
            shown(&configs),
            "for another pipeline".into(),
        ],
    );

    // Without its configs folder the tiny widths tell no SDXL head count: refused at plan
    // time, naming the pipeline's key and where the config goes.
    let bare = bare_copy(&dir);
    assert_refused(
        &dir,
        "bare",
        [&bare, &sdxl_adapter, &sdxl_encoder],
        "",
        &[PIPELINE_KEY],
        &[shown(&bare.with_extension("configs").join("unet"))],
    );

    // A ViT-bigG-shaped adapter for the SDXL single file with its ViT-H-shaped encoder.
    let big_g = dir.join("ip-adapter_sdxl.safetensors");
    write_random_adapter(
        &big_g,
        AdapterKind::Base,
        &open_single_file(&single).unwrap().unet_config().unwrap(),
        &common::tiny::big_g_vision(),
        24,
    )
    .unwrap();
    assert_refused(
        &dir,
        "big_g",
        [&single, &big_g, &sdxl_encoder],
        "",
        &[ADAPTER_KEY],
        &[shown(&big_g), shown(&sdxl_encoder)],
    );

    // An SD1.5 single file (the tiny SD1.5 folder in the LDM layout, configs from shapes):
    // plain it plans; micro-conditioning keys are refused, and so is the SDXL adapter.
    let ldm = dir.join("ldm");
    common::run_python(
        "ldm_write_tiny.py",
        &[
            ldm.to_str().unwrap(),
            sd15.join("pipeline").to_str().unwrap(),
        ],
    );
    let sd15_single = ldm.join("ldm.safetensors");
    let from_shapes = format!(
        "{} (UNet config from its tensor shapes)",
        shown(&sd15_single)
    );
    let set = [sd15_single.as_path(), &sd15_adapter, &sd15_encoder];
    let (file, _) = plan_experiment(&dir, "sd15_plain", set, "");
    let (ok, out) = plan(&file, &dir);
    assert!(ok, "{out}");
    assert_refused(
        &dir,
        "sd15_micro",
        set,
        micro,
        &[
            At {
                needle: "crops_coords_top_left",
                key: " (defaults.crops_coords_top_left)",
            },
            PIPELINE_KEY,
        ],
        &[
            "crops_coords_top_left=8x4".into(),
            from_shapes.clone(),
            "text_time".into(),
        ],
    );
    assert_refused(
        &dir,
        "sdxl_adapter_on_sd15",
        [&sd15_single, &sdxl_adapter, &sd15_encoder],
        "",
        &[ADAPTER_KEY],
        &[shown(&sdxl_adapter), from_shapes],
    );
}
