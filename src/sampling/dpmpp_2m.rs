//! DPM-Solver++ 2M (Lu et al. 2022), as diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type="dpmsolver++"`, `solver_order=2`, midpoint solver, `lower_order_final`,
//! final sigma 0 (so the last step is first order), optionally Karras sigmas (rho 7).
use super::Scheduler;
use super::scheduler::{
    NoiseSchedule, SchedulerConfig, TimestepSpacing, karras_sigmas, np_interp_index, np_linspace,
    sigma_to_t,
};
use anyhow::{Result, bail};
use tch::Tensor;

pub struct DpmPp2m {
    timesteps: Vec<f64>,
    /// One per step plus the final 0 (float32, as diffusers stores them).
    sigmas: Vec<f32>,
    /// The data prediction of the previous step (the multistep history).
    previous_x0: Option<Tensor>,
    schedule: NoiseSchedule,
}

/// alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma alpha_t, lambda = log alpha_t - log sigma_t
/// (float32 arithmetic, as diffusers on its float32 sigma tensor).
fn alpha_sigma_lambda(sigma: f32) -> (f32, f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    (alpha, sigma_t, alpha.ln() - sigma_t.ln())
}

impl DpmPp2m {
    pub fn new(cfg: &SchedulerConfig, steps: usize, karras: bool) -> Result<Self> {
        let n = cfg.num_train_timesteps;
        if steps == 0 || steps >= n {
            bail!("DPM++ 2M: {steps} steps; it takes 1 to {}", n - 1);
        }
        // lambda_min_clipped is -inf: the schedule runs up to the last training step
        let last = n;
        let mut timesteps: Vec<f64> = match cfg.spacing(TimestepSpacing::Linspace) {
            TimestepSpacing::Leading => {
                let ratio = last / (steps + 1);
                (1..=steps)
                    .rev()
                    .map(|i| (i * ratio + cfg.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n as f64 / steps as f64;
                let len = (last as f64 / ratio).ceil() as usize;
                (0..len)
                    .map(|i| (last as f64 - i as f64 * ratio).round_ties_even() - 1.0)
                    .collect()
            }
            TimestepSpacing::Linspace => {
                let mut v: Vec<f64> = np_linspace(0.0, (last - 1) as f64, steps + 1)
                    .iter()
                    .rev()
                    .map(|t| t.round_ties_even())
                    .collect();
                v.pop();
                v
            }
        };
        let schedule = NoiseSchedule::new(cfg);
        let train = &schedule.sigmas;
        let mut sigmas: Vec<f32> = if karras {
            let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
            let k = karras_sigmas(train[0] as f64, train[n - 1] as f64, steps);
            timesteps = k
                .iter()
                .map(|&s| sigma_to_t(s, &log_sigmas).round_ties_even())
                .collect();
            k.iter().map(|&s| s as f32).collect()
        } else {
            timesteps
                .iter()
                .map(|&t| np_interp_index(t, train) as f32)
                .collect()
        };
        sigmas.push(0.0);
        Ok(DpmPp2m {
            timesteps,
            sigmas,
            previous_x0: None,
            schedule,
        })
    }
}

impl Scheduler for DpmPp2m {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigma(&self, step_index: usize) -> f64 {
        self.sigmas[step_index] as f64
    }

    fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// `alpha_t z0 + sigma_t noise`.
    fn add_noise(&self, z0: &Tensor, noise: &Tensor, step_index: usize) -> Tensor {
        let (alpha, sigma, _) = alpha_sigma_lambda(self.sigmas[step_index]);
        z0 * alpha as f64 + noise * sigma as f64
    }

    /// The data prediction `(x - sigma_s eps) / alpha_s`.
    fn predicted_x0(&self, eps: &Tensor, i: usize, x: &Tensor) -> Tensor {
        let (alpha_s0, sigma_s0, _) = alpha_sigma_lambda(self.sigmas[i]);
        (x - eps * sigma_s0 as f64) / alpha_s0 as f64
    }

    fn fork(&mut self, parents: &Tensor) {
        if let Some(prev) = &self.previous_x0 {
            self.previous_x0 = Some(prev.index_select(0, parents));
        }
    }

    fn step(&mut self, eps: &Tensor, i: usize, x: &Tensor, _: Option<&Tensor>) -> Tensor {
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[i]);
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[i + 1]);
        let x0 = self.predicted_x0(eps, i, x);
        let h = lambda_t - lambda_s0;
        let phi = alpha_t * ((-h).exp() - 1.0);
        let last = i + 1 == self.timesteps.len();
        let next = match (&self.previous_x0, last) {
            // second order (midpoint): D0 = x0, D1 = (x0 - x0_prev) / r0, r0 = h_prev / h
            (Some(prev), false) => {
                let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[i - 1]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                let d1 = (&x0 - prev) * (1.0 / r0) as f64;
                x * (sigma_t / sigma_s0) as f64 - &x0 * phi as f64 - d1 * (0.5 * phi) as f64
            }
            // first order (DPM-Solver++ 1 = DDIM in data prediction): first and last step
            _ => x * (sigma_t / sigma_s0) as f64 - &x0 * phi as f64,
        };
        self.previous_x0 = Some(x0);
        next
    }
}
