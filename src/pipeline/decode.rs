//! Latents to float images through the VAE. Rows whose latents or decoded pixels are not
//! finite fail on their own; an fp16 overflow is decoded again in float32 first.
use super::FloatOutcome;
use super::source::VaeFile;
use crate::models::vae::{AutoencoderKL, VaeParts};
use crate::params::GenParams;
use anyhow::{Result, anyhow};
use tch::{Device, Kind, Tensor};

pub struct Decoder {
    vae: AutoencoderKL,
    /// The device and kind `vae` computes in.
    device: Device,
    kind: Kind,
    /// Where `vae` came from (none for random weights built in memory).
    file: Option<VaeFile>,
    fp32: Option<AutoencoderKL>,
}

impl Decoder {
    pub fn new(vae: AutoencoderKL, file: Option<VaeFile>, device: Device, kind: Kind) -> Decoder {
        Decoder {
            vae,
            device,
            kind,
            file,
            fp32: None,
        }
    }

    pub fn vae(&self) -> &AutoencoderKL {
        &self.vae
    }

    /// Latents `[B, 4, h, w]` (the latent distribution's mean times the scaling factor) of
    /// images `[B, 3, H, W]` in `[-1, 1]`. Generation loads the decoder only: the first
    /// call loads the VAE again with its encoder, in place of the decoder-only one.
    pub fn encode(&mut self, pixels: &Tensor) -> Result<Tensor> {
        if !self.vae.has_encoder() {
            let file = self
                .file
                .as_ref()
                .ok_or_else(|| anyhow!("the VAE has no encoder and no file to load it from"))?;
            self.vae = file.load_parts(self.device, self.kind, VaeParts::EncoderAndDecoder)?;
        }
        Ok(self.vae.encode(pixels)? * self.vae.config().scaling_factor)
    }

    /// Images `[3, H, W]` in `[0, 1]` on the CPU for the latents `x` `[B, 4, h, w]` of `cells`.
    pub fn decode(&mut self, x: &Tensor, cells: &[GenParams]) -> Result<Vec<FloatOutcome>> {
        let finite_latents = row_finite(x);
        let scaling = self.vae.config().scaling_factor;
        let mut decoded = self.vae.decode(&(x / scaling)).to_kind(Kind::Float);
        let mut finite_images = row_finite(&decoded);
        let bad: Vec<i64> = (0..cells.len())
            .filter(|&r| finite_latents[r] && !finite_images[r])
            .map(|r| r as i64)
            .collect();
        if !bad.is_empty() && self.kind != Kind::Float {
            // fp16 overflow in the VAE: decode those rows again in float32.
            let rows = Tensor::from_slice(&bad).to_device(self.device);
            let again = self
                .vae_fp32()?
                .decode(&(x.index_select(0, &rows) / scaling))
                .to_kind(Kind::Float);
            let again_ok = row_finite(&again);
            let _ = decoded.index_copy_(0, &rows, &again);
            for (j, &r) in bad.iter().enumerate() {
                finite_images[r as usize] = again_ok[j];
            }
        }
        let images = (decoded * 0.5 + 0.5).clamp(0.0, 1.0).to_device(Device::Cpu);
        Ok(cells
            .iter()
            .enumerate()
            .map(|(r, cell)| {
                if !finite_latents[r] {
                    Err(format!(
                        "NaN or infinity in the latents (seed {})",
                        cell.seed
                    ))
                } else if !finite_images[r] {
                    Err(format!(
                        "NaN or infinity in the decoded image (seed {})",
                        cell.seed
                    ))
                } else {
                    Ok(images.get(r as i64))
                }
            })
            .collect())
    }

    fn vae_fp32(&mut self) -> Result<&AutoencoderKL> {
        if self.fp32.is_none() {
            log::warn!("NaN in the fp16 VAE decode: decoding again in float32");
            let file = self
                .file
                .as_ref()
                .ok_or_else(|| anyhow!("the VAE has no file to load again in float32"))?;
            self.fp32 = Some(file.load(self.device, Kind::Float)?);
        }
        self.fp32.as_ref().ok_or_else(|| anyhow!("no float32 VAE"))
    }
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
