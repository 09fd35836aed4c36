//! Pickled PyTorch `.bin` weights (`torch.save` of a state dict, as older diffusers and
//! transformers releases wrote them), converted once into safetensors.
//!
//! The pickle is read by the project venv's torch with `torch.load(weights_only=True)`, which
//! rebuilds tensors and plain containers only and runs no pickled code; anything but (nested
//! dicts of) tensors is refused naming the key. The safetensors copy goes to
//! `<HF home>/negimg-converted/<key>/`, beside the hub cache and never inside its `blobs/` or
//! `snapshots/`; the key is a hash of the source's real path, size and modification time, so
//! a changed file is converted again. Nested dicts are flattened with '.', which is how the
//! IP-Adapter `.bin` (`image_proj`, `ip_adapter`) maps onto its safetensors release.
use anyhow::{Context, Result, bail};
use sha2::Digest;
use std::path::{Path, PathBuf};

const CONVERT: &str = r#"
import os, sys
import torch
from safetensors.torch import save_file
src, dst = sys.argv[1], sys.argv[2]
try:
    obj = torch.load(src, map_location="cpu", weights_only=True)
except Exception as e:
    print(f"REFUSED: torch.load(weights_only=True) refused it: {type(e).__name__}: {e}".splitlines()[0])
    sys.exit(3)
flat, storages = {}, set()
def walk(prefix, o):
    if isinstance(o, torch.Tensor):
        t = o.detach()
        ptr = t.untyped_storage().data_ptr()
        # safetensors refuses tensors that share memory (tied weights): copy the repeats.
        flat[prefix] = t.clone().contiguous() if ptr in storages else t.contiguous()
        storages.add(ptr)
    elif isinstance(o, dict):
        for k, v in o.items():
            if not isinstance(k, str):
                print(f"REFUSED: key {k!r} under {prefix or 'the top level'!r} is not a string")
                sys.exit(3)
            walk(f"{prefix}.{k}" if prefix else k, v)
    else:
        print(f"REFUSED: {prefix or 'the top level'!r} holds a {type(o).__name__}, not a tensor")
        sys.exit(3)
walk("", obj)
if not flat:
    print("REFUSED: it holds no tensors")
    sys.exit(3)
tmp = f"{dst}.{os.getpid()}.tmp"
save_file(flat, tmp)
os.replace(tmp, dst)
"#;

/// Where converted files go: `$NEGIMG_CONVERTED`, else `<HF home>/negimg-converted`.
fn converted_root() -> PathBuf {
    std::env::var_os("NEGIMG_CONVERTED")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| super::hf_home().join("negimg-converted"))
}

/// The Python that converts: `$NEGIMG_PYTHON`, the active venv's, `./.venv`'s, the project's,
/// else `python3`.
fn python() -> PathBuf {
    if let Some(py) = std::env::var_os("NEGIMG_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(py);
    }
    let mut venvs: Vec<PathBuf> = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    venvs.push(PathBuf::from(".venv"));
    venvs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    venvs
        .into_iter()
        .map(|v| v.join("bin/python"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The safetensors copy of the pickled `bin`, converting it the first time.
pub fn converted(bin: &Path) -> Result<PathBuf> {
    let real = std::fs::canonicalize(bin)
        .with_context(|| format!("cannot read weight file {}", bin.display()))?;
    let meta = std::fs::metadata(&real)?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = sha2::Sha256::digest(format!("{}\n{}\n{modified}", real.display(), meta.len()));
    let key: String = key.iter().take(12).map(|b| format!("{b:02x}")).collect();
    let stem = bin
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("weights");
    let dir = converted_root().join(key);
    let out = dir.join(format!("{stem}.safetensors"));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    log::info!("converting {} to {}", bin.display(), out.display());
    eprintln!(
        "converting pickled weights {} to safetensors (once)",
        bin.display()
    );
    let py = python();
    let run = std::process::Command::new(&py)
        .arg("-c")
        .arg(CONVERT)
        .arg(&real)
        .arg(&out)
        .output()
        .with_context(|| {
            format!(
                "{}: pickled weights; converting them needs Python with torch and safetensors \
                 (NEGIMG_PYTHON, the venv, or python3), and {} cannot be run",
                bin.display(),
                py.display()
            )
        })?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    if let Some(why) = stdout.lines().find_map(|l| l.strip_prefix("REFUSED: ")) {
        bail!(
            "{}: refused: {why}; negimg reads pickled weights only when they hold tensors",
            bin.display()
        );
    }
    if !run.status.success() || !out.is_file() {
        bail!(
            "{}: converting the pickled weights with {} failed:\n{}{}",
            bin.display(),
            py.display(),
            stdout,
            String::from_utf8_lossy(&run.stderr)
        );
    }
    std::fs::write(dir.join("source.txt"), format!("{}\n", real.display()))
        .with_context(|| format!("cannot write {}", dir.display()))?;
    Ok(out)
}
