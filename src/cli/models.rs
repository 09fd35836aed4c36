//! `negimg models`: create (random) model sets.
use super::Globals;
use crate::models::{clip_model, clip_text, clip_vision, tokenizer, unet, vae};
use crate::params::AdapterKind;
use crate::pipeline::{RandomPreset, write_random_adapter};
use crate::sampling::SchedulerConfig;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Write a complete model set with deterministic random weights (for tests and benchmarks).
    InitRandom(InitRandomArgs),
    /// Download every model an experiment file names into the Hugging Face cache.
    Fetch(super::models_fetch::FetchArgs),
    /// Resolve an experiment's models without downloading: sizes, hashes, names and shapes.
    Check(super::models_fetch::CheckArgs),
}

#[derive(clap::Args, Debug)]
pub struct InitRandomArgs {
    /// tiny: a few MB, fast on a CPU at 64x64; sd15: the real shapes (several GB).
    #[arg(long, default_value = "tiny")]
    pub preset: RandomPreset,
    /// Output folder (created; must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
}

pub fn run(args: ModelsArgs, _g: &Globals) -> Result<()> {
    match args.command {
        ModelsCommand::InitRandom(a) => {
            init_random(a.preset, &a.out, a.seed)?;
            println!("{}", a.out.display());
            Ok(())
        }
        ModelsCommand::Fetch(a) => super::models_fetch::fetch(a, _g),
        ModelsCommand::Check(a) => super::models_fetch::check(a, _g),
    }
}

/// Writes a random model set to `out` (see [`write_random_set`]), building it in a sibling
/// temporary folder and renaming it into place, so a reader never sees a half-written set.
pub fn init_random(preset: RandomPreset, out: &Path, seed: i64) -> Result<()> {
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{}: exists and is not empty; choose a new folder",
            out.display()
        );
    }
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("models");
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = write_random_set(preset, &tmp, seed);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if out.exists() {
        std::fs::remove_dir(out).with_context(|| format!("cannot replace {}", out.display()))?;
    }
    std::fs::rename(&tmp, out)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()))
}

/// The model set layout: `pipeline/` (diffusers: model_index.json, unet, vae, text_encoder,
/// tokenizer with the real CLIP vocabulary, scheduler with the demo's DDIM config),
/// one adapter file per kind (`crate::roles::adapter_file_name`), `image_encoder/`
/// (CLIPVisionModelWithProjection) and `scorer/` (CLIPModel).
pub fn write_random_set(preset: RandomPreset, dir: &Path, seed: i64) -> Result<()> {
    let shapes = preset.shapes();
    let vocab = tokenizer::find_open_clip_vocab()?;
    let pipeline = dir.join("pipeline");
    std::fs::create_dir_all(&pipeline)
        .with_context(|| format!("cannot create {}", pipeline.display()))?;
    if let Some(text_2) = &shapes.text_2 {
        clip_text::write_random_model_with_projection(
            &pipeline.join("text_encoder_2"),
            text_2,
            seed + 8,
        )?;
        tokenizer::write_tokenizer_folder_padded(&pipeline.join("tokenizer_2"), &vocab, "!")?;
    }
    let sdxl = shapes.text_2.is_some();
    let index = crate::weights::pipeline_folder::model_index_json(sdxl, true);
    write_json(&pipeline.join("model_index.json"), &index)?;
    unet::write_random_model(&pipeline.join("unet"), &shapes.unet, seed + 1, false)?;
    vae::write_random_model(&pipeline.join("vae"), &shapes.vae, seed + 2, false)?;
    clip_text::write_random_model(&pipeline.join("text_encoder"), &shapes.text, seed + 3)?;
    tokenizer::write_tokenizer_folder(&pipeline.join("tokenizer"), &vocab)?;
    write_json(
        &pipeline.join("scheduler/scheduler_config.json"),
        &SchedulerConfig::sd15_ddim().to_config_json(),
    )?;
    clip_vision::write_random_model(&dir.join("image_encoder"), &shapes.vision, seed + 4)?;
    // Seeds 5 and 6 as before the other kinds came, so older sets stay reproducible. An
    // SDXL set has the two kinds h94/IP-Adapter's sdxl_models has for a ViT-H encoder.
    let kinds: &[(AdapterKind, i64)] = match preset.is_sdxl() {
        false => &[
            (AdapterKind::Base, 5),
            (AdapterKind::Plus, 6),
            (AdapterKind::Light, 8),
            (AdapterKind::PlusFace, 9),
            (AdapterKind::FullFace, 10),
        ],
        true => &[(AdapterKind::Base, 5), (AdapterKind::Plus, 6)],
    };
    for &(kind, s) in kinds {
        let name = match preset.is_sdxl() {
            false => Some(crate::roles::adapter_file_name(kind)),
            true => crate::roles::sdxl_adapter_file_name(kind),
        };
        let name = name.expect("every kind written has a file name");
        write_random_adapter(
            &dir.join(name),
            kind,
            &shapes.unet,
            &shapes.vision,
            seed + s,
        )?;
    }
    let scorer = match preset {
        RandomPreset::Tiny | RandomPreset::TinySd15 | RandomPreset::TinySdxl => {
            clip_model::ClipConfig::tiny()
        }
        RandomPreset::Sd15 | RandomPreset::Sdxl => clip_model::ClipConfig::vit_l14(),
    };
    clip_model::write_random_model(&dir.join("scorer"), &scorer, seed + 7, &vocab)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
