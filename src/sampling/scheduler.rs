//! The scheduler configuration (diffusers' `scheduler_config.json`) and the training noise
//! schedule every scheduler derives from.
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Kind, Tensor};

/// The fields of a diffusers `scheduler_config.json` that negimg's schedulers read. Like
/// diffusers' `from_config`, a missing key takes the default of the scheduler being built
/// (hence the `Option`s), and keys of other schedulers are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "default_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default = "default_prediction_type")]
    pub prediction_type: String,
    /// `leading`, `linspace` or `trailing`; `None`: the scheduler's own default.
    #[serde(default)]
    pub timestep_spacing: Option<String>,
    #[serde(default)]
    pub steps_offset: usize,
    /// DDIM only.
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    /// DDIM only.
    #[serde(default)]
    pub clip_sample: Option<bool>,
    #[serde(default)]
    pub clip_sample_range: Option<f64>,
}

fn default_train_steps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> String {
    "linear".into()
}
fn default_prediction_type() -> String {
    "epsilon".into()
}

impl SchedulerConfig {
    /// The IP-Adapter demo's DDIM: 1000 train steps, scaled-linear betas 0.00085..0.012,
    /// no sample clipping, `set_alpha_to_one` false, `steps_offset` 1, "leading" spacing.
    pub fn sd15_ddim() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            prediction_type: "epsilon".into(),
            timestep_spacing: Some("leading".into()),
            steps_offset: 1,
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            clip_sample_range: Some(1.0),
        }
    }

    /// Reads `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scheduler config {}", path.display()))?;
        let cfg: SchedulerConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid scheduler config", path.display()))?;
        cfg.validate()
            .with_context(|| format!("scheduler config {}", path.display()))?;
        Ok(cfg)
    }

    /// A `scheduler_config.json` that diffusers' `DDIMScheduler.from_pretrained` loads.
    pub fn to_config_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.retain(|_, value| !value.is_null());
            map.insert("_class_name".into(), "DDIMScheduler".into());
        }
        v
    }

    pub fn validate(&self) -> Result<()> {
        if self.prediction_type != "epsilon" {
            bail!(
                "prediction_type {:?} is not supported (negimg runs epsilon-prediction SD1.5 models)",
                self.prediction_type
            );
        }
        if !matches!(self.beta_schedule.as_str(), "linear" | "scaled_linear") {
            bail!(
                "beta_schedule {:?} is not supported (linear, scaled_linear)",
                self.beta_schedule
            );
        }
        if let Some(s) = &self.timestep_spacing
            && !matches!(s.as_str(), "leading" | "linspace" | "trailing")
        {
            bail!("timestep_spacing {s:?} is not one of leading, linspace, trailing");
        }
        if self.num_train_timesteps < 2 {
            bail!("num_train_timesteps must be at least 2");
        }
        Ok(())
    }

    /// The spacing in use, with `default` when the config has none.
    pub fn spacing<'a>(&'a self, default: &'a str) -> &'a str {
        self.timestep_spacing.as_deref().unwrap_or(default)
    }

    /// `alphas_cumprod` of the training schedule, computed with torch in float32 exactly as
    /// diffusers does (linspace in float32, cumprod), so that every derived value matches.
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let n = self.num_train_timesteps as i64;
        let opts = (Kind::Float, tch::Device::Cpu);
        let betas = match self.beta_schedule.as_str() {
            "scaled_linear" => {
                Tensor::linspace(self.beta_start.sqrt(), self.beta_end.sqrt(), n, opts)
                    .pow_tensor_scalar(2)
            }
            _ => Tensor::linspace(self.beta_start, self.beta_end, n, opts),
        };
        let alphas = betas.neg() + 1.0;
        let cumprod = alphas.cumprod(0, Kind::Float);
        Vec::<f32>::try_from(&cumprod).unwrap_or_default()
    }

    /// Training sigmas `sqrt((1 - a) / a)` in float32, index = training timestep.
    pub fn train_sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod()
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }
}

/// numpy's `linspace(start, stop, num)` in float64 (the last value is exactly `stop`).
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// numpy's `interp(x, arange(len(fp)), fp)`.
pub(crate) fn np_interp_index(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// diffusers' `_sigma_to_t`: the (fractional) training timestep of `sigma`, interpolating
/// linearly in log-sigma. `log_sigmas` are float32 logs as numpy computes them.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // the last index whose log-sigma is <= log_sigma (cumsum(dists >= 0).argmax()), clipped
    let count = log_sigmas
        .iter()
        .filter(|&&l| log_sigma - l as f64 >= 0.0)
        .count();
    let low_idx = count.saturating_sub(1).min(n - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx] as f64;
    let high = log_sigmas[high_idx] as f64;
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras et al. (2022) sigmas, rho 7, from `sigma_max` down to `sigma_min`.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}
