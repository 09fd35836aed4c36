//! FLOPs of one UNet row (one sample, one step) from its config, counted as torch's
//! `FlopCounterMode` counts them: 2 per multiply-add of every convolution, linear layer and
//! attention product; norms, activations and element-wise ops left out (a few percent).
//! The same walk over the blocks as `UNet2DConditionModel::new` and diffusers'.
use super::unet::{DownBlockType, UNet2DConditionConfig, UpBlockType};

/// What one UNet call attends to besides the latent: text tokens (77 for CLIP) and the
/// IP-Adapter's image tokens (0 without an adapter).
#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub text_tokens: i64,
    pub ip_tokens: i64,
}

/// FLOPs of one row through `cfg`'s UNet at a `h` x `w` latent.
pub fn unet_row_flops(cfg: &UNet2DConditionConfig, h: i64, w: i64, ctx: Context) -> f64 {
    let boc = &cfg.block_out_channels;
    let n = boc.len();
    let time_dim = cfg.time_embedding_dim.unwrap_or(4 * boc[0]) as f64;
    let mut total = linear(1.0, boc[0] as f64, time_dim) + linear(1.0, time_dim, time_dim);
    if let Some(input) = cfg.projection_class_embeddings_input_dim {
        total += linear(1.0, input as f64, time_dim) + linear(1.0, time_dim, time_dim);
    }
    let net = Net { cfg, time_dim, ctx };
    // Sizes of each level: the downsampling conv (stride 2, padding 1) rounds up.
    let mut sizes = vec![(h, w)];
    for _ in 1..n {
        let (a, b) = sizes[sizes.len() - 1];
        sizes.push(((a + 1) / 2, (b + 1) / 2));
    }
    let px = |level: usize| (sizes[level].0 * sizes[level].1) as f64;
    total += conv(px(0), cfg.in_channels, boc[0], cfg.conv_in_kernel);
    for i in 0..n {
        let cin = if i == 0 { boc[0] } else { boc[i - 1] };
        let cross = cfg.down_block_types[i] == DownBlockType::CrossAttnDownBlock2D;
        for j in 0..cfg.layers_per_block.get(i) {
            let r_in = if j == 0 { cin } else { boc[i] };
            total += net.resnet(px(i), r_in, boc[i]);
            if cross {
                total += net.transformer(px(i), boc[i], i);
            }
        }
        if i + 1 < n {
            total += conv(px(i + 1), boc[i], boc[i], 3);
        }
    }
    let last = boc[n - 1];
    total += 2.0 * net.resnet(px(n - 1), last, last) + net.transformer(px(n - 1), last, n - 1);
    for i in 0..n {
        let r = n - 1 - i;
        let prev = if i == 0 { boc[n - 1] } else { boc[r + 1] };
        let skip_last = boc[r.saturating_sub(1)];
        let layers = cfg.layers_per_block.get(r) + 1;
        let cross = cfg.up_block_types[i] == UpBlockType::CrossAttnUpBlock2D;
        for j in 0..layers {
            let skip = if j == layers - 1 { skip_last } else { boc[r] };
            let r_in = if j == 0 { prev } else { boc[r] };
            total += net.resnet(px(r), r_in + skip, boc[r]);
            if cross {
                total += net.transformer(px(r), boc[r], r);
            }
        }
        if i + 1 < n {
            total += conv(px(r - 1), boc[r], boc[r], 3);
        }
    }
    total + conv(px(0), boc[0], cfg.out_channels, cfg.conv_out_kernel)
}

struct Net<'a> {
    cfg: &'a UNet2DConditionConfig,
    time_dim: f64,
    ctx: Context,
}

impl Net<'_> {
    /// ResnetBlock2D: two 3x3 convs, the time projection, a 1x1 shortcut when widths differ.
    fn resnet(&self, px: f64, cin: i64, cout: i64) -> f64 {
        let shortcut = if cin != cout {
            conv(px, cin, cout, 1)
        } else {
            0.0
        };
        conv(px, cin, cout, 3)
            + conv(px, cout, cout, 3)
            + linear(1.0, self.time_dim, cout as f64)
            + shortcut
    }

    /// Transformer2DModel of block `i` at `px` tokens of width `c`: proj_in/out (1x1 conv or
    /// linear, the same count) and its BasicTransformerBlocks (self-attention, cross-attention
    /// to the text and, with an adapter, to the image tokens; GEGLU feed-forward 4x).
    fn transformer(&self, px: f64, c: i64, i: usize) -> f64 {
        let c = c as f64;
        let cross = self.cfg.cross_attention_dim.get(i) as f64;
        let (text, ip) = (self.ctx.text_tokens as f64, self.ctx.ip_tokens as f64);
        let self_attn = 4.0 * linear(px, c, c) + 4.0 * px * px * c;
        let kv = |tokens: f64| 2.0 * linear(tokens, cross, c) + 4.0 * px * tokens * c;
        let cross_attn = 2.0 * linear(px, c, c) + kv(text) + if ip > 0.0 { kv(ip) } else { 0.0 };
        let ff = linear(px, c, 8.0 * c) + linear(px, 4.0 * c, c);
        let layers = self.cfg.transformer_layers_per_block.get(i) as f64;
        2.0 * linear(px, c, c) + layers * (self_attn + cross_attn + ff)
    }
}

/// `rows` x `cin` by `cin` x `cout`.
pub(crate) fn linear(rows: f64, cin: f64, cout: f64) -> f64 {
    2.0 * rows * cin * cout
}

/// A `k` x `k` convolution producing `px` output pixels.
pub(crate) fn conv(px: f64, cin: i64, cout: i64, k: i64) -> f64 {
    2.0 * px * (cin * cout * k * k) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIP: Context = Context {
        text_tokens: 77,
        ip_tokens: 0,
    };

    /// SD1.5's figure (1.607 TFLOP per two-row CFG step at 512², torch's FlopCounterMode on
    /// the real UNet, cli/estimate.rs) within 2%: the walk over the blocks is SD1.5's.
    #[test]
    fn sd15_count_matches_the_measured_figure() {
        let row = unet_row_flops(&UNet2DConditionConfig::sd15(), 64, 64, CLIP);
        let measured = 1.607e12 / 2.0;
        assert!(
            (row / measured - 1.0).abs() < 0.02,
            "{row:.4e} vs {measured:.4e}"
        );
    }

    /// SDXL at 1024² costs several SD1.5 steps at 512²; both grow with the pixels (slightly
    /// faster, self-attention is quadratic), and SDXL with its transformer depth.
    #[test]
    fn sdxl_count_grows_with_resolution_and_depth() {
        let sdxl = UNet2DConditionConfig::sdxl();
        let sd15 = UNet2DConditionConfig::sd15();
        let xl = unet_row_flops(&sdxl, 128, 128, CLIP);
        let base = unet_row_flops(&sd15, 64, 64, CLIP);
        assert!(xl / base > 6.0 && xl / base < 12.0, "{xl:.3e} / {base:.3e}");
        let half = unet_row_flops(&sdxl, 64, 64, CLIP);
        assert!(xl / half > 4.0 && xl / half < 4.6, "{}", xl / half);
        let mut shallow = sdxl.clone();
        shallow.transformer_layers_per_block = super::super::unet::OneOrMany::Many(vec![1, 2, 5]);
        assert!(unet_row_flops(&shallow, 128, 128, CLIP) < xl);
        let with_ip = Context {
            ip_tokens: 4,
            ..CLIP
        };
        assert!(unet_row_flops(&sdxl, 128, 128, with_ip) > xl);
    }
}
