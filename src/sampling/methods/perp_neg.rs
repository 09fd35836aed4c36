//! `perp_neg` (Armandpour et al. 2023, ComfyUI's PerpNeg): the rows of `three_branch`;
//! with `p = ε₊ − ε∅` and `n = ε₋ − ε∅`, `ε∅ + cfg·(p − neg_cfg·n⊥)`,
//! `n⊥ = n − (⟨n,p⟩/‖p‖²)·p` over this cell's values only (ComfyUI takes one ⟨n,p⟩/‖p‖²
//! over its whole batch, which would make a cell depend on the cells batched with it).
//! `p = 0` gives `n⊥ = n`.
use super::three_branch::{ROWS, row};
use super::{CellState, NegativeMethod, RowCond, Step};
use crate::params::{GenParams, Method, Row};
use tch::{Kind, Tensor};

pub struct PerpNeg;

impl NegativeMethod for PerpNeg {
    fn method(&self) -> Method {
        Method::PerpNeg
    }

    fn rows(&self) -> &'static [Row] {
        &ROWS
    }

    fn row<'a>(&self, c: &'a GenParams, r: Row) -> RowCond<'a> {
        row(c, r)
    }

    fn guide(&self, c: &GenParams, eps: &[Tensor], _: &mut CellState, _: &Step) -> Tensor {
        let uncond = &eps[0];
        let p = &eps[1] - uncond;
        let n = &eps[2] - uncond;
        uncond + (&p - perpendicular(&n, &p) * c.neg_cfg()) * c.cfg
    }

    fn keys(&self) -> &'static [&'static str] {
        &["neg_cfg"]
    }
}

/// The part of `n` orthogonal to `p`.
fn perpendicular(n: &Tensor, p: &Tensor) -> Tensor {
    let p_sq = (p * p)
        .sum(Kind::Float)
        .clamp_min(f64::from(f32::MIN_POSITIVE));
    let coef = ((n * p).sum(Kind::Float) / p_sq).to_kind(p.kind());
    n - p * coef
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perp_neg_keeps_only_the_orthogonal_part_of_the_negative() {
        let mut c = GenParams::new(0);
        c.method = Method::PerpNeg;
        c.cfg = 2.0;
        c.neg_cfg = Some(1.0);
        let t = |v: [f32; 2]| Tensor::from_slice(&v).view([2, 1, 1]);
        // p = (1, 0), n = (3, 4): n⊥ = (0, 4); ε = 0 + 2*((1,0) - (0,4)).
        let eps = [t([0.0, 0.0]), t([1.0, 0.0]), t([3.0, 4.0])];
        let schedule = crate::params::test_schedule::step(0, 1, 0.0);
        let at = Step {
            at: &schedule,
            timestep: 999.0,
        };
        let out = PerpNeg.guide(&c, &eps, &mut CellState::default(), &at);
        let v = Vec::<f32>::try_from(out.flatten(0, -1)).unwrap();
        assert_eq!(v, vec![2.0, -8.0]);
    }
}
