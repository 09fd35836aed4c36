//! Embeddings of a run's images (CLIP or DINOv2) and target texts (CLIP): images decoded
//! and preprocessed in parallel (rayon), embedded in batches on the chosen device.
use super::metrics::Embedder;
use crate::images::load_rgb;
use crate::models::clip_model::ClipModel;
use crate::models::dinov2::Dinov2Model;
use crate::models::preprocess::Preprocess;
use crate::models::tokenizer::ClipTokenizer;
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Images per forward pass of the vision tower.
pub const BATCH: usize = 32;

/// Unit embeddings: images by key (`cell:<cell_id>`, `input:<name>`), texts in target order,
/// the subjects' removal captions by text.
pub struct Embeddings {
    pub images: HashMap<String, Vec<f64>>,
    pub texts: Vec<Vec<f64>>,
    pub captions: HashMap<String, Vec<f64>>,
}

/// An image embedding model.
pub enum ImageModel {
    Clip(Box<ClipModel>),
    Dino(Box<Dinov2Model>),
}

impl ImageModel {
    pub fn load(embedder: Embedder, dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        Ok(match embedder {
            Embedder::Clip => ImageModel::Clip(Box::new(ClipModel::load(dir, device, kind)?)),
            Embedder::Dino => ImageModel::Dino(Box::new(Dinov2Model::load(dir, device, kind)?)),
        })
    }

    pub fn preprocess(&self) -> Preprocess {
        match self {
            ImageModel::Clip(m) => Preprocess::clip(m.image_size()),
            ImageModel::Dino(m) => *m.preprocess(),
        }
    }

    /// The last hidden state's patch tokens `[B, patches, D]` (no class token).
    pub fn patch_tokens(&self, pixels: &Tensor) -> Tensor {
        tch::no_grad(|| match self {
            ImageModel::Clip(m) => m.patch_tokens(pixels),
            ImageModel::Dino(m) => m.patch_tokens(pixels),
        })
    }

    fn embeds(&self, pixels: &Tensor) -> Tensor {
        tch::no_grad(|| match self {
            ImageModel::Clip(m) => m.image_embeds(pixels),
            ImageModel::Dino(m) => m.image_embeds(pixels),
        })
    }
}

/// Rows of an embedding tensor [B, D] as unit vectors in f64.
fn unit_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    let t = t.to_kind(Kind::Double).to_device(Device::Cpu);
    let rows: Vec<Vec<f64>> = Vec::<Vec<f64>>::try_from(&t).context("embedding to CPU")?;
    Ok(rows.iter().map(|r| super::metrics::normalized(r)).collect())
}

/// Embeds `files` (keyed) with `model`; errors name the file that could not be decoded.
pub fn embed_images(
    model: &ImageModel,
    files: &[(String, PathBuf)],
    device: Device,
    kind: Kind,
) -> Result<HashMap<String, Vec<f64>>> {
    let start = Instant::now();
    let preprocess = model.preprocess();
    let mut out = HashMap::with_capacity(files.len());
    for chunk in files.chunks(BATCH) {
        let images = chunk
            .par_iter()
            .map(|(_, path)| load_rgb(path))
            .collect::<Result<Vec<_>>>()?;
        let pixels = preprocess.batch(&images, device, kind);
        for ((key, _), e) in chunk.iter().zip(unit_rows(&model.embeds(&pixels))?) {
            out.insert(key.clone(), e);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    log::info!(
        "embedded {} images in {seconds:.2} s ({:.2} images/s, decoding included)",
        files.len(),
        files.len() as f64 / seconds.max(1e-9)
    );
    Ok(out)
}

/// Every done cell's image and every input image of a run, keyed as in [`Embeddings`].
pub fn run_images(run_dir: &Path, info: &RunInfo, records: &[Record]) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = info
        .images
        .iter()
        .map(|(name, file)| (format!("input:{name}"), run_dir.join(file)))
        .collect();
    files.extend(
        records
            .iter()
            .filter(|r| r.status == Status::Done)
            .map(|r| (format!("cell:{}", r.cell_id), run_dir.join(&r.file))),
    );
    files
}

/// Embeds every done cell's image and every input image of a run, and (CLIP) the targets.
pub fn embed_run(
    run_dir: &Path,
    info: &RunInfo,
    records: &[Record],
    model: &ImageModel,
    scorer: &Path,
    device: Device,
    kind: Kind,
) -> Result<Embeddings> {
    let images = embed_images(model, &run_images(run_dir, info, records), device, kind)?;
    let ImageModel::Clip(clip) = model else {
        return Ok(Embeddings {
            images,
            texts: Vec::new(),
            captions: HashMap::new(),
        });
    };
    let targets: Vec<&str> = info.scoring.targets.iter().map(String::as_str).collect();
    let mut captions: Vec<&str> = info
        .subjects
        .values()
        .filter_map(super::metrics::removal_captions)
        .flat_map(|(negative, neutral)| [negative, neutral])
        .collect();
    captions.sort();
    captions.dedup();
    let texts = embed_texts(clip, scorer, &targets, device)?;
    let caption_embeds = embed_texts(clip, scorer, &captions, device)?;
    Ok(Embeddings {
        images,
        texts,
        captions: captions
            .iter()
            .map(|c| c.to_string())
            .zip(caption_embeds)
            .collect(),
    })
}

/// Unit text embeddings of `texts` with the scorer's tokenizer (none for no texts).
fn embed_texts(
    clip: &ClipModel,
    scorer: &Path,
    texts: &[&str],
    device: Device,
) -> Result<Vec<Vec<f64>>> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let tokenizer = ClipTokenizer::from_folder(scorer)
        .with_context(|| format!("cannot load the tokenizer of {}", scorer.display()))?;
    let ids = tokenizer.encode_batch(texts).to_device(device);
    unit_rows(&tch::no_grad(|| clip.text_embeds(&ids)))
}
