//! The sampling loop: one UNet call per step on the rows of a batch (uncond rows, cond rows,
//! negative rows of the three-row methods: [`guidance::row_layout`]), each row with its own
//! text, image tokens and IP scale, each cell guided by its own method and scales. At the
//! steps where a NegToMe cell is active, its reference rows follow (re-noised to the step,
//! empty text, IP scale 0; [`ReferenceRows`]) and their outputs are dropped.
use crate::models::attention::TokenMerge;
use crate::models::unet::UNet2DConditionModel;
use crate::params::GenParams;
use crate::sampling::negtome::{MIN_SIZE, MergedRow, ReferenceRows};
use crate::sampling::{Scheduler, guidance};
use tch::{Device, Kind, Tensor};

/// What every step of a batch is conditioned on.
pub struct Conditioning<'a> {
    /// Text rows `[R, 77, hidden]` in [`guidance::row_layout`] order.
    pub text: &'a Tensor,
    /// Image-token rows `[R, T, cross]`, when the batch uses an IP-Adapter.
    pub image_tokens: Option<&'a Tensor>,
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
/// scheduler's initial sigma) to the final latents of `cells`. `progress(step, steps)` after
/// each step.
pub fn denoise(
    unet: &UNet2DConditionModel,
    scheduler: &mut dyn Scheduler,
    cells: &[GenParams],
    cond: &Conditioning,
    mut x: Tensor,
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
    let timesteps = scheduler.timesteps().to_vec();
    for (i, &t) in timesteps.iter().enumerate() {
        let x_in = scheduler.scale_model_input(&x, i);
        let rows = x_in.index_select(0, &cell_of_row);
        let scale = guidance::ip_scale_tensor(&refs, i, steps, device, Kind::Float);
        let merges = cond
            .negtome
            .as_ref()
            .map(|r| r.rows.merges(&refs, t))
            .unwrap_or_default();
        let eps = match (&cond.negtome, merges.is_empty()) {
            (Some(r), false) => {
                let reference =
                    scheduler.scale_model_input(&scheduler.add_noise(r.latents, r.noise, i), i);
                let k = r.latents.size()[0];
                let scale = Tensor::cat(&[scale, Tensor::zeros([k], (Kind::Float, device))], 0);
                let tokens = cond
                    .image_tokens
                    .zip(r.image_tokens)
                    .map(|(a, b)| Tensor::cat(&[a, b], 0));
                let eps = unet.forward_merging(
                    &Tensor::cat(&[rows, reference], 0),
                    t,
                    &Tensor::cat(&[cond.text, r.text], 0),
                    tokens.as_ref().map(|tok| (tok, &scale)),
                    Some(token_merge(&merges, unet.kind(), device)),
                );
                eps.narrow(0, 0, n_rows)
            }
            _ => unet.forward(
                &rows,
                t,
                cond.text,
                cond.image_tokens.map(|tok| (tok, &scale)),
            ),
        };
        let eps = guidance::combine(&eps.to_kind(Kind::Float), &refs);
        x = scheduler.step(&eps, i, &x);
        progress(i + 1, steps);
    }
    x
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
