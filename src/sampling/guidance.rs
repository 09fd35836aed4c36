//! Classifier-free guidance with per-row image weights and guidance scales, for every
//! negative method.
//!
//! Row layout of a batch of B cells: the uncond row of every cell, then the cond row of
//! every cell, then the negative row of each three-row cell (`three_branch`, `perp_neg`) in
//! cell order. Cells of different methods share a batch this way, and the two-row part is
//! laid out as it was before the three-row methods.
//!
//! The IP-Adapter scale of each row comes from its branch ([`GenParams::row_weight`])
//! evaluated at the step with [`BranchWeight::at`](crate::params::BranchWeight::at) under
//! the cell's window rule (`window = "steps"`: with N steps, step i (0-based) is active iff
//! `start <= i/N < end`; `"sigma"`: ComfyUI's rule on the step's noise level); an inactive
//! branch has scale 0 at that step. So a window takes effect at its first step (not one
//! late), and the negative weight applies at every step (the two defects of the demo).
//!
//! A branch with a step set (`steps_at`, `neg_steps_at`) is active at the steps of the set
//! instead of its window; where the negative branch is off, `neg_off = "no_image"` gives its
//! rows the "no image" tokens at the branch weight ([`GenParams::row_ip`]).
//!
//! Each row's scale is given per cross-attention block (execution order: down, mid, up):
//! the branch's weight times the factor of the row's [`GenParams::row_blocks`] for that
//! block. `blocks = "all"` gives every block the branch weight.
use crate::params::{GenParams, Method, Row, StepAt};
use tch::{Device, Kind, Tensor};

/// The rows of a batch in UNet order, as (cell index, row).
pub fn row_layout(cells: &[&GenParams]) -> Vec<(usize, Row)> {
    let two = [Row::Uncond, Row::Cond]
        .into_iter()
        .flat_map(|row| (0..cells.len()).map(move |i| (i, row)));
    let neg = (0..cells.len())
        .filter(|&i| cells[i].rows().contains(&Row::Negative))
        .map(|i| (i, Row::Negative));
    two.chain(neg).collect()
}

/// The IP-Adapter scale of each UNet row at `step`, in [`row_layout`] order, for each of
/// `blocks` cross-attention blocks: `[block][row]`.
pub fn ip_scales(cells: &[&GenParams], step: &StepAt, blocks: usize) -> Vec<Vec<f64>> {
    let per_row: Vec<Vec<f64>> = row_layout(cells)
        .into_iter()
        .map(|(i, row)| {
            let weight = cells[i].row_ip(row, step).weight;
            let factors = cells[i].row_blocks(row).factors(blocks);
            factors.into_iter().map(|f| weight * f).collect()
        })
        .collect();
    (0..blocks)
        .map(|b| per_row.iter().map(|r| r[b]).collect())
        .collect()
}

/// Which rows, in [`row_layout`] order, take the "no image" tokens in place of their own at
/// `step` (`neg_off = "no_image"` outside the negative branch's steps).
pub fn no_image_rows(cells: &[&GenParams], step: &StepAt) -> Vec<bool> {
    row_layout(cells)
        .into_iter()
        .map(|(i, row)| cells[i].row_ip(row, step).no_image_tokens)
        .collect()
}

/// The same as a `[blocks, rows]` tensor of `kind` on `device`.
pub fn ip_scale_tensor(
    cells: &[&GenParams],
    step: &StepAt,
    blocks: usize,
    device: Device,
    kind: Kind,
) -> Tensor {
    let scales = ip_scales(cells, step, blocks);
    let rows = scales.first().map_or(0, Vec::len) as i64;
    Tensor::from_slice(&scales.concat())
        .view([blocks as i64, rows])
        .to_kind(kind)
        .to_device(device)
}

/// Guided noise prediction `[B, ...]` from the UNet output `eps` of the rows of
/// [`row_layout`]. Two-row cells: `uncond + cfg * (cond - uncond)`, `cond` alone when
/// `cfg <= 1` (as diffusers when guidance is off). Three-row cells: see [`three_rows`].
pub fn combine(eps: &Tensor, cells: &[&GenParams]) -> Tensor {
    let b = cells.len() as i64;
    let cfg: Vec<f64> = cells.iter().map(|c| c.cfg).collect();
    let two = two_rows(&eps.narrow(0, 0, b), &eps.narrow(0, b, b), &cfg);
    let three: Vec<usize> = (0..cells.len())
        .filter(|&i| cells[i].method.rows() == 3)
        .collect();
    if three.is_empty() {
        return two;
    }
    let rows: Vec<Tensor> = (0..cells.len())
        .map(|i| match three.iter().position(|&j| j == i) {
            None => two.get(i as i64),
            Some(k) => three_rows(
                cells[i],
                &eps.get(i as i64),
                &eps.get(b + i as i64),
                &eps.get(2 * b + k as i64),
            ),
        })
        .collect();
    Tensor::stack(&rows, 0)
}

fn two_rows(uncond: &Tensor, cond: &Tensor, cfg: &[f64]) -> Tensor {
    let b = cfg.len() as i64;
    let scale = Tensor::from_slice(cfg)
        .to_kind(uncond.kind())
        .to_device(uncond.device())
        .view([b, 1, 1, 1]);
    let guided = uncond + (cond - uncond) * &scale;
    if cfg.iter().all(|&g| g > 1.0) {
        return guided;
    }
    let on = Tensor::from_slice(&cfg.iter().map(|&g| g > 1.0).collect::<Vec<bool>>())
        .to_device(uncond.device())
        .view([b, 1, 1, 1]);
    guided.where_self(&on, cond)
}

/// One three-row cell from ε∅, ε₊, ε₋ (`[C, H, W]` each), with `p = ε₊ − ε∅` and
/// `n = ε₋ − ε∅`:
/// - `three_branch`: `ε∅ + cfg·p − neg_cfg·n`;
/// - `perp_neg`: `ε∅ + cfg·(p − neg_cfg·n⊥)`, `n⊥ = n − (⟨n,p⟩/‖p‖²)·p` over this cell's
///   values only (ComfyUI takes one ⟨n,p⟩/‖p‖² over its whole batch, which would make a
///   cell depend on the cells batched with it). `p = 0` gives `n⊥ = n`.
///
/// No `cfg <= 1` rule here: the formulas apply as written at every scale.
pub fn three_rows(cell: &GenParams, uncond: &Tensor, cond: &Tensor, neg: &Tensor) -> Tensor {
    let p = cond - uncond;
    let n = neg - uncond;
    match cell.method {
        Method::PerpNeg => {
            let p_sq = (&p * &p)
                .sum(Kind::Float)
                .clamp_min(f64::from(f32::MIN_POSITIVE));
            let coef = ((&n * &p).sum(Kind::Float) / p_sq).to_kind(p.kind());
            let perp = &n - &p * coef;
            uncond + (p - perp * cell.neg_cfg()) * cell.cfg
        }
        _ => uncond + p * cell.cfg - n * cell.neg_cfg(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::test_schedule::step;
    use crate::params::{BranchWeight, Window};

    #[test]
    fn scales_follow_each_branch_window_from_its_first_step() {
        let mut c = GenParams::new(0);
        c.positive = BranchWeight {
            weight: 0.8,
            start: 0.5,
            end: 1.0,
        };
        c.negative_branch = BranchWeight {
            weight: 0.3,
            start: 0.0,
            end: 0.5,
        };
        let per_step: Vec<Vec<f64>> = (0..4)
            .map(|i| ip_scales(&[&c], &step(i, 4, 0.0), 1)[0].clone())
            .collect();
        assert_eq!(
            per_step,
            vec![
                vec![0.3, 0.0],
                vec![0.3, 0.0],
                vec![0.0, 0.8],
                vec![0.0, 0.8]
            ]
        );
    }

    #[test]
    fn each_cell_follows_its_own_window_rule() {
        // Step 1 of 4 at sigma 9: the steps rule gives 0.25 (outside [0, 0.2)); sigma 9 lies
        // between sigma(0) = 10 and sigma(0.2) = 8, so the sigma rule is active.
        let mut steps = GenParams::new(0);
        steps.positive = BranchWeight {
            weight: 0.5,
            start: 0.0,
            end: 0.2,
        };
        steps.negative_branch = steps.positive;
        let mut sigma = steps.clone();
        sigma.window = Window::Sigma;
        let scales = ip_scales(&[&steps, &sigma], &step(1, 4, 9.0), 1);
        assert_eq!(scales[0], vec![0.0, 0.5, 0.0, 0.5]);
    }

    #[test]
    fn block_factors_multiply_each_rows_branch_weight() {
        let mut c = GenParams::new(0);
        c.positive.weight = 0.5;
        c.negative_branch.weight = 2.0;
        c.blocks = "1:0.5".parse().unwrap();
        c.neg_blocks = crate::params::BlockWeights::Composition;
        let s = ip_scales(&[&c], &step(0, 4, 0.0), 16);
        // Rows: uncond (negative branch), cond (positive branch).
        assert_eq!(s[1], vec![0.0, 0.25]);
        assert_eq!(s[4], vec![0.5, 0.0]);
        assert_eq!(s[5], vec![2.0, 0.0]);
        assert!(s[6..].iter().all(|r| r == &vec![0.0, 0.0]));
        // Three-row methods: the uncond row (ε∅) follows `blocks` as it follows `weight`.
        c.method = Method::PerpNeg;
        let s = ip_scales(&[&c], &step(0, 4, 0.0), 16);
        assert_eq!(s[1], vec![0.25, 0.25, 0.0]);
        assert_eq!(s[5], vec![0.0, 0.0, 2.0]);
        let t = ip_scale_tensor(&[&c], &step(0, 4, 0.0), 16, Device::Cpu, Kind::Float);
        assert_eq!(t.size(), [16, 3]);
    }

    #[test]
    fn cfg_combines_per_row_and_is_off_at_one() {
        let eps = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 5.0]).view([4, 1, 1, 1]);
        let mut a = GenParams::new(0);
        a.cfg = 2.0;
        let mut b = a.clone();
        b.cfg = 1.0;
        let out = combine(&eps, &[&a, &b]);
        let v = Vec::<f32>::try_from(out.flatten(0, -1)).unwrap();
        assert_eq!(v, vec![4.0, 5.0]);
    }

    #[test]
    fn three_row_cells_take_their_rows_after_the_two_row_part() {
        let two = GenParams::new(0);
        let mut three = GenParams::new(1);
        three.method = Method::ThreeBranch;
        three.cfg = 2.0;
        three.neg_cfg = Some(0.5);
        let layout = row_layout(&[&three, &two]);
        assert_eq!(
            layout,
            vec![
                (0, Row::Uncond),
                (1, Row::Uncond),
                (0, Row::Cond),
                (1, Row::Cond),
                (0, Row::Negative)
            ]
        );
        // rows: e0 of three = 1, e0 of two = 0, e+ = 3 and 4, e- of three = 5.
        let eps = Tensor::from_slice(&[1.0f32, 0.0, 3.0, 4.0, 5.0]).view([5, 1, 1, 1]);
        let v = Vec::<f32>::try_from(combine(&eps, &[&three, &two]).flatten(0, -1)).unwrap();
        // 1 + 2*(3-1) - 0.5*(5-1) = 3; 0 + 7.5*(4-0) = 30.
        assert_eq!(v, vec![3.0, 30.0]);
    }

    #[test]
    fn perp_neg_keeps_only_the_orthogonal_part_of_the_negative() {
        let mut c = GenParams::new(0);
        c.method = Method::PerpNeg;
        c.cfg = 2.0;
        c.neg_cfg = Some(1.0);
        let t = |v: [f32; 2]| Tensor::from_slice(&v).view([2, 1, 1]);
        // p = (1, 0), n = (3, 4): n⊥ = (0, 4); ε = 0 + 2*((1,0) - (0,4)).
        let out = three_rows(&c, &t([0.0, 0.0]), &t([1.0, 0.0]), &t([3.0, 4.0]));
        let v = Vec::<f32>::try_from(out.flatten(0, -1)).unwrap();
        assert_eq!(v, vec![2.0, -8.0]);
    }
}
