//! Identities: sha256 of model files (hashed once, cached by path, size and mtime), input
//! images, and the cell id that decides whether a cell is already done.
use super::fsio::atomic_write;
use super::records::Record;
use crate::digest::{sha256_file, sha256_hex};
use crate::experiment::ModelRef;
use crate::params::{AdapterKind, GenParams};
use crate::roles::{ModelSet, Role};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    mtime_ns: i128,
    sha256: String,
}

/// sha256 of files by canonical path, valid while size and mtime are unchanged: a 4 GB
/// checkpoint is hashed once per machine, not on every run.
pub struct HashCache {
    path: PathBuf,
    entries: BTreeMap<String, CacheEntry>,
    dirty: bool,
}

impl HashCache {
    pub fn load(path: &Path) -> HashCache {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        HashCache {
            path: path.to_path_buf(),
            entries,
            dirty: false,
        }
    }

    pub fn sha256(&mut self, file: &Path) -> Result<String> {
        let meta =
            std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        let key = std::fs::canonicalize(file)
            .unwrap_or_else(|_| file.to_path_buf())
            .display()
            .to_string();
        if let Some(e) = self.entries.get(&key)
            && e.size == meta.len()
            && e.mtime_ns == mtime_ns
        {
            return Ok(e.sha256.clone());
        }
        let sha256 = sha256_file(file)?;
        self.entries.insert(
            key,
            CacheEntry {
                size: meta.len(),
                mtime_ns,
                sha256: sha256.clone(),
            },
        );
        self.dirty = true;
        Ok(sha256)
    }

    pub fn save(&mut self) -> Result<()> {
        if self.dirty {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            atomic_write(&self.path, &serde_json::to_vec_pretty(&self.entries)?)?;
            self.dirty = false;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Relative to the model's path (empty when the model is one file).
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// A model's files as the manifest lists them, and one digest over all of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFiles {
    pub role: Role,
    pub reference: String,
    pub path: PathBuf,
    pub files: Vec<FileInfo>,
    pub digest: String,
}

pub fn model_files(role: Role, m: &ModelRef, cache: &mut HashCache) -> Result<ModelFiles> {
    // The files the model loader reads (one weight file per component, configs,
    // tokenizer): other files in the folder (.bin pickles, other variants) do not count.
    let paths = crate::weights::hub::component_files(&m.path, role.component())
        .with_context(|| format!("{role} {}", m.reference))?;
    let mut files = Vec::new();
    for p in paths {
        let size = std::fs::metadata(&p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .len();
        files.push(FileInfo {
            file: p.strip_prefix(&m.path).unwrap_or(&p).display().to_string(),
            size,
            sha256: cache.sha256(&p)?,
        });
    }
    let digest = sha256_hex(&serde_json::to_vec(&files)?);
    Ok(ModelFiles {
        role,
        reference: m.reference.clone(),
        // Absolute, so that `generate --replay` finds the model from any folder.
        path: std::fs::canonicalize(&m.path).unwrap_or_else(|_| m.path.clone()),
        files,
        digest,
    })
}

/// The digest of each model's files (the scorer's does not decide an image).
pub type ModelDigests = ModelSet<String>;

/// The digests of `files`, one per role.
pub fn digests(files: &[ModelFiles]) -> ModelDigests {
    let get = |role: Role| {
        files
            .iter()
            .find(|f| f.role == role)
            .map(|f| f.digest.clone())
    };
    let mut set = ModelDigests {
        pipeline: get(Role::Pipeline).unwrap_or_default(),
        vae: get(Role::Vae),
        image_encoder: get(Role::ImageEncoder).unwrap_or_default(),
        scorer: get(Role::Scorer),
        scorer_dino: get(Role::ScorerDino),
        aesthetic: get(Role::Aesthetic),
        ..Default::default()
    };
    for kind in AdapterKind::ALL {
        set.set_adapter(kind, get(Role::adapter(kind)));
    }
    set
}

/// A stable id for an image: the parameters, the identity (not the path) of its input
/// images, the dtype, and the models that make it (the cell's adapter only).
pub fn image_id(
    params: &GenParams,
    positive_image: Option<&str>,
    negative_image: Option<&str>,
    models: &ModelDigests,
    dtype: &str,
) -> String {
    #[derive(Serialize)]
    struct Identity<'a> {
        version: u32,
        params: GenParams,
        dtype: &'a str,
        pipeline: &'a str,
        vae: Option<&'a str>,
        image_encoder: &'a str,
        adapter: Option<&'a str>,
    }
    let mut params = params.clone();
    params.positive_image = positive_image.map(PathBuf::from);
    params.negative_image = negative_image.map(PathBuf::from);
    let adapter = models.adapter(params.adapter).map(String::as_str);
    let identity = Identity {
        version: 1,
        params,
        dtype,
        pipeline: &models.pipeline,
        vae: models.vae.as_deref(),
        image_encoder: &models.image_encoder,
        adapter,
    };
    let json = serde_json::to_vec(&identity).unwrap_or_default();
    sha256_hex(&json)[..16].to_string()
}

/// The key of each cell's record (`cells/<key>.json`, records.csv's `cell_id`), one per
/// grid cell: the image id where no other cell makes the same image, else the image id
/// and a digest of the cell's own row (its experiment-level values, such as an ignored
/// negative image), with an ordinal for cells listed twice. Such cells share one image file.
/// `falls_back[i]`: cell i is made as another cell ([`GenParams::falls_back`]); the one cell
/// of an image that does not fall back, if there is exactly one (the baseline a method with
/// nothing to subtract is made as), keeps the plain image id, the key it had before any
/// cell fell back to it.
pub fn record_ids(image_ids: &[String], rows: &[Record], falls_back: &[bool]) -> Vec<String> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut own: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, &back) in image_ids.iter().zip(falls_back) {
        *count.entry(id).or_default() += 1;
        if !back {
            *own.entry(id).or_default() += 1;
        }
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    image_ids
        .iter()
        .zip(rows)
        .zip(falls_back)
        .map(|((id, row), &back)| {
            let only_own = !back && own.get(id.as_str()) == Some(&1);
            if count[id.as_str()] == 1 || only_own {
                return id.clone();
            }
            let json = serde_json::to_vec(row).unwrap_or_default();
            let key = format!("{id}-{}", &sha256_hex(&json)[..8]);
            let n = seen.entry(key.clone()).or_default();
            *n += 1;
            if *n == 1 { key } else { format!("{key}-{n}") }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_depend_on_image_identity_not_path_and_on_models() {
        let mut p = GenParams::new(3);
        p.negative_image = Some("/run/a/inputs/lawn.png".into());
        let models = ModelDigests {
            pipeline: "p".into(),
            image_encoder: "e".into(),
            ip_adapter_base: Some("b".into()),
            ..Default::default()
        };
        let a = image_id(&p, None, Some("lawnsha"), &models, "fp32");
        let mut q = p.clone();
        q.negative_image = Some("/run/b/inputs/lawn.png".into());
        assert_eq!(a, image_id(&q, None, Some("lawnsha"), &models, "fp32"));
        assert_ne!(a, image_id(&p, None, Some("othersha"), &models, "fp32"));
        assert_ne!(a, image_id(&p, None, Some("lawnsha"), &models, "fp16"));
        let other = ModelDigests {
            pipeline: "p2".into(),
            ..models.clone()
        };
        assert_ne!(a, image_id(&p, None, Some("lawnsha"), &other, "fp32"));
        // The Plus adapter's file does not change a base-adapter cell.
        let plus = ModelDigests {
            ip_adapter_plus: Some("x".into()),
            ..models.clone()
        };
        assert_eq!(a, image_id(&p, None, Some("lawnsha"), &plus, "fp32"));
        q.seed = 4;
        assert_ne!(a, image_id(&q, None, Some("lawnsha"), &models, "fp32"));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn cells_made_before_the_negative_methods_keep_their_ids() {
        let mut p = GenParams::new(3);
        p.negative_image = Some("/run/a/inputs/lawn.png".into());
        let models = ModelDigests {
            pipeline: "p".into(),
            image_encoder: "e".into(),
            ip_adapter_base: Some("b".into()),
            ..Default::default()
        };
        // The id this cell had at commit 13521f6, before `method`, `neg_embed_scale` and
        // `neg_cfg` existed.
        let before = "c03a18f4c15d64db";
        assert_eq!(image_id(&p, None, Some("lawnsha"), &models, "fp32"), before);
        let mut q = p.clone();
        q.method = crate::params::Method::PerpNeg;
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        q = p.clone();
        q.neg_cfg = Some(7.5);
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        // `window` too: in the id only when not the default `steps`.
        q = p.clone();
        q.window = crate::params::Window::Steps;
        assert_eq!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        q.window = crate::params::Window::Sigma;
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        // Nor `blocks`, `neg_blocks`, `ip_scaling` at their defaults; each changes it when set.
        q = p.clone();
        q.blocks = crate::params::BlockWeights::All;
        q.ip_scaling = crate::params::IpScaling::V;
        assert_eq!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        q.blocks = crate::params::BlockWeights::Style;
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        q = p.clone();
        q.neg_blocks = "4:1".parse().unwrap();
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        q = p.clone();
        q.ip_scaling = crate::params::IpScaling::Kv;
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        // NegToMe's parameters enter the id only when set.
        q = p.clone();
        q.negtome = true;
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        q = p.clone();
        q.negtome_t_min = 500.0;
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        // Step sets and `neg_off`: only when set (step_set, neg_off).
        q = p.clone();
        q.neg_off = crate::params::NegOff::Zero;
        assert_eq!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        q.neg_off = crate::params::NegOff::NoImage;
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
        q = p.clone();
        q.neg_steps_at = Some("12".parse().unwrap());
        let twelve = image_id(&q, None, Some("lawnsha"), &models, "fp32");
        assert_ne!(twelve, before);
        q.neg_steps_at = Some("13".parse().unwrap());
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), twelve);
        q = p.clone();
        q.steps_at = Some("every 2".parse().unwrap());
        assert_ne!(image_id(&q, None, Some("lawnsha"), &models, "fp32"), before);
    }

    #[test]
    fn cells_of_every_method_keep_their_ids_through_the_one_file_per_method_refactor() {
        use crate::params::Method;
        let models = ModelDigests {
            pipeline: "p".into(),
            image_encoder: "e".into(),
            ip_adapter_base: Some("b".into()),
            ..Default::default()
        };
        let cell = |method: Method| {
            let mut p = GenParams::new(3);
            p.negative_image = Some("/run/a/inputs/lawn.png".into());
            p.positive_image = Some("/run/a/inputs/house.png".into());
            p.method = method;
            p
        };
        let mut subtract = cell(Method::Subtract);
        subtract.neg_embed_scale = 0.5;
        let mut three = cell(Method::ThreeBranch);
        three.neg_cfg = Some(5.0);
        let mut perp = cell(Method::PerpNeg);
        perp.neg_cfg = Some(5.0);
        let mut negtome = cell(Method::Negtome);
        negtome.negtome_t_min = 600.0;
        let mut merged = cell(Method::Uncond);
        merged.negtome = true;
        let ids: Vec<String> = [cell(Method::Uncond), subtract, three, perp, negtome, merged]
            .iter()
            .map(|p| image_id(p, Some("housesha"), Some("lawnsha"), &models, "fp32"))
            .collect();
        // The ids these cells had at commit f7e4cdc, before the methods moved to
        // `sampling::methods` and gained `method_params`.
        assert_eq!(
            ids,
            [
                "bac124a758ed29af",
                "8936737b81564e00",
                "6fbfc46d131f5efe",
                "b5de7b4eda771b0c",
                "3d7144deba64d7c1",
                "bc40a87ab4af9e54"
            ]
        );
    }
}
