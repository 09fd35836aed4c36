//! The parameters of one generated image: what a grid cell resolves to and what the
//! pipeline consumes. Shared by `experiment`, `run`, `pipeline`, `scoring` and `report`.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// ip-adapter_sd15: projection of CLIP `image_embeds` to 4 tokens.
    Base,
    /// ip-adapter-plus_sd15: Resampler over `hidden_states[-2]`, 16 tokens.
    Plus,
}

/// What conditions the "unconditional" branch of classifier-free guidance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NegativeMode {
    /// Empty text and "no image" tokens.
    None,
    /// The negative text prompt, and "no image" tokens.
    Text,
    /// Empty text, and the negative image's tokens.
    Image,
    /// The negative text prompt and the negative image's tokens.
    Both,
}

impl NegativeMode {
    pub fn uses_text(self) -> bool {
        matches!(self, NegativeMode::Text | NegativeMode::Both)
    }
    pub fn uses_image(self) -> bool {
        matches!(self, NegativeMode::Image | NegativeMode::Both)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    Ddim,
    Euler,
    #[serde(rename = "dpmpp_2m")]
    DpmPp2m,
    #[serde(rename = "dpmpp_2m_karras")]
    DpmPp2mKarras,
}

/// How the "no image" tokens are made where a branch has no image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoImage {
    /// The reference implementation's: zero CLIP embedding (base), zero normalized pixels (Plus).
    #[default]
    Reference,
    /// ComfyUI's: the encoding of an all-black image.
    Black,
}

/// How a cell uses its negative image (see the README's "Negative methods").
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The negative image's tokens replace the "no image" tokens of the uncond branch.
    #[default]
    Uncond,
    /// The cond branch gets the tokens of `e_pos - neg_embed_scale * e_neg` (image encoder
    /// output, before the adapter's projection); the uncond branch the "no image" tokens.
    Subtract,
    /// Rows uncond, cond and negative: `e0 + cfg (e+ - e0) - neg_cfg (e- - e0)`.
    ThreeBranch,
    /// The same rows; the negative direction's part orthogonal to the positive one.
    PerpNeg,
    /// NegToMe alone: two rows without the negative image's tokens (uncond: "no image"),
    /// the negative image used only by the token merge (see [`GenParams::negtome_image`]).
    Negtome,
}

impl Method {
    pub fn is_uncond(&self) -> bool {
        *self == Method::Uncond
    }
    /// UNet rows per cell and step.
    pub fn rows(self) -> usize {
        match self {
            Method::Uncond | Method::Subtract | Method::Negtome => 2,
            Method::ThreeBranch | Method::PerpNeg => 3,
        }
    }
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

fn is_false(x: &bool) -> bool {
    !*x
}

/// NegToMe's defaults: α 0.9 (the reference code's), threshold 0.65 (the reference code has
/// 0.7), active for timesteps 800 <= t <= 1000 (the reference code's `merging_t_end` and
/// `merging_t_start`).
pub const NEGTOME_ALPHA: f64 = 0.9;
pub const NEGTOME_THRESHOLD: f64 = 0.65;
pub const NEGTOME_T_MIN: f64 = 800.0;
pub const NEGTOME_T_MAX: f64 = 1000.0;

fn negtome_alpha() -> f64 {
    NEGTOME_ALPHA
}
fn is_negtome_alpha(x: &f64) -> bool {
    *x == NEGTOME_ALPHA
}
fn negtome_threshold() -> f64 {
    NEGTOME_THRESHOLD
}
fn is_negtome_threshold(x: &f64) -> bool {
    *x == NEGTOME_THRESHOLD
}
fn negtome_t_min() -> f64 {
    NEGTOME_T_MIN
}
fn is_negtome_t_min(x: &f64) -> bool {
    *x == NEGTOME_T_MIN
}
fn negtome_t_max() -> f64 {
    NEGTOME_T_MAX
}
fn is_negtome_t_max(x: &f64) -> bool {
    *x == NEGTOME_T_MAX
}

macro_rules! display_as_serde {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let value = serde_json::to_value(self).map_err(|_| fmt::Error)?;
                f.write_str(value.as_str().ok_or(fmt::Error)?)
            }
        }
    )*};
}
display_as_serde!(AdapterKind, NegativeMode, SchedulerKind, NoImage, Method);

/// An IP-Adapter image weight and its active window, for one CFG branch.
///
/// Window: with N sampling steps, step i (0-based) is active iff `start <= i/N < end`.
/// Inactive steps use weight 0 (the image tokens are ignored at that step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BranchWeight {
    pub weight: f64,
    pub start: f64,
    pub end: f64,
}

impl BranchWeight {
    pub fn active(&self, step: usize, steps: usize) -> bool {
        let t = step as f64 / steps as f64;
        self.start <= t && t < self.end
    }
    /// The weight that applies at `step` of `steps`.
    pub fn at(&self, step: usize, steps: usize) -> f64 {
        if self.active(step, steps) {
            self.weight
        } else {
            0.0
        }
    }
}

/// One UNet row of a cell: the two CFG branches, and the third row of the three-row methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// The uncond branch (ε∅ for the three-row methods).
    Uncond,
    Cond,
    /// The negative branch (ε₋) of `three_branch` and `perp_neg`.
    Negative,
}

/// What a row's image tokens are made of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowImage<'a> {
    /// The "no image" tokens.
    NoImage,
    Image(&'a PathBuf),
    /// `subtract`: the tokens of `e(positive) - scale * e(negative)` (e: the encoder output
    /// the adapter projects; a missing positive image counts as "no image").
    Subtract {
        positive: Option<&'a PathBuf>,
        negative: &'a PathBuf,
        scale: f64,
    },
}

fn row_image(p: Option<&PathBuf>) -> RowImage<'_> {
    p.map_or(RowImage::NoImage, RowImage::Image)
}

/// Everything that determines one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub negative: NegativeMode,
    /// Positive image prompt (cond branch); `None`: "no image" tokens.
    pub positive_image: Option<PathBuf>,
    /// Negative image prompt (uncond branch, when `negative` uses images).
    pub negative_image: Option<PathBuf>,
    pub adapter: AdapterKind,
    /// Cond branch weight and window.
    pub positive: BranchWeight,
    /// Uncond branch weight and window (defaults to the positive ones, as in the official
    /// IP-Adapter where one scale multiplies both branches).
    pub negative_branch: BranchWeight,
    pub cfg: f64,
    pub steps: usize,
    pub scheduler: SchedulerKind,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub no_image: NoImage,
    /// New fields are left out of the JSON at their defaults, so that the cell ids of
    /// experiments made before them (hashes of this struct's JSON) do not change.
    #[serde(default, skip_serializing_if = "Method::is_uncond")]
    pub method: Method,
    /// `subtract`: how much of the negative embedding is taken off the positive one.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub neg_embed_scale: f64,
    /// Three-row methods: the negative's guidance scale; `None`: `cfg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neg_cfg: Option<f64>,
    /// NegToMe on top of `method` (`method = negtome` implies it): see
    /// [`GenParams::negtome_image`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub negtome: bool,
    /// NegToMe: a merged token x becomes `x + alpha * (x - r*)`.
    #[serde(default = "negtome_alpha", skip_serializing_if = "is_negtome_alpha")]
    pub negtome_alpha: f64,
    /// NegToMe: tokens merge when their best cosine similarity is above this.
    #[serde(
        default = "negtome_threshold",
        skip_serializing_if = "is_negtome_threshold"
    )]
    pub negtome_threshold: f64,
    /// NegToMe is active at the steps whose timestep t has `t_min <= t <= t_max`.
    #[serde(default = "negtome_t_min", skip_serializing_if = "is_negtome_t_min")]
    pub negtome_t_min: f64,
    #[serde(default = "negtome_t_max", skip_serializing_if = "is_negtome_t_max")]
    pub negtome_t_max: f64,
}

impl GenParams {
    /// The demo's defaults: 25 DDIM steps, CFG 7.5, 512x512, weight 1 over the whole run.
    pub fn new(seed: u64) -> Self {
        let full = BranchWeight {
            weight: 1.0,
            start: 0.0,
            end: 1.0,
        };
        GenParams {
            prompt: String::new(),
            negative_prompt: String::new(),
            negative: NegativeMode::Image,
            positive_image: None,
            negative_image: None,
            adapter: AdapterKind::Base,
            positive: full,
            negative_branch: full,
            cfg: 7.5,
            steps: 25,
            scheduler: SchedulerKind::Ddim,
            seed,
            width: 512,
            height: 512,
            no_image: NoImage::Reference,
            method: Method::Uncond,
            neg_embed_scale: 1.0,
            neg_cfg: None,
            negtome: false,
            negtome_alpha: NEGTOME_ALPHA,
            negtome_threshold: NEGTOME_THRESHOLD,
            negtome_t_min: NEGTOME_T_MIN,
            negtome_t_max: NEGTOME_T_MAX,
        }
    }

    /// Whether NegToMe is on: `negtome = true` or `method = negtome`.
    pub fn negtome_on(&self) -> bool {
        self.negtome || self.method == Method::Negtome
    }

    /// The reference image of NegToMe's token merge: the negative image, when NegToMe is on
    /// and `negative` uses images (as the IP-Adapter methods read it).
    pub fn negtome_image(&self) -> Option<&PathBuf> {
        self.uncond_image().filter(|_| self.negtome_on())
    }

    /// Whether the merge applies at (scheduler) timestep `t`.
    pub fn negtome_active(&self, t: f64) -> bool {
        self.negtome_image().is_some() && self.negtome_t_min <= t && t <= self.negtome_t_max
    }

    /// The negative guidance scale in effect.
    pub fn neg_cfg(&self) -> f64 {
        self.neg_cfg.unwrap_or(self.cfg)
    }

    /// The negative text actually used by the uncond branch (the negative row of the
    /// three-row methods).
    pub fn uncond_text(&self) -> &str {
        if self.negative.uses_text() {
            &self.negative_prompt
        } else {
            ""
        }
    }

    /// The negative image actually used by the uncond branch.
    pub fn uncond_image(&self) -> Option<&PathBuf> {
        if self.negative.uses_image() {
            self.negative_image.as_ref()
        } else {
            None
        }
    }

    /// The rows of this cell, in the order the UNet sees them (see `sampling::guidance`).
    pub fn rows(&self) -> &'static [Row] {
        match self.method.rows() {
            2 => &[Row::Uncond, Row::Cond],
            _ => &[Row::Uncond, Row::Cond, Row::Negative],
        }
    }

    /// The text of `row`. The three-row methods' uncond row is unconditioned (empty text);
    /// their negative row takes the negative text when `negative` uses text.
    pub fn row_text(&self, row: Row) -> &str {
        match (row, self.method.rows()) {
            (Row::Cond, _) => &self.prompt,
            (Row::Uncond, 3) => "",
            _ => self.uncond_text(),
        }
    }

    /// The image of `row`.
    pub fn row_image(&self, row: Row) -> RowImage<'_> {
        match (row, self.method) {
            (Row::Cond, Method::Subtract) => match self.uncond_image() {
                Some(negative) => RowImage::Subtract {
                    positive: self.positive_image.as_ref(),
                    negative,
                    scale: self.neg_embed_scale,
                },
                None => row_image(self.positive_image.as_ref()),
            },
            (Row::Cond, _) => row_image(self.positive_image.as_ref()),
            (Row::Uncond, Method::Uncond) | (Row::Negative, _) => row_image(self.uncond_image()),
            (Row::Uncond, _) => RowImage::NoImage,
        }
    }

    /// The weight and window of `row`: the uncond row of the three-row methods (ε∅, "no
    /// image" tokens) takes the positive branch's, as the official IP-Adapter weights its
    /// "no image" tokens with the one scale; the negative row takes the negative branch's.
    pub fn row_weight(&self, row: Row) -> BranchWeight {
        match (row, self.method.rows()) {
            (Row::Cond, _) | (Row::Uncond, 3) => self.positive,
            _ => self.negative_branch,
        }
    }

    /// The parameters that decide the image: the negative image dropped where the mode
    /// ignores it (cells that differ only there make the same image).
    pub fn effective(&self) -> GenParams {
        GenParams {
            negative_image: self.uncond_image().cloned(),
            ..self.clone()
        }
    }

    /// Cells that can share one UNet call per step: same steps, size, scheduler, adapter kind.
    /// Methods may mix: a batch's rows are laid out per cell (`sampling::guidance`).
    pub fn batch_key(&self) -> (usize, usize, usize, SchedulerKind, AdapterKind) {
        (
            self.steps,
            self.width,
            self.height,
            self.scheduler,
            self.adapter,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_active_from_its_first_step_not_one_late() {
        let w = BranchWeight {
            weight: 0.7,
            start: 0.2,
            end: 0.6,
        };
        let active: Vec<usize> = (0..10).filter(|&i| w.active(i, 10)).collect();
        assert_eq!(active, vec![2, 3, 4, 5]);
        assert_eq!(w.at(1, 10), 0.0);
        assert_eq!(w.at(2, 10), 0.7);
        let full = BranchWeight {
            weight: 1.0,
            start: 0.0,
            end: 1.0,
        };
        assert!((0..25).all(|i| full.active(i, 25)));
    }

    #[test]
    fn rows_follow_the_method() {
        let mut p = GenParams::new(1);
        p.prompt = "house".into();
        p.negative_prompt = "grass".into();
        p.negative = NegativeMode::Both;
        let (pos, neg): (PathBuf, PathBuf) = ("house.png".into(), "lawn.png".into());
        p.positive_image = Some(pos.clone());
        p.negative_image = Some(neg.clone());
        p.negative_branch.weight = 0.4;
        assert_eq!(p.row_image(Row::Uncond), RowImage::Image(&neg));
        assert_eq!(p.row_text(Row::Uncond), "grass");
        p.method = Method::Subtract;
        p.neg_embed_scale = 0.5;
        assert_eq!(p.row_image(Row::Uncond), RowImage::NoImage);
        let sub = RowImage::Subtract {
            positive: Some(&pos),
            negative: &neg,
            scale: 0.5,
        };
        assert_eq!(p.row_image(Row::Cond), sub);
        p.method = Method::PerpNeg;
        assert_eq!(p.rows().len(), 3);
        assert_eq!(
            (p.row_text(Row::Uncond), p.row_text(Row::Negative)),
            ("", "grass")
        );
        assert_eq!(p.row_image(Row::Uncond), RowImage::NoImage);
        assert_eq!(p.row_image(Row::Negative), RowImage::Image(&neg));
        assert_eq!(p.row_weight(Row::Uncond).weight, 1.0);
        assert_eq!(p.row_weight(Row::Negative).weight, 0.4);
        assert_eq!(p.neg_cfg(), p.cfg);
    }

    #[test]
    fn enums_display_as_their_toml_names() {
        assert_eq!(SchedulerKind::DpmPp2mKarras.to_string(), "dpmpp_2m_karras");
        assert_eq!(NegativeMode::Both.to_string(), "both");
        assert_eq!(AdapterKind::Plus.to_string(), "plus");
    }

    #[test]
    fn uncond_branch_uses_only_what_the_mode_names() {
        let mut p = GenParams::new(1);
        p.negative_prompt = "grass".into();
        p.negative_image = Some("lawn.png".into());
        p.negative = NegativeMode::Text;
        assert_eq!(p.uncond_text(), "grass");
        assert!(p.uncond_image().is_none());
        p.negative = NegativeMode::Image;
        assert_eq!(p.uncond_text(), "");
        assert!(p.uncond_image().is_some());
    }
}
