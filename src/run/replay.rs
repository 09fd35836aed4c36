//! A cell read back from its PNG: the `negimg` chunk, the run folder around the image and its
//! manifest, the models checked against the digests the run recorded. `negimg generate
//! --replay` remakes the image from it; `negimg export` writes it as a diffusers script.
use super::ids::{self, HashCache, ModelFiles};
pub use super::manifest::CellChunk;
use crate::experiment::ModelRef;
use crate::params::{AdapterKind, GenParams};
use crate::provenance;
use crate::roles::{ModelSet, Role};
use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A run's image and what made it.
#[derive(Debug)]
pub struct StoredCell {
    pub png: PathBuf,
    /// The run folder: `<run>/images/<cell-id>.png`.
    pub run_dir: PathBuf,
    pub chunk: CellChunk,
    /// The cell with its input images as paths in the run folder.
    pub params: GenParams,
    /// The manifest's entries of the models that make this image (pipeline, vae, image
    /// encoder, the cell's adapter).
    pub models: Vec<ModelFiles>,
    /// The device the run used (`manifest.json`).
    pub device: String,
    /// The cells per batch of the run (`batch.json`), where recorded.
    pub batch: Option<usize>,
    /// The PNG's `parameters` text, written again with the remade image.
    pub parameters: String,
    /// The PNG's `negimg` text, as it was written.
    pub chunk_text: String,
}

/// What `manifest.json` holds that a replay needs.
#[derive(Deserialize)]
struct ManifestModels {
    negimg_version: String,
    device: String,
    models: Vec<ModelFiles>,
}

/// Reads the cell of `png`, made by `negimg run`: its chunk, its run folder's manifest and
/// input images. Refuses a PNG without a chunk, one from a newer negimg, and a run folder
/// that lacks what the cell needs, naming what is missing.
pub fn read(png: &Path) -> Result<StoredCell> {
    let texts = super::png::read_texts(png)?;
    let text = |key: &str| texts.iter().find(|(k, _)| k == key).map(|(_, t)| t.clone());
    let chunk_text = text("negimg").ok_or_else(|| {
        anyhow!(
            "{} has no `negimg` text chunk: it was not made by negimg (or the chunk was \
             stripped by an image editor)",
            png.display()
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(&chunk_text)
        .with_context(|| format!("{}: the `negimg` chunk is not JSON", png.display()))?;
    if value.get("cell_id").is_none() {
        bail!(
            "{}: the `negimg` chunk holds no cell id: the image was made by `negimg generate`, \
             not by a run, so no manifest records its models; make it again with the same \
             `negimg generate` flags",
            png.display()
        );
    }
    if let Some(step) = value.get("trace_step") {
        bail!(
            "{} is the x̂₀ trace of step {step} of a cell, not its image: replay the cell's \
             image, images/<cell-id>.png of its run",
            png.display()
        );
    }
    let version = value
        .get("negimg_version")
        .and_then(|v| v.as_str())
        .unwrap_or("0");
    check_version(version, provenance::VERSION)
        .with_context(|| format!("{} (negimg_version {version:?})", png.display()))?;
    check_known_names(&value["params"]).with_context(|| png.display().to_string())?;
    let chunk: CellChunk = serde_json::from_value(value)
        .with_context(|| format!("{}: cannot read the `negimg` chunk", png.display()))?;
    let run_dir = run_dir_of(png)?;
    let manifest_path = run_dir.join("manifest.json");
    let manifest: ManifestModels =
        serde_json::from_slice(&std::fs::read(&manifest_path).with_context(|| {
            format!(
                "{}: the run's manifest {} cannot be read (the image must stay in its run \
                 folder, images/<cell-id>.png)",
                png.display(),
                manifest_path.display()
            )
        })?)
        .with_context(|| format!("{} is not a negimg manifest", manifest_path.display()))?;
    check_version(&manifest.negimg_version, provenance::VERSION)
        .with_context(|| manifest_path.display().to_string())?;
    let mut params = chunk.params.clone();
    for (slot, name) in [
        (&mut params.positive_image, &chunk.positive_image),
        (&mut params.negative_image, &chunk.negative_image),
    ] {
        if let Some(rel) = slot.as_ref() {
            let path = run_dir.join(rel);
            if !path.is_file() {
                bail!(
                    "{}: its input image {} ({}) is missing",
                    png.display(),
                    path.display(),
                    name.as_deref().unwrap_or("?")
                );
            }
            *slot = Some(path);
        }
    }
    let models = manifest
        .models
        .into_iter()
        .filter(|m| makes(&params, m.role))
        .collect();
    Ok(StoredCell {
        png: png.to_path_buf(),
        batch: read_batch(&run_dir),
        run_dir,
        chunk,
        params,
        models,
        device: manifest.device,
        parameters: text("parameters").unwrap_or_default(),
        chunk_text,
    })
}

/// Whether the model of `role` decides the pixels of `p`'s image.
fn makes(p: &GenParams, role: Role) -> bool {
    match role {
        _ if role.adapter_kind().is_some() => role == Role::adapter(p.adapter),
        other => other.makes_images(),
    }
}

fn run_dir_of(png: &Path) -> Result<PathBuf> {
    let png =
        std::fs::canonicalize(png).with_context(|| format!("cannot find {}", png.display()))?;
    png.parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "images"))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            anyhow!(
                "{} is not in a run's images/ folder, where its manifest is found",
                png.display()
            )
        })
}

fn read_batch(run_dir: &Path) -> Option<usize> {
    super::batching::read_size(&run_dir.join("batch.json"))
        .ok()
        .flatten()
}

/// The cell's method and scheduler are ones this negimg has (a PNG made by a build with more
/// of them names what it lacks, instead of a bare deserialisation error).
fn check_known_names(params: &serde_json::Value) -> Result<()> {
    use crate::params::{Method, SchedulerKind};
    let known = |key: &str, ok: fn(serde_json::Value) -> bool| match params.get(key) {
        Some(v) if !ok(v.clone()) => bail!(
            "the cell's {key} {v} is not one this negimg knows: update negimg to replay or export it"
        ),
        _ => Ok(()),
    };
    known("method", |v| serde_json::from_value::<Method>(v).is_ok())?;
    known("scheduler", |v| {
        serde_json::from_value::<SchedulerKind>(v).is_ok()
    })
}

/// `made_by` is not newer than `this` (versions `major.minor.patch`).
fn check_version(made_by: &str, this: &str) -> Result<()> {
    let parse = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    if parse(made_by) > parse(this) {
        bail!(
            "made by negimg {made_by}, newer than this negimg {this}: update negimg to replay it"
        );
    }
    Ok(())
}

impl StoredCell {
    /// The cell's models, each checked against the manifest's digest of its files (hashes
    /// cached in `cache`): a model that is gone or whose files changed is an error naming
    /// its role, reference and file.
    pub fn checked_models(&self, cache: &mut HashCache) -> Result<ModelSet<PathBuf>> {
        let mut found = BTreeMap::new();
        for m in &self.models {
            let path = self.model_path(m)?;
            let now = ids::model_files(
                m.role,
                &ModelRef {
                    reference: m.reference.clone(),
                    path: path.clone(),
                },
                cache,
            )
            .with_context(|| format!("{} {}: cannot read the model", m.role, m.reference))?;
            if now.digest != m.digest {
                bail!("{}", changed_files(m, &now));
            }
            found.insert(m.role, path);
        }
        let required = |role: Role| {
            found
                .get(&role)
                .cloned()
                .ok_or_else(|| anyhow!("{}: the manifest lists no {role}", self.png.display()))
        };
        let mut set = ModelSet {
            pipeline: required(Role::Pipeline)?,
            vae: found.get(&Role::Vae).cloned(),
            image_encoder: required(Role::ImageEncoder)?,
            ..Default::default()
        };
        for kind in AdapterKind::ALL {
            set.set_adapter(kind, found.get(&Role::adapter(kind)).cloned());
        }
        Ok(set)
    }

    /// The sha256 cache of the results folder the run is in (`results/.cache/sha256.json`).
    pub fn hash_cache(&self) -> HashCache {
        let results = self.run_dir.parent().and_then(Path::parent);
        let dir = results.unwrap_or(&self.run_dir).join(".cache");
        HashCache::load(&dir.join("sha256.json"))
    }

    /// Why a remake on `device` in `kind` may not give the same bytes.
    pub fn notes(&self, device: tch::Device, kind: tch::Kind) -> Vec<String> {
        let mut notes = Vec::new();
        let (now_device, now_dtype) = (
            crate::device::device_name(device),
            crate::device::dtype_name(kind),
        );
        if now_device != self.device || now_dtype != self.chunk.dtype {
            notes.push(format!(
                "the run made this image on {} in {}, this replay runs on {now_device} in \
                 {now_dtype}: pixels may differ",
                self.device, self.chunk.dtype
            ));
        }
        if let Some(b) = self.batch.filter(|&b| b > 1) {
            notes.push(format!(
                "the run made its images in batches of {b}: a cell made alone can differ by \
                 one 8-bit level from its batched image (floats within 1e-5)"
            ));
        }
        notes
    }

    /// Where the model is: the manifest's path, else (for `hf:` models) the hub cache.
    fn model_path(&self, m: &ModelFiles) -> Result<PathBuf> {
        if m.path.exists() {
            return Ok(m.path.clone());
        }
        if m.reference.starts_with("hf:") {
            return crate::weights::hub::resolve_cached(
                &m.reference,
                Path::new("."),
                m.role.component(),
                &crate::weights::hf_hub_cache(),
            )
            .with_context(|| format!("{} {} is missing", m.role, m.reference));
        }
        bail!(
            "{} {} is missing: {} does not exist",
            m.role,
            m.reference,
            m.path.display()
        )
    }
}

/// "ROLE REF changed since the run: FILE (sha256 a… now b…)" for the files that differ.
fn changed_files(was: &ModelFiles, now: &ModelFiles) -> String {
    let mut what = Vec::new();
    for f in &was.files {
        match now.files.iter().find(|n| n.file == f.file) {
            Some(n) if n.sha256 == f.sha256 => {}
            Some(n) => what.push(format!(
                "{} (sha256 {} in the run, {} now)",
                display_file(now, &f.file),
                &f.sha256[..12],
                &n.sha256[..12]
            )),
            None => what.push(format!("{} is gone", display_file(now, &f.file))),
        }
    }
    for n in &now.files {
        if !was.files.iter().any(|f| f.file == n.file) {
            what.push(format!("{} is new", display_file(now, &n.file)));
        }
    }
    format!(
        "{} {} changed since the run: {}",
        was.role,
        was.reference,
        what.join("; ")
    )
}

fn display_file(m: &ModelFiles, file: &str) -> String {
    if file.is_empty() {
        m.path.display().to_string()
    } else {
        m.path.join(file).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_refuses_images_from_a_newer_negimg() {
        assert!(check_version("0.1.0", "0.1.0").is_ok());
        assert!(check_version("0.0.9", "0.1.0").is_ok());
        let err = check_version("0.2.0", "0.1.3").unwrap_err().to_string();
        assert!(err.contains("newer than this negimg 0.1.3"), "{err}");
        assert!(check_version("1.0.0", "0.9.9").is_err());
    }

    #[test]
    fn a_replay_names_a_method_or_scheduler_this_negimg_lacks() {
        let ok = serde_json::json!({"method": "perp_neg", "scheduler": "ddim"});
        assert!(check_known_names(&ok).is_ok());
        assert!(check_known_names(&serde_json::json!({"scheduler": "euler"})).is_ok());
        let err = check_known_names(&serde_json::json!({"method": "lora_guidance"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the cell's method \"lora_guidance\" is not one this negimg knows"),
            "{err}"
        );
        let err = check_known_names(&serde_json::json!({"scheduler": "heun"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scheduler \"heun\""), "{err}");
    }
}
