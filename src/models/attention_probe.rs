//! Attention maps (README, "Attention maps"): what the IP-Adapter's image attention does
//! where, recorded inside the UNet's cross-attention layers while a probe is attached to a
//! call ([`AttentionProbe`]); without one nothing is computed.
//!
//! Per cross-attention block (a `Transformer2DModel`, numbered in execution order; its
//! inner layers add up) and UNet row, summed over the calls (steps) recorded:
//! - `norm`: the L2 norm over channels of the image-attention term added to the hidden
//!   states (`scale · out_ip` before `to_out`) at each position;
//! - `extra_norm`, `extra_ip_tokens`: the same for a row's second image-attention term
//!   (`cond_negative`; zero in the rows without one);
//! - `ip_tokens` / `text_tokens`: the attention probabilities of each position on each
//!   image token (the keys as the weight scales them) / text token, averaged over heads
//!   (DAAM, castorini/daam: probabilities per head and token).
//!
//! [`AttentionProbe::finish`] turns the sums into maps: each block's sum divided by the
//! number of steps, upsampled to the latent grid by bicubic interpolation (torch's
//! `interpolate(mode="bicubic", align_corners=False)`), clamped at 0, then averaged over the
//! blocks (DAAM's aggregation; DAAM sums over heads, layers and steps, a constant factor).
use crate::steps::StepSet;
use std::cell::{Cell, RefCell};
use tch::{Kind, Tensor};

/// Which sums one block keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quantity {
    Norm,
    ExtraNorm,
    IpTokens,
    ExtraIpTokens,
    TextTokens,
    /// NegToMe: which tokens merged, as a share of the block's merges.
    Merged,
}

pub const QUANTITIES: [Quantity; 6] = [
    Quantity::Norm,
    Quantity::ExtraNorm,
    Quantity::IpTokens,
    Quantity::ExtraIpTokens,
    Quantity::TextTokens,
    Quantity::Merged,
];

/// One block's sums: `[rows, h, w]` for the norms, `[rows, tokens, h, w]` for the
/// probabilities, float32, on the model's device.
#[derive(Default)]
struct BlockSums {
    grid: (i64, i64),
    sums: Vec<(Quantity, Tensor)>,
    /// NegToMe's merges recorded (one per attention output merged), the calls they fell
    /// in, and the last such call ([`AttentionProbe::calls`]).
    merges: usize,
    merge_calls: usize,
    last_merge_call: Option<usize>,
}

impl BlockSums {
    fn add(&mut self, q: Quantity, value: Tensor) {
        match self.sums.iter_mut().find(|(k, _)| *k == q) {
            Some((_, sum)) => *sum += value,
            None => self.sums.push((q, value)),
        }
    }

    fn get(&self, q: Quantity) -> Option<&Tensor> {
        self.sums.iter().find(|(k, _)| *k == q).map(|(_, t)| t)
    }
}

/// Collects the sums of the UNet calls it is attached to ([`IpContext::probe`]).
///
/// [`IpContext::probe`]: super::attention::IpContext::probe
pub struct AttentionProbe {
    /// The rows kept (a batch's rows); which call rows they are: [`Self::set_call_rows`].
    rows: i64,
    blocks: RefCell<Vec<BlockSums>>,
    /// The steps recorded (`[maps] steps`; all when `None`) and whether the current one is.
    steps: Option<StepSet>,
    recording: Cell<bool>,
    /// Which kept rows the rows of the next calls stand for (`None`: the first `rows`).
    call: RefCell<Option<CallRows>>,
    /// Counts the calls (each step and each [`Self::set_call_rows`] starts one), so that
    /// NegToMe's merges are counted per call.
    calls: Cell<usize>,
}

/// The rows of a call as kept rows: call row `from[i]` is kept row `to[i]`; one call row
/// stands for several kept rows when cells share a trajectory (their rows are computed once).
struct CallRows {
    /// The call's rows before NegToMe's reference rows.
    rows: i64,
    from: Tensor,
    to: Tensor,
}

/// What one image-attention term of one block did in one call, `term` [B, N, C] (before
/// `to_out`) and `probs` [B, heads, N, T].
pub struct Term<'a> {
    pub term: &'a Tensor,
    pub probs: &'a Tensor,
}

/// One block's maps at the latent grid, in [`QUANTITIES`] order where recorded.
pub struct BlockMaps {
    /// The block's grid before upsampling.
    pub grid: (i64, i64),
    /// Each block's steps-averaged sums at its own grid (before upsampling).
    pub raw: Vec<(Quantity, Tensor)>,
    /// The same upsampled to the latent grid and clamped at 0.
    pub upsampled: Vec<(Quantity, Tensor)>,
}

/// The maps of a finished probe: per block, and averaged over blocks.
pub struct ProbeMaps {
    pub blocks: Vec<BlockMaps>,
    /// The mean over blocks of the upsampled maps, per quantity recorded.
    pub mean: Vec<(Quantity, Tensor)>,
}

impl ProbeMaps {
    pub fn mean(&self, q: Quantity) -> Option<&Tensor> {
        self.mean.iter().find(|(k, _)| *k == q).map(|(_, t)| t)
    }
}

/// [B, N, C] -> the norm over C of the first `rows` as [rows, h, w] (float32).
fn norm_map(term: &Tensor, rows: i64, (h, w): (i64, i64)) -> Tensor {
    term.narrow(0, 0, rows)
        .to_kind(Kind::Float)
        .norm_scalaropt_dim(2.0, [-1i64].as_slice(), false)
        .view([rows, h, w])
}

/// [B, heads, N, T] -> the mean over heads of the first `rows` as [rows, T, h, w] (float32).
fn token_maps(probs: &Tensor, rows: i64, (h, w): (i64, i64)) -> Tensor {
    let p = probs
        .narrow(0, 0, rows)
        .to_kind(Kind::Float)
        .mean_dim(1, false, None::<Kind>);
    let t = p.size()[2];
    p.transpose(1, 2).contiguous().view([rows, t, h, w])
}

impl AttentionProbe {
    /// A probe keeping the first `rows` rows of each call.
    pub fn new(rows: i64) -> Self {
        AttentionProbe {
            rows,
            blocks: RefCell::new(vec![]),
            steps: None,
            recording: Cell::new(true),
            call: RefCell::new(None),
            calls: Cell::new(0),
        }
    }

    /// The calls that follow compute, as their first `call_rows` rows, the kept rows `to`
    /// from their rows `from` (int64, on the model's device; a kept row in none of them gets
    /// nothing from these calls).
    pub fn set_call_rows(&self, call_rows: i64, from: Tensor, to: Tensor) {
        self.calls.set(self.calls.get() + 1);
        *self.call.borrow_mut() = Some(CallRows {
            rows: call_rows,
            from,
            to,
        });
    }

    /// The rows of a call that stand for kept rows.
    fn call_rows(&self) -> i64 {
        self.call.borrow().as_ref().map_or(self.rows, |c| c.rows)
    }

    /// `[call_rows, ...]` of a call -> `[rows, ...]`, the kept rows.
    fn keep(&self, per_call_row: Tensor) -> Tensor {
        match self.call.borrow().as_ref() {
            None => per_call_row,
            Some(c) => {
                let mut size = per_call_row.size();
                size[0] = self.rows;
                let kept = per_call_row.index_select(0, &c.from);
                Tensor::zeros(size, (kept.kind(), kept.device())).index_copy(0, &c.to, &kept)
            }
        }
    }

    /// `values` of the call rows `rows` [S] -> `[call_rows, ...]` (zero in the other rows).
    fn scatter(&self, rows: &Tensor, values: Tensor) -> Tensor {
        let mut size = values.size();
        size[0] = self.call_rows();
        Tensor::zeros(size, (values.kind(), values.device())).index_copy(0, rows, &values)
    }

    /// The same, recording only the steps of `steps` (all when `None`).
    pub fn with_steps(self, steps: Option<StepSet>) -> Self {
        AttentionProbe { steps, ..self }
    }

    /// Called before each step's UNet calls: whether they are recorded.
    pub fn at_step(&self, step: usize) {
        let on = self.steps.as_ref().is_none_or(|s| s.contains(step));
        self.recording.set(on);
        self.calls.set(self.calls.get() + 1);
    }

    /// How many of a run's `steps` steps the maps average over.
    pub fn steps_covered(&self, steps: usize) -> usize {
        self.steps.as_ref().map_or(steps, |s| s.active(steps).len())
    }

    fn with_block(&self, index: usize, grid: (i64, i64), f: impl FnOnce(&mut BlockSums)) {
        let mut blocks = self.blocks.borrow_mut();
        if blocks.len() <= index {
            blocks.resize_with(index + 1, BlockSums::default);
        }
        blocks[index].grid = grid;
        f(&mut blocks[index]);
    }

    /// Block `index` (grid `h` x `w`): the rows' image term and text probabilities
    /// `text_probs` [B, heads, N, 77].
    pub fn record(&self, index: usize, grid: (i64, i64), ip: Term, text_probs: &Tensor) {
        if !self.recording.get() {
            return;
        }
        let rows = self.call_rows();
        let norm = self.keep(norm_map(ip.term, rows, grid));
        let ip_tokens = self.keep(token_maps(ip.probs, rows, grid));
        let text_tokens = self.keep(token_maps(text_probs, rows, grid));
        self.with_block(index, grid, |b| {
            b.add(Quantity::Norm, norm);
            b.add(Quantity::IpTokens, ip_tokens);
            b.add(Quantity::TextTokens, text_tokens);
        });
    }

    /// Block `index`: the second image term of the call rows `rows` [S] (int64, all among
    /// those that stand for kept rows), scattered into the kept rows (zero for the others).
    pub fn record_extra(&self, index: usize, grid: (i64, i64), rows: &Tensor, extra: Term) {
        if !self.recording.get() {
            return;
        }
        let s = rows.size()[0];
        let scatter = |t: Tensor| self.keep(self.scatter(rows, t));
        let norm = scatter(norm_map(extra.term, s, grid));
        let tokens = scatter(token_maps(extra.probs, s, grid));
        self.with_block(index, grid, |b| {
            b.add(Quantity::ExtraNorm, norm);
            b.add(Quantity::ExtraIpTokens, tokens);
        });
    }

    /// Block `index`: NegToMe's merge of the call rows `rows` [M] (int64, among those that
    /// stand for kept rows), `merged` [M, N] (bool) the tokens that merged, scattered into
    /// the kept rows.
    pub fn record_merge(&self, index: usize, grid: (i64, i64), rows: &Tensor, merged: &Tensor) {
        if !self.recording.get() {
            return;
        }
        let (h, w) = grid;
        let m = rows.size()[0];
        let mask = merged.to_kind(Kind::Float).view([m, h, w]);
        let sum = self.keep(self.scatter(rows, mask));
        let call = self.calls.get();
        self.with_block(index, grid, |b| {
            b.add(Quantity::Merged, sum);
            b.merges += 1;
            if b.last_merge_call != Some(call) {
                b.merge_calls += 1;
                b.last_merge_call = Some(call);
            }
        });
    }

    /// The maps after `steps` recorded calls (steps), at the latent grid `latent` (h, w).
    pub fn finish(self, steps: usize, latent: (i64, i64)) -> ProbeMaps {
        let blocks: Vec<BlockMaps> = self
            .blocks
            .into_inner()
            .into_iter()
            .filter(|b| !b.sums.is_empty())
            .map(|b| {
                // A merge share: over the merges of every step (none in steps outside NegToMe's
                // timesteps), each call that merges having the same number of merges, and
                // each row in one call a step.
                let per_step = b.merges as f64 / b.merge_calls.max(1) as f64;
                let divisor = |q| match q {
                    Quantity::Merged => per_step * steps.max(1) as f64,
                    _ => steps.max(1) as f64,
                };
                let raw: Vec<(Quantity, Tensor)> = QUANTITIES
                    .iter()
                    .filter_map(|&q| b.get(q).map(|t| (q, t / divisor(q))))
                    .collect();
                let upsampled = raw
                    .iter()
                    .map(|(q, t)| match q {
                        Quantity::Merged => (*q, upsample_nearest(t, latent)),
                        _ => (*q, upsample(t, latent)),
                    })
                    .collect();
                BlockMaps {
                    grid: b.grid,
                    raw,
                    upsampled,
                }
            })
            .collect();
        let mean = QUANTITIES
            .iter()
            .filter_map(|&q| {
                let maps: Vec<&Tensor> = blocks
                    .iter()
                    .filter_map(|b| b.upsampled.iter().find(|(k, _)| *k == q).map(|(_, t)| t))
                    .collect();
                (!maps.is_empty())
                    .then(|| (q, Tensor::stack(&maps, 0).mean_dim(0, false, None::<Kind>)))
            })
            .collect();
        ProbeMaps { blocks, mean }
    }
}

/// `[rows, (tokens,) h, w]` -> the same at `latent`, bicubic (align_corners false), clamped
/// at 0.
fn upsample(t: &Tensor, (h, w): (i64, i64)) -> Tensor {
    let size = t.size();
    let (bh, bw) = (size[size.len() - 2], size[size.len() - 1]);
    let flat = t.reshape([-1, 1, bh, bw]);
    let up = flat.upsample_bicubic2d([h, w], false, None, None);
    let mut out_size = size[..size.len() - 2].to_vec();
    out_size.extend([h, w]);
    up.reshape(out_size).clamp_min(0.0)
}

/// `[rows, h, w]` -> the same at `latent` by nearest neighbour (a share stays a share).
fn upsample_nearest(t: &Tensor, (h, w): (i64, i64)) -> Tensor {
    t.unsqueeze(1)
        .upsample_nearest2d([h, w], None, None)
        .squeeze_dim(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_map_sums_steps_and_keeps_the_first_rows() {
        let probe = AttentionProbe::new(2);
        // 3 rows (the third a NegToMe reference row), a 1x2 grid, 2 channels, 1 head, 1 token.
        let term = Tensor::from_slice(&[
            3.0f32, 4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 9.0, 9.0, 9.0, 9.0,
        ])
        .view([3, 2, 2]);
        let probs = Tensor::ones([3, 1, 2, 1], (Kind::Float, tch::Device::Cpu));
        for _ in 0..2 {
            let ip = Term {
                term: &term,
                probs: &probs,
            };
            probe.record(0, (1, 2), ip, &probs);
        }
        let maps = probe.finish(2, (1, 2));
        let norm = maps.mean(Quantity::Norm).unwrap();
        assert_eq!(norm.size(), [2, 1, 2]);
        let v = Vec::<f32>::try_from(norm.flatten(0, -1)).unwrap();
        assert_eq!(v, [5.0, 0.0, 1.0, 0.0]);
        assert!(maps.mean(Quantity::ExtraNorm).is_none());
    }

    #[test]
    fn attention_map_of_a_shared_row_goes_to_every_cell_of_its_group() {
        // Kept rows 0 and 2 share call row 0 of the first call; kept row 1 is the only row
        // of the second call (calls of one group each).
        let probe = AttentionProbe::new(3);
        let probs = Tensor::ones([2, 1, 1, 1], (Kind::Float, tch::Device::Cpu));
        let rows = |v: &[i64]| Tensor::from_slice(v);
        let calls = [
            (&[0i64, 0][..], &[0i64, 2][..], [3.0f32, 9.0]),
            (&[0][..], &[1][..], [5.0, 9.0]),
        ];
        for (from, to, norms) in calls {
            probe.set_call_rows(1, rows(from), rows(to));
            // The call's second row is a NegToMe reference row: not kept.
            let term = Tensor::from_slice(&norms).view([2, 1, 1]);
            let ip = Term {
                term: &term,
                probs: &probs,
            };
            probe.record(0, (1, 1), ip, &probs);
            let merged = Tensor::from_slice(&[true]).view([1, 1]);
            probe.record_merge(0, (1, 1), &rows(&[0]), &merged);
        }
        let maps = probe.finish(1, (1, 1));
        let norm = maps.mean(Quantity::Norm).unwrap().flatten(0, -1);
        assert_eq!(Vec::<f32>::try_from(norm).unwrap(), [3.0, 5.0, 3.0]);
        // One merge a call, two calls in the step: each row merged in its one call.
        let merged = maps.mean(Quantity::Merged).unwrap().flatten(0, -1);
        assert_eq!(Vec::<f32>::try_from(merged).unwrap(), [1.0, 1.0, 1.0]);
    }

    #[test]
    fn attention_map_of_negtome_merges_is_their_share_over_every_step() {
        let probe = AttentionProbe::new(2);
        let row = Tensor::from_slice(&[1i64]);
        let mask = |a: bool, b: bool| Tensor::from_slice(&[a, b]).view([1, 2]);
        // Two merges a step (two attention outputs) at steps 0 and 1, none at step 2.
        for step in 0..2 {
            probe.at_step(step);
            probe.record_merge(0, (1, 2), &row, &mask(true, false));
            probe.record_merge(0, (1, 2), &row, &mask(true, true));
        }
        probe.at_step(2);
        let maps = probe.finish(3, (2, 4));
        let merged = maps.mean(Quantity::Merged).unwrap();
        assert_eq!(merged.size(), [2, 2, 4]);
        let v = Vec::<f32>::try_from(merged.get(1).flatten(0, -1)).unwrap();
        let (a, b) = (4.0 / 6.0, 2.0 / 6.0);
        let want = [a, a, b, b, a, a, b, b];
        let close = v
            .iter()
            .zip(want)
            .all(|(g, w)| (*g as f64 - w).abs() < 1e-6);
        assert!(close, "{v:?}: nearest, so a share stays a share");
        assert_eq!(
            merged.get(0).abs().max().double_value(&[]),
            0.0,
            "row 0 did not merge"
        );
        assert!(maps.mean(Quantity::Norm).is_none());
    }

    #[test]
    fn attention_map_over_a_step_set_records_only_its_steps() {
        let probe = AttentionProbe::new(1).with_steps(Some("1, 3".parse().unwrap()));
        assert_eq!(probe.steps_covered(4), 2);
        let probs = Tensor::ones([1, 1, 1, 1], (Kind::Float, tch::Device::Cpu));
        for step in 0..4 {
            probe.at_step(step);
            let term = Tensor::from_slice(&[step as f32 + 1.0]).view([1, 1, 1]);
            let ip = Term {
                term: &term,
                probs: &probs,
            };
            probe.record(0, (1, 1), ip, &probs);
        }
        let maps = probe.finish(2, (1, 1));
        // Steps 1 and 3 (norms 2 and 4), averaged.
        let norm = maps.mean(Quantity::Norm).unwrap().double_value(&[0, 0, 0]);
        assert_eq!(norm, 3.0);
        assert_eq!(AttentionProbe::new(1).steps_covered(4), 4);
    }
}
