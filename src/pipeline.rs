//! The generation loop: models loaded once; a batch of cells -> latents -> images.
//!
//! One UNet call per step serves a whole batch: rows `[uncond of every cell; cond of every
//! cell]`, each row with its own text embedding, IP-Adapter image tokens and IP scale (from
//! its branch's weight and window at that step, see [`crate::sampling::guidance`]), and each
//! cell with its own guidance scale. Cells may differ in everything but
//! [`GenParams::batch_key`]; batching does not change the result (each row is computed as it
//! would be alone, up to float rounding).
//!
//! Noise: each cell draws its initial latents on the CPU with `tch::manual_seed(seed)` and
//! `randn([1, 4, h/f, w/f])` in float32, so seed N gives diffusers' image for
//! `generator=torch.Generator("cpu").manual_seed(N)` (one image per call) on any device.
use crate::images::load_rgb;
use crate::models::clip_text::{ClipTextConfig, ClipTextModel};
use crate::models::clip_vision::{ClipVisionConfig, ClipVisionModelWithProjection};
use crate::models::ip_adapter::{AdapterFile, ImageProj};
use crate::models::preprocess::clip_pixels_batch;
use crate::models::tokenizer::{ClipTokenizer, find_open_clip_vocab};
use crate::models::unet::{IpLayout, UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::params::{AdapterKind, GenParams, NoImage};
use crate::sampling::{SchedulerConfig, batch::plan_batches, guidance, make_scheduler};
use crate::weights::pipeline_folder::{Component, PipelineFolder};
use crate::weights::{TensorFile, TensorSource, ldm, load_var_store};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor, nn};

/// Local files of every model a run uses (`hf:` references are resolved before this).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSet {
    /// A diffusers-layout folder, or a single-file LDM checkpoint (`.safetensors`).
    pub pipeline: PathBuf,
    /// A VAE folder that replaces the pipeline's own.
    pub vae: Option<PathBuf>,
    pub ip_adapter_base: Option<PathBuf>,
    pub ip_adapter_plus: Option<PathBuf>,
    /// CLIPVisionModelWithProjection folder.
    pub image_encoder: PathBuf,
}

impl ModelSet {
    /// The layout `negimg models init-random --out DIR` writes: `DIR/pipeline`,
    /// `DIR/ip-adapter_sd15.safetensors`, `DIR/ip-adapter-plus_sd15.safetensors`,
    /// `DIR/image_encoder` (adapters that are absent are left out).
    pub fn from_models_dir(dir: &Path) -> ModelSet {
        let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        ModelSet {
            pipeline: dir.join("pipeline"),
            vae: None,
            ip_adapter_base: file("ip-adapter_sd15.safetensors"),
            ip_adapter_plus: file("ip-adapter-plus_sd15.safetensors"),
            image_encoder: dir.join("image_encoder"),
        }
    }
}

/// What became of one cell.
#[derive(Clone, Debug)]
pub enum CellOutcome {
    Image(image::RgbImage),
    /// The cell could not be made (e.g. NaN in the latents); the others go on.
    Failed(String),
}

/// A cell's decoded image as float RGB `[3, H, W]` in `[0, 1]` (before 8-bit rounding), or
/// why it failed.
pub type FloatOutcome = std::result::Result<Tensor, String>;

/// Where the VAE came from, to load it again in float32 when fp16 decoding overflows.
enum VaeOrigin {
    File {
        weights: PathBuf,
        cfg: Box<AutoencoderKLConfig>,
    },
    Single {
        path: PathBuf,
        cfg: Box<AutoencoderKLConfig>,
    },
    Memory,
}

struct Adapter {
    file: AdapterFile,
    proj: ImageProj,
}

/// Models loaded once; generates batches of cells.
pub struct Pipeline {
    device: Device,
    kind: Kind,
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    vae_origin: VaeOrigin,
    vae_fp32: Option<AutoencoderKL>,
    /// Image pixels per latent pixel (8 for SD1.5).
    vae_scale: usize,
    encoder: ClipVisionModelWithProjection,
    adapters: HashMap<AdapterKind, Adapter>,
    /// The adapter whose `to_k_ip`/`to_v_ip` weights the UNet holds now.
    unet_adapter: Option<AdapterKind>,
    scheduler_cfg: SchedulerConfig,
    text_cache: HashMap<String, Tensor>,
    image_cache: HashMap<(PathBuf, AdapterKind), Tensor>,
    no_image_cache: HashMap<(AdapterKind, NoImage), Tensor>,
    max_batch: usize,
}

/// Loads a transformers `CLIPTextModel` from any tensor source.
fn text_encoder_from(
    source: &dyn TensorSource,
    cfg: &ClipTextConfig,
    device: Device,
    kind: Kind,
) -> Result<ClipTextModel> {
    let mut vs = nn::VarStore::new(device);
    vs.set_kind(kind);
    let model = ClipTextModel::new(vs.root() / "text_model", cfg);
    vs.freeze();
    let keys = crate::weights::safetensors_io::with_or_without_prefix(source, "text_model");
    load_var_store(&vs, source, keys)?;
    Ok(model)
}

impl Pipeline {
    /// Loads every model of `models` on `device` in `kind` (fp16 on CUDA by default).
    ///
    /// `models.pipeline` is a diffusers folder ([`PipelineFolder`]) or a single-file LDM
    /// checkpoint. A single file takes its configs, tokenizer and scheduler from
    /// `<file name without extension>.configs/` beside it where that folder has them;
    /// otherwise the model configs are inferred from the tensor shapes with SD1.x head counts
    /// (see [`ldm`]), the tokenizer is open_clip's vocabulary (SD1.5's) and the scheduler
    /// the demo's DDIM.
    pub fn load(models: &ModelSet, device: Device, kind: Kind) -> Result<Pipeline> {
        let fp16 = kind == Kind::Half;
        let ip = |cfg: &UNet2DConditionConfig| Some(IpLayout::for_config(cfg));
        let (tokenizer, text_encoder, unet, mut vae, mut vae_origin, scheduler_cfg);
        if ldm::is_single_file(&models.pipeline) {
            let ckpt = ldm::open_single_file(&models.pipeline)?;
            tokenizer = match ckpt.config_file("tokenizer/vocab.json") {
                Some(vocab) => {
                    ClipTokenizer::from_folder(vocab.parent().unwrap_or(Path::new(".")))?
                }
                None => {
                    let vocab = find_open_clip_vocab().context(
                        "a single-file checkpoint has no tokenizer; negimg uses open_clip's \
                         vocabulary",
                    )?;
                    ClipTokenizer::from_open_clip_vocab(&vocab)?
                }
            };
            text_encoder = text_encoder_from(
                ckpt.text_encoder()?.as_ref(),
                &ckpt.text_encoder_config()?,
                device,
                kind,
            )?;
            let ucfg = ckpt.unet_config()?;
            unet = UNet2DConditionModel::from_source(
                ckpt.unet()?.as_ref(),
                &ucfg,
                device,
                kind,
                ip(&ucfg),
            )?;
            vae = None;
            vae_origin = VaeOrigin::Memory;
            if models.vae.is_none() {
                let cfg = ckpt.vae_config()?;
                vae = Some(AutoencoderKL::from_source(
                    ckpt.vae()?.as_ref(),
                    &cfg,
                    device,
                    kind,
                    false,
                )?);
                vae_origin = VaeOrigin::Single {
                    path: models.pipeline.clone(),
                    cfg: Box::new(cfg),
                };
            }
            scheduler_cfg = match ckpt.config_file("scheduler/scheduler_config.json") {
                Some(path) => SchedulerConfig::from_file(&path)?,
                None => SchedulerConfig::sd15_ddim(),
            };
        } else {
            let folder = PipelineFolder::open_with(&models.pipeline, fp16)?;
            tokenizer = ClipTokenizer::from_folder(&folder.tokenizer)?;
            let tcfg = ClipTextConfig::from_file(&folder.text_encoder.config)?;
            text_encoder = text_encoder_from(
                &TensorFile::open(&folder.text_encoder.weights)?,
                &tcfg,
                device,
                kind,
            )?;
            let ucfg = UNet2DConditionConfig::from_json_file(&folder.unet.config)?;
            unet = UNet2DConditionModel::from_source(
                &TensorFile::open(&folder.unet.weights)?,
                &ucfg,
                device,
                kind,
                ip(&ucfg),
            )?;
            vae = None;
            vae_origin = VaeOrigin::Memory;
            if models.vae.is_none() {
                let (v, origin) = load_vae(&folder.vae, device, kind)?;
                vae = Some(v);
                vae_origin = origin;
            }
            scheduler_cfg = match &folder.scheduler_config {
                Some(path) => SchedulerConfig::from_file(path)?,
                None => SchedulerConfig::sd15_ddim(),
            };
        }
        if let Some(dir) = &models.vae {
            let component = if dir.is_file() {
                let parent = dir.parent().unwrap_or(Path::new("."));
                Component {
                    dir: parent.to_path_buf(),
                    config: parent.join("config.json"),
                    weights: dir.clone(),
                }
            } else {
                Component::open(dir, "diffusion_pytorch_model", fp16)?
            };
            let (v, origin) = load_vae(&component, device, kind)?;
            vae = Some(v);
            vae_origin = origin;
        }
        let vae = vae.ok_or_else(|| anyhow!("no VAE"))?;
        let encoder = ClipVisionModelWithProjection::load(&models.image_encoder, device, kind)
            .with_context(|| format!("image encoder {}", models.image_encoder.display()))?;
        let mut adapters = HashMap::new();
        for (want, path) in [
            (AdapterKind::Base, &models.ip_adapter_base),
            (AdapterKind::Plus, &models.ip_adapter_plus),
        ] {
            let Some(path) = path else { continue };
            let file = AdapterFile::open(path)?;
            if file.kind != want {
                bail!(
                    "{}: given as the {want} adapter, but its keys are those of a {} adapter",
                    path.display(),
                    file.kind
                );
            }
            let proj = ImageProj::load(&file, device, kind)?;
            adapters.insert(want, Adapter { file, proj });
        }
        Ok(Self::assemble(Parts {
            device,
            kind,
            tokenizer,
            text_encoder,
            unet,
            vae,
            vae_origin,
            encoder,
            adapters,
            scheduler_cfg,
        }))
    }

    /// A pipeline of random weights built in memory (no files but the small adapter files,
    /// written to `scratch`), at the shapes of `preset`: for speed benchmarks.
    pub fn random(
        preset: RandomPreset,
        device: Device,
        kind: Kind,
        scratch: &Path,
    ) -> Result<Pipeline> {
        let shapes = preset.shapes();
        let store = || {
            let mut vs = nn::VarStore::new(device);
            vs.set_kind(kind);
            vs
        };
        let (text_vs, unet_vs, vae_vs, enc_vs) = (store(), store(), store(), store());
        let text_encoder = ClipTextModel::new(text_vs.root() / "text_model", &shapes.text);
        let ip = Some(IpLayout::for_config(&shapes.unet));
        let unet = UNet2DConditionModel::new(unet_vs.root(), &shapes.unet, ip)?;
        let vae = AutoencoderKL::new(vae_vs.root(), &shapes.vae, false)?;
        let encoder = ClipVisionModelWithProjection::new(enc_vs.root(), &shapes.vision);
        for vs in [&text_vs, &unet_vs, &vae_vs, &enc_vs] {
            vs.variables().values().for_each(|v| {
                let _ = v.shallow_clone().set_requires_grad(false);
            });
        }
        let tokenizer = ClipTokenizer::from_open_clip_vocab(&find_open_clip_vocab()?)?;
        let mut adapters = HashMap::new();
        for kind_ in [AdapterKind::Base, AdapterKind::Plus] {
            let path = scratch.join(format!("random-{kind_}.safetensors"));
            write_random_adapter(&path, kind_, &shapes.unet, &shapes.vision, 7)?;
            let file = AdapterFile::open(&path)?;
            let proj = ImageProj::load(&file, device, kind)?;
            adapters.insert(kind_, Adapter { file, proj });
        }
        Ok(Self::assemble(Parts {
            device,
            kind,
            tokenizer,
            text_encoder,
            unet,
            vae,
            vae_origin: VaeOrigin::Memory,
            encoder,
            adapters,
            scheduler_cfg: SchedulerConfig::sd15_ddim(),
        }))
    }

    fn assemble(p: Parts) -> Pipeline {
        let vae_scale = p.vae.config().scale_factor() as usize;
        let mut pipeline = Pipeline {
            device: p.device,
            kind: p.kind,
            tokenizer: p.tokenizer,
            text_encoder: p.text_encoder,
            unet: p.unet,
            vae: p.vae,
            vae_origin: p.vae_origin,
            vae_fp32: None,
            vae_scale,
            encoder: p.encoder,
            adapters: p.adapters,
            unet_adapter: None,
            scheduler_cfg: p.scheduler_cfg,
            text_cache: HashMap::new(),
            image_cache: HashMap::new(),
            no_image_cache: HashMap::new(),
            max_batch: 1,
        };
        pipeline.max_batch = pipeline.estimate_max_batch(512, 512);
        pipeline
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The scheduler configuration in use (the pipeline folder's, else the demo's DDIM).
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler_cfg
    }

    /// Image pixels per latent pixel (8 for SD1.5): width and height must be multiples.
    pub fn vae_scale(&self) -> usize {
        self.vae_scale
    }

    /// The largest batch [`generate_all`](Self::generate_all) tries first.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    pub fn set_max_batch(&mut self, n: usize) {
        self.max_batch = n.max(1);
    }

    /// On CUDA: free memory over an estimated cost per image at `width` x `height` (about
    /// 0.75 GiB at 512x512 in fp16, VAE decode included; twice that in fp32), at most 64.
    /// On the CPU: 4.
    pub fn estimate_max_batch(&self, width: usize, height: usize) -> usize {
        let Device::Cuda(i) = self.device else {
            return 4;
        };
        let Some((free, _)) = cuda_mem_info(i) else {
            return 8;
        };
        let bytes_per_elem = if self.kind == Kind::Float { 2.0 } else { 1.0 };
        let per_image =
            0.75 * (1u64 << 30) as f64 * bytes_per_elem * (width * height) as f64 / (512.0 * 512.0);
        ((free as f64 * 0.8 / per_image) as usize).clamp(1, 64)
    }

    /// Generates `cells` (any mix) in batches of at most [`max_batch`](Self::max_batch) cells
    /// sharing a batch key, halving the batch and retrying on out-of-memory errors; the
    /// outcomes follow the order of `cells`. `progress(step, steps)` is called after each step
    /// of each batch.
    pub fn generate_all(
        &mut self,
        cells: &[GenParams],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<CellOutcome>> {
        let floats = self.generate_all_float(cells, progress)?;
        Ok(floats.into_iter().map(to_outcome).collect())
    }

    /// As [`generate_all`](Self::generate_all), with the float images.
    pub fn generate_all_float(
        &mut self,
        cells: &[GenParams],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<FloatOutcome>> {
        let mut out: Vec<Option<FloatOutcome>> = (0..cells.len()).map(|_| None).collect();
        let mut pending: Vec<Vec<usize>> = plan_batches(cells, self.max_batch);
        pending.reverse();
        while let Some(batch) = pending.pop() {
            let group: Vec<GenParams> = batch.iter().map(|&i| cells[i].clone()).collect();
            match self.generate_float_catching_oom(&group, progress) {
                Ok(results) => {
                    for (i, r) in batch.iter().zip(results) {
                        out[*i] = Some(r);
                    }
                }
                Err(BatchError::OutOfMemory(msg)) if batch.len() > 1 => {
                    let half = batch.len().div_ceil(2);
                    self.max_batch = half;
                    log::warn!(
                        "out of memory with a batch of {}; retrying with {half} ({msg})",
                        batch.len()
                    );
                    pending.push(batch[half..].to_vec());
                    pending.push(batch[..half].to_vec());
                }
                Err(BatchError::OutOfMemory(msg)) => {
                    bail!("out of memory with a batch of one image: {msg}")
                }
                Err(BatchError::Other(e)) => return Err(e),
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err("not generated".into())))
            .collect())
    }

    fn generate_float_catching_oom(
        &mut self,
        cells: &[GenParams],
        progress: &mut dyn FnMut(usize, usize),
    ) -> std::result::Result<Vec<FloatOutcome>, BatchError> {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.generate_float(cells, progress)
        }));
        let is_oom =
            |m: &str| m.contains("out of memory") || m.contains("CUDA error: out of memory");
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if is_oom(&format!("{e:#}")) => {
                Err(BatchError::OutOfMemory(format!("{e:#}")))
            }
            Ok(Err(e)) => Err(BatchError::Other(e)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                if is_oom(&msg) {
                    Err(BatchError::OutOfMemory(first_line(&msg)))
                } else {
                    Err(BatchError::Other(anyhow!("generation failed: {msg}")))
                }
            }
        }
    }

    /// Generates one batch of cells that share a [`GenParams::batch_key`].
    pub fn generate(
        &mut self,
        cells: &[GenParams],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<CellOutcome>> {
        Ok(self
            .generate_float(cells, progress)?
            .into_iter()
            .map(to_outcome)
            .collect())
    }

    /// As [`generate`](Self::generate), with the float images `[3, H, W]` in `[0, 1]`.
    pub fn generate_float(
        &mut self,
        cells: &[GenParams],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<FloatOutcome>> {
        tch::no_grad(|| self.generate_inner(cells, progress))
    }

    fn generate_inner(
        &mut self,
        cells: &[GenParams],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<FloatOutcome>> {
        let Some(first) = cells.first() else {
            return Ok(vec![]);
        };
        if let Some(c) = cells.iter().find(|c| c.batch_key() != first.batch_key()) {
            bail!(
                "cells of one batch must share steps, size, scheduler and adapter (seed {} differs from seed {})",
                c.seed,
                first.seed
            );
        }
        let (steps, width, height) = (first.steps, first.width, first.height);
        let f = self.vae_scale;
        if width == 0 || height == 0 || width % f != 0 || height % f != 0 {
            bail!(
                "image size {width}x{height}: width and height must be positive multiples of {f}"
            );
        }
        let b = cells.len() as i64;
        let mut scheduler = make_scheduler(first.scheduler, &self.scheduler_cfg, steps)?;

        // Conditioning rows: [uncond of each cell; cond of each cell].
        let mut texts = Vec::with_capacity(2 * cells.len());
        for c in cells {
            texts.push(self.text_embedding(c.uncond_text())?);
        }
        for c in cells {
            texts.push(self.text_embedding(&c.prompt)?);
        }
        let text = Tensor::cat(&texts, 0);
        let image_tokens = self.image_tokens(cells)?;

        // Initial noise, per cell, drawn on the CPU.
        let (h, w) = ((height / f) as i64, (width / f) as i64);
        let noise: Vec<Tensor> = cells.iter().map(|c| initial_noise(c.seed, h, w)).collect();
        let mut x = Tensor::cat(&noise, 0).to_device(self.device) * scheduler.init_noise_sigma();
        let cfg: Vec<f64> = cells.iter().map(|c| c.cfg).collect();
        let refs: Vec<&GenParams> = cells.iter().collect();
        let timesteps = scheduler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let x_in = scheduler.scale_model_input(&x, i);
            let rows = Tensor::cat(&[&x_in, &x_in], 0);
            let scale = guidance::ip_scale_tensor(&refs, i, steps, self.device, Kind::Float);
            let eps = self.unet.forward(
                &rows,
                t,
                &text,
                image_tokens.as_ref().map(|tok| (tok, &scale)),
            );
            let eps = guidance::combine(&eps.to_kind(Kind::Float), &cfg);
            x = scheduler.step(&eps, i, &x);
            progress(i + 1, steps);
        }

        // Decode; rows with NaN/inf latents fail, the others go on.
        let finite_latents = row_finite(&x);
        let scaling = self.vae.config().scaling_factor;
        let mut decoded = self.vae.decode(&(&x / scaling)).to_kind(Kind::Float);
        let mut finite_images = row_finite(&decoded);
        let bad: Vec<i64> = (0..b)
            .filter(|&r| finite_latents[r as usize] && !finite_images[r as usize])
            .collect();
        if !bad.is_empty() && self.kind != Kind::Float {
            // fp16 overflow in the VAE: decode those rows again in float32.
            let rows = Tensor::from_slice(&bad).to_device(self.device);
            let vae32 = self.vae_fp32()?;
            let again = vae32
                .decode(&(x.index_select(0, &rows) / scaling))
                .to_kind(Kind::Float);
            let again_ok = row_finite(&again);
            let _ = decoded.index_copy_(0, &rows, &again);
            for (j, &r) in bad.iter().enumerate() {
                finite_images[r as usize] = again_ok[j];
            }
        }
        let images = (decoded * 0.5 + 0.5).clamp(0.0, 1.0).to_device(Device::Cpu);
        Ok((0..b)
            .map(|r| {
                let r_ = r as usize;
                if !finite_latents[r_] {
                    Err(format!(
                        "NaN or infinity in the latents (seed {})",
                        cells[r_].seed
                    ))
                } else if !finite_images[r_] {
                    Err(format!(
                        "NaN or infinity in the decoded image (seed {})",
                        cells[r_].seed
                    ))
                } else {
                    Ok(images.get(r))
                }
            })
            .collect())
    }

    /// `last_hidden_state` `[1, 77, hidden]` of `text`, cached.
    fn text_embedding(&mut self, text: &str) -> Result<Tensor> {
        if let Some(t) = self.text_cache.get(text) {
            return Ok(t.shallow_clone());
        }
        let ids = Tensor::from_slice(&self.tokenizer.encode(text))
            .view([1, -1])
            .to_device(self.device);
        let emb = self.text_encoder.forward(&ids);
        self.text_cache
            .insert(text.to_string(), emb.shallow_clone());
        Ok(emb)
    }

    /// Image tokens of every row `[2B, T, cross]`, or `None` when the batch's adapter is not
    /// loaded and no cell needs it (all weights 0, no images: plain text-to-image).
    fn image_tokens(&mut self, cells: &[GenParams]) -> Result<Option<Tensor>> {
        let kind = cells[0].adapter;
        let needs_ip = |c: &GenParams| {
            c.positive_image.is_some()
                || c.uncond_image().is_some()
                || c.positive.weight != 0.0
                || c.negative_branch.weight != 0.0
        };
        if !self.adapters.contains_key(&kind) {
            if cells.iter().any(needs_ip) {
                bail!(
                    "the {kind} IP-Adapter is needed but none was given (ip_adapter_{kind} in the model set)"
                );
            }
            return Ok(None);
        }
        if self.unet_adapter != Some(kind) {
            let adapter = &self.adapters[&kind];
            self.unet.load_ip_adapter(adapter.file.tensors())?;
            self.unet_adapter = Some(kind);
        }
        // Encode the images not seen yet, in one encoder call.
        let mut new_paths: Vec<PathBuf> = Vec::new();
        for c in cells {
            for p in [c.positive_image.as_ref(), c.uncond_image()]
                .into_iter()
                .flatten()
            {
                if !self.image_cache.contains_key(&(p.clone(), kind)) && !new_paths.contains(p) {
                    new_paths.push(p.clone());
                }
            }
        }
        if !new_paths.is_empty() {
            let imgs = new_paths
                .iter()
                .map(|p| load_rgb(p))
                .collect::<Result<Vec<_>>>()?;
            let size = self.encoder.image_size();
            let pixels = clip_pixels_batch(&imgs, size, self.device, self.kind);
            let tokens = self.adapters[&kind]
                .proj
                .tokens(&self.encoder.forward(&pixels));
            for (j, p) in new_paths.into_iter().enumerate() {
                self.image_cache
                    .insert((p, kind), tokens.narrow(0, j as i64, 1));
            }
        }
        let mut rows = Vec::with_capacity(2 * cells.len());
        for c in cells {
            rows.push(self.branch_tokens(kind, c.uncond_image(), c.no_image));
        }
        for c in cells {
            rows.push(self.branch_tokens(kind, c.positive_image.as_ref(), c.no_image));
        }
        Ok(Some(Tensor::cat(&rows, 0)))
    }

    fn branch_tokens(
        &mut self,
        kind: AdapterKind,
        image: Option<&PathBuf>,
        mode: NoImage,
    ) -> Tensor {
        if let Some(p) = image {
            return self.image_cache[&(p.clone(), kind)].shallow_clone();
        }
        if let Some(t) = self.no_image_cache.get(&(kind, mode)) {
            return t.shallow_clone();
        }
        let t = self.adapters[&kind]
            .proj
            .no_image_tokens(&self.encoder, mode);
        self.no_image_cache.insert((kind, mode), t.shallow_clone());
        t
    }

    fn vae_fp32(&mut self) -> Result<&AutoencoderKL> {
        if self.vae_fp32.is_none() {
            log::warn!("NaN in the fp16 VAE decode: decoding again in float32");
            let vae = match &self.vae_origin {
                VaeOrigin::File { weights, cfg } => AutoencoderKL::from_source(
                    &TensorFile::open(weights)?,
                    cfg,
                    self.device,
                    Kind::Float,
                    false,
                )?,
                VaeOrigin::Single { path, cfg } => AutoencoderKL::from_source(
                    ldm::open_single_file(path)?.vae()?.as_ref(),
                    cfg,
                    self.device,
                    Kind::Float,
                    false,
                )?,
                VaeOrigin::Memory => bail!("the VAE has no file to load again in float32"),
            };
            self.vae_fp32 = Some(vae);
        }
        self.vae_fp32
            .as_ref()
            .ok_or_else(|| anyhow!("no float32 VAE"))
    }
}

struct Parts {
    device: Device,
    kind: Kind,
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    vae_origin: VaeOrigin,
    encoder: ClipVisionModelWithProjection,
    adapters: HashMap<AdapterKind, Adapter>,
    scheduler_cfg: SchedulerConfig,
}

enum BatchError {
    OutOfMemory(String),
    Other(anyhow::Error),
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn load_vae(c: &Component, device: Device, kind: Kind) -> Result<(AutoencoderKL, VaeOrigin)> {
    let cfg = AutoencoderKLConfig::from_json_file(&c.config)?;
    let vae =
        AutoencoderKL::from_source(&TensorFile::open(&c.weights)?, &cfg, device, kind, false)?;
    Ok((
        vae,
        VaeOrigin::File {
            weights: c.weights.clone(),
            cfg: Box::new(cfg),
        },
    ))
}

/// N(0, 1) latents `[1, 4, h, w]` from libtorch's CPU generator seeded with `seed` (as
/// `torch.Generator("cpu").manual_seed(seed)`; seeds of 2^63 and above wrap to negative i64,
/// the same 64 bits). The generator is global, so seeding and drawing hold a lock against
/// other pipelines in the process.
pub fn initial_noise(seed: u64, h: i64, w: i64) -> Tensor {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    Tensor::randn([1, 4, h, w], (Kind::Float, Device::Cpu))
}

/// Per row of `[B, ...]`: true when every value is finite.
fn row_finite(x: &Tensor) -> Vec<bool> {
    let ok = x
        .isfinite()
        .flatten(1, -1)
        .all_dim(1, false)
        .to_device(Device::Cpu);
    Vec::<bool>::try_from(&ok).unwrap_or_else(|_| vec![false; x.size()[0] as usize])
}

/// 8-bit RGB as diffusers' `numpy_to_pil`: `round(x * 255)` of the `[0, 1]` float image.
pub fn to_rgb8(img: &Tensor) -> image::RgbImage {
    let (_, h, w) = img.size3().unwrap_or((3, 0, 0));
    let bytes = (img.to_kind(Kind::Float) * 255.0)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .permute([1, 2, 0])
        .contiguous()
        .to_device(Device::Cpu);
    let data = Vec::<u8>::try_from(bytes.flatten(0, -1)).unwrap_or_default();
    image::RgbImage::from_raw(w as u32, h as u32, data).unwrap_or_default()
}

fn to_outcome(r: FloatOutcome) -> CellOutcome {
    match r {
        Ok(t) => CellOutcome::Image(to_rgb8(&t)),
        Err(reason) => CellOutcome::Failed(reason),
    }
}

/// Shapes of a random-weight model set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RandomPreset {
    /// Small models for CPU tests: a few MB, fast at 64x64.
    Tiny,
    /// The real shapes: SD1.5 UNet/VAE/text encoder, ViT-H/14 image encoder, ip-adapter_sd15.
    Sd15,
}

pub struct RandomShapes {
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
}

impl RandomPreset {
    pub fn shapes(self) -> RandomShapes {
        match self {
            RandomPreset::Tiny => RandomShapes {
                unet: UNet2DConditionConfig::tiny(),
                vae: AutoencoderKLConfig::tiny(),
                text: ClipTextConfig::tiny(),
                vision: ClipVisionConfig::tiny(),
            },
            RandomPreset::Sd15 => RandomShapes {
                unet: UNet2DConditionConfig::sd15(),
                vae: AutoencoderKLConfig::sd15(),
                text: ClipTextConfig::sd15(),
                vision: ClipVisionConfig::vit_h(),
            },
        }
    }

    /// The default image side of the preset (64 for tiny, 512 for SD1.5).
    pub fn default_size(self) -> usize {
        match self {
            RandomPreset::Tiny => 64,
            RandomPreset::Sd15 => 512,
        }
    }
}

/// Writes a random adapter of `kind` that fits `unet` and `vision`.
pub fn write_random_adapter(
    path: &Path,
    kind: AdapterKind,
    unet: &UNet2DConditionConfig,
    vision: &ClipVisionConfig,
    seed: i64,
) -> Result<()> {
    let embed_dim = match kind {
        AdapterKind::Base => vision.projection_dim,
        AdapterKind::Plus => vision.hidden_size,
    };
    crate::models::ip_adapter::write_random(
        path,
        kind,
        unet.context_dim(),
        embed_dim,
        &crate::models::unet::ip_attn_hidden_sizes(unet),
        seed,
    )
}

/// `(free, total)` bytes of CUDA device `index`, from the CUDA runtime that libtorch loaded.
pub fn cuda_mem_info(index: usize) -> Option<(u64, u64)> {
    type GetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    // SAFETY: dlopen/dlsym of the already-loaded CUDA runtime; the symbols have these C
    // signatures (cudaMemGetInfo(size_t*, size_t*), cudaSetDevice(int)).
    unsafe {
        for name in [
            "libcudart.so.12\0",
            "libcudart.so.13\0",
            "libcudart.so.11.0\0",
            "libcudart.so\0",
        ] {
            let handle = libc::dlopen(
                name.as_ptr() as *const libc::c_char,
                libc::RTLD_LAZY | libc::RTLD_NOLOAD,
            );
            let handle = if handle.is_null() {
                libc::dlopen(name.as_ptr() as *const libc::c_char, libc::RTLD_LAZY)
            } else {
                handle
            };
            if handle.is_null() {
                continue;
            }
            let get = libc::dlsym(handle, c"cudaMemGetInfo".as_ptr());
            let set = libc::dlsym(handle, c"cudaSetDevice".as_ptr());
            if get.is_null() || set.is_null() {
                continue;
            }
            let set: SetDevice = std::mem::transmute(set);
            let get: GetInfo = std::mem::transmute(get);
            if set(index as i32) != 0 {
                return None;
            }
            let (mut free, mut total) = (0usize, 0usize);
            if get(&mut free, &mut total) == 0 {
                return Some((free as u64, total as u64));
            }
            return None;
        }
    }
    None
}
