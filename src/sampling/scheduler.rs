//! The scheduler configuration (diffusers' `scheduler_config.json`) and the training noise
//! schedule every scheduler derives from.
use crate::params::PercentToSigma;
use crate::weights::config_json;
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
    #[serde(default)]
    pub beta_schedule: BetaSchedule,
    #[serde(default)]
    pub prediction_type: PredictionType,
    /// `None`: the scheduler's own default.
    #[serde(default)]
    pub timestep_spacing: Option<TimestepSpacing>,
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
    /// Options of diffusers that change the schedule and negimg does not compute: read so
    /// that a config which sets them is refused instead of run as if they were absent.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default)]
    pub rescale_betas_zero_snr: Option<bool>,
    #[serde(default)]
    pub thresholding: Option<bool>,
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

/// How the training betas run from `beta_start` to `beta_end` (diffusers' `beta_schedule`;
/// its `squaredcos_cap_v2` and `sigmoid` are not computed here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    #[default]
    Linear,
    /// Linear in `sqrt(beta)`, as Stable Diffusion was trained.
    ScaledLinear,
}

/// What the UNet predicts; negimg runs epsilon-prediction SD1.5 models only (diffusers'
/// `v_prediction` and `sample` are refused when the config is read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    #[default]
    Epsilon,
}

/// Where the inference timesteps fall among the training steps (diffusers'
/// `timestep_spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Linspace,
    Trailing,
}

impl SchedulerConfig {
    /// The IP-Adapter demo's DDIM: 1000 train steps, scaled-linear betas 0.00085..0.012,
    /// no sample clipping, `set_alpha_to_one` false, `steps_offset` 1, "leading" spacing.
    pub fn sd15_ddim() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: Some(TimestepSpacing::Leading),
            steps_offset: 1,
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            clip_sample_range: Some(1.0),
            trained_betas: None,
            rescale_betas_zero_snr: None,
            thresholding: None,
        }
    }

    /// Reads `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg: SchedulerConfig = config_json::read(path, "scheduler config")?;
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
        for (key, set) in [
            ("trained_betas", self.trained_betas.is_some()),
            (
                "rescale_betas_zero_snr",
                self.rescale_betas_zero_snr == Some(true),
            ),
            ("thresholding", self.thresholding == Some(true)),
        ] {
            if set {
                bail!("{key} is not supported (negimg computes the betas from beta_schedule)");
            }
        }
        if self.num_train_timesteps < 2 {
            bail!("num_train_timesteps must be at least 2");
        }
        Ok(())
    }

    /// The spacing in use, with `default` when the config has none.
    pub fn spacing(&self, default: TimestepSpacing) -> TimestepSpacing {
        self.timestep_spacing.unwrap_or(default)
    }

    /// `alphas_cumprod` of the training schedule, computed with torch in float32 exactly as
    /// diffusers does (linspace in float32, cumprod), so that every derived value matches.
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let n = self.num_train_timesteps as i64;
        let opts = (Kind::Float, tch::Device::Cpu);
        let betas = match self.beta_schedule {
            BetaSchedule::ScaledLinear => {
                Tensor::linspace(self.beta_start.sqrt(), self.beta_end.sqrt(), n, opts)
                    .pow_tensor_scalar(2)
            }
            BetaSchedule::Linear => Tensor::linspace(self.beta_start, self.beta_end, n, opts),
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

/// The training noise levels of a model's schedule, and ComfyUI's map from a fraction of the
/// schedule to a noise level (`window = "sigma"`).
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    /// `sqrt((1 - ᾱ_t) / ᾱ_t)` in float32, index = training timestep.
    pub sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
}

impl NoiseSchedule {
    pub fn new(cfg: &SchedulerConfig) -> Self {
        let sigmas = cfg.train_sigmas();
        let log_sigmas = sigmas.iter().map(|s| s.ln()).collect();
        NoiseSchedule { sigmas, log_sigmas }
    }
}

impl PercentToSigma for NoiseSchedule {
    /// ComfyUI's `ModelSamplingDiscrete.percent_to_sigma`: above every sigma at p <= 0, 0 at
    /// p >= 1, otherwise the sigma at the fractional training timestep `(1 - p)·(T - 1)`,
    /// interpolated linearly in log-sigma between the two neighbouring timesteps (float32, as
    /// ComfyUI). ComfyUI writes `999` for `T - 1`: its discrete models have T = 1000.
    fn percent_to_sigma(&self, p: f64) -> f64 {
        if p <= 0.0 {
            return f64::INFINITY;
        }
        if p >= 1.0 {
            return 0.0;
        }
        let last = self.log_sigmas.len() - 1;
        let t = (((1.0 - p) * last as f64) as f32).clamp(0.0, last as f32);
        let (low, high) = (t.floor() as usize, t.ceil() as usize);
        let w = t - t.floor();
        let log_sigma = (1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[high];
        log_sigma.exp() as f64
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Writes `json` as a scheduler_config.json and reads it back.
    fn read(json: &str) -> (PathBuf, Result<SchedulerConfig>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler_config.json");
        std::fs::write(&path, json).unwrap();
        let cfg = SchedulerConfig::from_file(&path);
        (path, cfg)
    }

    #[test]
    fn percent_to_sigma_has_comfyuis_ends_and_interpolates_in_log_sigma() {
        let schedule = NoiseSchedule::new(&SchedulerConfig::sd15_ddim());
        let sigmas = &schedule.sigmas;
        assert_eq!(schedule.percent_to_sigma(0.0), f64::INFINITY);
        assert_eq!(schedule.percent_to_sigma(1.0), 0.0);
        // p = 0.5: timestep 499.5, the geometric mean of the sigmas at 499 and 500.
        let mid = schedule.percent_to_sigma(0.5);
        let want = (sigmas[499] as f64 * sigmas[500] as f64).sqrt();
        assert!((mid - want).abs() < 1e-5 * want, "{mid} vs {want}");
        // p = 0.1 is timestep 899.1, just above the sigma at 899.
        let p = schedule.percent_to_sigma(0.1);
        assert!(sigmas[899] as f64 <= p && p < sigmas[900] as f64);
    }

    #[test]
    fn options_parse_to_their_enums() {
        let (_, cfg) = read(
            r#"{"beta_schedule": "scaled_linear", "prediction_type": "epsilon",
                "timestep_spacing": "trailing", "trained_betas": null}"#,
        );
        let cfg = cfg.unwrap();
        assert_eq!(cfg.beta_schedule, BetaSchedule::ScaledLinear);
        assert_eq!(
            cfg.spacing(TimestepSpacing::Leading),
            TimestepSpacing::Trailing
        );
        let (_, cfg) = read("{}");
        let cfg = cfg.unwrap();
        assert_eq!(cfg.beta_schedule, BetaSchedule::Linear);
        assert_eq!(
            cfg.spacing(TimestepSpacing::Leading),
            TimestepSpacing::Leading
        );
        // Written as diffusers spells the values.
        let json = SchedulerConfig::sd15_ddim().to_config_json();
        assert_eq!(json["beta_schedule"], "scaled_linear");
        assert_eq!(json["timestep_spacing"], "leading");
        assert!(json.get("trained_betas").is_none());
    }

    #[test]
    fn unknown_option_values_name_file_key_and_allowed_values() {
        for (json, key, allowed) in [
            (
                r#"{"beta_schedule": "cosine_typo"}"#,
                "beta_schedule",
                &["`linear`", "`scaled_linear`"][..],
            ),
            // Values diffusers knows but negimg does not compute.
            (
                r#"{"beta_schedule": "squaredcos_cap_v2"}"#,
                "beta_schedule",
                &["`linear`", "`scaled_linear`"],
            ),
            (
                r#"{"prediction_type": "v_prediction"}"#,
                "prediction_type",
                &["`epsilon`"],
            ),
            (
                r#"{"timestep_spacing": "trailng", "steps_offset": 1}"#,
                "timestep_spacing",
                &["`leading`", "`linspace`", "`trailing`"],
            ),
        ] {
            let (path, cfg) = read(json);
            let msg = format!("{:#}", cfg.unwrap_err());
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("key \"{key}\"")), "{msg}");
            for value in allowed {
                assert!(msg.contains(value), "{msg}");
            }
        }
    }

    #[test]
    fn schedule_options_negimg_does_not_compute_are_refused() {
        for (json, key) in [
            (r#"{"trained_betas": [0.1, 0.2]}"#, "trained_betas"),
            (
                r#"{"rescale_betas_zero_snr": true}"#,
                "rescale_betas_zero_snr",
            ),
            (r#"{"thresholding": true}"#, "thresholding"),
        ] {
            let (path, cfg) = read(json);
            let msg = format!("{:#}", cfg.unwrap_err());
            assert!(
                msg.contains(&path.display().to_string()) && msg.contains(key),
                "{msg}"
            );
        }
        let (_, cfg) = read(r#"{"rescale_betas_zero_snr": false, "thresholding": false}"#);
        assert!(cfg.is_ok());
    }
}
