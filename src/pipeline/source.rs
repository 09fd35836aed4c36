//! Where a pipeline's models come from. A diffusers folder and a single-file LDM checkpoint
//! both implement [`PipelineSource`], so `run`, `generate`, `bench` and `models check` load
//! through the same code.
use super::single_file::{self, Family, LdmCheckpoint};
use crate::models::clip_text::{ClipTextConfig, ClipTextModel, ClipTextModelWithProjection};
use crate::models::tokenizer::{
    ClipTokenizer, find_open_clip_vocab, write_tokenizer_folder_padded,
};
use crate::models::unet::{IpLayout, UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig, VaeParts};
use crate::sampling::SchedulerConfig;
use crate::weights::pipeline_folder::{Component, PipelineFolder, model_index_json};
use crate::weights::{TensorFile, TensorSource};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// The models of a Stable Diffusion pipeline, read from some file layout.
pub trait PipelineSource {
    fn tokenizer(&self) -> Result<ClipTokenizer>;
    fn text_encoder(&self, device: Device, kind: Kind) -> Result<ClipTextModel>;
    /// SDXL's second tokenizer and text encoder, where the pipeline has them.
    fn text_encoder_2(&self, device: Device, kind: Kind) -> Result<Option<SecondTextEncoder>>;
    /// Whether an empty negative prompt conditions on zeros (SDXL's
    /// `force_zeros_for_empty_prompt`) rather than on the encoding of "".
    fn force_zeros_for_empty_prompt(&self) -> Result<bool>;
    /// The UNet, with room for IP-Adapter weights.
    fn unet(&self, device: Device, kind: Kind) -> Result<UNet2DConditionModel>;
    /// The pipeline's own VAE, where it has one.
    fn vae(&self) -> Result<Option<VaeFile>>;
    fn scheduler_config(&self) -> Result<SchedulerConfig>;
}

/// SDXL's `tokenizer_2` and `text_encoder_2`.
pub struct SecondTextEncoder {
    pub tokenizer: ClipTokenizer,
    pub model: ClipTextModelWithProjection,
}

/// Opens `path`: a single-file checkpoint (`.safetensors`, `.ckpt`) or a diffusers folder
/// (with `prefer_fp16`, its `*.fp16.safetensors` variants win where both exist).
pub fn open(path: &Path, prefer_fp16: bool) -> Result<Box<dyn PipelineSource>> {
    if single_file::is_single_file(path) {
        Ok(Box::new(single_file::open_single_file(path)?))
    } else {
        Ok(Box::new(PipelineFolder::open_with(path, prefer_fp16)?))
    }
}

/// What a pipeline's configs and safetensors headers tell before any weights load (no
/// tensor data is read): `negimg plan` checks the experiment against it.
pub struct PipelineHeader {
    pub unet: UNet2DConditionConfig,
    /// Where the UNet config comes from, for messages: a config.json, or the single file
    /// whose tensor shapes it is inferred from.
    pub unet_origin: String,
    /// Whether the pipeline has SDXL's second text encoder.
    pub text_encoder_2: bool,
}

/// The [`PipelineHeader`] of the pipeline at `path`: a diffusers folder's `unet/config.json`
/// and model_index.json, or a single file's header and configs (its own config inference,
/// [`LdmCheckpoint::unet_config`]). `None` where the folder's UNet config is not on disk yet.
pub fn read_header(path: &Path) -> Result<Option<PipelineHeader>> {
    if single_file::is_single_file(path) {
        let ckpt = single_file::open_single_file(path)?;
        let unet_origin = match ckpt.config_file("unet/config.json") {
            Some(config) => config.display().to_string(),
            None => format!("{} (UNet config from its tensor shapes)", path.display()),
        };
        return Ok(Some(PipelineHeader {
            unet: ckpt.unet_config()?,
            unet_origin,
            text_encoder_2: ckpt.family() == Family::Sdxl,
        }));
    }
    let config = path.join("unet/config.json");
    if !config.is_file() {
        return Ok(None);
    }
    Ok(Some(PipelineHeader {
        unet: UNet2DConditionConfig::from_json_file(&config)?,
        unet_origin: config.display().to_string(),
        text_encoder_2: PipelineFolder::open(path)?.text_encoder_2.is_some(),
    }))
}

/// Where a VAE's weights are, so that it can be loaded again (in float32, when an fp16
/// decode overflows).
#[derive(Clone, Debug)]
pub enum VaeFile {
    /// A diffusers component: config.json and one weight file.
    Component(Component),
    /// The VAE inside a single-file checkpoint.
    SingleFile {
        path: PathBuf,
        config: Box<AutoencoderKLConfig>,
    },
}

impl VaeFile {
    /// `[models] vae`: a diffusers VAE folder, or a weight file with config.json beside it.
    pub fn from_path(path: &Path, prefer_fp16: bool) -> Result<VaeFile> {
        if path.is_file() {
            let parent = path.parent().unwrap_or(Path::new("."));
            return Ok(VaeFile::Component(Component {
                dir: parent.to_path_buf(),
                config: parent.join("config.json"),
                weights: path.to_path_buf(),
            }));
        }
        let component = Component::open(path, "diffusion_pytorch_model", prefer_fp16)?;
        Ok(VaeFile::Component(component))
    }

    pub fn load(&self, device: Device, kind: Kind) -> Result<AutoencoderKL> {
        self.load_parts(device, kind, VaeParts::DecoderOnly)
    }

    pub fn load_parts(&self, device: Device, kind: Kind, parts: VaeParts) -> Result<AutoencoderKL> {
        match self {
            VaeFile::Component(c) => {
                let cfg = AutoencoderKLConfig::from_json_file(&c.config)?;
                AutoencoderKL::from_source(
                    &TensorFile::open(&c.weights)?,
                    &cfg,
                    device,
                    kind,
                    parts,
                )
            }
            VaeFile::SingleFile { path, config } => {
                let ckpt = single_file::open_single_file(path)?;
                AutoencoderKL::from_source(ckpt.vae()?.as_ref(), config, device, kind, parts)
            }
        }
    }
}

fn unet_from(
    source: &dyn TensorSource,
    cfg: &UNet2DConditionConfig,
    device: Device,
    kind: Kind,
) -> Result<UNet2DConditionModel> {
    let ip = Some(IpLayout::for_config(cfg));
    UNet2DConditionModel::from_source(source, cfg, device, kind, ip)
}

impl PipelineSource for PipelineFolder {
    fn tokenizer(&self) -> Result<ClipTokenizer> {
        ClipTokenizer::from_folder(&self.tokenizer)
    }

    fn text_encoder(&self, device: Device, kind: Kind) -> Result<ClipTextModel> {
        let cfg = ClipTextConfig::from_file(&self.text_encoder.config)?;
        ClipTextModel::load_from(
            &TensorFile::open(&self.text_encoder.weights)?,
            &cfg,
            device,
            kind,
        )
    }

    fn text_encoder_2(&self, device: Device, kind: Kind) -> Result<Option<SecondTextEncoder>> {
        let Some((component, tokenizer)) = &self.text_encoder_2 else {
            return Ok(None);
        };
        let cfg = ClipTextConfig::from_file(&component.config)?;
        let model = ClipTextModelWithProjection::load_from(
            &TensorFile::open(&component.weights)?,
            &cfg,
            device,
            kind,
        )
        .with_context(|| format!("text_encoder_2 of {}", self.root.display()))?;
        Ok(Some(SecondTextEncoder {
            tokenizer: ClipTokenizer::from_folder(tokenizer)?,
            model,
        }))
    }

    fn force_zeros_for_empty_prompt(&self) -> Result<bool> {
        Ok(self.force_zeros_for_empty_prompt)
    }

    fn unet(&self, device: Device, kind: Kind) -> Result<UNet2DConditionModel> {
        let cfg = UNet2DConditionConfig::from_json_file(&self.unet.config)?;
        unet_from(&TensorFile::open(&self.unet.weights)?, &cfg, device, kind)
    }

    fn vae(&self) -> Result<Option<VaeFile>> {
        Ok(Some(VaeFile::Component(self.vae.clone())))
    }

    fn scheduler_config(&self) -> Result<SchedulerConfig> {
        match &self.scheduler_config {
            Some(path) => SchedulerConfig::from_file(path),
            None => Ok(SchedulerConfig::sd15_ddim()),
        }
    }
}

/// A single file's tokenizers: the configs folder's `tokenizer/` and `tokenizer_2/` where it
/// has them, else CLIP's vocabulary from open_clip padding with `<|endoftext|>` (SD1.5's) and
/// `!` (SDXL base's `tokenizer_2`).
const SINGLE_FILE_TOKENIZERS: [(&str, &str); 2] =
    [("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")];

/// The configs folder's `folder/` (e.g. `tokenizer_2`), where it has a vocab.json.
fn configs_tokenizer(ckpt: &LdmCheckpoint, folder: &str) -> Option<PathBuf> {
    let vocab = ckpt.config_file(&format!("{folder}/vocab.json"))?;
    Some(vocab.parent().unwrap_or(Path::new(".")).to_path_buf())
}

fn open_clip_vocab() -> Result<PathBuf> {
    find_open_clip_vocab()
        .context("a single-file checkpoint has no tokenizer; negimg uses open_clip's vocabulary")
}

/// The single file's tokenizer `k` of [`SINGLE_FILE_TOKENIZERS`].
fn single_file_tokenizer(ckpt: &LdmCheckpoint, k: usize) -> Result<ClipTokenizer> {
    let (folder, pad) = SINGLE_FILE_TOKENIZERS[k];
    match configs_tokenizer(ckpt, folder) {
        Some(dir) => ClipTokenizer::from_folder(&dir),
        None => ClipTokenizer::from_open_clip_vocab_padded(&open_clip_vocab()?, pad),
    }
}

/// Writes into `dir` the diffusers pipeline folder of the single file `ckpt` without its
/// weights: model_index.json and every config, tokenizer and scheduler config negimg uses
/// for it (the configs folder's files where it has them, else the configs inferred from the
/// tensor shapes, open_clip's vocabulary and the demo's DDIM), so that diffusers'
/// `from_single_file(file, config=dir)` builds the models negimg builds.
pub fn write_single_file_configs(ckpt: &LdmCheckpoint, dir: &Path) -> Result<()> {
    let write = |rel: &str, text: String| -> Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    let sdxl = ckpt.family() == Family::Sdxl;
    let index = model_index_json(sdxl, ckpt.force_zeros_for_empty_prompt()?);
    write("model_index.json", serde_json::to_string_pretty(&index)?)?;
    write("unet/config.json", ckpt.unet_config()?.to_config_json())?;
    if ckpt.has_vae() {
        write("vae/config.json", ckpt.vae_config()?.to_config_json())?;
    }
    let text = ckpt.text_encoder_config()?.to_config_json();
    write(
        "text_encoder/config.json",
        serde_json::to_string_pretty(&text)?,
    )?;
    if sdxl {
        let mut text_2 = ckpt.text_encoder_2_config()?.to_config_json();
        text_2["architectures"] = serde_json::json!(["CLIPTextModelWithProjection"]);
        write(
            "text_encoder_2/config.json",
            serde_json::to_string_pretty(&text_2)?,
        )?;
    }
    for (folder, pad) in &SINGLE_FILE_TOKENIZERS[..if sdxl { 2 } else { 1 }] {
        match configs_tokenizer(ckpt, folder) {
            Some(from) => copy_files(&from, &dir.join(folder))?,
            None => write_tokenizer_folder_padded(&dir.join(folder), &open_clip_vocab()?, pad)?,
        }
    }
    let scheduler = match ckpt.config_file("scheduler/scheduler_config.json") {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => serde_json::to_string_pretty(&SchedulerConfig::sd15_ddim().to_config_json())?,
    };
    write("scheduler/scheduler_config.json", scheduler)
}

/// Copies the files of the folder `from` (not its subfolders) into `to`.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let entries =
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            let target = to.join(path.file_name().unwrap_or_default());
            std::fs::copy(&path, &target).with_context(|| {
                format!("cannot copy {} to {}", path.display(), target.display())
            })?;
        }
    }
    Ok(())
}

/// A single file takes its configs, tokenizer and scheduler from
/// `<file name without extension>.configs/` beside it where that folder has them; otherwise
/// the model configs are inferred from the tensor shapes with SD1.x head counts (see
/// [`single_file`]), the tokenizer is open_clip's vocabulary (SD1.5's) and the scheduler
/// the demo's DDIM.
impl PipelineSource for LdmCheckpoint {
    fn tokenizer(&self) -> Result<ClipTokenizer> {
        single_file_tokenizer(self, 0)
    }

    fn text_encoder(&self, device: Device, kind: Kind) -> Result<ClipTextModel> {
        let cfg = self.text_encoder_config()?;
        ClipTextModel::load_from(self.text_encoder()?.as_ref(), &cfg, device, kind)
    }

    /// SDXL's OpenCLIP ViT-bigG, with `tokenizer_2` (CLIP's vocabulary padding with `!`,
    /// as SDXL base's `tokenizer_2/`).
    fn text_encoder_2(&self, device: Device, kind: Kind) -> Result<Option<SecondTextEncoder>> {
        if self.family() != Family::Sdxl {
            return Ok(None);
        }
        let cfg = self.text_encoder_2_config()?;
        let model = ClipTextModelWithProjection::load_from(
            LdmCheckpoint::text_encoder_2(self)?.as_ref(),
            &cfg,
            device,
            kind,
        )?;
        Ok(Some(SecondTextEncoder {
            tokenizer: single_file_tokenizer(self, 1)?,
            model,
        }))
    }

    fn force_zeros_for_empty_prompt(&self) -> Result<bool> {
        LdmCheckpoint::force_zeros_for_empty_prompt(self)
    }

    fn unet(&self, device: Device, kind: Kind) -> Result<UNet2DConditionModel> {
        let cfg = self.unet_config()?;
        unet_from(LdmCheckpoint::unet(self)?.as_ref(), &cfg, device, kind)
    }

    fn vae(&self) -> Result<Option<VaeFile>> {
        if !self.has_vae() {
            return Ok(None);
        }
        Ok(Some(VaeFile::SingleFile {
            path: self.path().to_path_buf(),
            config: Box::new(self.vae_config()?),
        }))
    }

    fn scheduler_config(&self) -> Result<SchedulerConfig> {
        match self.config_file("scheduler/scheduler_config.json") {
            Some(path) => SchedulerConfig::from_file(&path),
            None => Ok(SchedulerConfig::sd15_ddim()),
        }
    }
}
