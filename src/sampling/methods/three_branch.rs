//! `three_branch`: rows ε∅ (empty text, "no image" tokens), ε₊ and ε₋ (the negative text
//! and image): `ε∅ + cfg·(ε₊ − ε∅) − neg_cfg·(ε₋ − ε∅)`. No `cfg <= 1` rule: the formula
//! applies as written at every scale.
use super::{Branch, CellState, NegativeMethod, RowCond, Step, cond_row, image_or_none};
use crate::params::{GenParams, Method, Row, RowImage};
use tch::Tensor;

pub struct ThreeBranch;

/// The rows of the three-row methods. ε∅ takes the positive branch's weight, window and
/// blocks, as the official IP-Adapter weights its "no image" tokens with its one scale;
/// the negative row takes the negative branch's.
pub(super) const ROWS: [Row; 3] = [Row::Uncond, Row::Cond, Row::Negative];

pub(super) fn row(c: &GenParams, row: Row) -> RowCond<'_> {
    match row {
        Row::Cond => cond_row(c),
        Row::Uncond => RowCond {
            text: "",
            image: RowImage::NoImage,
            branch: Branch::Positive,
            extra: None,
        },
        Row::Negative => RowCond {
            text: c.uncond_text(),
            image: image_or_none(c.uncond_image()),
            branch: Branch::Negative,
            extra: None,
        },
    }
}

impl NegativeMethod for ThreeBranch {
    fn method(&self) -> Method {
        Method::ThreeBranch
    }

    fn rows(&self) -> &'static [Row] {
        &ROWS
    }

    fn row<'a>(&self, c: &'a GenParams, r: Row) -> RowCond<'a> {
        row(c, r)
    }

    fn guide(&self, c: &GenParams, eps: &[Tensor], _: &mut CellState, _: &Step) -> Tensor {
        let (uncond, cond, neg) = (&eps[0], &eps[1], &eps[2]);
        uncond + (cond - uncond) * c.cfg - (neg - uncond) * c.neg_cfg()
    }

    fn keys(&self) -> &'static [&'static str] {
        &["neg_cfg"]
    }
}
