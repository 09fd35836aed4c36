//! Euler ancestral (A1111's "Euler a"), as diffusers' `EulerAncestralDiscreteScheduler`: the
//! timesteps, sigmas and model input of [`Euler`], and a step that goes down to `σ_down` and
//! adds fresh noise of standard deviation `σ_up`, where (Karras et al. 2022's ancestral step
//! with η = 1) `σ_up = sqrt(σ_to² (σ_from² − σ_to²) / σ_from²)`, `σ_down = sqrt(σ_to² − σ_up²)`.
use super::euler::Euler;
use super::scheduler::{NoiseSchedule, SchedulerConfig};
use super::{AncestralStep, Scheduler};
use anyhow::Result;
use tch::Tensor;

pub struct EulerAncestral {
    euler: Euler,
}

impl EulerAncestral {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        Ok(EulerAncestral {
            euler: Euler::new(cfg, steps)?,
        })
    }

    /// `(σ_up, σ_down)` of step `step_index`, in float32 as diffusers computes them.
    fn up_down(&self, step_index: usize) -> (f32, f32) {
        let from = self.euler.sigma(step_index) as f32;
        let to = self.euler.sigma(step_index + 1) as f32;
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let down = (to * to - up * up).sqrt();
        (up, down)
    }
}

impl Scheduler for EulerAncestral {
    fn timesteps(&self) -> &[f64] {
        self.euler.timesteps()
    }

    fn init_noise_sigma(&self) -> f64 {
        self.euler.init_noise_sigma()
    }

    fn scale_model_input(&self, x: &Tensor, step_index: usize) -> Tensor {
        self.euler.scale_model_input(x, step_index)
    }

    fn sigma(&self, step_index: usize) -> f64 {
        self.euler.sigma(step_index)
    }

    fn noise_schedule(&self) -> &NoiseSchedule {
        self.euler.noise_schedule()
    }

    fn add_noise(&self, z0: &Tensor, noise: &Tensor, step_index: usize) -> Tensor {
        self.euler.add_noise(z0, noise, step_index)
    }

    fn ancestral(&self, step_index: usize) -> Option<AncestralStep> {
        let (up, down) = self.up_down(step_index);
        Some(AncestralStep {
            sigma: self.euler.sigma(step_index),
            sigma_down: down as f64,
            sigma_up: up as f64,
        })
    }

    fn predicted_x0(&self, eps: &Tensor, step_index: usize, x: &Tensor) -> Tensor {
        self.euler.predicted_x0(eps, step_index, x)
    }

    /// # Panics
    /// Without `noise` (the caller must pass it to an ancestral scheduler).
    fn step(
        &mut self,
        eps: &Tensor,
        step_index: usize,
        x: &Tensor,
        noise: Option<&Tensor>,
    ) -> Tensor {
        let noise = noise.expect("euler_ancestral: each step takes its noise (is_ancestral)");
        let sigma = self.euler.sigma(step_index);
        let (up, down) = self.up_down(step_index);
        // derivative (x - x0) / sigma; deterministic part down to sigma_down
        let x0 = self.predicted_x0(eps, step_index, x);
        let derivative = (x - x0) / sigma;
        let dt = down - sigma as f32;
        x + derivative * dt as f64 + noise * up as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euler_ancestral_noise_variance_adds_up_to_the_next_sigma() {
        let s = EulerAncestral::new(&SchedulerConfig::sd15_ddim(), 10).unwrap();
        for i in 0..10 {
            let (up, down) = s.up_down(i);
            let to = s.sigma(i + 1) as f32;
            assert!((up * up + down * down - to * to).abs() <= 1e-5 * to * to + 1e-12);
            assert!(down <= to && up <= to);
        }
        // the last step goes to sigma 0 with no noise
        assert_eq!(s.up_down(9), (0.0, 0.0));
        let last = s.ancestral(9).unwrap();
        assert_eq!((last.sigma, last.sigma_up), (s.sigma(9), 0.0));
        assert!(s.is_ancestral());
    }
}
