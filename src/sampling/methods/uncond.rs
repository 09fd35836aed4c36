//! `uncond`: the negative image's tokens replace the "no image" tokens of the uncond row
//! (the seed demo's trick, ComfyUI's negative image input): two-row classifier-free
//! guidance `ε∅' + cfg·(ε₊ − ε∅')`, ε∅' conditioned on the negative text and image.
use super::{Branch, NegativeMethod, RowCond, cond_row, image_or_none};
use crate::params::{GenParams, Method, Row};

pub struct Uncond;

impl NegativeMethod for Uncond {
    fn method(&self) -> Method {
        Method::Uncond
    }

    fn row<'a>(&self, c: &'a GenParams, row: Row) -> RowCond<'a> {
        match row {
            Row::Cond => cond_row(c),
            _ => RowCond {
                text: c.uncond_text(),
                image: image_or_none(c.uncond_image()),
                branch: Branch::Negative,
                extra: None,
            },
        }
    }
}
