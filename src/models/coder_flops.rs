//! FLOPs of the VAE's decoder and encoder and of the CLIP image encoder from their configs,
//! counted as [`super::unet_flops`] counts the UNet (torch's `FlopCounterMode`: 2 per
//! multiply-add of every convolution, linear layer and attention product; norms,
//! activations, resampling and element-wise ops left out). The same walks over the blocks
//! as `vae.rs` and `clip_vision.rs` (and diffusers' and transformers').
use super::clip_vision::ClipVisionConfig;
use super::unet_flops::{conv, linear};
use super::vae::AutoencoderKLConfig;

/// FLOPs of decoding one `h` x `w` latent: `post_quant_conv` and the decoder.
pub fn vae_decode_flops(cfg: &AutoencoderKLConfig, h: i64, w: i64) -> f64 {
    let boc = &cfg.block_out_channels;
    let n = boc.len();
    let lat = cfg.latent_channels;
    let px = |level: usize| ((h << level) * (w << level)) as f64;
    let mut total = if cfg.use_post_quant_conv {
        conv(px(0), lat, lat, 1)
    } else {
        0.0
    };
    total += conv(px(0), lat, boc[n - 1], 3) + mid_block(cfg, px(0), boc[n - 1]);
    for i in 0..n {
        let r = n - 1 - i;
        let prev = if i == 0 { boc[n - 1] } else { boc[r + 1] };
        for j in 0..=cfg.layers_per_block {
            total += resnet(px(i), if j == 0 { prev } else { boc[r] }, boc[r]);
        }
        if i + 1 < n {
            total += conv(px(i + 1), boc[r], boc[r], 3);
        }
    }
    total + conv(px(n - 1), boc[0], cfg.out_channels, 3)
}

/// FLOPs of encoding one `h` x `w` image: the encoder and `quant_conv`.
pub fn vae_encode_flops(cfg: &AutoencoderKLConfig, h: i64, w: i64) -> f64 {
    let boc = &cfg.block_out_channels;
    let n = boc.len();
    let mut size = (h, w);
    let px = |(a, b): (i64, i64)| (a * b) as f64;
    let mut total = conv(px(size), cfg.in_channels, boc[0], 3);
    for i in 0..n {
        let cin = if i == 0 { boc[0] } else { boc[i - 1] };
        for j in 0..cfg.layers_per_block {
            total += resnet(px(size), if j == 0 { cin } else { boc[i] }, boc[i]);
        }
        if i + 1 < n {
            // Padded by one on the right and bottom, then a stride-2 3x3 conv.
            size = ((size.0 - 2) / 2 + 1, (size.1 - 2) / 2 + 1);
            total += conv(px(size), boc[i], boc[i], 3);
        }
    }
    let moments = 2 * cfg.latent_channels;
    total += mid_block(cfg, px(size), boc[n - 1]) + conv(px(size), boc[n - 1], moments, 3);
    if cfg.use_quant_conv {
        total += conv(px(size), moments, moments, 1);
    }
    total
}

/// FLOPs of one image through CLIPVisionModelWithProjection: the patch embedding, every
/// layer (its q, k, v and out projections, the attention products, the MLP) and the
/// projection of the pooled token.
pub fn vision_flops(cfg: &ClipVisionConfig) -> f64 {
    let grid = cfg.image_size / cfg.patch_size;
    let patches = (grid * grid) as f64;
    let tokens = patches + 1.0;
    let d = cfg.hidden_size as f64;
    let embed = conv(patches, cfg.num_channels, cfg.hidden_size, cfg.patch_size);
    let mlp = |i: f64| linear(tokens, d, i) + linear(tokens, i, d);
    let layer =
        4.0 * linear(tokens, d, d) + 4.0 * tokens * tokens * d + mlp(cfg.intermediate_size as f64);
    embed + cfg.num_hidden_layers as f64 * layer + linear(1.0, d, cfg.projection_dim as f64)
}

/// UNetMidBlock2D of the VAE: two resnets around one single-head attention over the pixels.
fn mid_block(cfg: &AutoencoderKLConfig, px: f64, c: i64) -> f64 {
    let attention = if cfg.mid_block_add_attention {
        let c = c as f64;
        4.0 * linear(px, c, c) + 4.0 * px * px * c
    } else {
        0.0
    };
    2.0 * resnet(px, c, c) + attention
}

/// ResnetBlock2D without a time embedding: two 3x3 convs, a 1x1 shortcut when widths differ.
fn resnet(px: f64, cin: i64, cout: i64) -> f64 {
    let shortcut = if cin != cout {
        conv(px, cin, cout, 1)
    } else {
        0.0
    };
    conv(px, cin, cout, 3) + conv(px, cout, cout, 3) + shortcut
}
