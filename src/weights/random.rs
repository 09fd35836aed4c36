//! Deterministic random weights for tiny test models and speed benchmarks.
use anyhow::{Context, Result};
use std::path::Path;
use tch::{Tensor, nn};

/// libtorch's default generator is global to the process: seeding it and drawing from it
/// (initial latents, noise images) must not interleave with another thread's draws, and
/// building a model draws its initial weights from it. Each of these holds this lock.
pub fn global_generator() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A CPU store holding the variables `build` creates, with seeded random weights: the
/// initial weights drawn from `seed`, then every variable perturbed by seeded noise of
/// standard deviation `scale`, so that norms and biases are not their trivial initial values
/// (1 and 0) and a parity test notices if one is not loaded. Variables are perturbed in name
/// order, and the global generator is held throughout (a test drawing on another thread
/// cannot interleave), so the weights depend only on `seed` and the model.
pub fn random_var_store(
    seed: i64,
    scale: f64,
    build: impl FnOnce(nn::Path) -> Result<()>,
) -> Result<nn::VarStore> {
    let _generator = global_generator();
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    build(vs.root())?;
    tch::manual_seed(seed);
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, mut var) in variables {
            let noise = Tensor::randn_like(&var) * scale;
            let _ = var.g_add_(&noise);
        }
    });
    Ok(vs)
}

/// The global generator, held and seeded with `seed`: what this thread draws while the guard
/// lives depends only on `seed` (test inputs drawn beside a running pipeline).
pub fn seeded_generator(seed: i64) -> std::sync::MutexGuard<'static, ()> {
    let generator = global_generator();
    tch::manual_seed(seed);
    generator
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
