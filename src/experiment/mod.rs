//! Experiment files: schema, validation, grid expansion into cells.
//!
//! `load` reads a TOML file, refuses unknown keys (with the key and its line), checks every
//! value, file and model reference without loading weights, and expands the grid. Every error
//! names the file and the line/column or the key.
pub mod cell;
mod derived;
pub mod grid;
pub mod outputs;
mod schema;
pub mod source;
mod subjects;
mod validate;
pub mod values;

pub use cell::CellSpec;
pub use grid::{Axis, Grid};
pub use values::{Param, Value};

use crate::images;
use crate::params::{AdapterKind, BranchWeight, GenParams, NegativeMode};
use crate::roles::{ModelSet, Role};
use anyhow::{Context, Result, anyhow};
use outputs::{PlotsSpec, ScoringSpec};
use source::Source;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Grids bigger than this need `--allow-large`.
pub const LARGE_GRID: u128 = 10_000;
/// Grids bigger than this are refused (cells are held in memory).
pub const MAX_GRID: u128 = 5_000_000;

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Accept grids of more than [`LARGE_GRID`] cells.
    pub allow_large: bool,
    /// Download `hf:` models missing from the cache (`run`); `plan` only looks.
    pub download: bool,
}

/// A model as written (`hf:org/repo/sub@rev` or a path) and where it is on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRef {
    pub reference: String,
    pub path: PathBuf,
}

/// The experiment's models by role.
pub type Models = ModelSet<ModelRef>;

impl Models {
    /// The local files of every model, for the pipeline.
    pub fn paths(&self) -> ModelSet<PathBuf> {
        self.map(|_, m| m.path.clone())
    }
}

/// `[models] init_random`: random models made when `dir` is missing.
#[derive(Clone, Debug)]
pub struct InitRandom {
    pub preset: String,
    pub dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GenerateSpec {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: Option<usize>,
    pub cfg: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ImageSource {
    File(PathBuf),
    /// Made text-to-image by the experiment's pipeline (and cached).
    Generate(GenerateSpec),
    /// Derived from another input image (or from a black image) by noise or a control.
    Derive(crate::derive::Recipe),
}

#[derive(Clone, Debug)]
pub struct Experiment {
    pub path: PathBuf,
    pub text: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub models: Models,
    /// Where each `[models]` key's value is written, for messages about its model.
    pub model_spans: BTreeMap<Role, std::ops::Range<usize>>,
    pub init_random: Option<InitRandom>,
    pub images: BTreeMap<String, ImageSource>,
    /// Families of derived images (`derive` with several strengths): name -> member names.
    pub families: BTreeMap<String, Vec<String>>,
    /// `[subjects]` in the order written (the `subject` axis' order when not on `[grid]`).
    pub subjects: Vec<(String, outputs::Subject)>,
    pub grid: Grid,
    /// Every cell, in grid order (first axis outermost, seeds innermost).
    pub cells: Vec<CellSpec>,
    pub dtype: Option<String>,
    pub scoring: ScoringSpec,
    pub plots: PlotsSpec,
    pub maps: outputs::MapsSpec,
    /// What `negimg plan` warns about: keys that some cells' method does not read.
    pub warnings: Vec<String>,
}

impl Experiment {
    /// The parameters of the text-to-image cell that makes an input image: both image
    /// branches at weight 0, no images; size and scheduler from `[defaults]`.
    pub fn input_params(&self, spec: &GenerateSpec) -> GenParams {
        let base = &self.grid.base;
        let off = BranchWeight {
            weight: 0.0,
            start: 0.0,
            end: 1.0,
        };
        GenParams {
            prompt: spec.prompt.clone(),
            negative_prompt: spec.negative_prompt.clone(),
            negative: NegativeMode::Text,
            positive_image: None,
            negative_image: None,
            // Weight 0: any adapter given serves (the first, base where given).
            adapter: self
                .models
                .adapters()
                .next()
                .map_or(AdapterKind::Base, |(k, _)| k),
            positive: off,
            negative_branch: off,
            cfg: spec.cfg.unwrap_or(base.cfg),
            steps: spec.steps.unwrap_or(base.steps),
            scheduler: base.scheduler,
            seed: spec.seed,
            width: base.width,
            height: base.height,
            no_image: base.no_image,
            method: crate::params::Method::Uncond,
            neg_embed_scale: 1.0,
            neg_cfg: None,
            ..GenParams::new(spec.seed)
        }
    }

    /// `FILE:LINE: models.ROLE`: where the file gives the model of `role`.
    pub fn model_place(&self, role: Role) -> String {
        let line = self.model_spans.get(&role).map_or(String::new(), |span| {
            let (line, _) = Source::new(&self.path, self.text.clone()).line_col(span.start);
            format!(":{line}")
        });
        format!("{}{line}: models.{role}", self.path.display())
    }

    /// `FILE:12 (grid.original_size) and :14 (defaults.target_size)`: where the file sets
    /// `params`; `None` when it sets none of them.
    pub fn param_places(&self, params: &[Param]) -> Option<String> {
        let written: Vec<_> = params
            .iter()
            .filter_map(|&p| self.grid.origin(p).cloned())
            .collect();
        Source::new(&self.path, self.text.clone()).places(&written)
    }

    /// The grid's axes for run.json, values as in records.csv; the seed only when it varies.
    pub fn axes(&self) -> Vec<outputs::Axis> {
        self.grid
            .labels()
            .into_iter()
            .filter(|(p, values)| !(*p == Param::Seed && values.len() < 2))
            .map(|(p, values)| outputs::Axis {
                name: p.name().to_string(),
                values,
            })
            .collect()
    }
}

/// Reads, checks and expands an experiment file. Loads no weights.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Experiment> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(path, text, opts)
}

/// As [`load`], from the file's text (`path` names it in messages and anchors relative paths).
pub fn parse(path: &Path, text: String, opts: &LoadOptions) -> Result<Experiment> {
    let src = Source::new(path, text.clone());
    let doc = toml::de::DeTable::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    schema::check_keys(&src, doc.get_ref())?;
    let raw: schema::FileRaw =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };

    let name = match &raw.experiment.name {
        Some(n) => {
            check_name(&src, n, "experiment.name")?;
            n.get_ref().clone()
        }
        None => path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| is_safe_name(s))
            .ok_or_else(|| {
                src.error_at_key(
                    "experiment.name",
                    "the file name is not usable as a folder name; set [experiment] name",
                )
            })?
            .to_string(),
    };

    let init_random = match &raw.models.init_random {
        Some(r) => {
            let r = r.get_ref();
            if !matches!(
                r.preset.as_str(),
                "tiny" | "tiny_sd15" | "sd15" | "tiny_sdxl" | "sdxl"
            ) {
                return Err(src.error(
                    raw.models.init_random.as_ref().map_or(0..0, |s| s.span()),
                    "models.init_random.preset",
                    format!(
                        "{:?} is not one of tiny, tiny_sd15, sd15, tiny_sdxl, sdxl",
                        r.preset
                    ),
                ));
            }
            Some(InitRandom {
                preset: r.preset.clone(),
                dir: base_dir.join(&r.dir),
            })
        }
        None => None,
    };
    let resolve = |role: Role, r: &Spanned<String>| -> Result<ModelRef> {
        let key = format!("models.{role}");
        let path = resolve_model(
            role,
            r.get_ref(),
            &base_dir,
            init_random.as_ref(),
            opts.download,
            path,
        )
        .map_err(|e| src.error(r.span(), &key, format!("{e:#}")))?;
        Ok(ModelRef {
            reference: r.get_ref().clone(),
            path,
        })
    };
    let m = &raw.models;
    let mut models = Models {
        pipeline: resolve(Role::Pipeline, &m.pipeline)?,
        vae: m.vae.as_ref().map(|r| resolve(Role::Vae, r)).transpose()?,
        ip_adapter_base: None,
        ip_adapter_plus: None,
        ip_adapter_light: None,
        ip_adapter_plus_face: None,
        ip_adapter_full_face: None,
        image_encoder: resolve(Role::ImageEncoder, &m.image_encoder)?,
        scorer: m
            .scorer
            .as_ref()
            .map(|r| resolve(Role::Scorer, r))
            .transpose()?,
        scorer_dino: m
            .scorer_dino
            .as_ref()
            .map(|r| resolve(Role::ScorerDino, r))
            .transpose()?,
        aesthetic: m
            .aesthetic
            .as_ref()
            .map(|r| resolve(Role::Aesthetic, r))
            .transpose()?,
    };
    for kind in AdapterKind::ALL {
        let given = m.ip_adapter.get(kind);
        models.set_adapter(
            kind,
            given.map(|r| resolve(Role::adapter(kind), r)).transpose()?,
        );
    }
    if models.adapters().next().is_none() {
        return Err(src.error_at_key(
            "models.ip_adapter",
            format!(
                "give at least one adapter ({}): ip_adapter = {{ base = \"...\", plus = \"...\" }}",
                AdapterKind::NAMES
            ),
        ));
    }

    let mut model_spans = BTreeMap::from([
        (Role::Pipeline, m.pipeline.span()),
        (Role::ImageEncoder, m.image_encoder.span()),
    ]);
    model_spans.extend(m.vae.as_ref().map(|r| (Role::Vae, r.span())));
    for kind in AdapterKind::ALL {
        model_spans.extend(
            m.ip_adapter
                .get(kind)
                .map(|r| (Role::adapter(kind), r.span())),
        );
    }

    let mut images = BTreeMap::new();
    // Files already decoded, so one named by several keys is read once.
    let mut checked = std::collections::HashSet::new();
    let mut families: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut from_spans = BTreeMap::new();
    for (name, spec) in &raw.images {
        let key = format!("images.{name}");
        if !is_safe_name(name) {
            return Err(src.error(
                spec.span(),
                &key,
                "image names may use letters, digits, '-', '_' and '.' only",
            ));
        }
        let s = spec.get_ref();
        let source = match (&s.path, &s.generate, &s.derive) {
            (Some(p), None, None) => {
                let file = base_dir.join(p.get_ref());
                // Decoded as `run` decodes it, so `plan` refuses what `run` would.
                if checked.insert(file.clone()) {
                    images::load_rgb(&file).map_err(|e| {
                        src.error(p.span(), &format!("{key}.path"), format!("{e:#}"))
                    })?;
                }
                ImageSource::File(file)
            }
            (None, Some(g), None) => {
                let steps = g
                    .steps
                    .map(|s| {
                        if (1..=1000).contains(&s) {
                            Ok(s as usize)
                        } else {
                            Err(src.error(
                                spec.span(),
                                &format!("{key}.generate.steps"),
                                format!("{s} is out of range: it must be between 1 and 1000"),
                            ))
                        }
                    })
                    .transpose()?;
                if let Some(cfg) = g.cfg
                    && !(cfg.is_finite() && (0.0..=100.0).contains(&cfg))
                {
                    return Err(src.error(
                        spec.span(),
                        &format!("{key}.generate.cfg"),
                        format!("{cfg} is out of range: it must be between 0 and 100"),
                    ));
                }
                if g.seed > i64::MAX as u64 {
                    return Err(src.error(
                        spec.span(),
                        &format!("{key}.generate.seed"),
                        "too large",
                    ));
                }
                ImageSource::Generate(GenerateSpec {
                    prompt: g.prompt.clone(),
                    negative_prompt: g.negative_prompt.clone(),
                    seed: g.seed,
                    steps,
                    cfg: g.cfg,
                })
            }
            (None, None, Some(d)) => {
                let from_span = d.get_ref().from.as_ref().map(|f| f.span());
                match derived::read(&src, &key, name, d)? {
                    derived::Declared::One(recipe) => {
                        from_spans.extend(from_span.map(|span| (name.clone(), span)));
                        ImageSource::Derive(recipe)
                    }
                    derived::Declared::Family(members) => {
                        let mut names = Vec::new();
                        for (member, recipe) in members {
                            from_spans.extend(from_span.clone().map(|span| (member.clone(), span)));
                            images.insert(member.clone(), ImageSource::Derive(recipe));
                            names.push(member);
                        }
                        families.insert(name.clone(), names);
                        continue;
                    }
                }
            }
            _ => {
                return Err(src.error(
                    spec.span(),
                    &key,
                    "give exactly one of `path = \"file.png\"`, `generate = { prompt = \"...\" }` \
                     and `derive = { from = \"...\", noise = \"...\" }`",
                ));
            }
        };
        images.insert(name.clone(), source);
    }
    derived::check_sources(&src, &images, &families, &from_spans)?;
    let declared = subjects::read(&src, doc.get_ref(), &images, &base_dir)?;
    images.extend(declared.images);

    let members_of = |n: &str| match families.get(n) {
        Some(members) => Some(members.clone()),
        None => images.contains_key(n).then(|| vec![n.to_string()]),
    };
    let grid = grid::read(&src, doc.get_ref(), &members_of, &declared.subjects)?;
    let count = grid.count();
    if count > MAX_GRID {
        return Err(src.error_at_key(
            "grid",
            format!(
                "the grid has {count} cells ({}); at most {MAX_GRID} are supported",
                grid.shape()
            ),
        ));
    }
    if count > LARGE_GRID && !opts.allow_large {
        return Err(src.error_at_key(
            "grid",
            format!(
                "the grid has {count} cells ({}); more than {LARGE_GRID} needs --allow-large",
                grid.shape()
            ),
        ));
    }
    let cells = grid.expand();
    validate::cells(&src, &grid, &cells, &models)?;
    let mut warnings = validate::unused_keys(&src, &grid, &cells);
    let maps = outputs::MapsSpec {
        attention: raw.maps.attention.unwrap_or(false),
        steps: validate::map_steps(&src, &raw.maps, &cells)?,
    };
    warnings.extend(validate::maps_without_negative_row(&maps, &cells));

    let image_ref = |key: &str, r: &Option<Spanned<String>>| -> Result<Option<String>> {
        match r {
            Some(n) if !images.contains_key(n.get_ref()) => Err(src.error(
                n.span(),
                key,
                format!("there is no [images.{}] in this file", n.get_ref()),
            )),
            Some(n) => Ok(Some(n.get_ref().clone())),
            None => Ok(None),
        }
    };
    let scoring = ScoringSpec {
        targets: raw.scoring.targets.clone(),
        positive_reference: image_ref(
            "scoring.positive_reference",
            &raw.scoring.positive_reference,
        )?,
        negative_reference: image_ref(
            "scoring.negative_reference",
            &raw.scoring.negative_reference,
        )?,
        baseline: BTreeMap::new(),
        region: raw
            .scoring
            .region
            .as_ref()
            .map(|r| {
                let file = base_dir.join(r.get_ref());
                let bad =
                    |e: anyhow::Error| src.error(r.span(), "scoring.region", format!("{e:#}"));
                images::BinaryMask::load(&file).map_err(bad)?;
                // Absolute, so that `negimg score` finds it from any folder.
                std::fs::canonicalize(&file).map_err(|e| bad(e.into()))
            })
            .transpose()?,
    };
    let labels = grid.labels();
    let scoring = ScoringSpec {
        baseline: baseline(&src, &labels, raw.scoring.baseline.as_ref())?,
        ..scoring
    };
    let axis_names: Vec<&str> = labels.iter().map(|(p, _)| p.name()).collect();
    let axis_ref = |key: &str, r: &Spanned<String>| -> Result<String> {
        if axis_names.contains(&r.get_ref().as_str()) {
            Ok(r.get_ref().clone())
        } else {
            Err(src.error(
                r.span(),
                key,
                format!(
                    "{:?} is not an axis of [grid] (axes: {})",
                    r.get_ref(),
                    axis_names.join(", ")
                ),
            ))
        }
    };
    let p = &raw.plots;
    let opt_axis =
        |key: &str, r: &Option<Spanned<String>>| r.as_ref().map(|r| axis_ref(key, r)).transpose();
    let (rows, cols) = (
        opt_axis("plots.rows", &p.rows)?,
        opt_axis("plots.cols", &p.cols)?,
    );
    // A page per subject unless the file places the axis.
    let subject_elsewhere = [&rows, &cols]
        .iter()
        .any(|a| a.as_deref() == Some(Param::Subject.name()));
    let pages = match opt_axis("plots.pages", &p.pages)? {
        None if !declared.subjects.is_empty() && !subject_elsewhere => {
            Some(Param::Subject.name().to_string())
        }
        pages => pages,
    };
    let plots = PlotsSpec {
        rows,
        cols,
        pages,
        curve_x: opt_axis("plots.curve_x", &p.curve_x)?,
        series: p
            .series
            .iter()
            .map(|s| axis_ref("plots.series", s))
            .collect::<Result<_>>()?,
        show: match &p.show {
            None => outputs::Show::Image,
            Some(s) => outputs::Show::parse(s.get_ref()).ok_or_else(|| {
                src.error(
                    s.span(),
                    "plots.show",
                    format!("{:?} is not one of {}", s.get_ref(), outputs::Show::NAMES),
                )
            })?,
        },
        filmstrip: p.filmstrip.as_ref().map(|b| *b.get_ref()),
        overlay: plots_overlay(&src, p, &maps)?,
    };
    warnings.extend(plots_show_needs(&src, p, &plots, &maps, &models)?);
    if let Some(on) = p.filmstrip.as_ref().filter(|b| *b.get_ref())
        && cells.iter().all(|c| c.trace.is_none())
    {
        warnings.push(
            src.error(
                on.span(),
                "plots.filmstrip",
                "true, but no cell has a `trace`: the grids show the images",
            )
            .to_string(),
        );
    }
    if let Some(x) = &p.curve_x {
        let numeric = labels.iter().any(|(param, values)| {
            param.name() == x.get_ref() && values.iter().all(|v| v.parse::<f64>().is_ok())
        });
        if !numeric {
            return Err(src.error(
                x.span(),
                "plots.curve_x",
                "the x of curves must be a numeric axis",
            ));
        }
    }

    Ok(Experiment {
        path: path.to_path_buf(),
        text,
        name,
        description: raw.experiment.description.clone(),
        tags: raw.experiment.tags.clone(),
        models,
        model_spans,
        init_random,
        images,
        families,
        subjects: declared.subjects,
        dtype: grid.dtype.clone(),
        grid,
        cells,
        scoring,
        plots,
        maps,
        warnings,
    })
}

/// `[plots] show`: the negative attention map only with `[maps] attention` (an error, as
/// for `overlay`); a DINOv2 patch-token map (shown or laid over) without `[models]
/// scorer_dino` is a warning: only `negimg score --scorer-dino` would write it.
fn plots_show_needs(
    src: &Source,
    p: &schema::PlotsRaw,
    plots: &PlotsSpec,
    maps: &outputs::MapsSpec,
    models: &Models,
) -> Result<Option<String>> {
    let Some(show) = &p.show else {
        return Ok(None);
    };
    let err = |msg: &str| src.error(show.span(), "plots.show", msg);
    if plots.show == outputs::Show::NegativeAttention && !maps.attention {
        return Err(err(
            "show = \"negative_attention\" needs the attention maps: set [maps] attention = true",
        ));
    }
    let dino = plots.show == outputs::Show::ChangeDino
        || (plots.show == outputs::Show::Overlay && plots.overlay == outputs::Overlay::ChangeDino);
    Ok((dino && models.scorer_dino.is_none()).then(|| {
        err(
            "the DINOv2 change map, but [models] has no scorer_dino: the grids show the images \
             until `negimg score --scorer-dino REF` writes the maps",
        )
        .to_string()
    }))
}

/// `[plots] overlay`: only with `show = "overlay"` (it acts nowhere else), and the negative
/// attention map only with `[maps] attention` (a run without maps has none to lay over).
fn plots_overlay(
    src: &Source,
    p: &schema::PlotsRaw,
    maps: &outputs::MapsSpec,
) -> Result<outputs::Overlay> {
    let Some(o) = &p.overlay else {
        return Ok(outputs::Overlay::Change);
    };
    let err = |msg: String| src.error(o.span(), "plots.overlay", msg);
    let overlay = outputs::Overlay::parse(o.get_ref()).ok_or_else(|| {
        err(format!(
            "{:?} is not one of {}",
            o.get_ref(),
            outputs::Overlay::NAMES
        ))
    })?;
    if p.show.as_ref().map(|s| s.get_ref().as_str()) != Some("overlay") {
        return Err(err(
            "overlay is the map that show = \"overlay\" lays over the images: set show = \"overlay\""
                .into(),
        ));
    }
    if overlay == outputs::Overlay::NegativeAttention && !maps.attention {
        return Err(err(
            "overlay = \"negative_attention\" needs the attention maps: set [maps] attention = true"
                .into(),
        ));
    }
    Ok(overlay)
}

/// `[scoring] baseline`: every key an axis of the grid, every value one of its values.
fn baseline(
    src: &Source,
    labels: &[(Param, Vec<String>)],
    raw: Option<&Spanned<toml::Table>>,
) -> Result<BTreeMap<String, String>> {
    let Some(raw) = raw else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for (key, value) in raw.get_ref() {
        let at = format!("scoring.baseline.{key}");
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                value.to_string()
            }
            _ => return Err(src.error(raw.span(), &at, "expected a single value")),
        };
        let Some((_, values)) = labels.iter().find(|(p, _)| p.name() == key) else {
            let names: Vec<&str> = labels.iter().map(|(p, _)| p.name()).collect();
            return Err(src.error(
                raw.span(),
                &at,
                format!(
                    "{key:?} is not an axis of [grid] (axes: {})",
                    names.join(", ")
                ),
            ));
        };
        // Image axes record "no image" as an empty value.
        let text = if text == "none" && values.iter().any(String::is_empty) {
            String::new()
        } else {
            text
        };
        if !values
            .iter()
            .any(|v| crate::axis_value::values_match(v, &text))
        {
            return Err(src.error(
                raw.span(),
                &at,
                format!(
                    "{text:?} is not a value of the axis {key} ({})",
                    values.join(", ")
                ),
            ));
        }
        out.insert(key.clone(), text);
    }
    Ok(out)
}

fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_name(src: &Source, n: &Spanned<String>, key: &str) -> Result<()> {
    if is_safe_name(n.get_ref()) {
        Ok(())
    } else {
        Err(src.error(
            n.span(),
            key,
            format!(
                "{:?} is used as a folder name: letters, digits, '-', '_' and '.' only",
                n.get_ref()
            ),
        ))
    }
}

/// A model reference to a local path through [`crate::weights::hub`]:
/// `hf:org/repo[/subfolder][@revision]` from the Hugging Face cache (downloaded when
/// `download`), anything else a path relative to the experiment file. A missing local path
/// is accepted when `init_random` will create it.
fn resolve_model(
    role: Role,
    reference: &str,
    base_dir: &Path,
    init: Option<&InitRandom>,
    download: bool,
    experiment: &Path,
) -> Result<PathBuf> {
    if !reference.starts_with("hf:") {
        let path = base_dir.join(reference);
        if let Some(init) = init
            && !path.exists()
            && path.starts_with(&init.dir)
        {
            return Ok(path);
        }
    }
    let how = crate::weights::hub::Resolve {
        base_dir,
        component: role.component(),
        download,
        experiment: Some(experiment),
    };
    let resolved = crate::weights::hub::resolve_for(reference, &how);
    // Without downloading (plan, slurm), a well-formed hf: reference that is not cached yet
    // still counts: `run` downloads it. Its path is where the cache will have it.
    match (resolved, crate::weights::hub::HfRef::parse(reference)) {
        (Err(_), Ok(Some(hf))) if !download => Ok(crate::weights::hf_hub_cache()
            .join(hf.cache_folder())
            .join(&hf.path)),
        (resolved, _) => resolved,
    }
}
