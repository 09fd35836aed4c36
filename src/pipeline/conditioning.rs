//! The conditioning rows of a batch: text embeddings and IP-Adapter image tokens, for the
//! uncond branch then the cond branch of every cell, each computed once per text, image and
//! adapter and cached for the rest of the run.
use crate::images::load_rgb;
use crate::models::clip_text::ClipTextModel;
use crate::models::clip_vision::ClipVisionModelWithProjection;
use crate::models::ip_adapter::{AdapterFile, ImageProj};
use crate::models::preprocess::clip_pixels_batch;
use crate::models::tokenizer::ClipTokenizer;
use crate::params::{AdapterKind, GenParams, NoImage};
use anyhow::{Result, bail};
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// An IP-Adapter: its file (the UNet's `to_k_ip`/`to_v_ip` weights) and its projection.
pub struct Adapter {
    pub file: AdapterFile,
    pub proj: ImageProj,
}

/// The models that turn texts and images into conditioning.
pub struct Encoders {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub image_encoder: ClipVisionModelWithProjection,
    pub adapters: HashMap<AdapterKind, Adapter>,
}

/// The encoders with their caches.
pub struct Conditioner {
    device: Device,
    kind: Kind,
    models: Encoders,
    text_cache: HashMap<String, Tensor>,
    image_cache: HashMap<(PathBuf, AdapterKind), Tensor>,
    no_image_cache: HashMap<(AdapterKind, NoImage), Tensor>,
}

impl Conditioner {
    pub fn new(device: Device, kind: Kind, models: Encoders) -> Conditioner {
        Conditioner {
            device,
            kind,
            models,
            text_cache: HashMap::new(),
            image_cache: HashMap::new(),
            no_image_cache: HashMap::new(),
        }
    }

    pub fn adapter_file(&self, kind: AdapterKind) -> Option<&AdapterFile> {
        self.models.adapters.get(&kind).map(|a| &a.file)
    }

    /// Text rows `[2B, 77, hidden]`: every cell's uncond text, then every cell's prompt.
    pub fn text_rows(&mut self, cells: &[GenParams]) -> Tensor {
        let uncond = cells.iter().map(|c| c.uncond_text());
        let cond = cells.iter().map(|c| c.prompt.as_str());
        let rows: Vec<Tensor> = uncond.chain(cond).map(|t| self.text(t)).collect();
        Tensor::cat(&rows, 0)
    }

    /// `last_hidden_state` `[1, 77, hidden]` of `text`, cached.
    fn text(&mut self, text: &str) -> Tensor {
        if let Some(t) = self.text_cache.get(text) {
            return t.shallow_clone();
        }
        let ids = Tensor::from_slice(&self.models.tokenizer.encode(text))
            .view([1, -1])
            .to_device(self.device);
        let emb = self.models.text_encoder.forward(&ids);
        self.text_cache
            .insert(text.to_string(), emb.shallow_clone());
        emb
    }

    /// Image-token rows `[2B, T, cross]` in the order of [`text_rows`](Self::text_rows), or
    /// `None` when the batch's adapter is not loaded and no cell needs it (all weights 0, no
    /// images: plain text-to-image).
    pub fn image_rows(&mut self, cells: &[GenParams]) -> Result<Option<Tensor>> {
        let kind = cells[0].adapter;
        if !self.models.adapters.contains_key(&kind) {
            if cells.iter().any(needs_ip) {
                bail!(
                    "the {kind} IP-Adapter is needed but none was given (ip_adapter_{kind} in the model set)"
                );
            }
            return Ok(None);
        }
        self.encode_new_images(cells, kind)?;
        let uncond = cells.iter().map(|c| c.uncond_image());
        let cond = cells.iter().map(|c| c.positive_image.as_ref());
        let modes = cells.iter().chain(cells).map(|c| c.no_image);
        let rows: Vec<Tensor> = uncond
            .chain(cond)
            .zip(modes)
            .map(|(image, mode)| self.branch_tokens(kind, image, mode))
            .collect();
        Ok(Some(Tensor::cat(&rows, 0)))
    }

    /// Encodes the images of `cells` not seen yet with `kind`'s adapter, in one encoder call.
    fn encode_new_images(&mut self, cells: &[GenParams], kind: AdapterKind) -> Result<()> {
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
        if new_paths.is_empty() {
            return Ok(());
        }
        let imgs = new_paths
            .iter()
            .map(|p| load_rgb(p))
            .collect::<Result<Vec<_>>>()?;
        let size = self.models.image_encoder.image_size();
        let pixels = clip_pixels_batch(&imgs, size, self.device, self.kind);
        let tokens = self.models.adapters[&kind]
            .proj
            .tokens(&self.models.image_encoder.forward(&pixels));
        for (j, p) in new_paths.into_iter().enumerate() {
            self.image_cache
                .insert((p, kind), tokens.narrow(0, j as i64, 1));
        }
        Ok(())
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
        let t = self.models.adapters[&kind]
            .proj
            .no_image_tokens(&self.models.image_encoder, mode);
        self.no_image_cache.insert((kind, mode), t.shallow_clone());
        t
    }
}

/// Whether a cell uses the IP-Adapter at all.
fn needs_ip(c: &GenParams) -> bool {
    c.positive_image.is_some()
        || c.uncond_image().is_some()
        || c.positive.weight != 0.0
        || c.negative_branch.weight != 0.0
}
