//! The generation pipeline: models loaded once; a batch of cells -> latents -> images.
//!
//! One UNet call per step serves a whole batch: rows `[uncond of every cell; cond of every
//! cell]`, each row with its own text embedding, IP-Adapter image tokens and IP scale (from
//! its branch's weight and window at that step, see [`crate::sampling::guidance`]), and each
//! cell with its own guidance scale. Cells of one batch may differ in everything but
//! [`GenParams::batch_key`]; batching does not change the result (each row is computed as it
//! would be alone, up to float rounding). Which cells make a batch is the caller's decision
//! (the runner's, see [`crate::run::batching`]); the pipeline generates what it is handed.
//!
//! Noise: each cell draws its initial latents on the CPU with `tch::manual_seed(seed)` and
//! `randn([1, 4, h/f, w/f])` in float32, and after them, for an ancestral scheduler, one
//! more such tensor per step, so seed N gives diffusers' image for
//! `generator=torch.Generator("cpu").manual_seed(N)` (one image per call) on any device.
//!
//! Stages, one file each: [`source`] (file layouts), [`conditioning`] (text and image
//! tokens, cached), [`denoise`] (the sampling loop), [`decode`] (VAE, fp32 re-decode),
//! [`random`] (random-weight sets for benchmarks and tests), [`single_file`] (LDM checkpoints).
pub mod attention_maps;
pub mod conditioning;
pub mod decode;
pub mod denoise;
pub mod negtome;
pub mod random;
pub mod single_file;
pub mod source;

pub use denoise::RowSteps;
pub use random::{RandomPreset, RandomShapes, write_random_adapter};

use crate::models::attention_probe::AttentionProbe;
use crate::models::clip_vision::ClipVisionModelWithProjection;
use crate::models::ip_adapter::{AdapterFile, ImageProj};
use crate::models::unet::UNet2DConditionModel;
use crate::params::{AdapterKind, GenParams, Row};
use crate::roles::{ModelSet, Role};
use crate::sampling::{self, SchedulerConfig, make_scheduler};
use crate::steps::StepSet;
use anyhow::{Context, Result, anyhow, bail};
use attention_maps::CellMaps;
use conditioning::{Adapter, Conditioner, Encoders};
use decode::Decoder;
use source::VaeFile;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

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

/// Why a batch could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The device ran out of memory: a smaller batch may fit.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Models loaded once; generates batches of cells.
/// What [`Pipeline::flop_shapes`] tells.
pub struct FlopShapes<'a> {
    pub unet: &'a crate::models::unet::UNet2DConditionConfig,
    pub vae: &'a crate::models::vae::AutoencoderKLConfig,
    pub image_encoder: &'a crate::models::clip_vision::ClipVisionConfig,
    pub ip_tokens: Option<i64>,
}

pub struct Pipeline {
    device: Device,
    kind: Kind,
    conditioner: Conditioner,
    unet: UNet2DConditionModel,
    decoder: Decoder,
    /// Image pixels per latent pixel (8 for SD1.5).
    vae_scale: usize,
    /// The adapter whose `to_k_ip`/`to_v_ip` weights the UNet holds now.
    unet_adapter: Option<AdapterKind>,
    scheduler_cfg: SchedulerConfig,
    /// NegToMe's encoded reference images by (path, width, height).
    negtome_cache: HashMap<(PathBuf, usize, usize), negtome::Reference>,
    /// At most this many cells' rows (trajectory groups) per UNet call and VAE decode.
    call_cells: usize,
    /// The decoded x̂₀ traces of the last batch: per cell, (step, image `[3, H, W]`).
    traces: Vec<Vec<(usize, FloatOutcome)>>,
    /// The UNet row-steps of the last batch.
    row_steps: RowSteps,
    /// With attention maps on: the maps of the cells of the last batch
    /// ([`Self::take_attention_maps`]).
    attention_maps: Option<Vec<CellMaps>>,
    /// The steps the attention maps cover (`[maps] steps`; all when `None`).
    map_steps: Option<StepSet>,
}

impl Pipeline {
    /// Loads every image-making model of `models` on `device` in `kind` (the scorer is not
    /// loaded). `stage(role)` is called before each model loads, for progress.
    pub fn load(
        models: &ModelSet<PathBuf>,
        device: Device,
        kind: Kind,
        stage: &mut dyn FnMut(Role),
    ) -> Result<Pipeline> {
        let fp16 = kind == Kind::Half;
        // Adapters against the image encoder first, from headers and configs.
        crate::models::ip_adapter::check_adapters(
            models.adapters().map(|(k, p)| (k, p.as_path())),
            &models.image_encoder,
        )?;
        stage(Role::Pipeline);
        let source = source::open(&models.pipeline, fp16)?;
        let tokenizer = source.tokenizer()?;
        let text_encoder = source.text_encoder(device, kind)?;
        let unet = source.unet(device, kind)?;
        let text_encoder_2 = source.text_encoder_2(device, kind)?;
        check_second_encoder(
            &models.pipeline,
            unet.takes_text_time(),
            text_encoder_2.is_some(),
        )?;
        let vae_file = match &models.vae {
            Some(path) => {
                stage(Role::Vae);
                VaeFile::from_path(path, fp16)?
            }
            None => source.vae()?.ok_or_else(|| {
                anyhow!(
                    "{} has no VAE: give one as [models] vae",
                    models.pipeline.display()
                )
            })?,
        };
        let vae = vae_file.load(device, kind)?;
        stage(Role::ImageEncoder);
        let image_encoder =
            ClipVisionModelWithProjection::load(&models.image_encoder, device, kind)
                .with_context(|| format!("image encoder {}", models.image_encoder.display()))?;
        let mut adapters = HashMap::new();
        for (kind_, path) in models.adapters() {
            stage(Role::adapter(kind_));
            adapters.insert(kind_, load_adapter(path, kind_, device, kind)?);
        }
        let encoders = Encoders {
            tokenizer,
            text_encoder,
            text_encoder_2,
            force_zeros_for_empty_prompt: source.force_zeros_for_empty_prompt()?,
            image_encoder,
            adapters,
        };
        let decoder = Decoder::new(vae, Some(vae_file), device, kind);
        let scheduler_cfg = source.scheduler_config()?;
        Ok(Self::assemble(
            device,
            kind,
            encoders,
            unet,
            decoder,
            scheduler_cfg,
        ))
    }

    fn assemble(
        device: Device,
        kind: Kind,
        encoders: Encoders,
        unet: UNet2DConditionModel,
        decoder: Decoder,
        scheduler_cfg: SchedulerConfig,
    ) -> Pipeline {
        Pipeline {
            device,
            kind,
            conditioner: Conditioner::new(device, kind, encoders),
            unet,
            vae_scale: decoder.vae().config().scale_factor() as usize,
            decoder,
            unet_adapter: None,
            scheduler_cfg,
            negtome_cache: HashMap::new(),
            call_cells: usize::MAX,
            traces: Vec::new(),
            row_steps: RowSteps::default(),
            attention_maps: None,
            map_steps: None,
        }
    }

    /// Limits each UNet call to the rows of `cells` cells (trajectory groups) and each VAE
    /// decode to `cells` images; a batch handed to [`generate`](Self::generate) may hold
    /// more cells, which share their trajectories (the runner's batch size sets it).
    pub fn set_call_cells(&mut self, cells: usize) {
        self.call_cells = cells.max(1);
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

    /// The configs of the UNet, the VAE and the image encoder, and the image tokens of the
    /// `kind` adapter (none where it is not loaded): the shapes `bench` counts FLOPs on.
    pub fn flop_shapes(&self, kind: AdapterKind) -> FlopShapes<'_> {
        FlopShapes {
            unet: self.unet.config(),
            vae: self.decoder.vae().config(),
            image_encoder: self.conditioner.image_encoder_config(),
            ip_tokens: self.conditioner.adapter_file(kind).map(|f| f.num_tokens),
        }
    }

    /// Image pixels per latent pixel (8 for SD1.5): width and height must be multiples.
    pub fn vae_scale(&self) -> usize {
        self.vae_scale
    }

    /// Loads each adapter's attention weights into the UNet once: an adapter made for
    /// another UNet fails here, naming its file (`negimg models check`).
    pub fn check_adapters(&mut self) -> Result<()> {
        for kind in AdapterKind::ALL {
            self.use_adapter(kind)?;
        }
        Ok(())
    }

    /// Records attention maps in the batches that follow ([`Self::take_attention_maps`]),
    /// or stops. Off by default: without them the UNet computes nothing for maps.
    pub fn set_attention_maps(&mut self, on: bool) {
        self.attention_maps = on.then(Vec::new);
    }

    /// Restricts the attention maps to the steps of `steps` (all when `None`, the default):
    /// the probe records only their UNet calls and averages over them.
    pub fn set_attention_map_steps(&mut self, steps: Option<StepSet>) {
        self.map_steps = steps;
    }

    /// The attention maps of the last batch's cells, in cell order (empty with maps off,
    /// or for a batch without an IP-Adapter).
    pub fn take_attention_maps(&mut self) -> Vec<CellMaps> {
        self.attention_maps
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Generates one batch of cells that share a [`GenParams::batch_key`]; the outcomes
    /// follow the order of `cells`. `progress(step, steps)` is called after each step.
    pub fn generate(
        &mut self,
        cells: &[GenParams],
        progress: &mut dyn FnMut(usize, usize),
    ) -> std::result::Result<Vec<CellOutcome>, GenerateError> {
        let floats = self.generate_float(cells, progress)?;
        Ok(floats.into_iter().map(to_outcome).collect())
    }

    /// As [`generate`](Self::generate), making at least the cells marked in `wanted`: the
    /// batch keeps the UNet calls and decodes it has with every cell (so the images are
    /// those it makes), and skips the calls and decodes that lead to no wanted cell; a cell
    /// so skipped comes back `None` ([`Self::take_row_steps`] counts what was computed).
    pub fn generate_wanted(
        &mut self,
        cells: &[GenParams],
        wanted: &[bool],
        progress: &mut dyn FnMut(usize, usize),
    ) -> std::result::Result<Vec<Option<CellOutcome>>, GenerateError> {
        let floats = self.generate_float_wanted(cells, wanted, progress)?;
        Ok(floats.into_iter().map(|f| f.map(to_outcome)).collect())
    }

    /// As [`generate`](Self::generate), with the float images `[3, H, W]` in `[0, 1]`.
    /// Out-of-memory failures (errors or libtorch panics) come back as
    /// [`GenerateError::OutOfMemory`], so that the caller can try a smaller batch.
    pub fn generate_float(
        &mut self,
        cells: &[GenParams],
        progress: &mut dyn FnMut(usize, usize),
    ) -> std::result::Result<Vec<FloatOutcome>, GenerateError> {
        let all = vec![true; cells.len()];
        let floats = self.generate_float_wanted(cells, &all, progress)?;
        floats
            .into_iter()
            .map(|f| f.ok_or_else(|| GenerateError::Other(anyhow!("a wanted cell was not made"))))
            .collect()
    }

    /// The UNet row-steps of the last batch: computed, and planned for all its cells.
    pub fn take_row_steps(&mut self) -> RowSteps {
        std::mem::take(&mut self.row_steps)
    }

    /// As [`generate_wanted`](Self::generate_wanted), with the float images; out-of-memory
    /// failures (errors or libtorch panics) as [`GenerateError::OutOfMemory`].
    pub fn generate_float_wanted(
        &mut self,
        cells: &[GenParams],
        wanted: &[bool],
        progress: &mut dyn FnMut(usize, usize),
    ) -> std::result::Result<Vec<Option<FloatOutcome>>, GenerateError> {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tch::no_grad(|| self.generate_batch(cells, wanted, progress))
        }));
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if is_oom(&format!("{e:#}")) => {
                Err(GenerateError::OutOfMemory(format!("{e:#}")))
            }
            Ok(Err(e)) => Err(GenerateError::Other(e)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                if is_oom(&msg) {
                    Err(GenerateError::OutOfMemory(first_line(&msg)))
                } else {
                    Err(GenerateError::Other(anyhow!("generation failed: {msg}")))
                }
            }
        }
    }

    fn generate_batch(
        &mut self,
        cells: &[GenParams],
        wanted: &[bool],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Option<FloatOutcome>>> {
        let Some(first) = cells.first() else {
            return Ok(vec![]);
        };
        if wanted.len() != cells.len() {
            bail!("{} wanted flags for {} cells", wanted.len(), cells.len());
        }
        if let Some(c) = cells.iter().find(|c| c.batch_key() != first.batch_key()) {
            bail!(
                "cells of one batch must share steps, size, scheduler, adapter and ip_scaling (seed {} differs from seed {})",
                c.seed,
                first.seed
            );
        }
        let blocks = self.unet.cross_attention_blocks();
        for c in cells {
            c.check_blocks(blocks).map_err(|e| anyhow!(e))?;
        }
        check_micro_conditioning(cells, self.unet.takes_text_time())?;
        let (h, w) = self.latent_size(first.width, first.height)?;
        let mut scheduler = make_scheduler(first.scheduler, &self.scheduler_cfg, first.steps)?;
        let text = self.conditioner.text_rows(cells);
        let time_ids = self
            .unet
            .takes_text_time()
            .then(|| time_id_rows(cells).to_device(self.device));
        let image_tokens = self.conditioner.image_rows(cells)?;
        let extra_tokens = self.conditioner.extra_rows(cells);
        if image_tokens.is_some() {
            self.use_adapter(first.adapter)?;
        }
        let step_draws = if scheduler.is_ancestral() {
            first.steps
        } else {
            0
        };
        let (noise, step_noise): (Vec<Tensor>, Vec<Tensor>) = cells
            .iter()
            .map(|c| cell_noise(c.seed, h, w, step_draws))
            .unzip();
        let x = Tensor::cat(&noise, 0).to_device(self.device) * scheduler.init_noise_sigma();
        // [steps, B, 4, h, w] on the CPU; each step moves its slice to the device
        let step_noise = (step_draws > 0).then(|| Tensor::cat(&step_noise, 1));
        let references = self.negtome_references(cells)?;
        let no_image_tokens = self.conditioner.no_image_rows(cells);
        let cell_rows = sampling::guidance::row_layout(&cells.iter().collect::<Vec<_>>()).len();
        let probe = (self.attention_maps.is_some() && image_tokens.is_some())
            .then(|| AttentionProbe::new(cell_rows as i64).with_steps(self.map_steps.clone()));
        let reference_time_ids = time_ids.as_ref().map(|_| {
            let ids = first.default_time_ids().map(|x| x as f32);
            Tensor::from_slice(&ids).view([1, 6]).to_device(self.device)
        });
        let reference_rows = references.as_ref().map(|(rows, _, _)| {
            self.conditioner
                .reference_rows(cells, rows.images.len(), image_tokens.is_some())
        });
        let cond = denoise::Conditioning {
            text: &text,
            time_ids: time_ids.as_ref(),
            image_tokens: image_tokens.as_ref(),
            extra_tokens: extra_tokens.as_ref(),
            no_image_tokens: no_image_tokens.as_ref(),
            negtome: references.as_ref().zip(reference_rows.as_ref()).map(
                |((rows, latents, noise), (text, tokens))| denoise::References {
                    rows,
                    latents,
                    noise,
                    text,
                    image_tokens: tokens.as_ref(),
                    time_ids: reference_time_ids.as_ref(),
                },
            ),
            probe: probe.as_ref(),
        };
        let needed = self.needed_cells(cells, wanted);
        let denoise::Denoised { x, x0, row_steps } = denoise::denoise(
            &self.unet,
            scheduler.as_mut(),
            cells,
            &needed,
            &cond,
            x,
            step_noise.as_ref(),
            self.call_cells,
            progress,
        );
        if let Some(maps) = self.attention_maps.as_mut() {
            let finished = probe.map(|p| {
                let covered = p.steps_covered(first.steps);
                p.finish(covered, (h, w))
            });
            *maps = finished.map_or_else(Vec::new, |m| attention_maps::cell_maps(&m, cells));
        }
        self.row_steps = row_steps;
        self.traces = self.decode_traces(x0, cells, &needed)?;
        self.decode_chunks(&x, cells, &needed)
    }

    /// The cells whose latents a batch must make so that the `wanted` cells' images and
    /// traces are those of the whole batch: each VAE decode (of images, and of traces)
    /// that holds a wanted cell is made whole, with the same cells as in the whole batch.
    fn needed_cells(&self, cells: &[GenParams], wanted: &[bool]) -> Vec<bool> {
        let trace_rows: Vec<usize> = trace_rows(cells).map(|(c, _)| c).collect();
        let image_rows: Vec<usize> = (0..cells.len()).collect();
        let mut needed = wanted.to_vec();
        loop {
            let before = needed.clone();
            for chunk in [&image_rows, &trace_rows]
                .into_iter()
                .flat_map(|rows| rows.chunks(self.call_cells))
            {
                if chunk.iter().any(|&c| needed[c]) {
                    chunk.iter().for_each(|&c| needed[c] = true);
                }
            }
            if needed == before {
                return needed;
            }
        }
    }

    /// The x̂₀ traces of the last batch (per cell, in order: (step, float image)); taken
    /// once.
    pub fn take_traces_float(&mut self) -> Vec<Vec<(usize, FloatOutcome)>> {
        std::mem::take(&mut self.traces)
    }

    /// The same as 8-bit images (a failed decode is left out).
    pub fn take_traces(&mut self) -> Vec<Vec<(usize, image::RgbImage)>> {
        let rgb = |(step, r): (usize, FloatOutcome)| r.ok().map(|t| (step, to_rgb8(&t)));
        let traces = self.take_traces_float();
        traces
            .into_iter()
            .map(|t| t.into_iter().filter_map(rgb).collect())
            .collect()
    }

    /// Decodes each cell's x̂₀ latents as images, `call_cells` per VAE call (those of the
    /// `needed` cells: a call without one is skipped).
    fn decode_traces(
        &mut self,
        x0: Vec<Vec<(usize, Tensor)>>,
        cells: &[GenParams],
        needed: &[bool],
    ) -> Result<Vec<Vec<(usize, FloatOutcome)>>> {
        let rows: Vec<(usize, usize, Tensor)> = (x0.into_iter().enumerate())
            .flat_map(|(c, t)| t.into_iter().map(move |(step, l)| (c, step, l)))
            .collect();
        let mut out: Vec<Vec<(usize, FloatOutcome)>> = cells.iter().map(|_| vec![]).collect();
        if rows.is_empty() {
            return Ok(out);
        }
        let latents = Tensor::stack(&rows.iter().map(|r| &r.2).collect::<Vec<_>>(), 0);
        let of_row: Vec<GenParams> = rows.iter().map(|r| cells[r.0].clone()).collect();
        let row_needed: Vec<bool> = rows.iter().map(|r| needed[r.0]).collect();
        let images = self.decode_chunks(&latents, &of_row, &row_needed)?;
        for ((c, step, _), image) in rows.into_iter().zip(images) {
            if let Some(image) = image {
                out[c].push((step, image));
            }
        }
        Ok(out)
    }

    /// Decodes `x` of `cells` at most `call_cells` images per VAE call; a call without a
    /// `needed` image is skipped (its images `None`).
    fn decode_chunks(
        &mut self,
        x: &Tensor,
        cells: &[GenParams],
        needed: &[bool],
    ) -> Result<Vec<Option<FloatOutcome>>> {
        let mut out = Vec::with_capacity(cells.len());
        for (k, chunk) in cells.chunks(self.call_cells).enumerate() {
            let start = k * self.call_cells;
            if !needed[start..][..chunk.len()].contains(&true) {
                out.extend(chunk.iter().map(|_| None));
                continue;
            }
            let rows = x.narrow(0, start as i64, chunk.len() as i64);
            out.extend(self.decoder.decode(&rows, chunk)?.into_iter().map(Some));
        }
        Ok(out)
    }

    /// The latent height and width for an image of `width` x `height`.
    fn latent_size(&self, width: usize, height: usize) -> Result<(i64, i64)> {
        let f = self.vae_scale;
        if width == 0 || height == 0 || !width.is_multiple_of(f) || !height.is_multiple_of(f) {
            bail!(
                "image size {width}x{height}: width and height must be positive multiples of {f}"
            );
        }
        Ok(((height / f) as i64, (width / f) as i64))
    }

    /// Puts `kind`'s attention weights into the UNet (a no-op when they are there already).
    fn use_adapter(&mut self, kind: AdapterKind) -> Result<()> {
        if self.unet_adapter == Some(kind) {
            return Ok(());
        }
        if let Some(file) = self.conditioner.adapter_file(kind) {
            self.unet.load_ip_adapter(file.tensors())?;
            self.unet_adapter = Some(kind);
        }
        Ok(())
    }
}

/// An IP-Adapter file given as `want`: its keys must be those of that kind's family.
fn load_adapter(
    path: &std::path::Path,
    want: AdapterKind,
    device: Device,
    kind: Kind,
) -> Result<Adapter> {
    let file = AdapterFile::open_as(path, want)?;
    let proj = ImageProj::load(&file, device, kind)?;
    Ok(Adapter { file, proj })
}

/// SDXL's `add_time_ids` of each row of [`guidance::row_layout`] `[R, 6]`: the cond row's
/// [`GenParams::time_ids`], every other row's [`GenParams::negative_time_ids`]. The uncond
/// row is diffusers' negative half; the negative row of the three-row methods takes the
/// same ids, so that `ε₋ − ε∅` differs in text and image alone.
pub fn time_id_rows(cells: &[GenParams]) -> Tensor {
    let refs: Vec<&GenParams> = cells.iter().collect();
    let ids: Vec<f32> = crate::sampling::guidance::row_layout(&refs)
        .into_iter()
        .flat_map(|(i, row)| row_time_ids(&cells[i], row).map(|x| x as f32))
        .collect();
    Tensor::from_slice(&ids).view([-1, 6])
}

/// The time ids of `row` of cell `c` (see [`time_id_rows`]).
fn row_time_ids(c: &GenParams, row: Row) -> [f64; 6] {
    match row {
        Row::Cond => c.time_ids(),
        Row::Uncond | Row::Negative => c.negative_time_ids(),
    }
}

/// An SDXL (`text_time`) UNet needs `text_encoder_2` and only it takes one: an error naming
/// the pipeline folder (`negimg plan` checks this from the configs, `load` again).
pub fn check_second_encoder(
    pipeline: &std::path::Path,
    text_time: bool,
    has_second: bool,
) -> Result<()> {
    if text_time && !has_second {
        bail!(
            "{}: the UNet is SDXL's (addition_embed_type \"text_time\") but the pipeline has \
             no text_encoder_2 (and tokenizer_2) listed in model_index.json",
            pipeline.display()
        );
    }
    if !text_time && has_second {
        bail!(
            "{}: text_encoder_2 is given but the UNet has no text_time embedding to take its \
             pooled output (not an SDXL UNet)",
            pipeline.display()
        );
    }
    Ok(())
}

/// Micro-conditioning on a UNet without SDXL's added conditioning would change nothing: an
/// error naming the keys (no silent no-op).
fn check_micro_conditioning(cells: &[GenParams], takes_text_time: bool) -> Result<()> {
    match cells.iter().find(|c| c.has_micro_conditioning()) {
        Some(c) if !takes_text_time => bail!(
            "original_size / crops_coords_top_left / target_size (and their negative_* \
             twins) are SDXL's micro-conditioning; this pipeline's UNet has no added time ids (addition_embed_type = \"text_time\" \
             in unet/config.json), so they would change nothing (seed {})",
            c.seed
        ),
        _ => Ok(()),
    }
}

fn is_oom(message: &str) -> bool {
    message.contains("out of memory")
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// N(0, 1) latents `[1, 4, h, w]` from libtorch's CPU generator seeded with `seed` (as
/// `torch.Generator("cpu").manual_seed(seed)`; seeds of 2^63 and above wrap to negative i64,
/// the same 64 bits).
pub fn initial_noise(seed: u64, h: i64, w: i64) -> Tensor {
    cell_noise(seed, h, w, 0).0
}

/// A cell's draws from its seeded generator (see [`initial_noise`]) in the order diffusers'
/// pipeline draws from its `generator`: the initial latents `[1, 4, h, w]`, then
/// `[step_draws, 1, 4, h, w]`, one per step of an ancestral scheduler (`scheduler.step(...,
/// generator=generator)`). The generator is global, so seeding and drawing hold
/// [`crate::weights::random::global_generator`].
pub fn cell_noise(seed: u64, h: i64, w: i64, step_draws: usize) -> (Tensor, Tensor) {
    let _generator = crate::weights::random::global_generator();
    tch::manual_seed(seed as i64);
    let opts = (Kind::Float, Device::Cpu);
    let initial = Tensor::randn([1, 4, h, w], opts);
    let steps: Vec<Tensor> = (0..step_draws)
        .map(|_| Tensor::randn([1, 4, h, w], opts))
        .collect();
    let steps = match steps.is_empty() {
        true => Tensor::zeros([0, 1, 4, h, w], opts),
        false => Tensor::stack(&steps, 0),
    };
    (initial, steps)
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

/// The x̂₀ traces a batch decodes, in order: (cell, step) for each cell's trace steps.
fn trace_rows(cells: &[GenParams]) -> impl Iterator<Item = (usize, usize)> + '_ {
    cells.iter().enumerate().flat_map(|(c, cell)| {
        (0..cell.steps)
            .filter(|&i| denoise::traced_at(cell, i))
            .map(move |i| (c, i))
    })
}

fn to_outcome(r: FloatOutcome) -> CellOutcome {
    match r {
        Ok(t) => CellOutcome::Image(to_rgb8(&t)),
        Err(reason) => CellOutcome::Failed(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Method, MicroPair};

    /// The cond row takes the cell's time ids, the uncond row and a three-row method's
    /// negative row the `negative_*` ones, in the batch's row layout.
    #[test]
    fn sdxl_time_id_rows_give_the_negative_ids_to_every_row_but_the_cond_row() {
        let mut a = GenParams::new(1);
        a.method = Method::ThreeBranch;
        a.negative_original_size = Some(MicroPair(256, 256));
        let mut b = GenParams::new(2);
        b.target_size = Some(MicroPair(64, 64));
        let ids = time_id_rows(&[a.clone(), b.clone()]);
        let got: Vec<Vec<f32>> = (0..5).map(|r| Vec::try_from(ids.get(r)).unwrap()).collect();
        let f = |x: [f64; 6]| x.map(|v| v as f32).to_vec();
        // uncond a, uncond b, cond a, cond b, negative a.
        let want = [
            f(a.negative_time_ids()),
            f(b.negative_time_ids()),
            f(a.time_ids()),
            f(b.time_ids()),
            f(a.negative_time_ids()),
        ];
        assert_eq!(got, want);
        assert_eq!(want[0][..2], [256.0, 256.0]);
        assert_eq!(want[2][..2], [512.0, 512.0]);
        assert_eq!(want[1], want[3]);
    }
}
