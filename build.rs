//! Link settings that torch-sys does not make for us:
//! - an rpath to libtorch's folder, so the binary runs without LD_LIBRARY_PATH;
//! - `libtorch_cuda` kept with `--no-as-needed`: nothing references its symbols directly
//!   (CUDA kernels register themselves at load time), so the linker would drop it and
//!   CUDA would never be available.
use std::path::PathBuf;
use std::process::Command;

fn torch_lib_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        return Some(PathBuf::from(dir).join("lib"));
    }
    if std::env::var("LIBTORCH_USE_PYTORCH").is_ok() {
        let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python".into());
        let out = Command::new(python)
            .args([
                "-c",
                "import torch, os; print(os.path.dirname(torch.__file__))",
            ])
            .output()
            .ok()?;
        if out.status.success() {
            let torch_dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            return Some(PathBuf::from(torch_dir).join("lib"));
        }
    }
    None
}

fn embed_git_revision() {
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NEGIMG_GIT_REVISION={rev}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}

fn main() {
    embed_git_revision();
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    let Some(lib) = torch_lib_dir() else {
        println!(
            "cargo:warning=libtorch folder not found (set LIBTORCH or LIBTORCH_USE_PYTORCH=1); no rpath set"
        );
        return;
    };
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
