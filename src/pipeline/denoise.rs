//! The sampling loop: UNet calls per step on the rows of a batch (uncond rows, cond rows,
//! the rows a method adds: [`guidance::row_layout`]) for each trajectory the batch's cells
//! still share ([`Trajectories`]), each row with its own text, image tokens and IP scale per
//! cross-attention block, each cell guided by its own method and scales
//! (`sampling::methods`), with the state its method keeps across steps (forked with the
//! latents). `ip_scaling` is part of the batch key: one per batch. At the steps where a
//! NegToMe cell is active, its reference rows follow (re-noised to the step, empty text, IP
//! scale 0; [`ReferenceRows`]) and their outputs are dropped.
use crate::models::attention::{Nag, TokenMerge};
use crate::models::attention_probe::AttentionProbe;
use crate::models::unet::{ExtraIp, Hooks, IpInput, TextTime, UNet2DConditionModel};
use crate::params::{GenParams, Row, StepAt};
use crate::pipeline::conditioning::TextRows;
use crate::sampling::methods::{CellState, Step};
use crate::sampling::negtome::{MIN_SIZE, MergedRow, ReferenceRows};
use crate::sampling::trajectory::{self, Trajectories};
use crate::sampling::{self, Scheduler, guidance};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// What every step of a batch is conditioned on.
pub struct Conditioning<'a> {
    /// Text rows (`[R, 77, hidden]`, and SDXL's pooled `[R, pooled]`) in
    /// [`guidance::row_layout`] order.
    pub text: &'a TextRows,
    /// SDXL's micro-conditioning `[R, 6]` (original size, crop top-left, target size).
    pub time_ids: Option<&'a Tensor>,
    /// Image-token rows `[R, T, cross]`, when the batch uses an IP-Adapter.
    pub image_tokens: Option<&'a Tensor>,
    /// The tokens `[S, T, cross]` of the rows' second image-attention terms
    /// ([`guidance::extra_rows`]), when some row has one.
    pub extra_tokens: Option<&'a Tensor>,
    /// The "no image" tokens of each row `[R, T, cross]`, when a cell's negative branch
    /// takes them where it is off (`neg_off = "no_image"`).
    pub no_image_tokens: Option<&'a Tensor>,
    /// NegToMe's reference rows, when a cell merges.
    pub negtome: Option<References<'a>>,
    /// Records attention maps of the cell rows at every step, when set.
    pub probe: Option<&'a AttentionProbe>,
}

/// NegToMe's reference rows, one per image of `rows`.
pub struct References<'a> {
    pub rows: &'a ReferenceRows,
    /// The images' clean latents (scaled by the VAE's factor) and their noise `[K, 4, h, w]`.
    pub latents: &'a Tensor,
    pub noise: &'a Tensor,
    /// Empty-text rows `[K, 77, hidden]`, and "no image" token rows `[K, T, cross]` with an
    /// IP-Adapter.
    pub text: &'a TextRows,
    pub image_tokens: Option<&'a Tensor>,
    /// SDXL's time ids of every reference row `[1, 6]`: diffusers' defaults at the batch's
    /// size ([`GenParams::default_time_ids`]), so a row serves every cell of its image.
    pub time_ids: Option<&'a Tensor>,
}

/// Runs `scheduler` from the initial latents `x` `[B, 4, h, w]` (already scaled by the
/// scheduler's initial sigma) to the final latents of `cells`; `step_noise` `[steps, B, 4,
/// h, w]` (any device) is each step's noise for an ancestral scheduler (a function of the
/// cell's seed, so equal in the cells of a shared trajectory). Cells share their trajectory
/// while they are identical ([`Trajectories`]); each step's groups go through the UNet
/// `call_cells` groups per call. `progress(step, steps)` after each step. At the steps of a
/// cell's `trace`, its x̂₀ ([`Scheduler::predicted_x0`] of its group's guided prediction).
/// Only the `needed` cells' latents are made: a call whose groups lead to none of them is
/// skipped (its groups' latents then carry no meaning), the others are the calls of the
/// whole batch, so the needed cells round as they do in it.
#[allow(clippy::too_many_arguments)]
pub fn denoise(
    unet: &UNet2DConditionModel,
    scheduler: &mut dyn Scheduler,
    cells: &[GenParams],
    needed: &[bool],
    cond: &Conditioning,
    x: Tensor,
    step_noise: Option<&Tensor>,
    call_cells: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Denoised {
    let steps = cells[0].steps;
    let mut x0: Vec<Vec<(usize, Tensor)>> = cells.iter().map(|_| vec![]).collect();
    let device = x.device();
    let refs: Vec<&GenParams> = cells.iter().collect();
    let rows = BatchRows::new(&refs);
    let timesteps = scheduler.timesteps().to_vec();
    let s: &dyn Scheduler = scheduler;
    let tree = Trajectories::new(&refs, &|i| sampling::step_at(s, i, steps), &timesteps);
    let call_cells = call_cells.max(1);
    let mut row_steps = RowSteps::default();
    let mut x = x.index_select(0, &indices(&tree.initial, device));
    // What each group's method carries from step to step, forked with the latents.
    let mut states: Vec<CellState> = tree.initial.iter().map(|_| CellState::default()).collect();
    for (i, &t) in timesteps.iter().enumerate() {
        if let Some(probe) = cond.probe {
            probe.at_step(i);
        }
        let groups = &tree.steps[i];
        let parents: Vec<usize> = groups.iter().map(|g| g.parent).collect();
        let parent_rows = indices(&parents, device);
        x = x.index_select(0, &parent_rows);
        scheduler.fork(&parent_rows);
        states = parents.iter().map(|&p| states[p].fork()).collect();
        let members: Vec<usize> = groups.iter().map(|g| g.cell).collect();
        let s: &dyn Scheduler = scheduler;
        let at = sampling::step_at(s, i, steps);
        let call = Call {
            unet,
            scheduler: s,
            cond,
            rows: &rows,
            at: &at,
            index: i,
            t,
        };
        let live = live_groups(&tree.group_of[i], groups.len(), needed);
        let mut parts = Vec::with_capacity(members.len().div_ceil(call_cells));
        for (k, (chunk, chunk_states)) in members
            .chunks(call_cells)
            .zip(states.chunks_mut(call_cells))
            .enumerate()
        {
            let x = x.narrow(0, (k * call_cells) as i64, chunk.len() as i64);
            let chunk_rows: usize = chunk.iter().map(|&c| trajectory::rows(refs[c])).sum();
            row_steps.planned += chunk_rows;
            if live[k * call_cells..][..chunk.len()].contains(&true) {
                row_steps.computed += chunk_rows;
                if let Some(probe) = cond.probe {
                    let first = k * call_cells;
                    let (from, to) = probe_rows(&refs, &rows, chunk, first, &tree.group_of[i]);
                    let n = from.iter().max().map_or(0, |&r| r + 1);
                    probe.set_call_rows(n as i64, indices(&from, device), indices(&to, device));
                }
                parts.push(call.guided(&refs, chunk, &x, chunk_states));
            } else {
                parts.push(x.zeros_like());
            }
        }
        let eps = Tensor::cat(&parts, 0);
        let traced: Vec<usize> = (0..cells.len())
            .filter(|&c| traced_at(&cells[c], i))
            .collect();
        if !traced.is_empty() {
            let predicted = scheduler.predicted_x0(&eps, i, &x);
            for c in traced {
                x0[c].push((i, predicted.get(tree.group_of[i][c] as i64)));
            }
        }
        let ancestral = scheduler.ancestral(i);
        let noise = step_noise.map(|n| {
            let n = n.get(i as i64);
            n.index_select(0, &indices(&members, n.device()))
                .to_device(device)
        });
        let next = scheduler.step(&eps, i, &x, noise.as_ref());
        let group_cells: Vec<&GenParams> = members.iter().map(|&c| refs[c]).collect();
        guidance::after_step(&group_cells, &mut states, &x, &next, ancestral);
        x = next;
        progress(i + 1, steps);
    }
    Denoised {
        x: x.index_select(0, &indices(&tree.last, device)),
        x0,
        row_steps,
    }
}

/// The final latents `[B, 4, h, w]` of a batch's cells, and each cell's x̂₀ latents
/// `[4, h, w]` at its trace steps (step, latents); the UNet row-steps.
pub struct Denoised {
    pub x: Tensor,
    pub x0: Vec<Vec<(usize, Tensor)>>,
    pub row_steps: RowSteps,
}

/// UNet row-steps of a batch: those computed, and those its calls plan (all of them when
/// every cell is needed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowSteps {
    pub computed: usize,
    pub planned: usize,
}

impl std::ops::AddAssign for RowSteps {
    fn add_assign(&mut self, other: RowSteps) {
        self.computed += other.computed;
        self.planned += other.planned;
    }
}

/// Whether `cell`'s x̂₀ is traced at step `i`.
pub fn traced_at(cell: &GenParams, i: usize) -> bool {
    cell.trace.as_ref().is_some_and(|t| t.contains(i))
}

/// Which of a step's `groups` lead to a `needed` cell (`group_of`: each cell's group).
fn live_groups(group_of: &[usize], groups: usize, needed: &[bool]) -> Vec<bool> {
    let mut live = vec![false; groups];
    for (&g, _) in group_of.iter().zip(needed).filter(|(_, n)| **n) {
        live[g] = true;
    }
    live
}

/// For the attention probe: the batch rows that each row of a call on the groups `chunk`
/// (each group's first cell; groups `first..`) stands for, those of every cell of its group
/// (`group_of`: each cell's group), as (call row, batch row) pairs.
fn probe_rows(
    all: &[&GenParams],
    rows: &BatchRows,
    chunk: &[usize],
    first: usize,
    group_of: &[usize],
) -> (Vec<usize>, Vec<usize>) {
    let cells: Vec<&GenParams> = chunk.iter().map(|&c| all[c]).collect();
    let mut pairs: Vec<(usize, usize)> = vec![];
    for (j, (k, row)) in guidance::row_layout(&cells).into_iter().enumerate() {
        let members = group_of
            .iter()
            .enumerate()
            .filter(|(_, g)| **g == first + k);
        pairs.extend(members.map(|(c, _)| (j, rows.row[&(c, row)])));
    }
    pairs.into_iter().unzip()
}

fn indices(v: &[usize], device: Device) -> Tensor {
    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    Tensor::from_slice(&v).to_device(device)
}

/// Where each (cell, row) of the batch, and each second term, lies in the batch's
/// conditioning rows.
struct BatchRows {
    row: HashMap<(usize, Row), usize>,
    /// The second term of batch row r: its index among the batch's second terms.
    extra: HashMap<usize, usize>,
}

impl BatchRows {
    fn new(cells: &[&GenParams]) -> BatchRows {
        let row = guidance::row_layout(cells)
            .into_iter()
            .enumerate()
            .map(|(r, key)| (key, r))
            .collect();
        let extra = guidance::extra_rows(cells)
            .into_iter()
            .enumerate()
            .map(|(k, (r, _))| (r, k))
            .collect();
        BatchRows { row, extra }
    }
}

/// One step's UNet calls.
struct Call<'a> {
    unet: &'a UNet2DConditionModel,
    scheduler: &'a dyn Scheduler,
    cond: &'a Conditioning<'a>,
    rows: &'a BatchRows,
    at: &'a StepAt<'a>,
    index: usize,
    t: f64,
}

impl Call<'_> {
    /// The guided noise prediction `[G, ...]` of the cells `members` (indices into `all`)
    /// at latents `x` `[G, ...]`, with their methods' `states`: one UNet call on their
    /// rows, taken from the batch's conditioning rows, then each cell's guidance.
    fn guided(
        &self,
        all: &[&GenParams],
        members: &[usize],
        x: &Tensor,
        states: &mut [CellState],
    ) -> Tensor {
        let device = x.device();
        let cells: Vec<&GenParams> = members.iter().map(|&c| all[c]).collect();
        let own = guidance::row_layout(&cells);
        let of_batch: Vec<usize> = own
            .iter()
            .map(|&(k, row)| self.rows.row[&(members[k], row)])
            .collect();
        let rows = indices(&of_batch, device);
        let cell_of_row: Vec<usize> = own.iter().map(|&(k, _)| k).collect();
        let x_in = self.scheduler.scale_model_input(x, self.index);
        let latents = x_in.index_select(0, &indices(&cell_of_row, device));
        let text = self.cond.text.index_select(&rows);
        let time_ids = self.cond.time_ids.map(|ids| ids.index_select(0, &rows));
        let blocks = self.unet.cross_attention_blocks();
        let tokens = self.cond.image_tokens.map(|t| {
            let off = guidance::no_image_rows(&cells, self.at);
            self.swap_off(t.index_select(0, &rows), &rows, &off)
        });
        let scales = guidance::ip_scale_tensor(&cells, self.at, blocks, device, Kind::Float);
        let ip = tokens.as_ref().map(|tokens| IpInput {
            tokens,
            scales: &scales,
            scaling: cells[0].ip_scaling,
        });
        let extras = guidance::extra_rows(&cells);
        let extra = self
            .cond
            .extra_tokens
            .filter(|_| !extras.is_empty())
            .map(|t| {
                let own_rows: Vec<usize> = extras.iter().map(|&(r, _)| r).collect();
                let batch_rows: Vec<usize> = own_rows.iter().map(|&r| of_batch[r]).collect();
                let picked: Vec<usize> = batch_rows.iter().map(|r| self.rows.extra[r]).collect();
                let off = guidance::no_image_extras(&cells, self.at);
                let tokens = t.index_select(0, &indices(&picked, device));
                let tokens = self.swap_off(tokens, &indices(&batch_rows, device), &off);
                let scales =
                    guidance::extra_scale_tensor(&cells, self.at, blocks, device, Kind::Float);
                (indices(&own_rows, device), tokens, scales)
            });
        let nag = nag_rows(&cells, self.unet.kind(), device);
        let extra = extra.as_ref().map(|(rows, tokens, scales)| ExtraIp {
            rows,
            tokens,
            scales,
            nag: nag.as_ref(),
        });
        let eps = match &self.cond.negtome {
            Some(r) => self.with_merge(&cells, &latents, (&text, time_ids.as_ref()), ip, extra, r),
            None => {
                let hooks = Hooks {
                    text_time: text_time(&text, time_ids.as_ref()),
                    merge: None,
                    extra,
                    probe: self.cond.probe,
                };
                self.unet
                    .forward_hooked(&latents, self.t, &text.states, ip, hooks)
            }
        };
        let step = Step {
            at: self.at,
            timestep: self.t,
        };
        guidance::combine(&eps.to_kind(Kind::Float), &cells, states, &step)
    }

    /// `tokens` with the "no image" tokens of the batch rows `rows` where `off` says so
    /// (`neg_off = "no_image"` outside the negative branch's steps).
    fn swap_off(&self, tokens: Tensor, rows: &Tensor, off: &[bool]) -> Tensor {
        match (self.cond.no_image_tokens, off.iter().any(|&o| o)) {
            (Some(none), true) => {
                let mask = Tensor::from_slice(off)
                    .to_device(tokens.device())
                    .view([-1, 1, 1]);
                none.index_select(0, rows).where_self(&mask, &tokens)
            }
            _ => tokens,
        }
    }

    /// The UNet call with NegToMe's reference rows of these cells, when some row merges at
    /// this step (else without them).
    fn with_merge(
        &self,
        cells: &[&GenParams],
        latents: &Tensor,
        (text, time_ids): (&TextRows, Option<&Tensor>),
        ip: Option<IpInput>,
        extra: Option<ExtraIp>,
        r: &References,
    ) -> Tensor {
        let rows = ReferenceRows::new(cells);
        let merges = rows.merges(cells, self.t);
        if merges.is_empty() {
            let hooks = Hooks {
                text_time: text_time(text, time_ids),
                merge: None,
                extra,
                probe: self.cond.probe,
            };
            return self
                .unet
                .forward_hooked(latents, self.t, &text.states, ip, hooks);
        }
        let device = latents.device();
        let of_batch: Vec<usize> = rows
            .images
            .iter()
            .map(|p| r.rows.images.iter().position(|q| q == p).unwrap_or(0))
            .collect();
        let pick = indices(&of_batch, device);
        let (clean, noise) = (
            r.latents.index_select(0, &pick),
            r.noise.index_select(0, &pick),
        );
        let ref_text = r.text.index_select(&pick);
        let ref_tokens = r.image_tokens.map(|t| t.index_select(0, &pick));
        let chunk = References {
            rows: &rows,
            latents: &clean,
            noise: &noise,
            text: &ref_text,
            image_tokens: ref_tokens.as_ref(),
            time_ids: r.time_ids,
        };
        let s = self.scheduler;
        let reference = s.scale_model_input(&s.add_noise(&clean, &noise, self.index), self.index);
        let hooks = Hooks {
            text_time: None,
            merge: Some(token_merge(&merges, self.unet.kind(), device)),
            extra,
            probe: self.cond.probe,
        };
        let all = Tensor::cat(&[latents, &reference], 0);
        let n_rows = latents.size()[0];
        let cell_rows = (text, time_ids);
        with_references(self.unet, self.t, &all, cell_rows, ip, &chunk, hooks).narrow(0, 0, n_rows)
    }
}

/// NAG's parameters of the extra terms of `cells` ([`guidance::extra_nag`]), `[S, 1, 1]`
/// in `kind` on `device`.
fn nag_rows(cells: &[&GenParams], kind: Kind, device: Device) -> Option<Nag> {
    let [on, scale, tau, alpha] = guidance::extra_nag(cells)?;
    let column = |v: &[f64]| {
        Tensor::from_slice(v)
            .view([-1, 1, 1])
            .to_kind(kind)
            .to_device(device)
    };
    Some(Nag {
        on: column(&on).to_kind(Kind::Bool),
        scale: column(&scale),
        tau: column(&tau),
        alpha: column(&alpha),
    })
}

/// SDXL's added conditioning of rows with `text` and `time_ids` (none on other UNets).
fn text_time<'a>(text: &'a TextRows, time_ids: Option<&'a Tensor>) -> Option<TextTime<'a>> {
    text.pooled
        .as_ref()
        .zip(time_ids)
        .map(|(text_embeds, time_ids)| TextTime {
            text_embeds,
            time_ids,
        })
}

/// One UNet call on `latents`: the cell rows (conditioned by their text, time ids and `ip`)
/// followed by NegToMe's reference rows (empty text, "no image" tokens at IP scale 0, the
/// default time ids), merging as `hooks` says.
fn with_references(
    unet: &UNet2DConditionModel,
    t: f64,
    latents: &Tensor,
    (cell_text, cell_time_ids): (&TextRows, Option<&Tensor>),
    ip: Option<IpInput>,
    r: &References,
    hooks: Hooks,
) -> Tensor {
    let k = r.latents.size()[0];
    let text = TextRows::cat(&[cell_text.shallow_clone(), r.text.shallow_clone()]);
    let time_ids = cell_time_ids
        .zip(r.time_ids)
        .map(|(ids, own)| Tensor::cat(&[ids, &own.repeat([k, 1])], 0));
    let hooks = Hooks {
        text_time: text_time(&text, time_ids.as_ref()),
        ..hooks
    };
    let tokens = ip.as_ref().zip(r.image_tokens).map(|(ip, ref_tokens)| {
        let scales = ip.scales;
        let zeros = Tensor::zeros([scales.size()[0], k], (scales.kind(), scales.device()));
        (
            Tensor::cat(&[ip.tokens, ref_tokens], 0),
            Tensor::cat(&[scales, &zeros], 1),
            ip.scaling,
        )
    });
    let ip = tokens.as_ref().map(|(tokens, scales, scaling)| IpInput {
        tokens,
        scales,
        scaling: *scaling,
    });
    unet.forward_hooked(latents, t, &text.states, ip, hooks)
}

/// The merge of `merges` (non-empty) as the UNet takes it.
fn token_merge(merges: &[MergedRow], kind: Kind, device: Device) -> TokenMerge {
    let ints = |f: fn(&MergedRow) -> usize| {
        let v: Vec<i64> = merges.iter().map(|m| f(m) as i64).collect();
        Tensor::from_slice(&v).to_device(device)
    };
    let floats = |f: fn(&MergedRow) -> f64| {
        let v: Vec<f64> = merges.iter().map(f).collect();
        Tensor::from_slice(&v).to_kind(kind).to_device(device)
    };
    let m = merges.len() as i64;
    TokenMerge {
        rows: ints(|m| m.row),
        refs: ints(|m| m.reference),
        threshold: floats(|m| m.threshold).to_kind(Kind::Float).view([m, 1]),
        alpha: floats(|m| m.alpha).view([m, 1, 1]),
        min_size: MIN_SIZE,
    }
}
