//! The input-images phase of a run: every `[images.NAME]` into `inputs/NAME.png` (files
//! decoded by the one image decoder and stored as PNG; `generate` images made text-to-image
//! once and cached in `results/.cache/inputs/`; `derive` images last, from those, see
//! [`super::derived`]), with each image's identity for the cell ids.
use super::fsio::atomic_write;
use super::ids::{self, ModelDigests};
use super::layout::RunDir;
use super::maker::{Maker, RunLog, progress_bar};
use super::png;
use crate::experiment::{Experiment, ImageSource};
use crate::params::GenParams;
use crate::pipeline::CellOutcome;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// What the inputs phase needs of the run.
pub(super) struct InputMaker<'m, 'a> {
    pub exp: &'a Experiment,
    pub results: &'a Path,
    pub dtype: &'a str,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    pub run: &'m RunDir,
    pub maker: &'m mut Maker<'a>,
    pub log: &'m mut RunLog,
}

/// An input to make text-to-image: its name, cell and cache file.
struct ToMake {
    name: String,
    params: GenParams,
    cached: PathBuf,
}

/// Puts every input image in place; returns each image's identity by name.
pub(super) fn prepare(
    m: &mut InputMaker,
    digests: &ModelDigests,
) -> Result<BTreeMap<String, String>> {
    let cache_dir = m.results.join(".cache").join("inputs");
    let mut identities = BTreeMap::new();
    let mut to_make = Vec::new();
    for (name, source) in &m.exp.images {
        let dest = m.run.inputs().join(format!("{name}.png"));
        let identity = match source {
            ImageSource::File(file) => copy_file_input(name, file, &dest)?,
            ImageSource::Generate(spec) => {
                let params = m.exp.input_params(spec);
                let id = ids::image_id(&params, None, None, digests, m.dtype);
                let cached = cache_dir.join(format!("{id}.png"));
                if cached.exists() {
                    let bytes = std::fs::read(&cached)
                        .with_context(|| format!("cannot read {}", cached.display()))?;
                    write_if_changed(&dest, &bytes)?;
                } else {
                    to_make.push(ToMake {
                        name: name.clone(),
                        params,
                        cached,
                    });
                }
                id
            }
            // Made last, from the images above (see super::derived).
            ImageSource::Derive(_) => continue,
        };
        identities.insert(name.clone(), identity);
    }
    if !to_make.is_empty() {
        std::fs::create_dir_all(&cache_dir)
            .with_context(|| format!("cannot create {}", cache_dir.display()))?;
        make_generated(m, &to_make)?;
    }
    super::derived::write_all(m.exp, &m.run.inputs(), &cache_dir, identities)
}

/// A file input as PNG in the run folder; its identity is the sha256 of the file's bytes.
fn copy_file_input(name: &str, file: &Path, dest: &Path) -> Result<String> {
    let bytes = std::fs::read(file)
        .with_context(|| format!("[images.{name}]: cannot read {}", file.display()))?;
    let img =
        crate::images::decode_rgb(&bytes, file).with_context(|| format!("[images.{name}]"))?;
    write_if_changed(dest, &png::encode(&img, &[])?)?;
    Ok(crate::digest::sha256_hex(&bytes))
}

/// Makes the text-to-image inputs, in the run's batches.
fn make_generated(m: &mut InputMaker, to_make: &[ToMake]) -> Result<()> {
    let names: Vec<&str> = to_make.iter().map(|t| t.name.as_str()).collect();
    m.log.line(&format!(
        "making input image(s) {} text-to-image",
        names.join(", ")
    ));
    let params: Vec<GenParams> = to_make.iter().map(|t| t.params.clone()).collect();
    let mut pending = vec![true; params.len()];
    let never = AtomicBool::new(false);
    let run = m.run;
    let bar = progress_bar(m.progress, params.len());
    m.maker.make(
        &params,
        &mut pending,
        &never,
        &|msg| bar.set_message(format!("input images: {msg}")),
        &mut |j, outcome, _, _, _| {
            bar.inc(1);
            let t = &to_make[j];
            match outcome {
                CellOutcome::Image(img) => {
                    let bytes = png::encode(&img, &[])?;
                    atomic_write(&t.cached, &bytes)?;
                    write_if_changed(&run.inputs().join(format!("{}.png", t.name)), &bytes)
                }
                CellOutcome::Failed(reason) => bail!(
                    "[images.{}]: the text-to-image input could not be made: {reason}",
                    t.name
                ),
            }
        },
    )?;
    bar.finish_and_clear();
    Ok(())
}

/// Writes `bytes` unless the file already has them (inputs are shared by every shard).
pub(super) fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() != Some(bytes) {
        atomic_write(path, bytes)?;
    }
    Ok(())
}
