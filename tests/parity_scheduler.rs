//! Scheduler parity with diffusers: timesteps (exactly), init_noise_sigma, the scaled model
//! inputs and the whole trajectory for a fixed sequence of model outputs (1e-5 relative);
//! euler_ancestral also for a fixed sequence of step noises; the predicted clean sample x̂₀
//! of each step (what x̂₀ traces decode) against diffusers' `pred_original_sample` (DDIM,
//! Euler, Euler ancestral) and DPM-Solver++'s data prediction (`convert_model_output`, as its
//! step returns no `pred_original_sample`).
mod common;

use negimg::params::SchedulerKind;
use negimg::sampling::{SchedulerConfig, make_scheduler};
use negimg::weights::{TensorFile, TensorSource};
use serde_json::json;
use tch::{Device, Kind, Tensor};

/// The real SD1.5 scheduler_config.json (PNDM; no timestep_spacing key).
fn sd15_pndm_config() -> serde_json::Value {
    json!({"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
           "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
           "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
           "trained_betas": null})
}

#[test]
fn parity_scheduler_trajectories_match_diffusers() {
    let demo = SchedulerConfig::sd15_ddim().to_config_json();
    let mut trailing = demo.clone();
    trailing["timestep_spacing"] = json!("trailing");
    let mut linear = sd15_pndm_config();
    linear["beta_schedule"] = json!("linear");
    let cases = [
        ("ddim_4", "ddim", 4, demo.clone()),
        ("ddim_25", "ddim", 25, demo.clone()),
        ("ddim_30", "ddim", 30, demo.clone()),
        ("ddim_trailing_7", "ddim", 7, trailing.clone()),
        ("ddim_sd15_linear_10", "ddim", 10, linear.clone()),
        ("euler_4", "euler", 4, demo.clone()),
        ("euler_25", "euler", 25, demo.clone()),
        ("euler_sd15_linspace_20", "euler", 20, sd15_pndm_config()),
        ("euler_trailing_9", "euler", 9, trailing.clone()),
        ("euler_ancestral_4", "euler_ancestral", 4, demo.clone()),
        ("euler_ancestral_25", "euler_ancestral", 25, demo.clone()),
        (
            "euler_ancestral_sd15_linspace_20",
            "euler_ancestral",
            20,
            sd15_pndm_config(),
        ),
        (
            "euler_ancestral_trailing_9",
            "euler_ancestral",
            9,
            trailing.clone(),
        ),
        ("dpm_4", "dpmpp_2m", 4, demo.clone()),
        ("dpm_25", "dpmpp_2m", 25, demo.clone()),
        ("dpm_sd15_linspace_20", "dpmpp_2m", 20, sd15_pndm_config()),
        ("dpm_karras_4", "dpmpp_2m_karras", 4, demo.clone()),
        ("dpm_karras_25", "dpmpp_2m_karras", 25, demo.clone()),
        ("dpm_karras_30", "dpmpp_2m_karras", 30, sd15_pndm_config()),
    ];
    let dir = common::scratch("parity_scheduler");
    let spec: Vec<_> = cases
        .iter()
        .map(|(name, kind, steps, cfg)| json!({"name": name, "kind": kind, "steps": steps, "config": cfg}))
        .collect();
    let cases_path = dir.join("cases.json");
    std::fs::write(&cases_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let out = dir.join("ref.safetensors");
    common::run_python(
        "sched_trajectories.py",
        &[cases_path.to_str().unwrap(), out.to_str().unwrap()],
    );
    let reference = TensorFile::open(&out).unwrap();
    let get = |k: String| reference.get(&k, Device::Cpu, Kind::Float).unwrap();

    for (name, kind, steps, cfg) in &cases {
        let cfg: SchedulerConfig = serde_json::from_value(cfg.clone()).unwrap();
        let kind: SchedulerKind = serde_json::from_value(json!(kind)).unwrap();
        let mut s = make_scheduler(kind, &cfg, *steps).unwrap();

        let want_t = Vec::<f64>::try_from(
            reference
                .get(&format!("{name}.timesteps"), Device::Cpu, Kind::Double)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(s.timesteps(), &want_t[..], "{name}: timesteps");
        let want_sigma = reference
            .get(
                &format!("{name}.init_noise_sigma"),
                Device::Cpu,
                Kind::Double,
            )
            .unwrap()
            .double_value(&[0]);
        assert!(
            (s.init_noise_sigma() - want_sigma).abs() <= 1e-6 * want_sigma,
            "{name}: init_noise_sigma {} vs {want_sigma}",
            s.init_noise_sigma()
        );

        let eps = get(format!("{name}.eps"));
        let inputs = get(format!("{name}.inputs"));
        let traj = get(format!("{name}.trajectory"));
        let noise = s.is_ancestral().then(|| get(format!("{name}.noise")));
        let x0 = get(format!("{name}.x0"));
        let mut x = get(format!("{name}.x_t")) * s.init_noise_sigma();
        for i in 0..*steps {
            let xin = s.scale_model_input(&x, i);
            assert_close(
                &xin,
                &inputs.get(i as i64),
                &format!("{name}: input of step {i}"),
            );
            let step_noise = noise.as_ref().map(|n| n.get(i as i64));
            trace_x0_close(
                &s.predicted_x0(&eps.get(i as i64), i, &x),
                &x0.get(i as i64),
                &format!("{name}: trace x̂₀ of step {i}"),
            );
            x = s.step(&eps.get(i as i64), i, &x, step_noise.as_ref());
            assert_close(
                &x,
                &traj.get(i as i64 + 1),
                &format!("{name}: sample after step {i}"),
            );
        }
    }
}

/// x̂₀ within 1e-5, relative to its scale where that is above 1 (diffusers' DDIM x̂₀ is
/// `sample / sqrt(ᾱ)` early on: tens).
fn trace_x0_close(got: &Tensor, want: &Tensor, what: &str) {
    let diff = common::max_abs_diff(got, want);
    let scale = want.abs().max().double_value(&[]).max(1.0);
    assert!(
        diff <= 1e-5 * scale,
        "{what}: max abs diff {diff} (scale {scale})"
    );
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    let diff = common::max_abs_diff(got, want);
    let scale = want.abs().max().double_value(&[]).max(1e-3);
    assert!(
        diff <= 1e-5 * scale,
        "{what}: max abs diff {diff} (scale {scale})"
    );
}
