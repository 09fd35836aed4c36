//! The sampling loop: one UNet call per step on the rows of a batch (uncond rows, cond rows,
//! negative rows of the three-row methods: [`guidance::row_layout`]), each row with its own
//! text, image tokens and IP scale per cross-attention block, each cell guided by its own
//! method and scales (`sampling::methods`), with the state its method keeps across steps. `ip_scaling` is part of the batch key: one per batch. At the steps
//! where a NegToMe cell is active, its reference rows follow (re-noised to the step, empty
//! text, IP scale 0; [`ReferenceRows`]) and their outputs are dropped.
use crate::models::attention::TokenMerge;
use crate::models::attention_probe::AttentionProbe;
use crate::models::unet::{ExtraIp, Hooks, IpInput, UNet2DConditionModel};
use crate::params::GenParams;
use crate::sampling::methods::{CellState, Step};
use crate::sampling::negtome::{MIN_SIZE, MergedRow, ReferenceRows};
use crate::sampling::{self, Scheduler, guidance};
use tch::{Device, Kind, Tensor};

/// What every step of a batch is conditioned on.
pub struct Conditioning<'a> {
    /// Text rows `[R, 77, hidden]` in [`guidance::row_layout`] order.
    pub text: &'a Tensor,
    /// Image-token rows `[R, T, cross]`, when the batch uses an IP-Adapter.
    pub image_tokens: Option<&'a Tensor>,
    /// The tokens `[S, T, cross]` of the rows' second image-attention terms
    /// ([`guidance::extra_rows`]), when some row has one.
    pub extra_tokens: Option<&'a Tensor>,
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
    pub text: &'a Tensor,
    pub image_tokens: Option<&'a Tensor>,
}

/// Runs `scheduler` from the initial latents `x` `[B, 4, h, w]` (already scaled by the
/// scheduler's initial sigma) to the final latents of `cells`; `step_noise` `[steps, B, 4,
/// h, w]` (any device) is each step's noise for an ancestral scheduler. `progress(step,
/// steps)` after each step.
pub fn denoise(
    unet: &UNet2DConditionModel,
    scheduler: &mut dyn Scheduler,
    cells: &[GenParams],
    cond: &Conditioning,
    mut x: Tensor,
    step_noise: Option<&Tensor>,
    progress: &mut dyn FnMut(usize, usize),
) -> Tensor {
    let steps = cells[0].steps;
    let device = x.device();
    let refs: Vec<&GenParams> = cells.iter().collect();
    let cell_of_row: Vec<i64> = guidance::row_layout(&refs)
        .into_iter()
        .map(|(i, _)| i as i64)
        .collect();
    let n_rows = cell_of_row.len() as i64;
    let cell_of_row = Tensor::from_slice(&cell_of_row).to_device(device);
    let extra_rows: Vec<i64> = guidance::extra_rows(&refs)
        .into_iter()
        .map(|(r, _)| r as i64)
        .collect();
    let extra_rows = Tensor::from_slice(&extra_rows).to_device(device);
    let timesteps = scheduler.timesteps().to_vec();
    let blocks = unet.cross_attention_blocks();
    // What each cell's method carries from step to step.
    let mut states: Vec<CellState> = cells.iter().map(|_| CellState::default()).collect();
    for (i, &t) in timesteps.iter().enumerate() {
        let x_in = scheduler.scale_model_input(&x, i);
        let rows = x_in.index_select(0, &cell_of_row);
        let at = sampling::step_at(scheduler, i, steps);
        let scales = guidance::ip_scale_tensor(&refs, &at, blocks, device, Kind::Float);
        let ip = cond.image_tokens.map(|tokens| IpInput {
            tokens,
            scales: &scales,
            scaling: cells[0].ip_scaling,
        });
        let extra_scales = cond
            .extra_tokens
            .map(|_| guidance::extra_scale_tensor(&refs, &at, blocks, device, Kind::Float));
        let extra = cond
            .extra_tokens
            .zip(extra_scales.as_ref())
            .map(|(tokens, scales)| ExtraIp {
                rows: &extra_rows,
                tokens,
                scales,
            });
        let merges = cond
            .negtome
            .as_ref()
            .map(|r| r.rows.merges(&refs, t))
            .unwrap_or_default();
        let eps = match (&cond.negtome, ip, merges.is_empty()) {
            (Some(r), ip, false) => {
                let reference =
                    scheduler.scale_model_input(&scheduler.add_noise(r.latents, r.noise, i), i);
                let hooks = Hooks {
                    merge: Some(token_merge(&merges, unet.kind(), device)),
                    extra,
                    probe: cond.probe,
                };
                let latents = Tensor::cat(&[&rows, &reference], 0);
                let eps = with_references(unet, t, &latents, cond.text, ip, r, hooks);
                eps.narrow(0, 0, n_rows)
            }
            (_, ip, _) => {
                let hooks = Hooks {
                    merge: None,
                    extra,
                    probe: cond.probe,
                };
                unet.forward_hooked(&rows, t, cond.text, ip, hooks)
            }
        };
        let ancestral = scheduler.ancestral(i);
        let step = Step {
            at: &at,
            timestep: t,
        };
        let eps = guidance::combine(&eps.to_kind(Kind::Float), &refs, &mut states, &step);
        let noise = step_noise.map(|n| n.get(i as i64).to_device(device));
        let next = scheduler.step(&eps, i, &x, noise.as_ref());
        guidance::after_step(&refs, &mut states, &x, &next, ancestral);
        x = next;
        progress(i + 1, steps);
    }
    x
}

/// One UNet call on `latents`: the cell rows (conditioned by `text` and `ip`) followed by
/// NegToMe's reference rows (empty text, "no image" tokens at IP scale 0), merging as
/// `hooks` says.
fn with_references(
    unet: &UNet2DConditionModel,
    t: f64,
    latents: &Tensor,
    text: &Tensor,
    ip: Option<IpInput>,
    r: &References,
    hooks: Hooks,
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
    unet.forward_hooked(latents, t, &Tensor::cat(&[text, r.text], 0), ip, hooks)
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
