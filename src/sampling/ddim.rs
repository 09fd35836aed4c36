//! DDIM (Song et al. 2021), eta 0, as diffusers' `DDIMScheduler`.
use super::Scheduler;
use super::scheduler::{NoiseSchedule, SchedulerConfig, TimestepSpacing};
use anyhow::{Result, bail};
use tch::Tensor;

pub struct Ddim {
    alphas_cumprod: Vec<f32>,
    /// `alphas_cumprod[0]`, or 1 with `set_alpha_to_one`: the "previous" alpha of the last step.
    final_alpha_cumprod: f32,
    clip: Option<f64>,
    timesteps: Vec<f64>,
    /// Train-step distance between consecutive inference steps (`num_train // steps`).
    step_ratio: i64,
    schedule: NoiseSchedule,
}

impl Ddim {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        let n = cfg.num_train_timesteps;
        if steps == 0 || steps > n {
            bail!("DDIM: {steps} steps; it takes 1 to {n}");
        }
        let alphas_cumprod = cfg.alphas_cumprod();
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let timesteps: Vec<i64> = match cfg.spacing(TimestepSpacing::Leading) {
            TimestepSpacing::Linspace => super::scheduler::np_linspace(0.0, (n - 1) as f64, steps)
                .iter()
                .rev()
                .map(|t| t.round_ties_even() as i64)
                .collect(),
            TimestepSpacing::Trailing => {
                let ratio = n as f64 / steps as f64;
                let len = (n as f64 / ratio).ceil() as usize;
                (0..len)
                    .map(|i| (n as f64 - i as f64 * ratio).round_ties_even() as i64 - 1)
                    .collect()
            }
            TimestepSpacing::Leading => {
                let ratio = (n / steps) as i64;
                (0..steps as i64)
                    .rev()
                    .map(|i| i * ratio + cfg.steps_offset as i64)
                    .collect()
            }
        };
        if let Some(&t) = timesteps.iter().find(|&&t| t < 0 || t >= n as i64) {
            bail!("DDIM: timestep {t} is outside the training schedule 0..{n} (steps_offset?)");
        }
        let clip = if cfg.clip_sample.unwrap_or(true) {
            Some(cfg.clip_sample_range.unwrap_or(1.0))
        } else {
            None
        };
        Ok(Ddim {
            alphas_cumprod,
            final_alpha_cumprod,
            clip,
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            step_ratio: (n / steps) as i64,
            schedule: NoiseSchedule::new(cfg),
        })
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigma(&self, step_index: usize) -> f64 {
        self.schedule.sigmas[self.timesteps[step_index] as usize] as f64
    }

    fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// `sqrt(a_t) z0 + sqrt(1 - a_t) noise`.
    fn add_noise(&self, z0: &Tensor, noise: &Tensor, step_index: usize) -> Tensor {
        let a = self.alphas_cumprod[self.timesteps[step_index] as usize];
        z0 * a.sqrt() as f64 + noise * (1.0 - a).sqrt() as f64
    }

    /// `(x - sqrt(1 - a_t) eps) / sqrt(a_t)`, clipped when the config says so.
    fn predicted_x0(&self, eps: &Tensor, step_index: usize, x: &Tensor) -> Tensor {
        let alpha_prod_t = self.alphas_cumprod[self.timesteps[step_index] as usize];
        let beta_prod_t = 1.0 - alpha_prod_t;
        let x0 = (x - eps * beta_prod_t.sqrt() as f64) / alpha_prod_t.sqrt() as f64;
        match self.clip {
            Some(r) => x0.clamp(-r, r),
            None => x0,
        }
    }

    fn step(&mut self, eps: &Tensor, step_index: usize, x: &Tensor, _: Option<&Tensor>) -> Tensor {
        let t = self.timesteps[step_index] as i64;
        let prev_t = t - self.step_ratio;
        let alpha_prod_prev = if prev_t >= 0 {
            self.alphas_cumprod[prev_t as usize]
        } else {
            self.final_alpha_cumprod
        };
        let x0 = self.predicted_x0(eps, step_index, x);
        // x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps   (eta = 0: no noise term)
        let direction = eps * (1.0 - alpha_prod_prev).sqrt() as f64;
        x0 * alpha_prod_prev.sqrt() as f64 + direction
    }
}
