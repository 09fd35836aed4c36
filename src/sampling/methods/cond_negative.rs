//! `cond_negative`: the negative image's tokens enter the cond row beside the positive
//! image's, at a negative weight: two image-attention terms, each with its own softmax,
//! `w·Attn(q, K₊, V₊) − neg_weight·Attn(q, K₋, V₋)` (ComfyUI users chain two IPAdapter
//! nodes, the second at weight −1; the IP-Adapter analogue of Value Sign Flip, arXiv
//! 2508.10931). The uncond row takes both terms on the "no image" tokens, as two loaded
//! IP-Adapters give it (diffusers with scales `[w, −neg_weight]`). Two rows, classifier-free
//! guidance.
use super::{Branch, ExtraImage, NegativeMethod, RowCond, cond_row};
use crate::params::{GenParams, Method, Row, RowImage};

pub struct CondNegative;

impl NegativeMethod for CondNegative {
    fn method(&self) -> Method {
        Method::CondNegative
    }

    fn row<'a>(&self, c: &'a GenParams, row: Row) -> RowCond<'a> {
        let negative = c.uncond_image();
        let extra = |image| ExtraImage {
            image,
            branch: Branch::Negative,
            sign: -1.0,
            nag: None,
        };
        match row {
            Row::Cond => RowCond {
                extra: negative.map(|p| extra(RowImage::Image(p))),
                ..cond_row(c)
            },
            _ => RowCond {
                text: c.uncond_text(),
                image: RowImage::NoImage,
                branch: Branch::Positive,
                extra: negative.map(|_| extra(RowImage::NoImage)),
            },
        }
    }
}
