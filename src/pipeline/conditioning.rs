//! The conditioning rows of a batch: text embeddings and IP-Adapter image tokens, one per
//! UNet row in [`guidance::row_layout`] order, each computed once per text, image and
//! adapter (and, for `subtract`, image pair and scale) and cached for the rest of the run.
use crate::images::load_rgb;
use crate::models::clip_text::ClipTextModel;
use crate::models::clip_vision::ClipVisionModelWithProjection;
use crate::models::ip_adapter::{AdapterFile, ImageProj};
use crate::models::preprocess::clip_pixels_batch;
use crate::models::tokenizer::ClipTokenizer;
use crate::params::{AdapterKind, GenParams, NoImage, Row, RowImage};
use crate::pipeline::source::SecondTextEncoder;
use crate::sampling::guidance;
use crate::sampling::methods::RowCond;
use anyhow::{Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
    /// SDXL's second text encoder: with it, the text rows are both encoders'
    /// `hidden_states[-2]` side by side, plus its pooled projection.
    pub text_encoder_2: Option<SecondTextEncoder>,
    /// SDXL's `force_zeros_for_empty_prompt`: an empty text in a row other than the cond
    /// row (an empty negative prompt) conditions on zeros.
    pub force_zeros_for_empty_prompt: bool,
    pub image_encoder: ClipVisionModelWithProjection,
    pub adapters: HashMap<AdapterKind, Adapter>,
}

/// The encoders with their caches.
pub struct Conditioner {
    device: Device,
    kind: Kind,
    models: Encoders,
    text_cache: HashMap<String, TextRows>,
    image_cache: HashMap<(PathBuf, AdapterKind), Encoded>,
    no_image_cache: HashMap<(AdapterKind, NoImage), Encoded>,
    /// `subtract` tokens by (positive or none, negative, scale bits, adapter, no-image mode).
    subtract_cache: HashMap<SubtractKey, Tensor>,
}

type SubtractKey = (Option<PathBuf>, PathBuf, u64, AdapterKind, NoImage);

/// Text conditioning of some rows: the states the cross-attention reads `[R, 77, cross]`
/// and, for SDXL, the pooled projection of the second encoder `[R, pooled]`.
pub struct TextRows {
    pub states: Tensor,
    pub pooled: Option<Tensor>,
}

impl TextRows {
    pub fn shallow_clone(&self) -> TextRows {
        TextRows {
            states: self.states.shallow_clone(),
            pooled: self.pooled.as_ref().map(Tensor::shallow_clone),
        }
    }

    fn zeros_like(&self) -> TextRows {
        TextRows {
            states: self.states.zeros_like(),
            pooled: self.pooled.as_ref().map(Tensor::zeros_like),
        }
    }

    /// The rows of `parts` one after the other.
    pub fn cat(parts: &[TextRows]) -> TextRows {
        let states: Vec<&Tensor> = parts.iter().map(|p| &p.states).collect();
        let pooled: Option<Vec<&Tensor>> = parts.iter().map(|p| p.pooled.as_ref()).collect();
        TextRows {
            states: Tensor::cat(&states, 0),
            pooled: pooled.map(|p| Tensor::cat(&p, 0)),
        }
    }

    /// The rows `rows` (indices) of these.
    pub fn index_select(&self, rows: &Tensor) -> TextRows {
        TextRows {
            states: self.states.index_select(0, rows),
            pooled: self.pooled.as_ref().map(|p| p.index_select(0, rows)),
        }
    }

    /// `k` copies of each row.
    pub fn repeat(&self, k: i64) -> TextRows {
        TextRows {
            states: self.states.repeat([k, 1, 1]),
            pooled: self.pooled.as_ref().map(|p| p.repeat([k, 1])),
        }
    }
}

/// An image's encoder features (what the projection reads) and its tokens.
struct Encoded {
    features: Tensor,
    tokens: Tensor,
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
            subtract_cache: HashMap::new(),
        }
    }

    pub fn adapter_file(&self, kind: AdapterKind) -> Option<&AdapterFile> {
        self.models.adapters.get(&kind).map(|a| &a.file)
    }

    pub fn image_encoder_config(&self) -> &crate::models::clip_vision::ClipVisionConfig {
        self.models.image_encoder.config()
    }

    /// Text rows, one per row of [`guidance::row_layout`]; with
    /// `force_zeros_for_empty_prompt`, zeros for an empty text outside the cond rows (as
    /// diffusers' SDXL pipeline does for a negative prompt not given).
    pub fn text_rows(&mut self, cells: &[GenParams]) -> TextRows {
        let refs: Vec<&GenParams> = cells.iter().collect();
        let roles = guidance::row_layout(&refs);
        let rows: Vec<TextRows> = guidance::row_conds(&refs)
            .into_iter()
            .zip(roles)
            .map(|(row, (_, role))| {
                let text = self.text(row.text);
                let zeros = self.models.force_zeros_for_empty_prompt
                    && row.text.is_empty()
                    && role != Row::Cond;
                if zeros { text.zeros_like() } else { text }
            })
            .collect();
        TextRows::cat(&rows)
    }

    /// NegToMe's reference rows: `k` rows of empty text, and of "no image" tokens when the
    /// batch's adapter is in use (their IP scale is 0).
    pub fn reference_rows(
        &mut self,
        cells: &[GenParams],
        k: usize,
        with_tokens: bool,
    ) -> (TextRows, Option<Tensor>) {
        let text = self.text("").repeat(k as i64);
        let tokens = with_tokens.then(|| {
            self.no_image(cells[0].adapter, cells[0].no_image)
                .tokens
                .repeat([k as i64, 1, 1])
        });
        (text, tokens)
    }

    /// The conditioning of `text`, cached: `last_hidden_state` `[1, 77, hidden]`; for SDXL
    /// both encoders' `hidden_states[-2]` concatenated `[1, 77, hidden + hidden_2]` and the
    /// second encoder's projected pooled output `[1, projection_dim]`.
    fn text(&mut self, text: &str) -> TextRows {
        if let Some(t) = self.text_cache.get(text) {
            return t.shallow_clone();
        }
        let ids = |tokenizer: &ClipTokenizer| {
            Tensor::from_slice(&tokenizer.encode(text))
                .view([1, -1])
                .to_device(self.device)
        };
        let emb = match &self.models.text_encoder_2 {
            None => TextRows {
                states: self
                    .models
                    .text_encoder
                    .forward(&ids(&self.models.tokenizer)),
                pooled: None,
            },
            Some(second) => {
                let (_, first) = self
                    .models
                    .text_encoder
                    .forward_with_penultimate(&ids(&self.models.tokenizer));
                let (states, pooled) = second.model.forward(&ids(&second.tokenizer));
                TextRows {
                    states: Tensor::cat(&[first, states], -1),
                    pooled: Some(pooled),
                }
            }
        };
        self.text_cache
            .insert(text.to_string(), emb.shallow_clone());
        emb
    }

    /// Image-token rows `[R, T, cross]` in the order of [`text_rows`](Self::text_rows), or
    /// `None` when the batch's adapter is not loaded and no cell needs it (all weights 0, no
    /// images: plain text-to-image).
    pub fn image_rows(&mut self, cells: &[GenParams]) -> Result<Option<Tensor>> {
        let kind = cells[0].adapter;
        let refs: Vec<&GenParams> = cells.iter().collect();
        let rows = guidance::row_conds(&refs);
        if !self.models.adapters.contains_key(&kind) {
            if needs_ip(&refs, &rows) {
                bail!(
                    "the {kind} IP-Adapter is needed but none was given (ip_adapter_{kind} in the model set)"
                );
            }
            return Ok(None);
        }
        let layout = guidance::row_layout(&refs);
        // Cell by cell, the cond row's images first: the order the encoder batches them in
        // (its output may change in the last bit with the batch it is in).
        let mut encode_order: Vec<(&(usize, Row), &RowCond)> = layout.iter().zip(&rows).collect();
        encode_order.sort_by_key(|((i, row), _)| (*i, *row != Row::Cond));
        let images = encode_order
            .into_iter()
            .flat_map(|(_, r)| [Some(r.image), r.extra.map(|x| x.image)])
            .flatten();
        self.encode_new_images(images, kind)?;
        let tokens: Vec<Tensor> = layout
            .iter()
            .zip(&rows)
            .map(|((i, _), row)| self.row_tokens(kind, row.image, cells[*i].no_image))
            .collect();
        Ok(Some(Tensor::cat(&tokens, 0)))
    }

    /// The tokens `[S, T, cross]` of the second image-attention terms of a batch
    /// ([`guidance::extra_rows`]; their images are encoded by [`image_rows`](Self::image_rows)),
    /// `None` when no row has one.
    pub fn extra_rows(&mut self, cells: &[GenParams]) -> Option<Tensor> {
        let refs: Vec<&GenParams> = cells.iter().collect();
        let kind = cells[0].adapter;
        let cell_of = guidance::row_layout(&refs);
        let tokens: Vec<Tensor> = guidance::extra_rows(&refs)
            .into_iter()
            .map(|(r, x)| self.row_tokens(kind, x.image, cells[cell_of[r].0].no_image))
            .collect();
        (!tokens.is_empty()).then(|| Tensor::cat(&tokens, 0))
    }

    /// The "no image" tokens of each row `[R, T, cross]` (its cell's adapter and `no_image`
    /// mode), when some cell gives them to its negative branch where it is off.
    pub fn no_image_rows(&mut self, cells: &[GenParams]) -> Option<Tensor> {
        let kind = cells[0].adapter;
        if !self.models.adapters.contains_key(&kind) || cells.iter().all(|c| c.neg_off.is_zero()) {
            return None;
        }
        let refs: Vec<&GenParams> = cells.iter().collect();
        let rows: Vec<Tensor> = guidance::row_layout(&refs)
            .into_iter()
            .map(|(i, _)| {
                self.no_image(kind, cells[i].no_image)
                    .tokens
                    .shallow_clone()
            })
            .collect();
        Some(Tensor::cat(&rows, 0))
    }

    /// Encodes the images of `rows` not seen yet with `kind`'s adapter, in one encoder call.
    fn encode_new_images<'a>(
        &mut self,
        rows: impl Iterator<Item = RowImage<'a>>,
        kind: AdapterKind,
    ) -> Result<()> {
        let mut new_paths: Vec<PathBuf> = Vec::new();
        for p in rows.flat_map(images_of) {
            if !self.image_cache.contains_key(&(p.clone(), kind)) && !new_paths.contains(p) {
                new_paths.push(p.clone());
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
        let proj = &self.models.adapters[&kind].proj;
        let features = proj.features(&self.models.image_encoder.forward(&pixels));
        let tokens = proj.project(&features);
        for (j, p) in new_paths.into_iter().enumerate() {
            let encoded = Encoded {
                features: features.narrow(0, j as i64, 1),
                tokens: tokens.narrow(0, j as i64, 1),
            };
            self.image_cache.insert((p, kind), encoded);
        }
        Ok(())
    }

    fn row_tokens(&mut self, kind: AdapterKind, image: RowImage, mode: NoImage) -> Tensor {
        match image {
            RowImage::NoImage => self.no_image(kind, mode).tokens.shallow_clone(),
            RowImage::Image(p) => self.image_cache[&(p.clone(), kind)].tokens.shallow_clone(),
            RowImage::Subtract {
                positive,
                negative,
                scale,
            } => self.subtract_tokens(kind, positive, negative, scale, mode),
        }
    }

    /// The tokens of `e(positive) - scale * e(negative)`, taken on the encoder features
    /// before the projection (as ComfyUI's "subtract" combine of embeddings).
    fn subtract_tokens(
        &mut self,
        kind: AdapterKind,
        positive: Option<&PathBuf>,
        negative: &Path,
        scale: f64,
        mode: NoImage,
    ) -> Tensor {
        let key = (
            positive.cloned(),
            negative.to_path_buf(),
            scale.to_bits(),
            kind,
            mode,
        );
        if let Some(t) = self.subtract_cache.get(&key) {
            return t.shallow_clone();
        }
        let pos = match positive {
            Some(p) => self.image_cache[&(p.clone(), kind)]
                .features
                .shallow_clone(),
            None => self.no_image(kind, mode).features.shallow_clone(),
        };
        let neg = &self.image_cache[&(negative.to_path_buf(), kind)].features;
        let tokens = self.models.adapters[&kind]
            .proj
            .project(&(pos - neg * scale));
        self.subtract_cache.insert(key, tokens.shallow_clone());
        tokens
    }

    fn no_image(&mut self, kind: AdapterKind, mode: NoImage) -> &Encoded {
        if !self.no_image_cache.contains_key(&(kind, mode)) {
            let proj = &self.models.adapters[&kind].proj;
            let features = proj.no_image_features(&self.models.image_encoder, mode);
            let tokens = proj.project(&features);
            self.no_image_cache
                .insert((kind, mode), Encoded { features, tokens });
        }
        &self.no_image_cache[&(kind, mode)]
    }
}

/// The images whose encodings make `image`'s tokens.
fn images_of(image: RowImage<'_>) -> Vec<&PathBuf> {
    match image {
        RowImage::NoImage => vec![],
        RowImage::Image(p) => vec![p],
        RowImage::Subtract {
            positive, negative, ..
        } => positive.into_iter().chain([negative]).collect(),
    }
}

/// Whether a batch uses the IP-Adapter at all: an image in a row, or a weight.
fn needs_ip(cells: &[&GenParams], rows: &[RowCond]) -> bool {
    rows.iter()
        .any(|r| !images_of(r.image).is_empty() || r.extra.is_some())
        || cells
            .iter()
            .any(|c| c.positive.weight != 0.0 || c.negative_branch.weight != 0.0)
}
