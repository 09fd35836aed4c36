//! Euler discrete (Karras et al. 2022, Algorithm 2 without churn), as diffusers'
//! `EulerDiscreteScheduler` with linear sigma interpolation and a final sigma of zero.
use super::Scheduler;
use super::scheduler::{
    NoiseSchedule, SchedulerConfig, TimestepSpacing, np_interp_index, np_linspace,
};
use anyhow::{Result, bail};
use tch::Tensor;

pub struct Euler {
    timesteps: Vec<f64>,
    /// One per step plus the final 0, float32 as diffusers stores them.
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    schedule: NoiseSchedule,
}

impl Euler {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        let n = cfg.num_train_timesteps;
        if steps == 0 || steps > n {
            bail!("Euler: {steps} steps; it takes 1 to {n}");
        }
        let spacing = cfg.spacing(TimestepSpacing::Linspace);
        let timesteps: Vec<f32> = match spacing {
            TimestepSpacing::Leading => {
                let ratio = n / steps;
                (0..steps)
                    .rev()
                    .map(|i| (i * ratio) as f32 + cfg.steps_offset as f32)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n as f64 / steps as f64;
                let len = (n as f64 / ratio).ceil() as usize;
                (0..len)
                    .map(|i| (n as f64 - i as f64 * ratio).round_ties_even() as f32 - 1.0)
                    .collect()
            }
            TimestepSpacing::Linspace => np_linspace(0.0, (n - 1) as f64, steps)
                .iter()
                .rev()
                .map(|&t| t as f32)
                .collect(),
        };
        let schedule = NoiseSchedule::new(cfg);
        let mut sigmas: Vec<f32> = timesteps
            .iter()
            .map(|&t| np_interp_index(t as f64, &schedule.sigmas) as f32)
            .collect();
        sigmas.push(0.0);
        let max_sigma = sigmas.iter().cloned().fold(0.0f32, f32::max);
        let init_noise_sigma = match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        } as f64;
        Ok(Euler {
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            sigmas,
            init_noise_sigma,
            schedule,
        })
    }
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn sigma(&self, step_index: usize) -> f64 {
        self.sigmas[step_index] as f64
    }

    fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn scale_model_input(&self, x: &Tensor, step_index: usize) -> Tensor {
        let sigma = self.sigmas[step_index];
        x / (sigma * sigma + 1.0).sqrt() as f64
    }

    /// `z0 + sigma noise` (Euler works on sigma-scaled samples).
    fn add_noise(&self, z0: &Tensor, noise: &Tensor, step_index: usize) -> Tensor {
        z0 + noise * self.sigmas[step_index] as f64
    }

    /// `x - sigma eps` (on the sigma-scaled sample).
    fn predicted_x0(&self, eps: &Tensor, step_index: usize, x: &Tensor) -> Tensor {
        x - eps * self.sigmas[step_index] as f64
    }

    fn step(&mut self, eps: &Tensor, step_index: usize, x: &Tensor, _: Option<&Tensor>) -> Tensor {
        let sigma = self.sigmas[step_index];
        // dx/dsigma = (x - x0) / sigma; one Euler step to the next sigma
        let x0 = self.predicted_x0(eps, step_index, x);
        let derivative = (x - x0) / sigma as f64;
        let dt = self.sigmas[step_index + 1] - sigma;
        x + derivative * dt as f64
    }
}
