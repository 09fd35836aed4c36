//! Helpers shared by the integration tests.
#![allow(dead_code)]
pub mod tiny;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python (set by the justfile as NEGIMG_PYTHON), for reference computations.
pub fn python() -> PathBuf {
    std::env::var_os("NEGIMG_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// Runs `tests/reference/<script>` with the venv's python; panics with its output on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let path = repo().join("tests/reference").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("OMP_NUM_THREADS", "2")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A fresh, empty scratch folder for one test under target/test-scratch.
pub fn scratch(name: &str) -> PathBuf {
    let dir = repo().join("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The release binary (the justfile builds it before the tests run).
pub fn negimg_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_negimg"))
}

pub fn negimg(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(negimg_bin())
        .args(args)
        .current_dir(cwd)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("cannot run negimg")
}

/// Max |a - b| over two tensors of the same shape.
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// What `tests/reference/model_keys.py` reports of the model diffusers builds from
/// `config_json` (on the meta device, no memory), for `component` = "unet" or "vae":
/// `shapes` (state-dict keys and shapes) and, for the UNet, `cross_attention` (the
/// attention processors' order).
pub fn diffusers_model_keys(name: &str, component: &str, config_json: &str) -> serde_json::Value {
    let dir = scratch(name);
    let config = dir.join("config.json");
    std::fs::write(&config, config_json).unwrap();
    let out = dir.join("keys.json");
    run_python(
        "model_keys.py",
        &[component, config.to_str().unwrap(), out.to_str().unwrap()],
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// The `shapes` of a [`diffusers_model_keys`] report.
pub fn shapes_of(reference: &serde_json::Value) -> std::collections::BTreeMap<String, Vec<i64>> {
    serde_json::from_value(reference["shapes"].clone()).unwrap()
}

/// The variable names and shapes of a VarStore.
pub fn var_shapes(vs: &tch::nn::VarStore) -> std::collections::BTreeMap<String, Vec<i64>> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.size()))
        .collect()
}

/// Loads a model set on the CPU in float32.
pub fn load_pipeline(models: &negimg::roles::ModelSet<PathBuf>) -> negimg::pipeline::Pipeline {
    negimg::pipeline::Pipeline::load(models, tch::Device::Cpu, tch::Kind::Float, &mut |_| {})
        .unwrap()
}

/// Generates `cells` (any mix of batch keys) in the runner's batches of at most
/// `max_batch` cells; float outcomes in the order of `cells`.
pub fn generate_float(
    pipeline: &mut negimg::pipeline::Pipeline,
    cells: &[negimg::params::GenParams],
    max_batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<negimg::pipeline::FloatOutcome> {
    let mut out: Vec<Option<negimg::pipeline::FloatOutcome>> = cells.iter().map(|_| None).collect();
    for batch in negimg::run::batching::plan_batches(cells, max_batch) {
        let group: Vec<_> = batch.iter().map(|&i| cells[i].clone()).collect();
        let results = pipeline.generate_float(&group, progress).unwrap();
        for (&i, r) in batch.iter().zip(results) {
            out[i] = Some(r);
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}
