//! `negimg generate`: one image from flags.
use super::Globals;
use crate::models::ip_adapter::{AdapterFile, Family};
use crate::params::{
    AdapterKind, BlockWeights, BranchWeight, GenParams, IpScaling, Method, MethodParams, MicroPair,
    NegOff, NegativeMode, NoImage, SchedulerKind, StepSet, Window,
};
use crate::pipeline::{CellOutcome, Pipeline};
use crate::roles::ModelSet;
use crate::sampling::methods;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Remake a run's image from its PNG (its `negimg` chunk and the run's manifest, models
    /// checked against their recorded sha256): the same bytes on the same device and dtype
    /// (--dtype auto: the run's). Takes --out and --force only.
    #[arg(long, value_name = "IMAGE.png", conflicts_with_all = CELL_FLAGS)]
    pub replay: Option<PathBuf>,
    /// With --replay: write over an existing --out file.
    #[arg(long, requires = "replay")]
    pub force: bool,
    /// A model set folder as `negimg models init-random` writes it (pipeline/, image_encoder/,
    /// ip-adapter*_sd15.safetensors); --pipeline etc. override its parts.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// A diffusers pipeline folder, or a single-file SD1.5 or SDXL base checkpoint (.safetensors).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// A VAE folder replacing the pipeline's.
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// IP-Adapter .safetensors file(s); base or Plus is detected from the keys.
    #[arg(long = "ip-adapter")]
    pub ip_adapter: Vec<PathBuf>,
    /// The image encoder folder (CLIPVisionModelWithProjection).
    #[arg(long)]
    pub image_encoder: Option<PathBuf>,
    /// Positive image prompt (conditions the cond branch).
    #[arg(long)]
    pub positive: Option<PathBuf>,
    /// Negative image prompt (conditions the uncond branch).
    #[arg(long)]
    pub negative: Option<PathBuf>,
    #[arg(long, default_value = "")]
    pub prompt: String,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// What conditions the uncond branch; default: what was given (--negative and/or
    /// --negative-prompt).
    #[arg(long, value_enum)]
    pub negative_mode: Option<NegativeModeArg>,
    /// Adapter kind; default: the kind of the one --ip-adapter file, else base.
    #[arg(long, value_enum)]
    pub adapter: Option<AdapterArg>,
    /// Image prompt weight of the cond branch (-1 to 10).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub weight: f64,
    /// Weight of the uncond branch (default: --weight, as the official IP-Adapter).
    #[arg(long, allow_negative_numbers = true)]
    pub neg_weight: Option<f64>,
    /// Window of the cond branch as fractions: of the steps (--window steps: step i of N is
    /// active iff start <= i/N < end) or of the noise schedule (--window sigma).
    #[arg(long, default_value_t = 0.0)]
    pub start: f64,
    #[arg(long, default_value_t = 1.0)]
    pub end: f64,
    /// Window of the uncond branch (default: --start/--end).
    #[arg(long)]
    pub neg_start: Option<f64>,
    #[arg(long)]
    pub neg_end: Option<f64>,
    #[arg(long, default_value_t = 7.5)]
    pub cfg: f64,
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    #[arg(long, value_enum, default_value = "ddim")]
    pub scheduler: SchedulerArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// WxH or N (square).
    #[arg(long, default_value = "512")]
    pub size: String,
    /// "No image" tokens: reference (IP-Adapter's) or black (ComfyUI's).
    #[arg(long, value_enum, default_value = "reference")]
    pub no_image: NoImageArg,
    /// How the negative image is used: uncond, subtract, three_branch, perp_neg, negtome,
    /// cond_negative, sega, dng, nag (README, "Negative methods").
    #[arg(long, default_value = "uncond", value_parser = parse_method)]
    pub method: Method,
    /// subtract: the cond branch's embedding is e_pos - SCALE * e_neg.
    #[arg(long, default_value_t = 1.0)]
    pub neg_embed_scale: f64,
    /// three_branch, perp_neg: the negative's guidance scale (default: --cfg).
    #[arg(long)]
    pub neg_cfg: Option<f64>,
    /// Which steps --start/--end select: steps (fractions of the step count) or sigma
    /// (ComfyUI's rule on the noise schedule; README, "Windows").
    #[arg(long, default_value = "steps", value_parser = parse_window)]
    pub window: Window,
    /// IP-Adapter weight per cross-attention block (execution order, SD1.5: down 0-5, mid 6,
    /// up 7-15; SDXL 0-10): all, style, composition, strong_style, style_and_composition, or
    /// "i:w, i:w" (unlisted blocks 0).
    #[arg(long, default_value = "all", value_parser = parse_blocks)]
    pub blocks: BlockWeights,
    /// The same for the negative branch (default: --blocks).
    #[arg(long, value_parser = parse_blocks)]
    pub neg_blocks: Option<BlockWeights>,
    /// How the weight enters the image attention: v, kv, kv_c, k_mean_v_c (ComfyUI's
    /// embeds_scaling).
    #[arg(long, default_value = "v", value_parser = parse_ip_scaling)]
    pub ip_scaling: IpScaling,
    /// NegToMe on top of --method (README, "NegToMe"); --method negtome implies it.
    #[arg(long)]
    pub negtome: bool,
    /// NegToMe: a merged token x becomes x + ALPHA (x - r*).
    #[arg(long, default_value_t = crate::params::NEGTOME_ALPHA)]
    pub negtome_alpha: f64,
    /// NegToMe: tokens merge when their best cosine similarity to the reference is above this.
    #[arg(long, default_value_t = crate::params::NEGTOME_THRESHOLD)]
    pub negtome_threshold: f64,
    /// NegToMe is active at the steps whose timestep t has T_MIN <= t <= T_MAX.
    #[arg(long, default_value_t = crate::params::NEGTOME_T_MIN)]
    pub negtome_t_min: f64,
    #[arg(long, default_value_t = crate::params::NEGTOME_T_MAX)]
    pub negtome_t_max: f64,
    /// The steps where the cond branch is active, in place of --start/--end: "12",
    /// "3, 5, 7-9", "every 2", "from 10", "until 10" (0-based; README, "Step sets").
    #[arg(long, value_parser = parse_steps, conflicts_with_all = ["start", "end"])]
    pub steps_at: Option<StepSet>,
    /// The same for the uncond branch (default: --steps-at unless --neg-start/--neg-end).
    #[arg(long, value_parser = parse_steps, conflicts_with_all = ["neg_start", "neg_end"])]
    pub neg_steps_at: Option<StepSet>,
    /// What the negative branch's rows get where that branch is off: zero (IP scale 0) or
    /// no_image (the "no image" tokens at its weight).
    #[arg(long, default_value = "zero", value_parser = parse_neg_off)]
    pub neg_off: NegOff,
    /// Steps whose predicted clean image x̂₀ is saved beside --out as OUT-step-NNN.png
    /// (a step set, as --steps-at).
    #[arg(long, value_parser = parse_steps)]
    pub trace: Option<StepSet>,
    /// Record the cell's attention maps (as `[maps] attention = true`) and write them beside
    /// --out as OUT-maps/attention_*.npy, the files of a run's `maps/<cell-id>/`.
    #[arg(long, conflicts_with = "replay")]
    pub maps: bool,
    /// SDXL micro-conditioning: the original size HEIGHTxWIDTH the image claims (diffusers'
    /// order, unlike --size's WxH; default: the image's size).
    #[arg(long, value_name = "HxW", value_parser = parse_micro)]
    pub original_size: Option<MicroPair>,
    /// SDXL micro-conditioning: the crop's TOPxLEFT corner.
    #[arg(long, value_name = "TOPxLEFT", default_value = "0x0", value_parser = parse_micro)]
    pub crops_coords_top_left: MicroPair,
    /// SDXL micro-conditioning: the target size HEIGHTxWIDTH (default: the image's size).
    #[arg(long, value_name = "HxW", value_parser = parse_micro)]
    pub target_size: Option<MicroPair>,
    /// SDXL micro-conditioning of the rows other than the cond row (diffusers'
    /// negative_original_size; default: --original-size's value).
    #[arg(long, value_name = "HxW", value_parser = parse_micro)]
    pub negative_original_size: Option<MicroPair>,
    /// The same for the crop corner (default: --crops-coords-top-left's value).
    #[arg(long, value_name = "TOPxLEFT", value_parser = parse_micro)]
    pub negative_crops_coords_top_left: Option<MicroPair>,
    /// The same for the target size (default: --target-size's value).
    #[arg(long, value_name = "HxW", value_parser = parse_micro)]
    pub negative_target_size: Option<MicroPair>,
    /// The negative methods' own parameters (`--nag-scale` ...), one flag each.
    #[command(flatten)]
    pub method_params: MethodFlags,
    /// Output PNG (default out.png; with --replay, IMAGE-replay.png in the current folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The flags that describe a cell, which --replay takes from the image instead.
const CELL_FLAGS: [&str; 45] = [
    "models",
    "pipeline",
    "vae",
    "ip_adapter",
    "image_encoder",
    "positive",
    "negative",
    "prompt",
    "negative_prompt",
    "negative_mode",
    "adapter",
    "weight",
    "neg_weight",
    "start",
    "end",
    "neg_start",
    "neg_end",
    "cfg",
    "steps",
    "scheduler",
    "seed",
    "size",
    "no_image",
    "method",
    "neg_embed_scale",
    "neg_cfg",
    "window",
    "blocks",
    "neg_blocks",
    "ip_scaling",
    "negtome",
    "negtome_alpha",
    "negtome_threshold",
    "negtome_t_min",
    "negtome_t_max",
    "steps_at",
    "neg_steps_at",
    "neg_off",
    "trace",
    "original_size",
    "crops_coords_top_left",
    "target_size",
    "negative_original_size",
    "negative_crops_coords_top_left",
    "negative_target_size",
];

/// A flag per method parameter (`sampling::methods`): its key with dashes.
#[derive(Clone, Debug, Default)]
pub struct MethodFlags(Vec<(&'static str, f64)>);

impl clap::FromArgMatches for MethodFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> std::result::Result<Self, clap::Error> {
        let given = methods::all_params()
            .filter_map(|(_, p)| m.get_one::<f64>(p.name).map(|x| (p.name, *x)))
            .collect();
        Ok(MethodFlags(given))
    }

    fn update_from_arg_matches(
        &mut self,
        m: &clap::ArgMatches,
    ) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for MethodFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        methods::all_params().fold(cmd, |cmd, (method, p)| {
            // Made once per process; clap keeps flag names as `&'static str`.
            let long: &'static str = Box::leak(p.name.replace('_', "-").into_boxed_str());
            cmd.arg(
                clap::Arg::new(p.name)
                    .long(long)
                    .value_parser(clap::value_parser!(f64))
                    .allow_negative_numbers(true)
                    .help(format!("{method}: {} (default {})", p.about, p.default)),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The method parameters given as flags, checked against their ranges and against
/// `method` (a flag of another method's parameter is an error, not a silent no-op).
fn method_params(flags: &MethodFlags, method: Method) -> Result<MethodParams> {
    let mut out = MethodParams::default();
    for &(key, x) in &flags.0 {
        let flag = key.replace('_', "-");
        let spec = methods::param(key).expect("flags are made from the specs");
        spec.check(x)
            .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?;
        if !methods::of(method).params().contains(spec) {
            bail!("--{flag} is a parameter of another method than --method {method}");
        }
        out.set(key, x, spec.default);
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum NegativeModeArg {
    None,
    Text,
    Image,
    Both,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AdapterArg {
    Base,
    Plus,
    Light,
    #[value(name = "plus_face")]
    PlusFace,
    #[value(name = "full_face")]
    FullFace,
}

impl AdapterArg {
    pub fn kind(self) -> AdapterKind {
        match self {
            AdapterArg::Base => AdapterKind::Base,
            AdapterArg::Plus => AdapterKind::Plus,
            AdapterArg::Light => AdapterKind::Light,
            AdapterArg::PlusFace => AdapterKind::PlusFace,
            AdapterArg::FullFace => AdapterKind::FullFace,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SchedulerArg {
    Ddim,
    Euler,
    #[value(name = "dpmpp_2m")]
    DpmPp2m,
    #[value(name = "dpmpp_2m_karras")]
    DpmPp2mKarras,
    #[value(name = "euler_ancestral")]
    EulerAncestral,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum NoImageArg {
    Reference,
    Black,
}

pub fn parse_method(s: &str) -> std::result::Result<Method, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not one of {}", Method::NAMES))
}

fn parse_steps(s: &str) -> std::result::Result<StepSet, String> {
    s.parse()
}

fn parse_micro(s: &str) -> std::result::Result<MicroPair, String> {
    s.parse()
}

fn parse_neg_off(s: &str) -> std::result::Result<NegOff, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not one of {}", NegOff::NAMES))
}

fn parse_window(s: &str) -> std::result::Result<Window, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not one of steps, sigma"))
}

fn parse_blocks(s: &str) -> std::result::Result<BlockWeights, String> {
    s.parse()
}

fn parse_ip_scaling(s: &str) -> std::result::Result<IpScaling, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not one of {}", IpScaling::NAMES))
}

/// `WxH` or `N` -> (width, height).
pub fn parse_size(s: &str) -> Result<(usize, usize)> {
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .with_context(|| format!("--size {s:?}: expected WxH or N"))
    };
    let (w, h) = match s.split_once(['x', 'X']) {
        Some((w, h)) => (parse(w)?, parse(h)?),
        None => {
            let n = parse(s)?;
            (n, n)
        }
    };
    // As in experiment files.
    for x in [w, h] {
        if !(8..=4096).contains(&x) || x % 8 != 0 {
            bail!(
                "--size {s:?}: {x} is not a multiple of 8 between 8 and 4096 (the VAE downsamples by 8)"
            );
        }
    }
    Ok((w, h))
}

/// The ranges and windows experiment files get, for the flags.
fn check_flags(a: &GenerateArgs) -> Result<()> {
    use crate::experiment::Param;
    let values = [
        (Param::Weight, Some(a.weight)),
        (Param::Start, Some(a.start)),
        (Param::End, Some(a.end)),
        (Param::NegWeight, a.neg_weight),
        (Param::NegStart, a.neg_start),
        (Param::NegEnd, a.neg_end),
        (Param::Cfg, Some(a.cfg)),
        (Param::Steps, Some(a.steps as f64)),
        (Param::NegtomeAlpha, Some(a.negtome_alpha)),
        (Param::NegtomeThreshold, Some(a.negtome_threshold)),
        (Param::NegtomeTMin, Some(a.negtome_t_min)),
        (Param::NegtomeTMax, Some(a.negtome_t_max)),
    ];
    for (param, v) in values {
        if let Some(x) = v {
            param
                .check_value(x)
                .map_err(|e| anyhow::anyhow!("--{}: {e}", param.name().replace('_', "-")))?;
        }
    }
    if a.start > a.end {
        bail!("--start {} is after --end {}", a.start, a.end);
    }
    for (flag, set) in [
        ("--steps-at", &a.steps_at),
        ("--neg-steps-at", &neg_steps_at(a)),
        ("--trace", &a.trace),
    ] {
        if let Some(Err(e)) = set.as_ref().map(|s| s.check(a.steps)) {
            bail!("{flag}: {e} (--steps {})", a.steps);
        }
    }
    if a.negtome_t_min > a.negtome_t_max {
        bail!(
            "--negtome-t-min {} is above --negtome-t-max {}: the range is empty",
            a.negtome_t_min,
            a.negtome_t_max
        );
    }
    let (ns, ne) = (a.neg_start.unwrap_or(a.start), a.neg_end.unwrap_or(a.end));
    if ns > ne {
        bail!("the negative window starts at {ns} after it ends at {ne} (--neg-start, --neg-end)");
    }
    Ok(())
}

/// `--adapter`, else the kind of the one `--ip-adapter` file (read from the file), else base.
fn adapter_kind(a: &GenerateArgs) -> Result<AdapterKind> {
    Ok(match (a.adapter.as_ref(), a.ip_adapter.as_slice()) {
        (Some(a), _) => a.kind(),
        (None, [only]) => AdapterFile::open(only)?.kind,
        (None, _) => AdapterKind::Base,
    })
}

/// The model set from `--models` and the per-model flags.
fn model_set(a: &GenerateArgs) -> Result<ModelSet<PathBuf>> {
    let mut set = match &a.models {
        Some(dir) => ModelSet::from_models_dir(dir),
        None => {
            let (Some(pipeline), Some(encoder)) = (&a.pipeline, &a.image_encoder) else {
                bail!("give --models DIR, or --pipeline and --image-encoder");
            };
            ModelSet {
                pipeline: pipeline.clone(),
                image_encoder: encoder.clone(),
                ..Default::default()
            }
        }
    };
    if let Some(p) = &a.pipeline {
        set.pipeline = p.clone();
    }
    if let Some(p) = &a.image_encoder {
        set.image_encoder = p.clone();
    }
    if a.vae.is_some() {
        set.vae = a.vae.clone();
    }
    // Each file in its family's first kind's slot, or as --adapter where that is its family
    // (kinds of one family cannot be told apart by shape).
    let wanted = a.adapter.map(AdapterArg::kind);
    for path in &a.ip_adapter {
        let detected = AdapterFile::open(path)?;
        let kind = wanted
            .filter(|&k| Family::of(k) == detected.family)
            .unwrap_or(detected.kind);
        set.set_adapter(kind, Some(path.clone()));
    }
    Ok(set)
}

/// The cell the flags describe.
pub fn params(a: &GenerateArgs) -> Result<GenParams> {
    let (width, height) = parse_size(&a.size)?;
    let negative = match a.negative_mode {
        Some(NegativeModeArg::None) => NegativeMode::None,
        Some(NegativeModeArg::Text) => NegativeMode::Text,
        Some(NegativeModeArg::Image) => NegativeMode::Image,
        Some(NegativeModeArg::Both) => NegativeMode::Both,
        None => match (a.negative.is_some(), !a.negative_prompt.is_empty()) {
            (true, true) => NegativeMode::Both,
            (true, false) => NegativeMode::Image,
            (false, true) => NegativeMode::Text,
            (false, false) => NegativeMode::None,
        },
    };
    if negative.uses_image() && a.negative.is_none() {
        bail!("--negative-mode {negative} needs --negative IMAGE");
    }
    if (a.negtome || a.method == Method::Negtome) && !negative.uses_image() {
        bail!(
            "NegToMe (--negtome, --method negtome) needs --negative IMAGE and a --negative-mode using it"
        );
    }
    // One image: a method with nothing to subtract would quietly be `uncond` (README, "A
    // method with nothing to subtract"), so it is refused here.
    if !a.method.has_something_to_subtract(negative) {
        bail!(
            "--method {} has nothing to subtract with --negative-mode {negative}: give a \
             negative it uses (--negative IMAGE{}), or --method uncond, the image it would make",
            a.method,
            if negative == NegativeMode::Text {
                ""
            } else {
                " or --negative-prompt TEXT"
            }
        );
    }
    let positive = BranchWeight {
        weight: a.weight,
        start: a.start,
        end: a.end,
    };
    check_flags(a)?;
    let cell = GenParams {
        prompt: a.prompt.clone(),
        negative_prompt: a.negative_prompt.clone(),
        negative,
        positive_image: a.positive.clone(),
        negative_image: a.negative.clone(),
        adapter: adapter_kind(a)?,
        positive,
        negative_branch: BranchWeight {
            weight: a.neg_weight.unwrap_or(a.weight),
            start: a.neg_start.unwrap_or(a.start),
            end: a.neg_end.unwrap_or(a.end),
        },
        cfg: a.cfg,
        steps: a.steps,
        scheduler: scheduler_kind(a.scheduler),
        seed: a.seed,
        width,
        height,
        no_image: match a.no_image {
            NoImageArg::Reference => NoImage::Reference,
            NoImageArg::Black => NoImage::Black,
        },
        method: a.method,
        neg_embed_scale: a.neg_embed_scale,
        neg_cfg: a.neg_cfg,
        window: a.window,
        blocks: a.blocks.clone(),
        neg_blocks: a.neg_blocks.clone().unwrap_or_else(|| a.blocks.clone()),
        ip_scaling: a.ip_scaling,
        negtome: a.negtome,
        negtome_alpha: a.negtome_alpha,
        negtome_threshold: a.negtome_threshold,
        negtome_t_min: a.negtome_t_min,
        negtome_t_max: a.negtome_t_max,
        method_params: method_params(&a.method_params, a.method)?,
        steps_at: a.steps_at.clone(),
        neg_steps_at: neg_steps_at(a),
        neg_off: a.neg_off,
        trace: a.trace.clone(),
        original_size: a.original_size,
        crops_coords_top_left: a.crops_coords_top_left,
        target_size: a.target_size,
        negative_original_size: a.negative_original_size,
        negative_crops_coords_top_left: a.negative_crops_coords_top_left,
        negative_target_size: a.negative_target_size,
    }
    .own_sizes_as_auto();
    check_method(&cell)?;
    Ok(cell)
}

/// What the cell's method refuses (DNG on a deterministic scheduler), named by its flag.
pub fn check_method(cell: &GenParams) -> Result<()> {
    methods::of(cell.method)
        .check(cell)
        .map_err(|(key, why)| anyhow::anyhow!("--{}: {why}", key.replace('_', "-")))
}

pub fn scheduler_kind(s: SchedulerArg) -> SchedulerKind {
    match s {
        SchedulerArg::Ddim => SchedulerKind::Ddim,
        SchedulerArg::Euler => SchedulerKind::Euler,
        SchedulerArg::DpmPp2m => SchedulerKind::DpmPp2m,
        SchedulerArg::DpmPp2mKarras => SchedulerKind::DpmPp2mKarras,
        SchedulerArg::EulerAncestral => SchedulerKind::EulerAncestral,
    }
}

/// The uncond branch's step set: --neg-steps-at, else --steps-at unless the negative window
/// is given.
fn neg_steps_at(a: &GenerateArgs) -> Option<StepSet> {
    let window = a.neg_start.is_some() || a.neg_end.is_some();
    a.neg_steps_at
        .clone()
        .or_else(|| a.steps_at.clone().filter(|_| !window))
}

pub fn run(args: GenerateArgs, g: &Globals) -> Result<()> {
    if let Some(image) = &args.replay {
        return replay(image, args.out.as_deref(), args.force, g);
    }
    let cell = params(&args)?;
    let (device, kind) = g.device_and_dtype()?;
    let models = model_set(&args)?;
    let mut pipeline = Pipeline::load(&models, device, kind, &mut super::loading)?;
    pipeline.set_attention_maps(args.maps);
    let img = generate_one(&mut pipeline, &cell)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("out.png"));
    // The same PNG text chunks as a grid cell: A1111's `parameters` and the full cell.
    let name = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let (pos, neg) = (name(&cell.positive_image), name(&cell.negative_image));
    let parameters = crate::run::png::a1111_parameters(
        &cell,
        pos.as_deref(),
        neg.as_deref(),
        &models.pipeline.display().to_string(),
    );
    let json = serde_json::to_string(&cell)?;
    write_traces(&mut pipeline, &out, &parameters, &json)?;
    write_png(&out, &img, &parameters, &json)?;
    if args.maps {
        write_maps(&mut pipeline, &out)?;
    }
    Ok(())
}

/// `--replay IMAGE`: the run's cell made again, written with the image's own text chunks.
fn replay(image: &Path, out: Option<&Path>, force: bool, g: &Globals) -> Result<()> {
    let out = out.map_or_else(|| replay_name(image), Path::to_path_buf);
    if out.exists() && !force {
        bail!(
            "{} exists: pass --force to write over it, or --out another file",
            out.display()
        );
    }
    let stored = crate::run::replay::read(image)?;
    let device = g.device()?;
    let dtype = if g.dtype == "auto" {
        &stored.chunk.dtype
    } else {
        &g.dtype
    };
    let kind = crate::device::parse_dtype(dtype, device)?;
    let models = stored.checked_models(&mut stored.hash_cache())?;
    for note in stored.notes(device, kind) {
        eprintln!("note: {note}");
    }
    let mut pipeline = Pipeline::load(&models, device, kind, &mut super::loading)?;
    let img = generate_one(&mut pipeline, &stored.params)?;
    write_traces(&mut pipeline, &out, &stored.parameters, &stored.chunk_text)?;
    write_png(&out, &img, &stored.parameters, &stored.chunk_text)
}

/// `IMAGE-replay.png` in the current folder.
fn replay_name(image: &Path) -> PathBuf {
    let stem = image.file_stem().unwrap_or_default().to_string_lossy();
    PathBuf::from(format!("{stem}-replay.png"))
}

/// One cell's image, with a progress bar over its steps.
fn generate_one(pipeline: &mut Pipeline, cell: &GenParams) -> Result<image::RgbImage> {
    let bar = indicatif::ProgressBar::new(cell.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps {elapsed_precise}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let outcome = pipeline.generate(std::slice::from_ref(cell), &mut |step, _| {
        bar.set_position(step as u64)
    })?;
    bar.finish_and_clear();
    match outcome.into_iter().next() {
        Some(CellOutcome::Image(img)) => Ok(img),
        Some(CellOutcome::Failed(reason)) => bail!("the image failed: {reason}"),
        None => bail!("no image was generated"),
    }
}

/// The x̂₀ traces of the cell just made, beside `out` as `OUT-step-NNN.png`, with the image's
/// texts `parameters` and `json` and their step.
fn write_traces(pipeline: &mut Pipeline, out: &Path, parameters: &str, json: &str) -> Result<()> {
    let stem = out.with_extension("");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for (step, img) in pipeline.take_traces().into_iter().flatten() {
        let path = PathBuf::from(format!("{}-step-{step:03}.png", stem.display()));
        let (parameters, json) = crate::run::png::trace_texts(parameters, json, step)?;
        let texts = [("parameters", &*parameters), ("negimg", &*json)];
        crate::run::fsio::atomic_write(&path, &crate::run::png::encode(&img, &texts)?)?;
        println!("{}", path.display());
    }
    Ok(())
}

/// `--maps`: the cell's attention maps in `OUT-maps/` (no `attention_negative*` where no
/// row carries a negative image, as in a run).
fn write_maps(pipeline: &mut Pipeline, out: &Path) -> Result<()> {
    let Some(maps) = pipeline.take_attention_maps().into_iter().next() else {
        bail!("--maps: the cell has no image attention to record (no IP-Adapter image)");
    };
    let dir = PathBuf::from(format!("{}-maps", out.with_extension("").display()));
    crate::run::attention_maps::write_in(&dir, &maps)?;
    if maps.negative.is_none() {
        eprintln!(
            "note: --maps: no row carries a negative image into the image attention \
             (no negative image, or --method negtome): no negative maps"
        );
    }
    println!("{}", dir.display());
    Ok(())
}

/// The PNG with A1111's `parameters` and the `negimg` chunk, written atomically.
fn write_png(out: &Path, img: &image::RgbImage, parameters: &str, json: &str) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let bytes = crate::run::png::encode(img, &[("parameters", parameters), ("negimg", json)])?;
    crate::run::fsio::atomic_write(out, &bytes)?;
    println!("{}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_get_the_experiment_files_ranges() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: GenerateArgs,
        }
        let parse = |extra: &[&str]| {
            let mut args = vec!["x", "--prompt", "p", "--models", "m"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|c| params(&c.a))
        };
        assert!(parse(&[]).unwrap().is_ok());
        for (bad, want) in [
            (&["--size", "60"][..], "multiple of 8"),
            (&["--cfg", "500"][..], "--cfg: 500 is out of range"),
            (&["--weight", "50"][..], "--weight: 50 is out of range"),
            (
                &["--neg-weight", "-1.5"][..],
                "--neg-weight: -1.5 is out of range: it must be between -1 and 10",
            ),
            (&["--window", "sigmas"][..], "is not one of steps, sigma"),
            (
                &["--start", "0.8", "--end", "0.2"][..],
                "--start 0.8 is after --end 0.2",
            ),
            (
                &["--negtome-t-min", "900", "--negtome-t-max", "100"][..],
                "--negtome-t-min 900 is above --negtome-t-max 100",
            ),
            (
                &["--method", "three_branch"][..],
                "--method three_branch has nothing to subtract with --negative-mode none",
            ),
            (
                &["--method", "subtract", "--negative-prompt", "grass"][..],
                "--method subtract has nothing to subtract with --negative-mode text",
            ),
            (
                &["--method", "dng", "--negative-prompt", "grass"][..],
                "--scheduler: method dng needs scheduler euler_ancestral, not ddim",
            ),
            (
                &["--method", "nag", "--negative", "n.png", "--nag-tau", "0"][..],
                "--nag-tau: 0 is out of range",
            ),
            (
                &["--method", "nag", "--negative-prompt", "grass"][..],
                "--method nag has nothing to subtract with --negative-mode text",
            ),
        ] {
            let err = match parse(bad) {
                Ok(p) => p.unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(want), "{bad:?}: {err}");
        }
        let p = parse(&["--weight", "-0.5", "--neg-weight=-1", "--window", "sigma"]);
        let p = p.unwrap().unwrap();
        assert_eq!((p.positive.weight, p.negative_branch.weight), (-0.5, -1.0));
        assert_eq!(p.window, Window::Sigma);
        let dng = ["--method", "dng", "--negative-prompt", "grass"];
        let p = parse(&[&dng[..], &["--scheduler", "euler_ancestral"]].concat());
        assert_eq!(p.unwrap().unwrap().method, Method::Dng);
        let p = parse(&["--method", "nag", "--negative", "n.png", "--nag-scale", "3"]);
        let p = p.unwrap().unwrap();
        assert_eq!(methods::value(&p, "nag_scale"), 3.0);
        assert_eq!(methods::value(&p, "nag_tau"), 2.5);
    }

    #[test]
    fn the_adapter_kind_comes_from_the_one_ip_adapter_file() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: GenerateArgs,
        }
        let dir = std::env::temp_dir().join(format!("negimg-gen-kind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shapes = crate::pipeline::RandomPreset::Tiny.shapes();
        let plus = dir.join("plus.safetensors");
        crate::pipeline::write_random_adapter(
            &plus,
            AdapterKind::Plus,
            &shapes.unet,
            &shapes.vision,
            1,
        )
        .unwrap();
        let kind = |extra: &[&str]| {
            let mut args = vec!["x", "--ip-adapter", plus.to_str().unwrap()];
            args.extend_from_slice(extra);
            params(&Cli::try_parse_from(args).unwrap().a)
                .unwrap()
                .adapter
        };
        assert_eq!(kind(&[]), AdapterKind::Plus);
        assert_eq!(kind(&["--adapter", "base"]), AdapterKind::Base);
        // The file goes in the slot of --adapter where it is of that kind's family, else in
        // its own family's first kind's.
        let set = |extra: &[&str]| {
            let mut args = vec!["x", "--ip-adapter", plus.to_str().unwrap(), "--models", "m"];
            args.extend_from_slice(extra);
            model_set(&Cli::try_parse_from(args).unwrap().a).unwrap()
        };
        assert_eq!(
            set(&["--adapter", "plus_face"]).ip_adapter_plus_face,
            Some(plus.clone())
        );
        let other_family = set(&["--adapter", "full_face"]);
        assert_eq!(other_family.ip_adapter_plus, Some(plus.clone()));
        assert_eq!(other_family.ip_adapter_full_face, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes_parse_as_wxh_or_square() {
        assert_eq!(parse_size("64").unwrap(), (64, 64));
        assert_eq!(parse_size("640x512").unwrap(), (640, 512));
        assert!(parse_size("big").is_err());
    }

    #[test]
    fn methods_parse_by_their_toml_names() {
        assert_eq!(parse_method("perp_neg").unwrap(), Method::PerpNeg);
        assert!(parse_method("perp").unwrap_err().contains("three_branch"));
        assert_eq!(parse_ip_scaling("kv_c").unwrap(), IpScaling::KvC);
        assert!(parse_ip_scaling("k+v").unwrap_err().contains("k_mean_v_c"));
        assert_eq!(parse_blocks("style").unwrap(), BlockWeights::Style);
        assert!(
            parse_blocks("4:0.5, 16:1")
                .unwrap_err()
                .contains("block 16")
        );
    }
}
