//! Schedulers and guidance (branches, weights, windows).
//!
//! Schedulers follow diffusers' formulas and timestep spacing exactly (parity-tested against
//! diffusers by `tests/parity_scheduler.rs`); they act row-wise, so one scheduler serves a
//! whole batch of cells that share steps and scheduler kind.
pub mod ddim;
pub mod dpmpp_2m;
pub mod euler;
pub mod euler_ancestral;
pub mod guidance;
pub mod methods;
pub mod negtome;
pub mod scheduler;
pub mod trajectory;
pub mod window;

pub use scheduler::{NoiseSchedule, SchedulerConfig};

use crate::params::{SchedulerKind, StepAt};
use anyhow::Result;
use tch::Tensor;

/// One sampling run: a fixed list of timesteps, stepped in order `0..timesteps().len()`.
pub trait Scheduler {
    /// The UNet timestep of each step (integers for DDIM and DPM++, floats for Euler).
    fn timesteps(&self) -> &[f64];
    /// Standard deviation of the initial noise (the pipeline multiplies N(0,1) noise by it).
    /// 1 for schedulers that work on variance-preserving samples (DDIM, DPM++).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// The UNet input for `x` at step `step_index` (unchanged unless the scheduler works on
    /// sigma-scaled samples, as Euler does).
    fn scale_model_input(&self, x: &Tensor, _step_index: usize) -> Tensor {
        x.shallow_clone()
    }
    /// The noise level σ of step `step_index` (what ComfyUI's `sigma_start`/`sigma_end`
    /// gate): the scheduler's sigma, or `sqrt((1 - ᾱ_t) / ᾱ_t)` at the step's timestep for
    /// schedulers that step on timesteps (DDIM).
    fn sigma(&self, step_index: usize) -> f64;
    /// The model's training noise schedule this scheduler was built on.
    fn noise_schedule(&self) -> &NoiseSchedule;
    /// Clean latents `z0` noised with `noise` to the sample of step `step_index` (what
    /// `x` would be there; diffusers' `add_noise`). NegToMe re-noises its reference so.
    fn add_noise(&self, z0: &Tensor, noise: &Tensor, step_index: usize) -> Tensor;
    /// Whether `step` adds fresh noise (ancestral sampling): then the caller passes each step
    /// one N(0, 1) tensor shaped like `x`, drawn for each cell from its seeded generator after
    /// its initial latents, as diffusers' pipeline passes its `generator` to `step`.
    fn is_ancestral(&self) -> bool {
        self.ancestral(0).is_some()
    }
    /// The noise levels of ancestral step `step_index`: `None` for a deterministic scheduler.
    fn ancestral(&self, _step_index: usize) -> Option<AncestralStep> {
        None
    }
    /// The sample after step `step_index`, given the noise prediction `eps` for `x` (and the
    /// step's `noise` for an ancestral scheduler; deterministic ones take `None`).
    /// Steps must be taken in order (multistep schedulers keep history).
    fn step(
        &mut self,
        eps: &Tensor,
        step_index: usize,
        x: &Tensor,
        noise: Option<&Tensor>,
    ) -> Tensor;
    /// Row `r` of the state kept between steps becomes row `parents[r]` of the old state,
    /// as the latents do where shared trajectories fork ([`trajectory`]). Nothing to do for
    /// schedulers without history.
    fn fork(&mut self, _parents: &Tensor) {}
    /// The predicted clean sample x̂₀ of step `step_index` for `x` and the guided `eps`,
    /// by the scheduler's own formula (diffusers' `pred_original_sample`).
    fn predicted_x0(&self, eps: &Tensor, step_index: usize, x: &Tensor) -> Tensor;
}

/// One step of an ancestral scheduler: from `sigma` it moves deterministically to
/// `sigma_down` and adds fresh noise of standard deviation `sigma_up`, so the next sample is
/// drawn from N(x + (sigma_down − sigma)·ε, sigma_up²) (what DNG's posterior weighs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AncestralStep {
    pub sigma: f64,
    pub sigma_down: f64,
    pub sigma_up: f64,
}

/// Step `index` of `steps` of `scheduler`, as the window rules see it.
pub fn step_at(scheduler: &dyn Scheduler, index: usize, steps: usize) -> StepAt<'_> {
    StepAt {
        index,
        steps,
        sigma: scheduler.sigma(index),
        schedule: scheduler.noise_schedule(),
    }
}

/// The scheduler `kind` for `steps` steps, configured like diffusers'
/// `<Kind>Scheduler.from_config(cfg)`.
pub fn make_scheduler(
    kind: SchedulerKind,
    cfg: &SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Scheduler>> {
    cfg.validate()?;
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(ddim::Ddim::new(cfg, steps)?),
        SchedulerKind::Euler => Box::new(euler::Euler::new(cfg, steps)?),
        SchedulerKind::EulerAncestral => {
            Box::new(euler_ancestral::EulerAncestral::new(cfg, steps)?)
        }
        SchedulerKind::DpmPp2m => Box::new(dpmpp_2m::DpmPp2m::new(cfg, steps, false)?),
        SchedulerKind::DpmPp2mKarras => Box::new(dpmpp_2m::DpmPp2m::new(cfg, steps, true)?),
    })
}
