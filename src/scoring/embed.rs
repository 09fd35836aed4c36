//! CLIP embeddings of a run's images and target texts: images decoded and preprocessed in
//! parallel (rayon), embedded in batches on the chosen device.
use crate::images::load_rgb;
use crate::models::clip_model::ClipModel;
use crate::models::preprocess::clip_pixels_batch;
use crate::models::tokenizer::ClipTokenizer;
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Images per forward pass of the vision tower.
pub const BATCH: usize = 32;

/// Unit embeddings: images by key (`cell:<cell_id>`, `input:<name>`), texts in target order.
pub struct Embeddings {
    pub images: HashMap<String, Vec<f64>>,
    pub texts: Vec<Vec<f64>>,
}

/// Rows of an embedding tensor [B, D] as unit vectors in f64.
fn unit_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    let t = t.to_kind(Kind::Double).to_device(Device::Cpu);
    let rows: Vec<Vec<f64>> = Vec::<Vec<f64>>::try_from(&t).context("embedding to CPU")?;
    Ok(rows.iter().map(|r| super::metrics::normalized(r)).collect())
}

/// Embeds `files` (keyed) with `model`; errors name the file that could not be decoded.
pub fn embed_images(
    model: &ClipModel,
    files: &[(String, PathBuf)],
    device: Device,
    kind: Kind,
) -> Result<HashMap<String, Vec<f64>>> {
    let mut out = HashMap::with_capacity(files.len());
    for chunk in files.chunks(BATCH) {
        let images = chunk
            .par_iter()
            .map(|(_, path)| load_rgb(path))
            .collect::<Result<Vec<_>>>()?;
        let pixels = clip_pixels_batch(&images, model.image_size(), device, kind);
        let embeds = tch::no_grad(|| model.image_embeds(&pixels));
        for ((key, _), e) in chunk.iter().zip(unit_rows(&embeds)?) {
            out.insert(key.clone(), e);
        }
    }
    Ok(out)
}

/// Embeds every done cell's image and every input image of a run, and the target texts.
pub fn embed_run(
    run_dir: &Path,
    info: &RunInfo,
    records: &[Record],
    scorer: &Path,
    device: Device,
    kind: Kind,
) -> Result<Embeddings> {
    let model = ClipModel::load(scorer, device, kind)
        .with_context(|| format!("cannot load the scorer {}", scorer.display()))?;
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
    let images = embed_images(&model, &files, device, kind)?;
    let texts = if info.scoring.targets.is_empty() {
        Vec::new()
    } else {
        let tokenizer = ClipTokenizer::from_folder(scorer)
            .with_context(|| format!("cannot load the tokenizer of {}", scorer.display()))?;
        let targets: Vec<&str> = info.scoring.targets.iter().map(String::as_str).collect();
        let ids = tokenizer.encode_batch(&targets).to_device(device);
        unit_rows(&tch::no_grad(|| model.text_embeds(&ids)))?
    };
    Ok(Embeddings { images, texts })
}
