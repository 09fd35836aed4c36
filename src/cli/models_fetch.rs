//! `negimg models fetch FILE` (download every model an experiment names, ahead of time) and
//! `negimg models check FILE` (resolve them without downloading, print sizes and hashes, load
//! every model on the CPU so that tensor names and shapes are checked against the configs).
//!
//! Only the `[models]` table of the experiment file is read here (with toml), so that a file
//! whose grid or images are not ready yet can still have its models fetched.
use super::Globals;
use crate::models::clip_model::ClipModel;
use crate::params::AdapterKind;
use crate::pipeline::Pipeline;
use crate::roles::{ModelSet, Role};
use crate::weights::hub;
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Experiment file whose [models] to download into the Hugging Face cache.
    pub experiment: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Experiment file whose [models] to check (nothing is downloaded).
    pub experiment: PathBuf,
    /// Skip the SHA-256 of each file (hashing reads every byte: ~5 GB for the defaults).
    #[arg(long)]
    pub no_hash: bool,
    /// Skip loading the models (names and shapes are then not checked).
    #[arg(long)]
    pub no_load: bool,
}

/// One `[models]` entry.
struct Entry {
    role: Role,
    reference: String,
}

#[derive(serde::Deserialize)]
struct ModelsTable {
    pipeline: String,
    vae: Option<String>,
    #[serde(default)]
    ip_adapter: std::collections::BTreeMap<AdapterKind, String>,
    image_encoder: String,
    scorer: Option<String>,
    scorer_dino: Option<String>,
    aesthetic: Option<String>,
    init_random: Option<InitRandom>,
}

#[derive(serde::Deserialize)]
struct InitRandom {
    dir: String,
}

/// The models of an experiment file, and the folder its paths are relative to.
fn read_models(path: &Path) -> Result<(PathBuf, Vec<Entry>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read experiment file {}", path.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?;
    let table = doc
        .get("models")
        .with_context(|| format!("{}: no [models] table", path.display()))?
        .clone();
    let m: ModelsTable = table
        .try_into()
        .with_context(|| format!("{}: [models]", path.display()))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let adapters = m
        .ip_adapter
        .into_iter()
        .map(|(kind, r)| (Role::adapter(kind), Some(r)));
    let given = [(Role::Pipeline, Some(m.pipeline)), (Role::Vae, m.vae)]
        .into_iter()
        .chain(adapters)
        .chain([
            (Role::ImageEncoder, Some(m.image_encoder)),
            (Role::Scorer, m.scorer),
            (Role::ScorerDino, m.scorer_dino),
            (Role::Aesthetic, m.aesthetic),
        ]);
    let mut entries: Vec<Entry> = given
        .filter_map(|(role, r)| r.map(|reference| Entry { role, reference }))
        .collect();
    // Models that `init_random` creates on the first run are not fetched.
    if let Some(init) = m.init_random {
        let dir = base_dir.join(init.dir);
        entries.retain(|e| {
            let made =
                !e.reference.starts_with("hf:") && base_dir.join(&e.reference).starts_with(&dir);
            if made {
                println!(
                    "{:<16} {} (made by init_random)",
                    e.role.name(),
                    e.reference
                );
            }
            !made
        });
    }
    Ok((base_dir, entries))
}

fn resolve_how<'a>(
    base_dir: &'a Path,
    e: &Entry,
    download: bool,
    experiment: &'a Path,
) -> hub::Resolve<'a> {
    hub::Resolve {
        base_dir,
        component: e.role.component(),
        download,
        experiment: Some(experiment),
    }
}

pub fn fetch(args: FetchArgs, _g: &Globals) -> Result<()> {
    let (base_dir, entries) = read_models(&args.experiment)?;
    let mut failed = vec![];
    for e in &entries {
        match hub::resolve_for(
            &e.reference,
            &resolve_how(&base_dir, e, true, &args.experiment),
        ) {
            Ok(path) => println!(
                "{:<16} {} -> {}",
                e.role.name(),
                e.reference,
                path.display()
            ),
            Err(err) => {
                eprintln!("{:<16} {} FAILED", e.role.name(), e.reference);
                failed.push(format!("{}: {err:#}", e.role));
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} models could not be fetched:\n{}",
            failed.len(),
            entries.len(),
            failed.join("\n")
        );
    }
    println!("all {} models are in place", entries.len());
    Ok(())
}

pub fn check(args: CheckArgs, _g: &Globals) -> Result<()> {
    let (base_dir, entries) = read_models(&args.experiment)?;
    let mut failed = vec![];
    let mut resolved = vec![];
    for e in &entries {
        match hub::resolve_for(
            &e.reference,
            &resolve_how(&base_dir, e, false, &args.experiment),
        )
        .and_then(|p| Ok((hub::component_files(&p, e.role.component())?, p)))
        {
            Ok((files, path)) => {
                println!(
                    "{:<16} {} -> {}",
                    e.role.name(),
                    e.reference,
                    path.display()
                );
                print_files(&path, &files, !args.no_hash)?;
                resolved.push((e.role, path));
            }
            Err(err) => {
                println!("{:<16} {} MISSING", e.role.name(), e.reference);
                failed.push(format!("{}: {err:#}", e.role));
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} models are missing or incomplete:\n{}",
            failed.len(),
            entries.len(),
            failed.join("\n")
        );
    }
    if !args.no_load {
        load_all(&resolved)?;
        println!("every tensor is present with the shape its config gives");
    }
    Ok(())
}

/// Size, SHA-256 and name (relative to the model's `root`) of each file.
fn print_files(root: &Path, files: &[PathBuf], hash: bool) -> Result<()> {
    let rows: Vec<Result<(u64, String)>> = files
        .par_iter()
        .map(|f| {
            let size = std::fs::metadata(f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .len();
            let digest = if hash {
                crate::digest::sha256_file(f)?
            } else {
                String::new()
            };
            Ok((size, digest))
        })
        .collect();
    for (file, row) in files.iter().zip(rows) {
        let (size, digest) = row?;
        let name = file
            .strip_prefix(root)
            .ok()
            .filter(|n| !n.as_os_str().is_empty());
        let name = name.unwrap_or(file);
        println!(
            "    {:>9}  {}  {}",
            human_size(size),
            digest,
            name.display()
        );
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

/// Loads every model on the CPU as a run does, through the same loader: a missing tensor or
/// a shape that does not fit the config is an error naming the file and the tensor, and each
/// adapter is put into the UNet once.
fn load_all(resolved: &[(Role, PathBuf)]) -> Result<()> {
    let (device, kind) = (Device::Cpu, Kind::Float);
    let path = |role: Role| {
        resolved
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p.clone())
    };
    if let (Some(pipeline), Some(image_encoder)) = (path(Role::Pipeline), path(Role::ImageEncoder))
    {
        let mut set = ModelSet {
            pipeline,
            vae: path(Role::Vae),
            image_encoder,
            ..Default::default()
        };
        for kind in AdapterKind::ALL {
            set.set_adapter(kind, path(Role::adapter(kind)));
        }
        let mut pipeline = Pipeline::load(&set, device, kind, &mut |_| {})?;
        pipeline.check_adapters()?;
        for (role, _) in set.iter() {
            println!("{:<16} loads", role.name());
        }
    } else if resolved.iter().any(|(r, _)| r.makes_images()) {
        println!(
            "pipeline and image encoder not both checked here (made by init_random): not loaded"
        );
    }
    if let Some(scorer) = path(Role::Scorer) {
        ClipModel::load(&scorer, device, kind)
            .with_context(|| format!("scorer {}", scorer.display()))?;
        println!("{:<16} loads", Role::Scorer.name());
    }
    if let Some(dino) = path(Role::ScorerDino) {
        crate::models::dinov2::Dinov2Model::load(&dino, device, kind)
            .with_context(|| format!("scorer_dino {}", dino.display()))?;
        println!("{:<16} loads", Role::ScorerDino.name());
    }
    if let Some(head) = path(Role::Aesthetic) {
        crate::models::aesthetic::AestheticHead::load(&head)?;
        println!("{:<16} loads", Role::Aesthetic.name());
    }
    Ok(())
}
