//! The sampling loop: one UNet call per step on the rows of a batch (uncond rows, cond rows,
//! negative rows of the three-row methods: [`guidance::row_layout`]), each row with its own
//! text, image tokens and IP scale per cross-attention block, each cell guided by its own
//! method and scales. `ip_scaling` is part of the batch key: one per batch.
use crate::models::unet::{IpInput, UNet2DConditionModel};
use crate::params::GenParams;
use crate::sampling::{self, Scheduler, guidance};
use tch::{Kind, Tensor};

/// What every step of a batch is conditioned on.
pub struct Conditioning<'a> {
    /// Text rows `[R, 77, hidden]` in [`guidance::row_layout`] order.
    pub text: &'a Tensor,
    /// Image-token rows `[R, T, cross]`, when the batch uses an IP-Adapter.
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
    let cell_of_row = Tensor::from_slice(&cell_of_row).to_device(device);
    let timesteps = scheduler.timesteps().to_vec();
    let blocks = unet.cross_attention_blocks();
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
        let eps = unet.forward(&rows, t, cond.text, ip);
        let eps = guidance::combine(&eps.to_kind(Kind::Float), &refs);
        x = scheduler.step(&eps, i, &x);
        progress(i + 1, steps);
    }
    x
}
