//! The tiny random model set shared by the integration tests.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `target/test-models/tiny`, written once by `negimg models init-random --preset tiny`
/// (the command builds in a temporary folder and renames it into place, so test binaries
/// running at the same time never see a half-written set; the loser of a race finds the
/// winner's folder). Layout: `pipeline/`, `image_encoder/`, `scorer/`,
/// `ip-adapter_sd15.safetensors`, `ip-adapter-plus_sd15.safetensors`.
pub fn tiny_models() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| random_models("tiny")).clone()
}

/// `target/test-models/tiny_sd15`: as [`tiny_models`], with a UNet of SD1.5's block layout
/// (16 cross-attention blocks; `--preset tiny_sd15`).
pub fn tiny_sd15_models() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| random_models("tiny_sd15")).clone()
}

/// `target/test-models/tiny_sdxl`: SDXL's layout at tiny widths (`--preset tiny_sdxl`):
/// `pipeline/` with `text_encoder_2/` and `tokenizer_2/`, `image_encoder/`, `scorer/`,
/// `ip-adapter_sdxl_vit-h.safetensors`, `ip-adapter-plus_sdxl_vit-h.safetensors`.
pub fn tiny_sdxl_models() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| random_models("tiny_sdxl")).clone()
}

/// The `[models]` table of an experiment on the model set in `models` (without a scorer).
pub fn models_toml(models: &std::path::Path) -> String {
    let m = models.display();
    format!(
        "[models]\n\
         pipeline = \"{m}/pipeline\"\n\
         ip_adapter = {{ base = \"{m}/ip-adapter_sd15.safetensors\" }}\n\
         image_encoder = \"{m}/image_encoder\"\n"
    )
}

fn random_models(preset: &str) -> PathBuf {
    let dir = super::repo().join("target/test-models").join(preset);
    let ready = || dir.join("pipeline/model_index.json").is_file();
    if !ready() {
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let out = std::process::Command::new(super::negimg_bin())
            .args(["models", "init-random", "--preset", preset, "--out"])
            .arg(&dir)
            .output()
            .expect("cannot run negimg");
        assert!(
            ready(),
            "negimg models init-random failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// The tiny SDXL pipeline (linked) with a ViT-bigG-shaped tiny image encoder ([`big_g_vision`],
/// seed 20) and a random `ip-adapter_sdxl.safetensors` for it (seed 21), in the fresh scratch
/// folder `scratch_name`: the set of h94's `sdxl_models/` base adapter.
pub fn big_g_sdxl_models(scratch_name: &str) -> PathBuf {
    use negimg::models::unet::UNet2DConditionConfig;
    let tiny = tiny_sdxl_models();
    let dir = super::scratch(scratch_name);
    std::os::unix::fs::symlink(tiny.join("pipeline"), dir.join("pipeline")).unwrap();
    let vision = big_g_vision();
    negimg::models::clip_vision::write_random_model(&dir.join("image_encoder"), &vision, 20)
        .unwrap();
    let unet =
        UNet2DConditionConfig::from_json_file(&tiny.join("pipeline/unet/config.json")).unwrap();
    let adapter = dir.join(negimg::roles::SDXL_BIG_G_ADAPTER);
    negimg::pipeline::write_random_adapter(
        &adapter,
        negimg::params::AdapterKind::Base,
        &unet,
        &vision,
        21,
    )
    .unwrap();
    dir
}

/// ViT-bigG's layout at tiny widths (exact GELU, hidden 48 wider than the projection 40;
/// the tiny ViT-H-shaped encoder is 32 / 16).
pub fn big_g_vision() -> negimg::models::clip_vision::ClipVisionConfig {
    negimg::models::clip_vision::ClipVisionConfig {
        hidden_size: 48,
        intermediate_size: 96,
        projection_dim: 40,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        hidden_act: negimg::models::clip_text::Activation::Gelu,
        ..negimg::models::clip_vision::ClipVisionConfig::tiny()
    }
}

/// An SDXL model set in two forms with the same weights.
pub struct SdxlSingleFileSet {
    /// `pipeline/` (a diffusers folder), `image_encoder`, `ip-adapter_sdxl_vit-h.safetensors`.
    pub folder_set: PathBuf,
    /// `pipeline.safetensors` (SGM layout) with `pipeline.configs/`, the same encoder and
    /// adapter.
    pub single_set: PathBuf,
}

impl SdxlSingleFileSet {
    pub fn single_file(&self) -> PathBuf {
        self.single_set.join("pipeline.safetensors")
    }

    pub fn folder(&self) -> PathBuf {
        self.folder_set.join("pipeline")
    }
}

/// The tiny SDXL set (`models init-random --preset tiny_sdxl`) with a 48-wide second text
/// encoder and a UNet of cross-attention width 32 + 48 = 80 for it, in the fresh scratch
/// folder `scratch_name`, also as an SGM single file written by
/// tests/reference/sgm_write_sdxl.py: diffusers' from_single_file tells SDXL's two text
/// encoders apart by width (768 and 1280), so with tiny_sdxl's two 32-wide ones it would load
/// `conditioner.embedders.0` as both.
pub fn sdxl_single_file_set(scratch_name: &str) -> SdxlSingleFileSet {
    use negimg::models::clip_text::{self, Activation, ClipTextConfig};
    use negimg::models::unet::{self, OneOrMany, UNet2DConditionConfig};
    let dir = super::scratch(scratch_name);
    let tiny = tiny_sdxl_models();
    let folder_set = dir.join("folder_set");
    let pipeline = folder_set.join("pipeline");
    copy_dir(
        &tiny.join("pipeline"),
        &pipeline,
        &["unet", "text_encoder_2"],
    );
    let text_2 = ClipTextConfig {
        hidden_size: 48,
        projection_dim: 32,
        hidden_act: Activation::Gelu,
        ..ClipTextConfig::tiny()
    };
    clip_text::write_random_model_with_projection(&pipeline.join("text_encoder_2"), &text_2, 21)
        .unwrap();
    let unet_cfg = UNet2DConditionConfig {
        cross_attention_dim: OneOrMany::One(32 + 48),
        ..UNet2DConditionConfig::tiny_sdxl()
    };
    unet::write_random_model(&pipeline.join("unet"), &unet_cfg, 22, false).unwrap();
    let adapter = folder_set.join("ip-adapter_sdxl_vit-h.safetensors");
    negimg::pipeline::write_random_adapter(
        &adapter,
        negimg::params::AdapterKind::Base,
        &unet_cfg,
        &negimg::models::clip_vision::ClipVisionConfig::tiny(),
        23,
    )
    .unwrap();
    let single_set = dir.join("single_set");
    std::fs::create_dir_all(&single_set).unwrap();
    for set in [&folder_set, &single_set] {
        std::os::unix::fs::symlink(tiny.join("image_encoder"), set.join("image_encoder")).unwrap();
    }
    std::os::unix::fs::symlink(&adapter, single_set.join(adapter.file_name().unwrap())).unwrap();
    let file = single_set.join("pipeline.safetensors");
    super::run_python(
        "sgm_write_sdxl.py",
        &[pipeline.to_str().unwrap(), file.to_str().unwrap()],
    );
    SdxlSingleFileSet {
        folder_set,
        single_set,
    }
}

/// Copies the folder `from` to `to`, leaving out its subfolders named in `skip`.
pub fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name), &[]);
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}
