//! `subtract`: the cond row gets the tokens of `e(pos) − neg_embed_scale·e(neg)` (the image
//! encoder's output before the adapter's projection, as ComfyUI's "subtract" combine of
//! embeddings); the uncond row the "no image" tokens. Two rows, classifier-free guidance.
use super::{Branch, NegativeMethod, RowCond, cond_row};
use crate::params::{GenParams, Method, Row, RowImage};

pub struct Subtract;

impl NegativeMethod for Subtract {
    fn method(&self) -> Method {
        Method::Subtract
    }

    fn row<'a>(&self, c: &'a GenParams, row: Row) -> RowCond<'a> {
        match (row, c.uncond_image()) {
            (Row::Cond, Some(negative)) => RowCond {
                image: RowImage::Subtract {
                    positive: c.positive_image.as_ref(),
                    negative,
                    scale: c.neg_embed_scale,
                },
                ..cond_row(c)
            },
            (Row::Cond, None) => cond_row(c),
            _ => RowCond {
                text: c.uncond_text(),
                image: RowImage::NoImage,
                branch: Branch::Negative,
                extra: None,
            },
        }
    }

    fn keys(&self) -> &'static [&'static str] {
        &["neg_embed_scale"]
    }
}
