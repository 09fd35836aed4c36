//! One grid cell: the parameters of one image, with input images by their `[images.NAME]`.
use super::values::{Param, Value};
use crate::params::MethodParams;
use crate::params::{
    AdapterKind, BlockWeights, BranchWeight, GenParams, IpScaling, Method, MicroPair, NegOff,
    NegativeMode, NoImage, SchedulerKind, StepSet, Window,
};
use crate::sampling::methods;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq)]
pub struct CellSpec {
    pub prompt: String,
    pub negative_prompt: String,
    /// `None`: follows what the cell has (text if a negative prompt, image if a negative image).
    pub negative: Option<NegativeMode>,
    pub positive_image: Option<String>,
    pub negative_image: Option<String>,
    pub adapter: AdapterKind,
    pub weight: f64,
    pub start: f64,
    pub end: f64,
    /// `None`: the uncond branch takes the positive weight/window, as in the official
    /// IP-Adapter where one scale multiplies both branches.
    pub neg_weight: Option<f64>,
    pub neg_start: Option<f64>,
    pub neg_end: Option<f64>,
    pub cfg: f64,
    pub steps: usize,
    pub scheduler: SchedulerKind,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub no_image: NoImage,
    pub method: Method,
    pub neg_embed_scale: f64,
    /// `None`: `cfg`.
    pub neg_cfg: Option<f64>,
    pub window: Window,
    pub blocks: BlockWeights,
    /// `None`: `blocks`, as the negative weight follows the positive one.
    pub neg_blocks: Option<BlockWeights>,
    pub ip_scaling: IpScaling,
    pub negtome: bool,
    pub negtome_alpha: f64,
    pub negtome_threshold: f64,
    pub negtome_t_min: f64,
    pub negtome_t_max: f64,
    /// The negative methods' own parameters set by the file (`sampling::methods`).
    pub method_params: BTreeMap<&'static str, f64>,
    /// The `[subjects.NAME]` whose images the cell has (a label: the images decide the image).
    pub subject: Option<String>,
    /// The positive branch's steps, in place of `start`/`end`.
    pub steps_at: Option<StepSet>,
    /// `None`: `steps_at` when the negative window is not set either (the negative branch
    /// follows the positive one), else the negative window.
    pub neg_steps_at: Option<StepSet>,
    pub neg_off: NegOff,
    /// The steps whose x̂₀ is saved.
    pub trace: Option<StepSet>,
    /// SDXL's micro-conditioning; `None` sizes: the image's own.
    pub original_size: Option<MicroPair>,
    pub crops_coords_top_left: MicroPair,
    pub target_size: Option<MicroPair>,
    /// The same for the rows other than the cond row; `None`: the cond row's.
    pub negative_original_size: Option<MicroPair>,
    pub negative_crops_coords_top_left: Option<MicroPair>,
    pub negative_target_size: Option<MicroPair>,
}

impl Default for CellSpec {
    /// The seed demo's set-up: DDIM 25 steps, CFG 7.5, 512x512, weight 1 over the whole run.
    fn default() -> Self {
        let p = GenParams::new(0);
        CellSpec {
            prompt: p.prompt,
            negative_prompt: p.negative_prompt,
            negative: None,
            positive_image: None,
            negative_image: None,
            adapter: p.adapter,
            weight: p.positive.weight,
            start: p.positive.start,
            end: p.positive.end,
            neg_weight: None,
            neg_start: None,
            neg_end: None,
            cfg: p.cfg,
            steps: p.steps,
            scheduler: p.scheduler,
            seed: 0,
            width: p.width,
            height: p.height,
            no_image: p.no_image,
            method: p.method,
            neg_embed_scale: p.neg_embed_scale,
            neg_cfg: p.neg_cfg,
            window: p.window,
            blocks: p.blocks,
            neg_blocks: None,
            ip_scaling: p.ip_scaling,
            negtome: p.negtome,
            negtome_alpha: p.negtome_alpha,
            negtome_threshold: p.negtome_threshold,
            negtome_t_min: p.negtome_t_min,
            negtome_t_max: p.negtome_t_max,
            method_params: BTreeMap::new(),
            subject: None,
            steps_at: None,
            neg_steps_at: None,
            neg_off: p.neg_off,
            trace: None,
            original_size: p.original_size,
            crops_coords_top_left: p.crops_coords_top_left,
            target_size: p.target_size,
            negative_original_size: p.negative_original_size,
            negative_crops_coords_top_left: p.negative_crops_coords_top_left,
            negative_target_size: p.negative_target_size,
        }
    }
}

impl CellSpec {
    pub fn set(&mut self, param: Param, value: &Value) {
        match (param, value) {
            (Param::Prompt, Value::Text(s)) => self.prompt = s.clone(),
            (Param::NegativePrompt, Value::Text(s)) => self.negative_prompt = s.clone(),
            (Param::Negative, Value::Negative(m)) => self.negative = Some(*m),
            (Param::PositiveImage, Value::Image(i)) => self.positive_image = i.clone(),
            (Param::NegativeImage, Value::Image(i)) => self.negative_image = i.clone(),
            (Param::Adapter, Value::Adapter(a)) => self.adapter = *a,
            (Param::Weight, Value::Num(x)) => self.weight = *x,
            (Param::Start, Value::Num(x)) => self.start = *x,
            (Param::End, Value::Num(x)) => self.end = *x,
            (Param::NegWeight, Value::Num(x)) => self.neg_weight = Some(*x),
            (Param::NegStart, Value::Num(x)) => self.neg_start = Some(*x),
            (Param::NegEnd, Value::Num(x)) => self.neg_end = Some(*x),
            (Param::Cfg, Value::Num(x)) => self.cfg = *x,
            (Param::Steps, Value::Int(n)) => self.steps = *n as usize,
            (Param::Scheduler, Value::Scheduler(s)) => self.scheduler = *s,
            (Param::Seed, Value::Int(n)) => self.seed = *n,
            (Param::NoImage, Value::NoImage(n)) => self.no_image = *n,
            (Param::Method, Value::Method(m)) => self.method = *m,
            (Param::NegEmbedScale, Value::Num(x)) => self.neg_embed_scale = *x,
            (Param::NegCfg, Value::Num(x)) => self.neg_cfg = Some(*x),
            (Param::Window, Value::Window(w)) => self.window = *w,
            (Param::Blocks, Value::Blocks(b)) => self.blocks = b.clone(),
            (Param::NegBlocks, Value::Blocks(b)) => self.neg_blocks = Some(b.clone()),
            (Param::IpScaling, Value::IpScaling(s)) => self.ip_scaling = *s,
            (Param::Negtome, Value::Bool(b)) => self.negtome = *b,
            (Param::NegtomeAlpha, Value::Num(x)) => self.negtome_alpha = *x,
            (Param::NegtomeThreshold, Value::Num(x)) => self.negtome_threshold = *x,
            (Param::NegtomeTMin, Value::Num(x)) => self.negtome_t_min = *x,
            (Param::NegtomeTMax, Value::Num(x)) => self.negtome_t_max = *x,
            (Param::MethodParam(key), Value::Num(x)) => {
                self.method_params.insert(key, *x);
            }
            (Param::Subject, Value::Text(s)) => self.subject = Some(s.clone()),
            (Param::StepsAt, Value::Steps(s)) => self.steps_at = s.clone(),
            (Param::NegStepsAt, Value::Steps(s)) => self.neg_steps_at = s.clone(),
            (Param::NegOff, Value::NegOff(o)) => self.neg_off = *o,
            (Param::Trace, Value::Steps(s)) => self.trace = s.clone(),
            (Param::OriginalSize, Value::Size(v)) => self.original_size = *v,
            (Param::CropsCoordsTopLeft, Value::Size(v)) => {
                self.crops_coords_top_left = v.unwrap_or_default()
            }
            (Param::TargetSize, Value::Size(v)) => self.target_size = *v,
            (Param::NegativeOriginalSize, Value::Size(v)) => self.negative_original_size = *v,
            (Param::NegativeCropsCoordsTopLeft, Value::Size(v)) => {
                self.negative_crops_coords_top_left = *v
            }
            (Param::NegativeTargetSize, Value::Size(v)) => self.negative_target_size = *v,
            (p, v) => unreachable!("values.rs reads {p} as {v:?}"),
        }
    }

    /// The negative mode in effect.
    pub fn negative_mode(&self) -> NegativeMode {
        self.negative.unwrap_or(
            match (
                !self.negative_prompt.is_empty(),
                self.negative_image.is_some(),
            ) {
                (false, false) => NegativeMode::None,
                (true, false) => NegativeMode::Text,
                (false, true) => NegativeMode::Image,
                (true, true) => NegativeMode::Both,
            },
        )
    }

    pub fn positive_branch(&self) -> BranchWeight {
        BranchWeight {
            weight: self.weight,
            start: self.start,
            end: self.end,
        }
    }

    pub fn negative_branch(&self) -> BranchWeight {
        BranchWeight {
            weight: self.neg_weight.unwrap_or(self.weight),
            start: self.neg_start.unwrap_or(self.start),
            end: self.neg_end.unwrap_or(self.end),
        }
    }

    /// The negative branch's step set in effect.
    pub fn neg_steps_at(&self) -> Option<&StepSet> {
        let window_set = self.neg_start.is_some() || self.neg_end.is_some();
        self.neg_steps_at
            .as_ref()
            .or_else(|| self.steps_at.as_ref().filter(|_| !window_set))
    }

    /// The negative branch's block weights in effect.
    pub fn neg_blocks(&self) -> &BlockWeights {
        self.neg_blocks.as_ref().unwrap_or(&self.blocks)
    }

    /// The value of `param` in effect in this cell, as records.csv shows it.
    pub fn get(&self, param: Param) -> Value {
        let neg = self.negative_branch();
        match param {
            Param::Prompt => Value::Text(self.prompt.clone()),
            Param::NegativePrompt => Value::Text(self.negative_prompt.clone()),
            Param::Negative => Value::Negative(self.negative_mode()),
            Param::PositiveImage => Value::Image(self.positive_image.clone()),
            Param::NegativeImage => Value::Image(self.negative_image.clone()),
            Param::Adapter => Value::Adapter(self.adapter),
            Param::Weight => Value::Num(self.weight),
            Param::Start => Value::Num(self.start),
            Param::End => Value::Num(self.end),
            Param::NegWeight => Value::Num(neg.weight),
            Param::NegStart => Value::Num(neg.start),
            Param::NegEnd => Value::Num(neg.end),
            Param::Cfg => Value::Num(self.cfg),
            Param::Steps => Value::Int(self.steps as u64),
            Param::Scheduler => Value::Scheduler(self.scheduler),
            Param::Seed => Value::Int(self.seed),
            Param::NoImage => Value::NoImage(self.no_image),
            Param::Method => Value::Method(self.method),
            Param::NegEmbedScale => Value::Num(self.neg_embed_scale),
            Param::NegCfg => Value::Num(self.neg_cfg.unwrap_or(self.cfg)),
            Param::Window => Value::Window(self.window),
            Param::Blocks => Value::Blocks(self.blocks.clone()),
            Param::NegBlocks => Value::Blocks(self.neg_blocks().clone()),
            Param::IpScaling => Value::IpScaling(self.ip_scaling),
            Param::Negtome => Value::Bool(self.negtome),
            Param::NegtomeAlpha => Value::Num(self.negtome_alpha),
            Param::NegtomeThreshold => Value::Num(self.negtome_threshold),
            Param::NegtomeTMin => Value::Num(self.negtome_t_min),
            Param::NegtomeTMax => Value::Num(self.negtome_t_max),
            Param::MethodParam(key) => Value::Num(self.method_param(key)),
            Param::Subject => Value::Text(self.subject.clone().unwrap_or_default()),
            Param::StepsAt => Value::Steps(self.steps_at.clone()),
            Param::NegStepsAt => Value::Steps(self.neg_steps_at().cloned()),
            Param::NegOff => Value::NegOff(self.neg_off),
            Param::Trace => Value::Steps(self.trace.clone()),
            Param::OriginalSize => Value::Size(self.original_size),
            Param::CropsCoordsTopLeft => Value::Size(Some(self.crops_coords_top_left)),
            Param::TargetSize => Value::Size(self.target_size),
            Param::NegativeOriginalSize => Value::Size(self.negative_original_size),
            Param::NegativeCropsCoordsTopLeft => Value::Size(self.negative_crops_coords_top_left),
            Param::NegativeTargetSize => Value::Size(self.negative_target_size),
        }
    }

    /// The value of method parameter `key` in this cell: set, or its default.
    pub fn method_param(&self, key: &str) -> f64 {
        self.method_params
            .get(key)
            .copied()
            .or_else(|| methods::param(key).map(|p| p.default))
            .expect("Param::MethodParam holds a declared key")
    }

    /// The method parameters as the pipeline takes them: those away from their default.
    fn gen_method_params(&self) -> MethodParams {
        let mut out = MethodParams::default();
        for (key, x) in &self.method_params {
            let default = methods::param(key).map_or(f64::NAN, |p| p.default);
            out.set(key, *x, default);
        }
        out
    }

    /// The pipeline's parameters, with each `[images.NAME]` replaced by `image_path(NAME)`.
    pub fn params(&self, image_path: &dyn Fn(&str) -> PathBuf) -> GenParams {
        GenParams {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            negative: self.negative_mode(),
            positive_image: self.positive_image.as_deref().map(image_path),
            negative_image: self.negative_image.as_deref().map(image_path),
            adapter: self.adapter,
            positive: self.positive_branch(),
            negative_branch: self.negative_branch(),
            cfg: self.cfg,
            steps: self.steps,
            scheduler: self.scheduler,
            seed: self.seed,
            width: self.width,
            height: self.height,
            no_image: self.no_image,
            method: self.method,
            neg_embed_scale: self.neg_embed_scale,
            neg_cfg: self.neg_cfg,
            window: self.window,
            blocks: self.blocks.clone(),
            neg_blocks: self.neg_blocks().clone(),
            ip_scaling: self.ip_scaling,
            negtome: self.negtome,
            negtome_alpha: self.negtome_alpha,
            negtome_threshold: self.negtome_threshold,
            negtome_t_min: self.negtome_t_min,
            negtome_t_max: self.negtome_t_max,
            method_params: self.gen_method_params(),
            steps_at: self.steps_at.clone(),
            neg_steps_at: self.neg_steps_at().cloned(),
            neg_off: self.neg_off,
            trace: self.trace.clone(),
            original_size: self.original_size,
            crops_coords_top_left: self.crops_coords_top_left,
            target_size: self.target_size,
            negative_original_size: self.negative_original_size,
            negative_crops_coords_top_left: self.negative_crops_coords_top_left,
            negative_target_size: self.negative_target_size,
        }
        .own_sizes_as_auto()
    }

    /// `weight=0.5 negative=image seed=3`: the values of `params` in this cell.
    pub fn describe(&self, params: &[Param]) -> String {
        params
            .iter()
            .map(|&p| format!("{p}={}", self.get(p)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_mode_follows_what_the_cell_has_unless_set() {
        let mut c = CellSpec::default();
        assert_eq!(c.negative_mode(), NegativeMode::None);
        c.negative_image = Some("lawn".into());
        assert_eq!(c.negative_mode(), NegativeMode::Image);
        c.negative_prompt = "grass".into();
        assert_eq!(c.negative_mode(), NegativeMode::Both);
        c.negative = Some(NegativeMode::Text);
        assert_eq!(c.negative_mode(), NegativeMode::Text);
    }

    #[test]
    fn uncond_branch_takes_the_positive_weight_and_window_unless_set() {
        let mut c = CellSpec {
            weight: 0.6,
            start: 0.2,
            ..CellSpec::default()
        };
        assert_eq!(c.negative_branch(), c.positive_branch());
        c.neg_weight = Some(0.3);
        let n = c.negative_branch();
        assert_eq!((n.weight, n.start, n.end), (0.3, 0.2, 1.0));
        let p = c.params(&|name| PathBuf::from(format!("inputs/{name}.png")));
        assert_eq!(p.negative_branch.weight, 0.3);
        assert_eq!(p.positive.weight, 0.6);
    }
}
