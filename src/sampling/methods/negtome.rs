//! `negtome`: NegToMe alone (Singh et al. 2024). Two rows without the negative image's
//! tokens (the uncond row takes the negative text and "no image" tokens); the negative
//! image enters only NegToMe's token merge in the attention layers
//! ([`sampling::negtome`](crate::sampling::negtome) for its reference rows). Any other
//! method adds the merge with `negtome = true`.
use super::{Attention, Branch, NegativeMethod, RowCond, cond_row};
use crate::params::{GenParams, Method, Row, RowImage};

pub struct Negtome;

/// The keys of the token merge (read by any method with `negtome = true`).
pub(super) const KEYS: [&str; 4] = [
    "negtome_alpha",
    "negtome_threshold",
    "negtome_t_min",
    "negtome_t_max",
];

impl NegativeMethod for Negtome {
    fn method(&self) -> Method {
        Method::Negtome
    }

    fn row<'a>(&self, c: &'a GenParams, row: Row) -> RowCond<'a> {
        match row {
            Row::Cond => cond_row(c),
            _ => RowCond {
                text: c.uncond_text(),
                image: RowImage::NoImage,
                branch: Branch::Negative,
                extra: None,
            },
        }
    }

    fn attention(&self) -> Attention {
        Attention::TokenMerge
    }

    fn keys(&self) -> &'static [&'static str] {
        &KEYS
    }
}
