//! Reading `.safetensors` files (memory-mapped) into tch tensors and VarStores.
//!
//! Every failure names the file and, where there is one, the tensor: a truncated file, a
//! header that lies about sizes, an unsupported dtype, a missing tensor or a shape mismatch.
use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors, tensor::TensorInfo};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor, nn};

/// Named tensors that a model can be loaded from: a safetensors file, or a view of one
/// under other names (a single-file LDM checkpoint seen in the diffusers layout).
pub trait TensorSource {
    /// Where the tensors come from, for error messages.
    fn origin(&self) -> &Path;
    fn names(&self) -> Vec<String>;
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor `name` on `device`, converted to `kind`.
    fn get(&self, name: &str, device: Device, kind: Kind) -> Result<Tensor>;
    /// `name` as error messages show it (a renaming view adds the name stored in the file).
    fn describe(&self, name: &str) -> String {
        format!("{name:?}")
    }
}

pub struct TensorFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

impl TensorFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open weight file {}", path.display()))?;
        // SAFETY: the map is read-only; weight files are not modified while negimg runs.
        let mmap = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot map weight file {}", path.display()))?;
        let parsed = SafeTensors::read_metadata(&mmap);
        // Only a file that is not valid safetensors is looked at as a pickle: a `.bin` or
        // `.pth` state dict is read through its safetensors copy, other pickles are refused.
        if parsed.is_err() && is_pickle(&mmap) {
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("bin") || e.eq_ignore_ascii_case("pth"))
            {
                return TensorFile::open(super::torch_bin::converted(&path)?);
            }
            bail!(
                "{}: a PyTorch pickle (.pt/.ckpt), not safetensors; negimg reads pickles only as \
                 .bin or .pth weight files (converted once with torch's weights_only loader). Use the \
                 .safetensors release of this model, or convert the file, e.g.\n  python -c \
                 \"import sys, torch; from safetensors.torch import save_file; \
                 sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True); \
                 save_file({{k: v.contiguous() for k, v in sd.items()}}, sys.argv[2])\" {} OUT.safetensors",
                path.display(),
                path.display()
            );
        }
        let (header_len, metadata) = parsed.map_err(|e| {
            anyhow::anyhow!(
                "{}: not a valid safetensors file ({e}); the file may be truncated or corrupt, \
                 download it again",
                path.display()
            )
        })?;
        let data_start = 8 + header_len;
        let mut tensors = HashMap::new();
        let mut data_end = 0;
        for (name, info) in metadata.tensors() {
            data_end = data_end.max(info.data_offsets.1);
            tensors.insert(name.clone(), info.clone());
        }
        if data_start + data_end > mmap.len() {
            bail!(
                "{}: truncated safetensors file: the header describes {} bytes of tensor data, \
                 the file holds {}; download it again",
                path.display(),
                data_end,
                mmap.len().saturating_sub(data_start)
            );
        }
        Ok(TensorFile {
            path,
            mmap,
            data_start,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Drops the mapped pages of `len` bytes at `offset` from the process's resident set once
    /// the tensor there is copied out. Kept mapped, every page read counts twice until the
    /// file closes (the map and the model's copy): at the end of loading SD1.5's image encoder
    /// that was 2.4 GB of a 9.5 GB peak. The pages stay in the page cache.
    fn release(&self, offset: usize, len: usize) {
        // SAFETY: no slice of the map is alive here (the tensor is a copy), and the map is a
        // read-only file mapping: a later read refills the pages from the unchanged file.
        let advised = unsafe {
            self.mmap
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
        };
        if let Err(e) = advised {
            log::debug!("{}: pages not released ({e})", self.path.display());
        }
    }
}

/// `torch.save` output: a zip archive (PyTorch >= 1.6) or a bare pickle (protocol 2+).
fn is_pickle(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || (bytes.len() > 1 && bytes[0] == 0x80 && bytes[1] <= 5)
}

impl TensorSource for TensorFile {
    fn origin(&self) -> &Path {
        &self.path
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.keys().cloned().collect();
        names.sort();
        names
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|info| info.shape.clone())
    }

    fn get(&self, name: &str, device: Device, kind: Kind) -> Result<Tensor> {
        let info = self
            .tensors
            .get(name)
            .with_context(|| format!("{}: tensor {name:?} is missing", self.path.display()))?;
        let stored_kind = match info.dtype {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            other => bail!(
                "{}: tensor {name:?} has dtype {other:?}; negimg reads F32, F16, BF16, F64, I64",
                self.path.display()
            ),
        };
        let (begin, end) = info.data_offsets;
        let bytes = &self.mmap[self.data_start + begin..self.data_start + end];
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(bytes, &shape, stored_kind)
            .with_context(|| format!("{}: tensor {name:?} cannot be read", self.path.display()))?;
        self.release(self.data_start + begin, end - begin);
        Ok(tensor.to_device(device).to_kind(kind))
    }
}

/// Tensor names for a model whose variables sit under `prefix` (transformers' base model,
/// e.g. `text_model`), in a file that may hold them with or without it: transformers 5 saves
/// `CLIPTextModel` unprefixed, older versions (and every SD1.5 pipeline) with `text_model.`,
/// and transformers loads both. A file that also carries `prefix` above the model's own
/// names (a base-model checkpoint in a wrapper) is read too. Names found in neither layout
/// are given in the file's layout, for the error.
pub fn with_or_without_prefix<'a>(
    file: &'a dyn TensorSource,
    prefix: &'a str,
) -> impl Fn(&str) -> Option<String> + 'a {
    let dotted = format!("{prefix}.");
    let file_prefixed = file.names().iter().any(|n| n.starts_with(&dotted));
    move |var: &str| {
        let stripped = var.strip_prefix(&dotted).map(str::to_string);
        let added = format!("{dotted}{var}");
        let candidates = [Some(var.to_string()), stripped.clone(), Some(added.clone())];
        if let Some(found) = candidates
            .iter()
            .flatten()
            .find(|k| file.shape(k).is_some())
        {
            return Some(found.clone());
        }
        Some(match (file_prefixed, stripped) {
            (false, Some(s)) => s,
            (true, None) => added,
            _ => var.to_string(),
        })
    }
}

/// Copies tensors from `file` into the variables of `vs`.
///
/// `key_for` maps a variable name to the tensor name in the file, or `None` to leave that
/// variable alone (it is loaded from another file). A selected variable missing from the
/// file, or of another shape, is an error; tensors the model does not use are ignored
/// (logged at debug level). Returns the number of variables loaded.
pub fn load_var_store(
    vs: &nn::VarStore,
    file: &dyn TensorSource,
    key_for: impl Fn(&str) -> Option<String>,
) -> Result<usize> {
    let mut used = std::collections::HashSet::new();
    let mut loaded = 0;
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    for (var_name, mut var) in variables {
        let Some(key) = key_for(&var_name) else {
            continue;
        };
        let expected: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
        let Some(found) = file.shape(&key) else {
            bail!(
                "{}: tensor {key:?} is missing (the model expects shape {expected:?}); \
                 is this the right file for this model and config?",
                file.origin().display()
            );
        };
        if found != expected {
            bail!(
                "{}: tensor {} has shape {found:?}, the model expects {expected:?} \
                 (does the config.json match these weights?)",
                file.origin().display(),
                file.describe(&key)
            );
        }
        let value = file.get(&key, var.device(), var.kind())?;
        tch::no_grad(|| var.copy_(&value));
        used.insert(key);
        loaded += 1;
    }
    for name in file.names().iter().filter(|n| !used.contains(*n)) {
        log::debug!(
            "{}: tensor {name:?} not used by the model",
            file.origin().display()
        );
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resident kB of the mappings of `path` in this process (`/proc/self/smaps`).
    fn mapped_resident_kb(path: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let is_range =
            |t: &str| t.contains('-') && t.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
        let mut in_file = false;
        let mut kb = 0;
        for line in smaps.lines() {
            if line.split_whitespace().next().is_some_and(is_range) {
                // A mapping's first line: address range, ..., the file's path.
                in_file = line.ends_with(&*path.to_string_lossy());
            } else if let Some(rest) = line.strip_prefix("Rss:").filter(|_| in_file) {
                kb += rest.trim().trim_end_matches(" kB").parse::<u64>().unwrap();
            }
        }
        kb
    }

    #[test]
    fn tensors_read_leave_no_mapped_pages_resident_and_read_the_same_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let _guard = crate::weights::random::seeded_generator(3);
        // Four tensors of 1 MiB each: 4 MiB of pages if they stayed mapped.
        let tensors: Vec<(String, Tensor)> = (0..4)
            .map(|i| {
                (
                    format!("t{i}"),
                    Tensor::randn([512, 512], (Kind::Float, Device::Cpu)),
                )
            })
            .collect();
        Tensor::write_safetensors(&tensors, &path).unwrap();
        let file = TensorFile::open(&path).unwrap();
        for (name, want) in &tensors {
            let got = file.get(name, Device::Cpu, Kind::Float).unwrap();
            assert!(got.equal(want), "{name}");
        }
        let resident = mapped_resident_kb(&path);
        assert!(resident < 256, "{resident} kB of the map still resident");
        // Pages released are read again from the file.
        for (name, want) in &tensors {
            assert!(
                file.get(name, Device::Cpu, Kind::Float)
                    .unwrap()
                    .equal(want),
                "{name}"
            );
        }
    }
}
