//! Classifier-free guidance with per-row image weights and guidance scales, for every
//! negative method (`methods`: which rows a cell has, what conditions each, how its
//! prediction is made from them).
//!
//! Row layout of a batch of B cells: the uncond row of every cell, then the cond row of
//! every cell, then the rows a method adds (the negative row of `three_branch` and
//! `perp_neg`), cell by cell in cell order. Cells of different methods share a batch this
//! way, and the two-row part is laid out as it was before the three-row methods.
//!
//! The IP-Adapter scale of each row comes from its branch ([`RowCond::branch`]) evaluated
//! at the step ([`Branch::ip`]: its step set, else
//! [`BranchWeight::active`](crate::params::BranchWeight::active) under the cell's window
//! rule: `window = "steps"`: with N steps, step i (0-based) is active iff
//! `start <= i/N < end`; `"sigma"`: ComfyUI's rule on the step's noise level); an inactive
//! branch has scale 0 at that step. So a window takes effect at its first step (not one
//! late), and the negative weight applies at every step (the two defects of the demo).
//!
//! A branch with a step set (`steps_at`, `neg_steps_at`) is active at the steps of the set
//! instead of its window; where the negative branch is off, `neg_off = "no_image"` gives its
//! rows (and second terms) the "no image" tokens at the branch weight ([`Branch::ip`]).
//!
//! Each row's scale is given per cross-attention block (execution order: down, mid, up):
//! the branch's weight times the factor of its block weights for that block.
//! `blocks = "all"` gives every block the branch weight.
use super::AncestralStep;
use super::methods::{self, Branch, CellState, ExtraImage, RowCond, Step};
use crate::params::{GenParams, Row, StepAt};
use tch::{Device, Kind, Tensor};

/// The rows of a batch in UNet order, as (cell index, row).
pub fn row_layout(cells: &[&GenParams]) -> Vec<(usize, Row)> {
    let two = [Row::Uncond, Row::Cond]
        .into_iter()
        .flat_map(|row| (0..cells.len()).map(move |i| (i, row)));
    let own = (0..cells.len()).flat_map(|i| {
        methods::of(cells[i].method).rows()[2..]
            .iter()
            .map(move |&r| (i, r))
    });
    two.chain(own).collect()
}

/// What conditions each row of [`row_layout`].
pub fn row_conds<'a>(cells: &[&'a GenParams]) -> Vec<RowCond<'a>> {
    row_layout(cells)
        .into_iter()
        .map(|(i, row)| methods::of(cells[i].method).row(cells[i], row))
        .collect()
}

/// The IP-Adapter scale of each UNet row at `step`, in [`row_layout`] order, for each of
/// `blocks` cross-attention blocks: `[block][row]`.
pub fn ip_scales(cells: &[&GenParams], step: &StepAt, blocks: usize) -> Vec<Vec<f64>> {
    let per_row: Vec<Vec<f64>> = row_layout(cells)
        .into_iter()
        .map(|(i, row)| {
            let c = cells[i];
            let branch = methods::of(c.method).row(c, row).branch;
            branch_scales(c, branch, step, blocks)
        })
        .collect();
    by_block(&per_row, blocks)
}

/// The weight of `c`'s `branch` at `step` times its factor of each of `blocks` blocks.
fn branch_scales(c: &GenParams, branch: Branch, step: &StepAt, blocks: usize) -> Vec<f64> {
    let weight = branch.ip(c, step).weight;
    let factors = branch.blocks(c).factors(blocks);
    factors.into_iter().map(|f| weight * f).collect()
}

/// Per-row scales `[row][block]` as `[block][row]`.
fn by_block(per_row: &[Vec<f64>], blocks: usize) -> Vec<Vec<f64>> {
    (0..blocks)
        .map(|b| per_row.iter().map(|r| r[b]).collect())
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
    scale_tensor(&ip_scales(cells, step, blocks), blocks, device, kind)
}

fn scale_tensor(scales: &[Vec<f64>], blocks: usize, device: Device, kind: Kind) -> Tensor {
    let rows = scales.first().map_or(0, Vec::len) as i64;
    Tensor::from_slice(&scales.concat())
        .view([blocks as i64, rows])
        .to_kind(kind)
        .to_device(device)
}

/// Which image-attention term of a UNet row: the row's own, or its second term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Term {
    Own,
    Extra,
}

/// Where a cell's images enter the image attention, as UNet rows in [`row_layout`] order:
/// the negative image (`None` where no row carries one: no negative image, or a method
/// that does not put it in the image attention, as NegToMe), and the cond row (the
/// positive image's, the difference's for `subtract`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageRows {
    pub negative: Option<(usize, Term)>,
    pub positive: usize,
}

/// Whether a row carries its cell's negative image, and in which term.
fn negative_term(cond: &RowCond) -> Option<Term> {
    use crate::params::RowImage;
    match (cond.extra, cond.image, cond.branch) {
        (
            Some(ExtraImage {
                image: RowImage::Image(_),
                ..
            }),
            _,
            _,
        ) => Some(Term::Extra),
        (_, RowImage::Subtract { .. }, _) | (_, RowImage::Image(_), Branch::Negative) => {
            Some(Term::Own)
        }
        _ => None,
    }
}

/// [`ImageRows`] of each cell, in cell order.
pub fn image_rows(cells: &[&GenParams]) -> Vec<ImageRows> {
    let layout = row_layout(cells);
    let conds = row_conds(cells);
    (0..cells.len())
        .map(|i| {
            let rows = || layout.iter().enumerate().filter(move |(_, (c, _))| *c == i);
            let negative = rows().find_map(|(r, _)| Some((r, negative_term(&conds[r])?)));
            let positive = rows()
                .find(|(_, (_, row))| *row == Row::Cond)
                .map(|(r, _)| r)
                .expect("every cell has a cond row");
            ImageRows { negative, positive }
        })
        .collect()
}

/// The UNet rows (in [`row_layout`] order) with a second image-attention term
/// ([`RowCond::extra`]), and what conditions each.
pub fn extra_rows<'a>(cells: &[&'a GenParams]) -> Vec<(usize, ExtraImage<'a>)> {
    row_conds(cells)
        .into_iter()
        .enumerate()
        .filter_map(|(r, cond)| Some((r, cond.extra?)))
        .collect()
}

/// The scales of the terms of [`extra_rows`] at `step`: `[blocks, S]`, each its branch's
/// weight times its sign.
pub fn extra_scale_tensor(
    cells: &[&GenParams],
    step: &StepAt,
    blocks: usize,
    device: Device,
    kind: Kind,
) -> Tensor {
    let cell_of = row_layout(cells);
    let per_row: Vec<Vec<f64>> = extra_rows(cells)
        .into_iter()
        .map(|(r, extra)| {
            let c = cells[cell_of[r].0];
            let scales = branch_scales(c, extra.branch, step, blocks);
            scales.into_iter().map(|s| extra.sign * s).collect()
        })
        .collect();
    scale_tensor(&by_block(&per_row, blocks), blocks, device, kind)
}

/// Which rows, in [`row_layout`] order, take the "no image" tokens in place of their own at
/// `step` (`neg_off = "no_image"` outside the negative branch's steps).
pub fn no_image_rows(cells: &[&GenParams], step: &StepAt) -> Vec<bool> {
    let cell_of = row_layout(cells);
    row_conds(cells)
        .into_iter()
        .zip(cell_of)
        .map(|(row, (i, _))| row.branch.ip(cells[i], step).no_image_tokens)
        .collect()
}

/// The same for the second terms of [`extra_rows`].
pub fn no_image_extras(cells: &[&GenParams], step: &StepAt) -> Vec<bool> {
    let cell_of = row_layout(cells);
    extra_rows(cells)
        .into_iter()
        .map(|(r, extra)| extra.branch.ip(cells[cell_of[r].0], step).no_image_tokens)
        .collect()
}

/// NAG's scale, τ and α of the terms of [`extra_rows`] that are NAG's negative
/// ([`ExtraImage::nag`]): `[S]` whether each is, and the three `[S]` (1, 1, 0 where not);
/// `None` when none is.
pub fn extra_nag(cells: &[&GenParams]) -> Option<[Vec<f64>; 4]> {
    let strengths: Vec<_> = extra_rows(cells).into_iter().map(|(_, x)| x.nag).collect();
    strengths.iter().any(Option::is_some).then(|| {
        let of = |f: fn(&methods::NagStrength) -> f64, off: f64| {
            strengths
                .iter()
                .map(|s| s.as_ref().map_or(off, f))
                .collect()
        };
        [
            of(|_| 1.0, 0.0),
            of(|s| s.scale, 1.0),
            of(|s| s.tau, 1.0),
            of(|s| s.alpha, 0.0),
        ]
    })
}

/// Guided noise prediction `[B, ...]` from the UNet output `eps` of the rows of
/// [`row_layout`]: each cell's method guides from its own rows, with its state.
pub fn combine(
    eps: &Tensor,
    cells: &[&GenParams],
    states: &mut [CellState],
    step: &Step,
) -> Tensor {
    let mut rows_of: Vec<Vec<Tensor>> = cells.iter().map(|_| Vec::new()).collect();
    for (r, (i, _)) in row_layout(cells).into_iter().enumerate() {
        rows_of[i].push(eps.get(r as i64));
    }
    let guided: Vec<Tensor> = (0..cells.len())
        .map(|i| methods::of(cells[i].method).guide(cells[i], &rows_of[i], &mut states[i], step))
        .collect();
    Tensor::stack(&guided, 0)
}

/// Tells each cell's method the step taken, from `x` to `next` (`[B, ...]`), with the
/// step's noise levels for an ancestral scheduler.
pub fn after_step(
    cells: &[&GenParams],
    states: &mut [CellState],
    x: &Tensor,
    next: &Tensor,
    ancestral: Option<AncestralStep>,
) {
    for (i, c) in cells.iter().enumerate() {
        let (before, after) = (x.get(i as i64), next.get(i as i64));
        methods::of(c.method).after_step(c, &mut states[i], &before, &after, ancestral);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::test_schedule::step;
    use crate::params::{BranchWeight, Method, Window};

    /// `combine` at a step where no state matters.
    fn guide(eps: &Tensor, cells: &[&GenParams]) -> Vec<f32> {
        let at = step(0, 1, 0.0);
        let step = Step {
            at: &at,
            timestep: 999.0,
        };
        let mut states: Vec<CellState> = cells.iter().map(|_| CellState::default()).collect();
        Vec::<f32>::try_from(combine(eps, cells, &mut states, &step).flatten(0, -1)).unwrap()
    }

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
    fn attention_map_rows_are_those_that_carry_the_negative_image() {
        use crate::params::NegativeMode;
        let cell = |method: Method, image: bool| {
            let mut c = GenParams::new(0);
            c.method = method;
            c.negative = NegativeMode::Image;
            c.negative_image = image.then(|| "neg.png".into());
            c
        };
        let rows = |c: &GenParams, other: &GenParams| image_rows(&[other, c])[1];
        let two = GenParams::new(0);
        // Layout with a two-row cell first: uncond 0, 1; cond 2, 3; own rows from 4.
        let want = [
            (Method::Uncond, Some((1, Term::Own))),
            (Method::Subtract, Some((3, Term::Own))),
            (Method::ThreeBranch, Some((4, Term::Own))),
            (Method::PerpNeg, Some((4, Term::Own))),
            (Method::CondNegative, Some((3, Term::Extra))),
            (Method::Negtome, None),
        ];
        for (method, negative) in want {
            let r = rows(&cell(method, true), &two);
            assert_eq!(
                r,
                ImageRows {
                    negative,
                    positive: 3
                },
                "{method:?}"
            );
            assert_eq!(
                rows(&cell(method, false), &two).negative,
                None,
                "{method:?}"
            );
        }
    }

    #[test]
    fn cfg_combines_per_row_and_is_off_at_one() {
        let eps = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 5.0]).view([4, 1, 1, 1]);
        let mut a = GenParams::new(0);
        a.cfg = 2.0;
        let mut b = a.clone();
        b.cfg = 1.0;
        assert_eq!(guide(&eps, &[&a, &b]), vec![4.0, 5.0]);
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
        // 1 + 2*(3-1) - 0.5*(5-1) = 3; 0 + 7.5*(4-0) = 30.
        assert_eq!(guide(&eps, &[&three, &two]), vec![3.0, 30.0]);
    }
}
