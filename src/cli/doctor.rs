//! `negimg doctor`: what negimg runs on. The first thing to run when something is off.
use super::Globals;
use crate::provenance::{git_revision, libtorch};
use anyhow::Result;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Also run a 4096x4096 matmul on the chosen --device and --dtype, and time it.
    #[arg(long)]
    pub matmul: bool,
}

pub fn run(args: DoctorArgs, g: &Globals) -> Result<()> {
    println!(
        "negimg {} (git {})",
        crate::provenance::VERSION,
        git_revision()
    );
    let (version, lib) = libtorch();
    println!("libtorch: {version}");
    println!(
        "libtorch folder: {}",
        lib.as_deref()
            .map_or("unknown".into(), |p| p.display().to_string())
    );
    let cuda = tch::Cuda::is_available();
    println!("CUDA available: {cuda}");
    if cuda {
        println!(
            "GPUs: {}, cuDNN: {}",
            tch::Cuda::device_count(),
            tch::Cuda::cudnn_is_available()
        );
        for name in gpu_names() {
            println!("  {name}");
        }
    }
    let venv = std::env::var("VIRTUAL_ENV").ok().or_else(|| {
        // .venv/lib/pythonX.Y/site-packages/torch/lib -> .venv
        let lib = lib.as_deref()?;
        let venv = lib.ancestors().nth(5)?;
        venv.join("pyvenv.cfg")
            .exists()
            .then(|| venv.display().to_string())
    });
    println!("venv: {}", venv.unwrap_or_else(|| "(none found)".into()));
    let models = crate::weights::models_dir();
    let hub = crate::weights::hf_hub_cache();
    println!("models folder: {}", models.display());
    println!("Hugging Face cache: {}", hub.display());
    for (what, path) in [
        ("results", Path::new("results")),
        ("models", &models),
        ("hf cache", &hub),
    ] {
        match crate::run::fsio::free_bytes(path) {
            Some(b) => println!(
                "free disk ({what}): {:.1} GiB",
                b as f64 / (1u64 << 30) as f64
            ),
            None => println!("free disk ({what}): unknown ({} not found)", path.display()),
        }
    }
    if args.matmul {
        let (device, kind) = g.device_and_dtype()?;
        matmul_check(device, kind);
    }
    Ok(())
}

fn gpu_names() -> Vec<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        _ => vec!["(GPU names need nvidia-smi, not found)".into()],
    }
}

fn matmul_check(device: Device, kind: Kind) {
    let n = 4096;
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let _ = a.matmul(&b); // warm-up
    if let Device::Cuda(_) = device {
        tch::Cuda::synchronize(0);
    }
    let reps = if device == Device::Cpu { 1 } else { 20 };
    let t = std::time::Instant::now();
    let mut c = a.matmul(&b);
    for _ in 1..reps {
        c = a.matmul(&b);
    }
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    let tflops = 2.0 * (n as f64).powi(3) / s / 1e12;
    println!(
        "matmul {n}x{n} {} on {}: {:.2} ms, {tflops:.1} TFLOP/s, result {:?} finite: {}",
        crate::device::dtype_name(kind),
        crate::device::device_name(device),
        s * 1e3,
        c.kind(),
        c.isfinite().all().int64_value(&[]) == 1
    );
}
