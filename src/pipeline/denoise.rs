//! The sampling loop: UNet calls per step on the rows of a batch (uncond rows, cond rows,
//! negative rows of the three-row methods: [`guidance::row_layout`]) for each trajectory
//! the batch's cells still share ([`Trajectories`]), each row with its own
//! text, image tokens and IP scale per cross-attention block, each cell guided by its own
//! method and scales. `ip_scaling` is part of the batch key: one per batch. At the steps
//! where a NegToMe cell is active, its reference rows follow (re-noised to the step, empty
//! text, IP scale 0; [`ReferenceRows`]) and their outputs are dropped.
use crate::models::attention::TokenMerge;
use crate::models::unet::{IpInput, UNet2DConditionModel};
use crate::params::{GenParams, Row, StepAt};
use crate::sampling::negtome::{MIN_SIZE, MergedRow, ReferenceRows};
use crate::sampling::trajectory::Trajectories;
use crate::sampling::{self, Scheduler, guidance};
use tch::{Device, Kind, Tensor};

/// What every step of a batch is conditioned on.
pub struct Conditioning<'a> {
    /// Text rows `[R, 77, hidden]` in [`guidance::row_layout`] order.
    pub text: &'a Tensor,
    /// Image-token rows `[R, T, cross]`, when the batch uses an IP-Adapter.
    pub image_tokens: Option<&'a Tensor>,
    /// The "no image" tokens of each row `[R, T, cross]`, when a cell's negative branch
    /// takes them where it is off (`neg_off = "no_image"`).
    pub no_image_tokens: Option<&'a Tensor>,
    /// NegToMe's reference rows, when a cell merges.
    pub negtome: Option<References<'a>>,
}

/// NegToMe's reference rows, one per image of `rows`.
pub struct References<'a> {
    pub rows: &'a ReferenceRows,
    /// The images' clean latents (scaled by the VAE's factor) and their noise `[K, 4, h, w]`.
    pub latents: &'a Tensor,
    pub noise: &'a Tensor,
    /// Empty-text rows `[K, 77, hidden]`, and "no image" token rows `[K, T, cross]` with an
    /// IP-Adapter.
    pub text: &'a Tensor,
    pub image_tokens: Option<&'a Tensor>,
}

/// Runs `scheduler` from the initial latents `x` `[B, 4, h, w]` (already scaled by the
/// scheduler's initial sigma) to the final latents of `cells`. Cells share their trajectory
/// while they are identical ([`Trajectories`]); each step's groups go through the UNet
/// `call_cells` groups per call. `progress(step, steps)` after each step.
pub fn denoise(
    unet: &UNet2DConditionModel,
    scheduler: &mut dyn Scheduler,
    cells: &[GenParams],
    cond: &Conditioning,
    x: Tensor,
    call_cells: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Tensor {
    let steps = cells[0].steps;
    let device = x.device();
    let refs: Vec<&GenParams> = cells.iter().collect();
    let layout = guidance::row_layout(&refs);
    let timesteps = scheduler.timesteps().to_vec();
    let tree = {
        let s: &dyn Scheduler = scheduler;
        Trajectories::new(&refs, &|i| sampling::step_at(s, i, steps), &timesteps)
    };
    let mut x = x.index_select(0, &indices(&tree.initial, device));
    for (i, &t) in timesteps.iter().enumerate() {
        let groups = &tree.steps[i];
        let parents = indices(&groups.iter().map(|g| g.parent).collect::<Vec<_>>(), device);
        x = x.index_select(0, &parents);
        scheduler.fork(&parents);
        let eps = {
            let s: &dyn Scheduler = scheduler;
            let at = sampling::step_at(s, i, steps);
            let parts: Vec<Tensor> = groups
                .chunks(call_cells.max(1))
                .enumerate()
                .map(|(k, chunk)| {
                    let members: Vec<usize> = chunk.iter().map(|g| g.cell).collect();
                    let start = (k * call_cells.max(1)) as i64;
                    let x = x.narrow(0, start, chunk.len() as i64);
                    let call = Call {
                        unet,
                        scheduler: s,
                        cond,
                        at: &at,
                        index: i,
                        t,
                    };
                    call.guided(&refs, &layout, &members, &x)
                })
                .collect();
            Tensor::cat(&parts, 0)
        };
        x = scheduler.step(&eps, i, &x);
        progress(i + 1, steps);
    }
    x.index_select(0, &indices(&tree.last, device))
}

fn indices(v: &[usize], device: Device) -> Tensor {
    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    Tensor::from_slice(&v).to_device(device)
}

/// One step's UNet calls.
struct Call<'a> {
    unet: &'a UNet2DConditionModel,
    scheduler: &'a dyn Scheduler,
    cond: &'a Conditioning<'a>,
    at: &'a StepAt<'a>,
    index: usize,
    t: f64,
}

impl Call<'_> {
    /// The guided noise prediction `[G, ...]` of the cells `members` (indices into `all`)
    /// at latents `x` `[G, ...]`: one UNet call on their rows, taken from the batch's
    /// conditioning rows (laid out as `layout`), then each cell's guidance.
    fn guided(
        &self,
        all: &[&GenParams],
        layout: &[(usize, Row)],
        members: &[usize],
        x: &Tensor,
    ) -> Tensor {
        let device = x.device();
        let cells: Vec<&GenParams> = members.iter().map(|&c| all[c]).collect();
        let own = guidance::row_layout(&cells);
        let rows: Vec<usize> = own
            .iter()
            .map(|&(k, row)| {
                let key = (members[k], row);
                layout.iter().position(|&r| r == key).unwrap_or(0)
            })
            .collect();
        let rows = indices(&rows, device);
        let cell_of_row: Vec<usize> = own.iter().map(|&(k, _)| k).collect();
        let x_in = self.scheduler.scale_model_input(x, self.index);
        let latents = x_in.index_select(0, &indices(&cell_of_row, device));
        let text = self.cond.text.index_select(0, &rows);
        let tokens = self
            .cond
            .image_tokens
            .map(|t| self.tokens(t, &cells, &rows));
        let blocks = self.unet.cross_attention_blocks();
        let scales = guidance::ip_scale_tensor(&cells, self.at, blocks, device, Kind::Float);
        let ip = tokens.as_ref().map(|tokens| IpInput {
            tokens,
            scales: &scales,
            scaling: cells[0].ip_scaling,
        });
        let eps = match &self.cond.negtome {
            Some(r) => self.with_merge(&cells, &latents, &text, ip, r),
            None => self.unet.forward(&latents, self.t, &text, ip),
        };
        guidance::combine(&eps.to_kind(Kind::Float), &cells)
    }

    /// The image tokens of `rows` at this step: "no image" in place of their own where
    /// `neg_off = "no_image"` says so.
    fn tokens(&self, tokens: &Tensor, cells: &[&GenParams], rows: &Tensor) -> Tensor {
        let own = tokens.index_select(0, rows);
        let off = guidance::no_image_rows(cells, self.at);
        match (self.cond.no_image_tokens, off.iter().any(|&o| o)) {
            (Some(none), true) => {
                let mask = Tensor::from_slice(&off)
                    .to_device(tokens.device())
                    .view([-1, 1, 1]);
                none.index_select(0, rows).where_self(&mask, &own)
            }
            _ => own,
        }
    }

    /// The UNet call with NegToMe's reference rows of these cells, when some row merges at
    /// this step (else without them).
    fn with_merge(
        &self,
        cells: &[&GenParams],
        latents: &Tensor,
        text: &Tensor,
        ip: Option<IpInput>,
        r: &References,
    ) -> Tensor {
        let rows = ReferenceRows::new(cells);
        let merges = rows.merges(cells, self.t);
        if merges.is_empty() {
            return self.unet.forward(latents, self.t, text, ip);
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
        let ref_text = r.text.index_select(0, &pick);
        let ref_tokens = r.image_tokens.map(|t| t.index_select(0, &pick));
        let chunk = References {
            rows: &rows,
            latents: &clean,
            noise: &noise,
            text: &ref_text,
            image_tokens: ref_tokens.as_ref(),
        };
        let s = self.scheduler;
        let reference = s.scale_model_input(&s.add_noise(&clean, &noise, self.index), self.index);
        let merge = token_merge(&merges, self.unet.kind(), device);
        let all = Tensor::cat(&[latents, &reference], 0);
        let n_rows = latents.size()[0];
        with_references(self.unet, self.t, &all, text, ip, &chunk, merge).narrow(0, 0, n_rows)
    }
}

/// One UNet call on `latents`: the cell rows (conditioned by `text` and `ip`) followed by
/// NegToMe's reference rows (empty text, "no image" tokens at IP scale 0), merging as
/// `merge` says.
fn with_references(
    unet: &UNet2DConditionModel,
    t: f64,
    latents: &Tensor,
    text: &Tensor,
    ip: Option<IpInput>,
    r: &References,
    merge: TokenMerge,
) -> Tensor {
    let k = r.latents.size()[0];
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
    unet.forward_merging(
        latents,
        t,
        &Tensor::cat(&[text, r.text], 0),
        ip,
        Some(merge),
    )
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
