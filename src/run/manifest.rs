//! `manifest.json` and the `negimg` PNG chunk: what made a run and each of its images.
use super::ids::ModelFiles;
use super::png;
use super::runner::RunOptions;
use crate::experiment::{CellSpec, Experiment};
use crate::params::GenParams;
use crate::provenance;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize)]
struct Manifest<'a> {
    experiment: &'a str,
    run_id: &'a str,
    description: &'a str,
    tags: &'a [String],
    experiment_file: String,
    experiment_text: &'a str,
    negimg_version: &'a str,
    git_revision: &'a str,
    libtorch: String,
    device: &'a str,
    dtype: &'a str,
    updated: String,
    cells: usize,
    models: &'a [ModelFiles],
    /// Derived input images and their recipes.
    derived: BTreeMap<&'a str, &'a crate::derive::Recipe>,
}

/// The manifest of run `run_id` as JSON.
pub fn manifest_json(
    exp: &Experiment,
    run_id: &str,
    opts: &RunOptions,
    files: &[ModelFiles],
) -> Result<Vec<u8>> {
    let manifest = Manifest {
        experiment: &exp.name,
        run_id,
        description: &exp.description,
        tags: &exp.tags,
        experiment_file: exp.path.display().to_string(),
        experiment_text: &exp.text,
        negimg_version: provenance::VERSION,
        git_revision: provenance::git_revision(),
        libtorch: provenance::libtorch().0,
        device: &opts.device,
        dtype: &opts.dtype,
        updated: super::layout::utc(std::time::SystemTime::now()),
        cells: exp.cells.len(),
        models: files,
        derived: super::derived::recipes(exp),
    };
    Ok(serde_json::to_vec_pretty(&manifest)?)
}

/// The JSON chunk of each PNG: the cell, with images by name (`params` holds their paths in
/// the run folder, `inputs/NAME.png`) and models by reference. `negimg generate --replay`
/// and `negimg export` read it back (`super::replay`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellChunk {
    pub experiment: String,
    pub cell_id: String,
    pub params: GenParams,
    pub positive_image: Option<String>,
    pub negative_image: Option<String>,
    pub models: BTreeMap<String, String>,
    pub dtype: String,
    pub negimg_version: String,
}

/// A cell's `parameters` (A1111) and `negimg` (JSON) PNG texts: its image carries them, its
/// x̂₀ traces carry them with their step ([`png::trace_texts`]).
pub fn cell_texts(
    exp: &Experiment,
    files: &[ModelFiles],
    dtype: &str,
    id: &str,
    p: &GenParams,
    spec: &CellSpec,
) -> Result<(String, String)> {
    let negative_image = spec
        .negative_image
        .as_deref()
        .filter(|_| p.negative.uses_image());
    let parameters = png::a1111_parameters(
        p,
        spec.positive_image.as_deref(),
        negative_image,
        &exp.models.pipeline.reference,
    );
    // Paths of the run folder stay out, so the file is the same in any run folder; an
    // ignored negative image too, so cells sharing the image write the same file.
    let input = |name: Option<&str>| name.map(|n| format!("inputs/{n}.png").into());
    let mut params = p.clone();
    params.positive_image = input(spec.positive_image.as_deref());
    params.negative_image = input(negative_image);
    let json = CellChunk {
        experiment: exp.name.clone(),
        cell_id: id.to_string(),
        params,
        positive_image: spec.positive_image.clone(),
        negative_image: negative_image.map(str::to_string),
        models: files
            .iter()
            .map(|f| (f.role.name().to_string(), f.reference.clone()))
            .collect(),
        dtype: dtype.to_string(),
        negimg_version: provenance::VERSION.to_string(),
    };
    Ok((parameters, serde_json::to_string(&json)?))
}
