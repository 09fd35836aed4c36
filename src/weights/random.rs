//! Deterministic random weights for tiny test models and speed benchmarks.
use anyhow::{Context, Result};
use std::path::Path;
use tch::{Tensor, nn};

/// An empty CPU store with the global generator seeded: the model built into it next
/// draws its initial weights from `seed`, not from whatever ran before.
/// libtorch's default generator is global to the process: seeding it and drawing from it
/// (initial latents, noise images) must not interleave with another thread's draws, and
/// building a model draws its initial weights from it. Each of these holds this lock.
pub fn global_generator() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn seeded_var_store(seed: i64) -> nn::VarStore {
    tch::manual_seed(seed);
    nn::VarStore::new(tch::Device::Cpu)
}

/// Perturbs every variable of `vs` with seeded noise, so that norms and biases are not
/// their trivial initial values (1 and 0) and a parity test notices if one is not loaded.
/// Variables are visited in name order, so the result depends only on `seed` and the model.
pub fn randomize(vs: &nn::VarStore, seed: i64, scale: f64) {
    tch::manual_seed(seed);
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, mut var) in variables {
            let noise = Tensor::randn_like(&var) * scale;
            let _ = var.g_add_(&noise);
        }
    });
}

/// Writes every variable of `vs` to one `.safetensors` file, converted to `kind`
/// (`*.fp16.safetensors` variants are written with `Kind::Half`).
pub fn save_var_store(vs: &nn::VarStore, path: &Path, kind: tch::Kind) -> Result<()> {
    let mut variables: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.to_kind(kind).to_device(tch::Device::Cpu)))
        .collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Tensor::write_safetensors(&variables, path)
        .with_context(|| format!("cannot write {}", path.display()))
}
