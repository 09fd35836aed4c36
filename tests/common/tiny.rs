//! The tiny random model set shared by the integration tests.
use std::path::PathBuf;
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
