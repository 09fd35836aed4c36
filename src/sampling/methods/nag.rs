//! `nag`: Normalized Attention Guidance (Chen et al. 2025, arXiv 2505.21179) with the
//! negative image. The rows of `negtome`: the uncond row takes the negative text and the
//! "no image" tokens (classifier-free guidance keeps the text negative, as with `uncond`),
//! the cond row the prompt and the positive image. In every cross-attention layer, the
//! cond row's output before the output projection, `z⁺ = Attn(q, prompt) + w·ImageAttn(q,
//! positive image)`, is guided away from `z⁻ = Attn(q, prompt) + neg_weight·ImageAttn(q,
//! negative image)` (the same queries and text, the negative image's tokens in place of
//! the positive's, so that `z⁺ − z⁻` is the images' difference alone):
//! `z̃ = nag_scale·z⁺ − (nag_scale − 1)·z⁻`, its per-token L1 norm capped at `nag_tau`
//! times `z⁺`'s, blended `nag_alpha·z̃ + (1 − nag_alpha)·z⁺`
//! ([`models::attention::Nag`](crate::models::attention::Nag)). No extra UNet row: one
//! more image attention per cross-attention layer on the cond row.
//!
//! The reference code (ComfyUI core `comfy_extras/nodes_nag.py`, ChenDarYen/ComfyUI-NAG
//! `utils.nag` and `sd/attention.py`) guides the whole cross-attention output with a
//! separate negative text conditioning; here the negative is the image, so `z⁻` swaps the
//! image tokens and keeps the prompt. ChenDarYen's `nag_sigma_end` (default 0: every step)
//! is the negative branch's window here (`neg_start`, `neg_end`): where the negative image's
//! weight is 0 (its window, `neg_blocks`), the layer is left as `z⁺`.
use super::{
    Attention, Branch, Cost, ExtraImage, NagStrength, NegativeMethod, ParamSpec, RowCond, cond_row,
    value,
};
use crate::params::{GenParams, Method, Row, RowImage};

pub struct Nag;

/// Names, defaults and ranges of ChenDarYen/ComfyUI-NAG's `NAGCFGGuider` node (`node.py`).
static PARAMS: [ParamSpec; 3] = [
    ParamSpec {
        name: "nag_scale",
        default: 5.0,
        min: 1.0,
        max: 100.0,
        min_exclusive: false,
        about: "nag_scale: the extrapolation away from the negative (1: none)",
    },
    ParamSpec {
        name: "nag_tau",
        default: 2.5,
        min: 1.0,
        max: 10.0,
        min_exclusive: false,
        about: "nag_tau: the cap on the L1-norm ratio of the guided output to the positive one",
    },
    ParamSpec {
        name: "nag_alpha",
        default: 0.25,
        min: 0.0,
        max: 1.0,
        min_exclusive: false,
        about: "nag_alpha: the guided output's share in the blend with the positive one",
    },
];

/// Attention work of a NAG cell per step beyond its two rows, in UNet rows: one image
/// attention over 4 or 16 tokens per cross-attention layer on one row, a copy of its text
/// attention and NAG's elementwise work. An estimate for SD1.5 shapes, not a measurement:
/// on the tiny CPU preset, where small operations dominate, `negimg bench` measures more
/// (README, "NAG").
const EXTRA_ATTENTION_ROWS: f64 = 0.05;

impl NegativeMethod for Nag {
    fn method(&self) -> Method {
        Method::Nag
    }

    fn row<'a>(&self, c: &'a GenParams, row: Row) -> RowCond<'a> {
        match row {
            Row::Cond => RowCond {
                extra: c.uncond_image().map(|p| ExtraImage {
                    image: RowImage::Image(p),
                    branch: Branch::Negative,
                    sign: 1.0,
                    nag: Some(strength(c)),
                }),
                ..cond_row(c)
            },
            _ => RowCond {
                text: c.uncond_text(),
                image: RowImage::NoImage,
                branch: Branch::Negative,
                extra: None,
            },
        }
    }

    fn attention(&self) -> Attention {
        Attention::Nag
    }

    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }

    fn cost(&self) -> Cost {
        Cost {
            rows: self.rows().len(),
            attention_rows: EXTRA_ATTENTION_ROWS,
        }
    }
}

fn strength(c: &GenParams) -> NagStrength {
    NagStrength {
        scale: value(c, "nag_scale"),
        tau: value(c, "nag_tau"),
        alpha: value(c, "nag_alpha"),
    }
}
