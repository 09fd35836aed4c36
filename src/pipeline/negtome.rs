//! NegToMe's reference images: VAE-encoded once per image and size, with their own noise
//! (see [`crate::sampling::negtome`] for the rows and the README for the method).
use super::Pipeline;
use crate::images::decode_rgb;
use crate::params::GenParams;
use crate::sampling::negtome::ReferenceRows;
use anyhow::{Context, Result};
use image::{RgbImage, imageops};
use sha2::{Digest, Sha256};
use std::path::Path;
use tch::{Kind, Tensor};

/// An encoded reference: its latents and noise `[1, 4, h, w]`.
pub struct Reference {
    latents: Tensor,
    noise: Tensor,
}

/// The seed of a reference image's noise: the first 8 bytes of the SHA-256 of its file, big
/// endian, top bit cleared (a non-negative i64, as `torch.manual_seed` takes it). It depends
/// on the image only, so the cells that share the image share the noise, whatever their
/// batch.
pub fn noise_seed(file_bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(file_bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) >> 1
}

/// The VAE's input `[1, 3, height, width]` in `[-1, 1]`: the image resized (Lanczos3) to
/// the generation size when it has another size, as diffusers' `VaeImageProcessor` does
/// (its resampling is PIL's Lanczos, so resized pixels differ slightly).
pub fn vae_pixels(img: &RgbImage, width: u32, height: u32) -> Tensor {
    let resized;
    let img = if img.dimensions() == (width, height) {
        img
    } else {
        resized = imageops::resize(img, width, height, imageops::FilterType::Lanczos3);
        &resized
    };
    Tensor::from_slice(img.as_raw())
        .view([height as i64, width as i64, 3])
        .permute([2, 0, 1])
        .unsqueeze(0)
        .to_kind(Kind::Float)
        / 127.5
        - 1.0
}

impl Pipeline {
    /// The reference rows of `cells` and their latents and noise `[K, 4, h, w]` (`None`
    /// when no cell merges).
    pub(super) fn negtome_references(
        &mut self,
        cells: &[GenParams],
    ) -> Result<Option<(ReferenceRows, Tensor, Tensor)>> {
        let refs: Vec<&GenParams> = cells.iter().collect();
        let rows = ReferenceRows::new(&refs);
        if rows.images.is_empty() {
            return Ok(None);
        }
        let (width, height) = (cells[0].width, cells[0].height);
        let mut latents = vec![];
        let mut noise = vec![];
        for path in &rows.images {
            let r = self.reference(path, width, height)?;
            latents.push(r.latents.shallow_clone());
            noise.push(r.noise.shallow_clone());
        }
        Ok(Some((
            rows,
            Tensor::cat(&latents, 0),
            Tensor::cat(&noise, 0),
        )))
    }

    /// The encoded reference `path` at `width` x `height`, cached for the run.
    fn reference(&mut self, path: &Path, width: usize, height: usize) -> Result<&Reference> {
        let key = (path.to_path_buf(), width, height);
        if !self.negtome_cache.contains_key(&key) {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read image {}", path.display()))?;
            let img = decode_rgb(&bytes, path)?;
            let pixels = vae_pixels(&img, width as u32, height as u32).to_device(self.device);
            let latents = self.decoder.encode(&pixels)?.to_kind(Kind::Float);
            let (_, _, h, w) = latents.size4()?;
            let noise = super::initial_noise(noise_seed(&bytes), h, w).to_device(self.device);
            self.negtome_cache
                .insert(key.clone(), Reference { latents, noise });
        }
        Ok(&self.negtome_cache[&key])
    }
}
