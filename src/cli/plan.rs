//! `negimg plan FILE`: checks an experiment without downloading weights and prints its
//! cells, counts and a time estimate on the chosen device (see `estimate.rs`; without an
//! earlier run it loads and times the UNet and the VAE, unless `--no-calibrate`; for an `hf:`
//! pipeline not cached it fetches its model_index.json and unet/config.json alone, online).
use super::Globals;
use crate::experiment::source::Source;
use crate::experiment::{self, Experiment, ImageSource, LoadOptions, Param};
use crate::params::{GenParams, Method, Window};
use crate::pipeline::source::PipelineHeader;
use crate::roles::Role;
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use crate::sampling::window::{WindowCase, comparison_table};
use crate::sampling::{SchedulerConfig, methods};
use crate::scoring::traces;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Experiment file (TOML).
    pub experiment: PathBuf,
    /// Print every cell (default: the first 40).
    #[arg(long)]
    pub all: bool,
    /// Accept grids of more than 10000 cells.
    #[arg(long)]
    pub allow_large: bool,
    /// The results root (to base the estimate on earlier runs).
    #[arg(long, default_value = "results", env = "NEGIMG_RESULTS")]
    pub results: PathBuf,
    /// Without an earlier run, estimate from FLOP figures instead of loading the UNet and
    /// VAE and timing them here (a few seconds).
    #[arg(long)]
    pub no_calibrate: bool,
}

/// The subjects, their images and captions, and a warning for masks (recorded, not applied).
fn subject_lines(exp: &Experiment) -> Vec<String> {
    if exp.subjects.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!("subjects: {}", exp.subjects.len())];
    for (name, s) in &exp.subjects {
        let caption = |c: &Option<String>| c.as_deref().map_or("-".into(), |c| format!("{c:?}"));
        lines.push(format!(
            "  {name:<16} {} minus {}; negative_caption {}, positive_caption {}",
            s.positive,
            s.negative,
            caption(&s.negative_caption),
            caption(&s.positive_caption)
        ));
    }
    let masked: Vec<&str> = exp
        .subjects
        .iter()
        .filter(|(_, s)| s.mask.is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    if !masked.is_empty() {
        lines.push(format!(
            "warning: the region masks of {} are checked and recorded in run.json, but no \
             generation or score uses them yet",
            masked.join(", ")
        ));
    }
    lines
}

pub fn run(args: PlanArgs, g: &Globals) -> Result<()> {
    let exp = experiment::load(
        &args.experiment,
        &LoadOptions {
            allow_large: args.allow_large,
            download: false,
        },
    )?;
    // The pipeline's UNet config and parts from configs and headers, no weights read.
    let header = crate::pipeline::source::read_header(&exp.models.pipeline.path)
        .with_context(|| exp.model_place(Role::Pipeline))?;
    check_block_layout(&exp, header.as_ref())?;
    check_adapters(&exp, header.as_ref())?;
    check_sdxl_parts(&exp, header.as_ref())?;
    // A GPU that is not visible here still gets an estimate (from FLOP figures).
    let device = crate::device::parse_device_spec(&g.device)?;
    let kind = super::run::dtype_for(&exp, g, device)?;
    // Printed at the end, and a closed pipe (`plan ... | head`) is not an error.
    let mut out = String::new();
    macro_rules! say {
        ($($t:tt)*) => { writeln!(out, $($t)*).unwrap_or(()) }
    }
    say!("experiment {} ({})", exp.name, exp.path.display());
    if !exp.description.is_empty() {
        say!("  {}", exp.description);
    }
    say!("models:");
    for (role, m) in exp.models.iter() {
        let state = if m.path.exists() {
            m.path.display().to_string()
        } else if m.reference.starts_with("hf:") {
            "not in the Hugging Face cache yet (`run` or `negimg models fetch FILE` downloads it)"
                .to_string()
        } else {
            format!("{} (made by init_random)", m.path.display())
        };
        say!("  {:<16} {} -> {state}", role.name(), m.reference);
    }
    if !exp.images.is_empty() {
        say!("images:");
        let in_family = |n: &String| exp.families.values().any(|m| m.contains(n));
        for (name, source) in exp.images.iter().filter(|(n, _)| !in_family(n)) {
            match source {
                ImageSource::File(p) => say!("  {name:<12} {}", p.display()),
                ImageSource::Generate(s) => say!(
                    "  {name:<12} text-to-image: {:?} (seed {})",
                    s.prompt,
                    s.seed
                ),
                ImageSource::Derive(r) => say!("  {name:<12} derived: {}", r.caption()),
            }
        }
        for (family, members) in &exp.families {
            let recipes: Vec<&crate::derive::Recipe> = members
                .iter()
                .filter_map(|m| match exp.images.get(m) {
                    Some(ImageSource::Derive(r)) => Some(r),
                    _ => None,
                })
                .collect();
            let strengths: Vec<String> = recipes.iter().map(|r| r.strength.to_string()).collect();
            say!(
                "  {family:<12} derived family of {}: {} at strength {} ({} ... {})",
                members.len(),
                recipes
                    .first()
                    .map_or(String::new(), |r| r.family_caption()),
                strengths.join(", "),
                members[0],
                members[members.len() - 1]
            );
        }
    }
    for line in subject_lines(&exp) {
        say!("{line}");
    }
    say!("grid: {} = {} cells", exp.grid.shape(), exp.cells.len());
    let varying = exp.grid.varying();
    let shown = if args.all { exp.cells.len() } else { 40 };
    let params: Vec<GenParams> = exp
        .cells
        .iter()
        .map(|c| c.params(&|n| PathBuf::from(n)))
        .collect();
    for (i, c) in exp.cells.iter().enumerate().take(shown) {
        say!(
            "  {:>5}  {}{}",
            i + 1,
            if varying.is_empty() {
                "(defaults)".to_string()
            } else {
                c.describe(&varying)
            },
            fallback_note(&params[i])
        );
    }
    if exp.cells.len() > shown {
        say!("  ... {} more (--all prints them)", exp.cells.len() - shown);
    }
    let mut groups: Vec<(crate::params::BatchKey, usize)> = Vec::new();
    for c in &exp.cells {
        let key = c.params(&|n| PathBuf::from(n)).batch_key();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => groups.push((key, 1)),
        }
    }
    say!("batches (cells sharing steps, size, scheduler, adapter, ip_scaling):");
    for ((steps, w, h, sched, adapter, scaling), n) in &groups {
        say!("  {n:>6} cells: {steps} steps {w}x{h} {sched} {adapter} ip_scaling={scaling}");
    }
    // The methods the cells are made with that take a third row, in registry order.
    let three: Vec<Method> = params
        .iter()
        .map(GenParams::effective_method)
        .filter(|&m| methods::of(m).rows().len() == 3)
        .collect();
    if !three.is_empty() {
        let names: Vec<String> = methods::REGISTRY
            .iter()
            .map(|m| m.method())
            .filter(|m| three.contains(m))
            .map(|m| m.to_string())
            .collect();
        say!(
            "UNet rows per step: {} cells take 3 ({}), {} take 2",
            three.len(),
            names.join(", "),
            exp.cells.len() - three.len()
        );
    }
    // Attention work beyond a method's rows (NAG's second image attention), per method.
    let attention: Vec<String> = methods::REGISTRY
        .iter()
        .filter(|m| m.cost().attention_rows > 0.0)
        .filter_map(|m| {
            let n = params
                .iter()
                .filter(|p| p.effective_method() == m.method())
                .count();
            let extra = m.cost().attention_rows;
            (n > 0).then(|| format!("{n} {} cells +{extra} each", m.method()))
        })
        .collect();
    if !attention.is_empty() {
        say!(
            "attention work beyond the rows, in UNet rows per step: {}",
            attention.join(", ")
        );
    }
    // The noise schedule, read once for what needs it: sigma windows, NegToMe's steps and
    // shared trajectories.
    let sigma = exp.cells.iter().any(|c| c.window == Window::Sigma);
    let (sched_cfg, whose) = schedule_of(&exp)?;
    if sigma {
        let cfg = &sched_cfg;
        say!("windows of the window = \"sigma\" cells (steps 0-based, {whose} schedule):");
        for line in sigma_windows(&exp, cfg)?.lines() {
            say!("  {line}");
        }
    }
    let negtome = super::estimate::negtome_cost(&exp, &sched_cfg)?;
    if negtome.cells > 0 {
        say!(
            "NegToMe: {} cells merge against {} reference image(s): {} more UNet row(s) summed \
             over the steps (each reference row only at the steps where a cell merges, \
             shared by the cells of a batch), {} VAE encode(s)",
            negtome.cells,
            negtome.encodes,
            negtome.row_steps,
            negtome.encodes
        );
    }
    if negtome.never_active > 0 {
        say!(
            "warning: {} NegToMe cells have no step with a timestep in their negtome_t_min..\
             negtome_t_max range (few steps start below 800): they never merge",
            negtome.never_active
        );
    }
    for line in ignored_inputs(&exp, &params) {
        say!("{line}");
    }
    for warning in exp.warnings.iter().chain(&unpaired_traces(&exp)) {
        say!("warning: {warning}");
    }
    // Cells that differ only in what their negative mode ignores make one image.
    let images: std::collections::BTreeSet<String> = params
        .iter()
        .map(|p| serde_json::to_string(&p.effective()))
        .collect::<std::result::Result<_, _>>()?;
    if images.len() < exp.cells.len() {
        say!(
            "{} images for {} cells: cells that differ only in a parameter their negative \
             mode ignores, or that fall back as above, share one image file (each keeps its \
             own record)",
            images.len(),
            exp.cells.len()
        );
    }
    let generated_inputs = exp
        .images
        .values()
        .filter(|s| matches!(s, ImageSource::Generate(_)))
        .count();
    let (w, h) = exp
        .cells
        .iter()
        .map(|c| (c.width, c.height))
        .max_by_key(|(w, h)| w * h)
        .unwrap_or((512, 512));
    let batch = crate::device::estimate_max_batch(device, kind, w, h);
    let rows = super::estimate::row_steps(&exp, &sched_cfg, batch)?;
    if let Some(steps) = &exp.maps.steps {
        say!("attention maps over the steps \"{steps}\" only ([maps] steps)");
    }
    say!(
        "UNet row-steps: {} one cell at a time, {} with shared trajectories ({:.2}x fewer; \
         cells identical up to a step compute it once, in batches of up to {} cells)",
        rows.alone,
        rows.shared,
        rows.alone as f64 / rows.shared.max(1) as f64,
        batch * crate::run::batching::SHARED_BATCH
    );
    let mut traced = std::collections::BTreeSet::new();
    let trace_decodes: usize = (exp.cells.iter().zip(&params))
        .filter(|(_, p)| traced.insert(serde_json::to_string(&p.effective()).unwrap_or_default()))
        .map(|(c, _)| super::estimate::trace_decodes(c))
        .sum();
    if trace_decodes > 0 {
        say!(
            "x̂₀ traces: {trace_decodes} more VAE decodes (saved under traces/<image id>/; the \
             estimate includes them)"
        );
    }
    let estimate = super::estimate::estimate(&super::estimate::Target {
        exp: &exp,
        negtome: &negtome,
        results: &args.results,
        device,
        kind,
        visible: crate::device::is_visible(device),
        calibrate: !args.no_calibrate,
        rows: &rows,
    });
    let total = estimate.per_image * (images.len() + generated_inputs) as f64;
    say!(
        "estimate on {} {}: {} of generation, model loading excluded ({:.3} s per image; {})",
        crate::device::device_name(device),
        crate::device::dtype_name(kind),
        duration(total),
        estimate.per_image,
        estimate.how
    );
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}

/// After a listed cell that is made as another (README, "A method with nothing to
/// subtract"): what it is made as.
fn fallback_note(p: &GenParams) -> String {
    let e = p.effective();
    let mut made_as = Vec::new();
    if e.method != p.method {
        made_as.push("method = uncond");
    }
    if e.negtome != p.negtome {
        made_as.push("negtome = false");
    }
    if made_as.is_empty() {
        String::new()
    } else {
        format!("  -> nothing to subtract: made as {}", made_as.join(", "))
    }
}

/// Traced cells whose baseline cell has no x̂₀ at some of their trace steps (their x̂₀'s
/// metrics against the baseline would be empty, as scoring and the report say), said at
/// the place `trace` is set. Cells are named by their number in the grid.
fn unpaired_traces(exp: &Experiment) -> Option<String> {
    let records: Vec<Record> = (exp.cells.iter().enumerate())
        .map(|(i, c)| Record::new(&(i + 1).to_string(), c, Status::Done, "", 0.0, ""))
        .collect();
    let info = RunInfo::of(exp, "");
    let note = traces::unpaired_note(&traces::unpaired(&info, &records))?;
    let origin = Vec::from_iter(exp.grid.origin(Param::Trace).cloned());
    let place = Source::new(&exp.path, exp.text.clone())
        .places(&origin)
        .unwrap_or_else(|| exp.path.display().to_string());
    Some(format!("{place}: {note}"))
}

/// Said once each: cells whose method has nothing to subtract (made as `uncond`, sharing
/// that cell's image), NegToMe switched on without a negative image, and a negative image
/// that the cells' `negative` mode drops.
fn ignored_inputs(exp: &Experiment, params: &[GenParams]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut methods: Vec<String> = Vec::new();
    let mut fallen = 0;
    for p in params.iter().filter(|p| p.effective_method() != p.method) {
        fallen += 1;
        let what = format!("{} with negative = {}", p.method, p.negative);
        if !methods.contains(&what) {
            methods.push(what);
        }
    }
    if fallen > 0 {
        lines.push(format!(
            "{fallen} cells have nothing for their method to subtract ({}): each is made as the \
             same cell with method = uncond (the baseline where negative = none) and shares \
             that cell's image file",
            methods.join("; ")
        ));
    }
    let merge_nothing = params
        .iter()
        .filter(|p| p.negtome && p.negtome_image().is_none())
        .count();
    if merge_nothing > 0 {
        lines.push(format!(
            "{merge_nothing} cells have negtome = true but no negative image to merge against \
             (negative = none or text): they are made without NegToMe"
        ));
    }
    let mut dropped: Vec<String> = Vec::new();
    let mut dropping = 0;
    for c in &exp.cells {
        if let Some(name) = c
            .negative_image
            .as_ref()
            .filter(|_| !c.negative_mode().uses_image())
        {
            dropping += 1;
            if !dropped.contains(name) {
                dropped.push(name.clone());
            }
        }
    }
    if dropping > 0 {
        lines.push(format!(
            "note: {dropping} cells have negative_image {} but a negative mode that uses no \
             image (none, text): the image is dropped from those cells",
            dropped.join(", ")
        ));
    }
    lines
}

/// The pipeline's scheduler config (read without loading weights), or SD1.5's where the
/// pipeline is not there yet (made by `init_random`, not downloaded yet).
fn schedule_of(exp: &Experiment) -> Result<(SchedulerConfig, &'static str)> {
    let path = &exp.models.pipeline.path;
    if !path.exists() {
        return Ok((
            SchedulerConfig::sd15_ddim(),
            "SD1.5's (pipeline not there yet)",
        ));
    }
    let cfg = crate::pipeline::source::open(path, false)?.scheduler_config()?;
    Ok((cfg, "the pipeline's"))
}

/// The steps each rule makes active for every distinct window of the sigma-window cells.
fn sigma_windows(exp: &Experiment, cfg: &SchedulerConfig) -> Result<String> {
    let mut cases: Vec<WindowCase> = Vec::new();
    for c in exp.cells.iter().filter(|c| c.window == Window::Sigma) {
        for b in [c.positive_branch(), c.negative_branch()] {
            let case = WindowCase {
                scheduler: c.scheduler,
                steps: c.steps,
                start: b.start,
                end: b.end,
            };
            if !cases.contains(&case) {
                cases.push(case);
            }
        }
    }
    comparison_table(cfg, &cases)
}

/// When the pipeline's UNet config is on disk, every cell's `blocks` / `neg_blocks` must fit
/// its cross-attention blocks (otherwise `run` would fail those cells).
fn check_block_layout(exp: &Experiment, header: Option<&PipelineHeader>) -> Result<()> {
    let Some(header) = header else {
        return Ok(());
    };
    let blocks = header.unet.cross_attention_blocks();
    for c in &exp.cells {
        let p = c.params(&|n| PathBuf::from(n));
        p.check_blocks(blocks).map_err(|e| {
            let at = exp
                .param_places(&[Param::Blocks, Param::NegBlocks])
                .unwrap_or_else(|| exp.path.display().to_string());
            anyhow::anyhow!(
                "{at}: {e} (the UNet of {}, given at {})",
                header.unet_origin,
                exp.model_place(Role::Pipeline)
            )
        })?;
    }
    Ok(())
}

/// Every adapter on disk must be of its kind's family and read what the image encoder gives
/// (a ViT-bigG adapter with a ViT-H encoder is refused here, naming both), and, where the
/// pipeline's UNet config is known (a folder's config.json, a single file's header), make
/// tokens as wide as the UNet's cross-attention (an SDXL adapter on SD1.5, or the reverse).
/// Each error starts with the adapter's key and line.
fn check_adapters(exp: &Experiment, header: Option<&PipelineHeader>) -> Result<()> {
    let paths = exp.models.paths();
    for (kind, path) in paths.adapters() {
        let adapter = || std::iter::once((kind, path.as_path()));
        crate::models::ip_adapter::check_adapters(adapter(), &paths.image_encoder)
            .and_then(|()| match header {
                Some(h) => crate::models::ip_adapter::check_cross_dim(
                    adapter(),
                    h.unet.context_dim(),
                    &h.unet_origin,
                ),
                None => Ok(()),
            })
            .with_context(|| exp.model_place(Role::adapter(kind)))?;
    }
    Ok(())
}

/// From the pipeline's configs and headers alone: an SDXL UNet has its `text_encoder_2` (and
/// an SD1.x/2.x one none), and SDXL's micro-conditioning keys are set only where the UNet
/// reads them.
fn check_sdxl_parts(exp: &Experiment, header: Option<&PipelineHeader>) -> Result<()> {
    let Some(header) = header else {
        return Ok(());
    };
    let text_time = header.unet.pooled_text_dim().is_some();
    crate::pipeline::check_second_encoder(
        &exp.models.pipeline.path,
        text_time,
        header.text_encoder_2,
    )
    .with_context(|| exp.model_place(Role::Pipeline))?;
    let micro = exp
        .cells
        .iter()
        .find(|c| c.params(&|n| PathBuf::from(n)).has_micro_conditioning());
    if let (Some(c), false) = (micro, text_time) {
        let written: Vec<Param> = MICRO_KEYS
            .into_iter()
            .filter(|&p| exp.grid.origin(p).is_some())
            .collect();
        anyhow::bail!(
            "{}: {} ({}) are SDXL's micro-conditioning, but the UNet of {} has no \
             addition_embed_type \"text_time\" (the pipeline given at {}): they would change \
             nothing",
            exp.param_places(&written)
                .unwrap_or_else(|| exp.path.display().to_string()),
            written
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(" / "),
            c.describe(&written),
            header.unet_origin,
            exp.model_place(Role::Pipeline)
        );
    }
    Ok(())
}

/// SDXL's micro-conditioning keys: the cond row's and the other rows'.
const MICRO_KEYS: [Param; 6] = [
    Param::OriginalSize,
    Param::CropsCoordsTopLeft,
    Param::TargetSize,
    Param::NegativeOriginalSize,
    Param::NegativeCropsCoordsTopLeft,
    Param::NegativeTargetSize,
];

fn duration(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}
