//! The parameters of one generated image: what a grid cell resolves to and what the
//! pipeline consumes. Shared by `experiment`, `run`, `pipeline`, `scoring` and `report`.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

pub use crate::steps::StepSet;

/// Which IP-Adapter a cell uses: the `[models] ip_adapter` entry of that name. Kinds of one
/// projection family (base and light; plus and plus_face) have files of identical shapes, so
/// the name given is trusted among them; the family is checked against the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// ip-adapter_sd15 (also ip-adapter_sd15_vit-G, ip-adapter_sdxl, ip-adapter_sdxl_vit-h):
    /// linear projection of CLIP `image_embeds` to 4 tokens.
    Base,
    /// ip-adapter-plus_sd15 (also ip-adapter-plus_sdxl_vit-h): Resampler over
    /// `hidden_states[-2]`, 16 tokens.
    Plus,
    /// ip-adapter_sd15_light: the base projection, weights trained to follow the text more.
    Light,
    /// ip-adapter-plus-face_sd15 (also ip-adapter-plus-face_sdxl_vit-h): the Plus Resampler,
    /// weights trained on cropped faces.
    PlusFace,
    /// ip-adapter-full-face_sd15: an MLP over all `hidden_states[-2]` tokens (257 for ViT-H).
    FullFace,
}

impl AdapterKind {
    /// Every kind, in the order of `[models] ip_adapter`'s keys.
    pub const ALL: [AdapterKind; 5] = [
        AdapterKind::Base,
        AdapterKind::Plus,
        AdapterKind::Light,
        AdapterKind::PlusFace,
        AdapterKind::FullFace,
    ];

    /// The names `adapter` takes, for messages.
    pub const NAMES: &'static str = "base, plus, light, plus_face, full_face";
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
    /// Euler ancestral (A1111's "Euler a"): fresh noise at every step. Last, so that the
    /// order of the older kinds is unchanged.
    EulerAncestral,
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
    /// The cond row attends to the negative image too, at weight `-neg_weight`.
    CondNegative,
    /// SEGA: the negative as a reversed semantic-guidance concept (masked, with momentum).
    Sega,
    /// Dynamic Negative Guidance: the negative's scale follows a posterior estimate.
    Dng,
    /// Normalized Attention Guidance: the cond row's cross-attention guided away from its
    /// output with the negative image's tokens.
    Nag,
}

impl Method {
    /// The TOML names, in `sampling::methods::REGISTRY` order.
    pub const NAMES: &'static str =
        "uncond, subtract, three_branch, perp_neg, negtome, cond_negative, sega, dng, nag";

    pub fn is_uncond(&self) -> bool {
        *self == Method::Uncond
    }
    /// Whether this method has anything of the cell's negative to act with, `negative` being
    /// what the cell's negative holds (README, "A method with nothing to subtract"). A cell
    /// whose method has not is made as the same cell with `method = uncond` (with `negative =
    /// none`, the baseline) and shares that cell's image file ([`GenParams::effective`]);
    /// `negimg plan` lists such cells. Every method declares this.
    pub fn has_something_to_subtract(self, negative: NegativeMode) -> bool {
        match self {
            // Its uncond row is the negative, whatever it holds: with nothing, the baseline.
            Method::Uncond => true,
            // Only the negative image acts; the negative text goes to the uncond row, as
            // with `uncond`, so without the image the rows are `uncond`'s.
            Method::Subtract | Method::Negtome | Method::Nag => negative.uses_image(),
            // Without the image, its second image-attention term is gone and it is two-row
            // guidance with one adapter: made as `uncond` by definition (its uncond row
            // would weigh the "no image" tokens by `weight`, not `neg_weight`).
            Method::CondNegative => negative.uses_image(),
            // The negative (concept) row takes the negative's text and image: with neither it
            // is the "no image" row again, and guiding away from it subtracts nothing.
            Method::ThreeBranch | Method::PerpNeg | Method::Sega | Method::Dng => {
                negative != NegativeMode::None
            }
        }
    }

    /// The method a cell of this method is made with when its negative holds `negative`:
    /// itself, or `uncond` where it has nothing to subtract.
    pub fn effective(self, negative: NegativeMode) -> Method {
        if self.has_something_to_subtract(negative) {
            self
        } else {
            Method::Uncond
        }
    }
}

/// How a branch's weight enters the image attention of a cross-attention layer, as ComfyUI
/// IP-Adapter's `embeds_scaling` (README, "Per-block weights and IP scaling"). With `w` the
/// weight, `K`, `V` the image keys and values, `C` the layer's width (320, 640 or 1280 in
/// SD1.5) and `m` the mean of `V` over the image tokens:
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum IpScaling {
    /// `w · Attn(q, K, V)` ("V only"; the official IP-Adapter's).
    #[default]
    #[serde(rename = "v")]
    V,
    /// `Attn(q, w·K, w·V)` ("K+V").
    #[serde(rename = "kv")]
    Kv,
    /// `Attn(q, w'·K, w'·V)`, `w' = w·C/1280` ("K+V w/ C penalty").
    #[serde(rename = "kv_c")]
    KvC,
    /// `Attn(q, w'·K, (V − m) + w'·m)`, `w' = w·C/1280` ("K+mean(V) w/ C penalty").
    #[serde(rename = "k_mean_v_c")]
    KMeanVC,
}

impl IpScaling {
    pub const NAMES: &'static str = "v, kv, kv_c, k_mean_v_c";

    pub fn is_v(&self) -> bool {
        *self == IpScaling::V
    }
}

/// The blocks of SD1.5's UNet that carry cross-attention, in the order the UNet runs them:
/// down 0–5, mid 6, up 7–15 (ComfyUI's `transformer_index`).
pub const SD15_BLOCKS: usize = 16;

/// The same for SDXL's UNet: down 0–3 (`down_blocks.1` 0–1, `down_blocks.2` 2–3), mid 4,
/// up 5–10 (`up_blocks.0` 5–7, `up_blocks.1` 8–10); ComfyUI's `transformer_index` counts one
/// per transformer, not its 2 or 10 inner layers.
pub const SDXL_BLOCKS: usize = 11;

/// The block layouts ComfyUI_IPAdapter_plus defines its weight-type presets on, told apart
/// as it does (`CrossAttentionPatch.py`: `layers = 11` for SDXL, else 16) by the count of
/// cross-attention transformers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BlockLayout {
    Sd15,
    Sdxl,
}

impl BlockLayout {
    pub fn of(blocks: usize) -> Option<BlockLayout> {
        match blocks {
            SD15_BLOCKS => Some(BlockLayout::Sd15),
            SDXL_BLOCKS => Some(BlockLayout::Sdxl),
            _ => None,
        }
    }
}

/// IP-Adapter weight per cross-attention block for one branch: a factor per block that
/// multiplies the branch weight. Blocks are numbered in execution order, one per
/// transformer (`Transformer2DModel`), as ComfyUI's `transformer_index`: SD1.5 has 16 (down
/// 0–5, mid 6, up 7–15), SDXL 11 (down 0–3, mid 4, up 5–10).
/// Written as `all`, a preset name, or `"i:w, i:w"` (unlisted blocks 0).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum BlockWeights {
    /// Every block at the branch weight.
    #[default]
    All,
    /// ComfyUI's "style transfer": SD1.5 blocks 0–3 and 9–15; SDXL block 6.
    Style,
    /// ComfyUI's "composition": SD1.5 block 4 at 0.25, block 5 at 1; SDXL block 3.
    Composition,
    /// ComfyUI's "strong style transfer": SD1.5 every block but 4 and 5; SDXL every block
    /// but 3.
    StrongStyle,
    /// ComfyUI's "style and composition" at its default composition weight (1): the union of
    /// `style` and `composition`.
    StyleAndComposition,
    /// Explicit factors by block index, sorted by index, each index once.
    List(Vec<(usize, f64)>),
}

impl BlockWeights {
    pub const PRESETS: &'static str =
        "all, style, composition, strong_style, style_and_composition";

    pub fn is_all(&self) -> bool {
        *self == BlockWeights::All
    }

    /// The (block, factor) pairs of a preset or list on SD1.5's layout; `None` for `all`.
    pub fn pairs(&self) -> Option<Vec<(usize, f64)>> {
        self.pairs_on(BlockLayout::Sd15)
    }

    /// The (block, factor) pairs on `layout`: a preset as ComfyUI_IPAdapter_plus's
    /// `ipadapter_execute` gives that weight type on SD1.5 or SDXL (`is_sdxl`); `None` for
    /// `all`.
    pub fn pairs_on(&self, layout: BlockLayout) -> Option<Vec<(usize, f64)>> {
        let ones = |blocks: &mut dyn Iterator<Item = usize>| blocks.map(|b| (b, 1.0)).collect();
        let sdxl = layout == BlockLayout::Sdxl;
        Some(match self {
            BlockWeights::All => return None,
            BlockWeights::Style if sdxl => vec![(6, 1.0)],
            BlockWeights::Style => ones(&mut (0..4).chain(9..SD15_BLOCKS)),
            BlockWeights::Composition if sdxl => vec![(3, 1.0)],
            BlockWeights::Composition => vec![(4, 0.25), (5, 1.0)],
            BlockWeights::StrongStyle if sdxl => ones(&mut (0..3).chain(4..SDXL_BLOCKS)),
            BlockWeights::StrongStyle => ones(&mut (0..4).chain(6..SD15_BLOCKS)),
            BlockWeights::StyleAndComposition if sdxl => vec![(3, 1.0), (6, 1.0)],
            BlockWeights::StyleAndComposition => {
                let mut pairs: Vec<(usize, f64)> = ones(&mut (0..4).chain(9..SD15_BLOCKS));
                pairs.extend([(4, 0.25), (5, 1.0)]);
                pairs.sort_by_key(|(i, _)| *i);
                pairs
            }
            BlockWeights::List(pairs) => pairs.clone(),
        })
    }

    /// Whether these weights apply to a UNet with `blocks` cross-attention blocks: the
    /// presets are defined on SD1.5's 16 and SDXL's 11; a list's indices must exist.
    pub fn check(&self, blocks: usize) -> Result<(), String> {
        let layout = || {
            format!(
                "this UNet has {blocks} cross-attention blocks (SD1.5 has {SD15_BLOCKS}: down 0-5, mid 6, up 7-15; \
                 SDXL {SDXL_BLOCKS}: down 0-3, mid 4, up 5-10)"
            )
        };
        match self {
            BlockWeights::All => Ok(()),
            BlockWeights::List(pairs) => match pairs.iter().find(|(i, _)| *i >= blocks) {
                Some((i, _)) => Err(format!(
                    "block {i} of \"{self}\" does not exist: {}, numbered 0-{}",
                    layout(),
                    blocks.saturating_sub(1)
                )),
                None => Ok(()),
            },
            _ if BlockLayout::of(blocks).is_none() => Err(format!(
                "the preset \"{self}\" is defined on SD1.5's {SD15_BLOCKS} blocks and SDXL's \
                 {SDXL_BLOCKS} (ComfyUI's layouts), but {}; give the blocks as a list \"i:w, i:w\"",
                layout()
            )),
            _ => Ok(()),
        }
    }

    /// The factor of each of `blocks` blocks (call [`check`](Self::check) first: a preset
    /// on a layout that is neither SD1.5's nor SDXL's panics; blocks beyond the model's are
    /// ignored).
    pub fn factors(&self, blocks: usize) -> Vec<f64> {
        let layout = || {
            BlockLayout::of(blocks).unwrap_or_else(|| panic!("{}", self.check(blocks).unwrap_err()))
        };
        let pairs = match self {
            BlockWeights::All => None,
            BlockWeights::List(pairs) => Some(pairs.clone()),
            preset => preset.pairs_on(layout()),
        };
        match pairs {
            None => vec![1.0; blocks],
            Some(pairs) => {
                let mut f = vec![0.0; blocks];
                for (i, w) in pairs.into_iter().filter(|(i, _)| *i < blocks) {
                    f[i] = w;
                }
                f
            }
        }
    }
}

/// Largest factor magnitude of an explicit block list.
const MAX_BLOCK_FACTOR: f64 = 10.0;

impl std::str::FromStr for BlockWeights {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "all" => return Ok(BlockWeights::All),
            "style" => return Ok(BlockWeights::Style),
            "composition" => return Ok(BlockWeights::Composition),
            "strong_style" => return Ok(BlockWeights::StrongStyle),
            "style_and_composition" => return Ok(BlockWeights::StyleAndComposition),
            _ => {}
        }
        if !s.contains(':') {
            return Err(format!(
                "{s:?} is not one of {} nor a list \"i:w, i:w\" (block index: weight factor)",
                Self::PRESETS
            ));
        }
        let mut pairs: Vec<(usize, f64)> = vec![];
        for item in s.split(',') {
            let (i, w) = item
                .split_once(':')
                .ok_or_else(|| format!("{:?} in {s:?} is not \"index:weight\"", item.trim()))?;
            let i: usize = i
                .trim()
                .parse()
                .map_err(|_| format!("{:?} in {s:?} is not a block index (0-15)", i.trim()))?;
            let w: f64 = w
                .trim()
                .parse()
                .ok()
                .filter(|w: &f64| w.is_finite() && w.abs() <= MAX_BLOCK_FACTOR)
                .ok_or_else(|| {
                    format!(
                        "{:?} in {s:?} is not a weight factor between -{MAX_BLOCK_FACTOR} and {MAX_BLOCK_FACTOR}",
                        w.trim()
                    )
                })?;
            if i >= SD15_BLOCKS {
                return Err(format!(
                    "block {i} in {s:?}: blocks are numbered 0-{} (SD1.5: down 0-5, mid 6, up 7-15; SDXL: down 0-3, mid 4, up 5-10)",
                    SD15_BLOCKS - 1
                ));
            }
            if pairs.iter().any(|(j, _)| *j == i) {
                return Err(format!("block {i} appears twice in {s:?}"));
            }
            pairs.push((i, w));
        }
        pairs.sort_by_key(|(i, _)| *i);
        Ok(BlockWeights::List(pairs))
    }
}

impl fmt::Display for BlockWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockWeights::All => f.write_str("all"),
            BlockWeights::Style => f.write_str("style"),
            BlockWeights::Composition => f.write_str("composition"),
            BlockWeights::StrongStyle => f.write_str("strong_style"),
            BlockWeights::StyleAndComposition => f.write_str("style_and_composition"),
            BlockWeights::List(pairs) => {
                let items: Vec<String> = pairs.iter().map(|(i, w)| format!("{i}:{w}")).collect();
                f.write_str(&items.join(", "))
            }
        }
    }
}

/// As the text `all`, `style`, `4:0.25, 5:1` (TOML, JSON, records.csv).
impl Serialize for BlockWeights {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for BlockWeights {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One pair of SDXL's micro-conditioning (`add_time_ids`): a (height, width) size or a
/// (top, left) crop corner, in pixels; written `1024x768` (or `[1024, 768]` in a file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MicroPair(pub u32, pub u32);

impl MicroPair {
    /// Largest value accepted (SDXL was trained on sizes up to 2048; this leaves room).
    pub const MAX: u32 = 16384;

    pub fn is_zero(&self) -> bool {
        *self == MicroPair(0, 0)
    }
}

impl fmt::Display for MicroPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.0, self.1)
    }
}

impl std::str::FromStr for MicroPair {
    type Err = String;

    /// `1024x768`: first value, `x`, second value (whole numbers from 0 to [`MicroPair::MAX`]).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a pair such as \"1024x768\" or [1024, 768]");
        let (a, b) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let num = |t: &str| t.trim().parse::<u32>().map_err(|_| bad());
        MicroPair::new(num(a)?, num(b)?)
    }
}

impl MicroPair {
    /// A pair whose values are in range.
    pub fn new(a: u32, b: u32) -> Result<Self, String> {
        match [a, b].into_iter().find(|&x| x > MicroPair::MAX) {
            Some(x) => Err(format!(
                "{x} is out of range: it must be between 0 and {}",
                MicroPair::MAX
            )),
            None => Ok(MicroPair(a, b)),
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
/// Which sampling steps a branch's `start` and `end` fractions select (README, "Windows").
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// Fractions of the step count: with N steps, step i (0-based) is active iff
    /// `start <= i/N < end`.
    #[default]
    Steps,
    /// Fractions of the noise schedule, as ComfyUI's IP-Adapter nodes: a fraction p maps to
    /// the model's sigma at training timestep `(1 - p)·(T - 1)` (ComfyUI's
    /// `percent_to_sigma`), and step i is active iff `σ(end) <= σ_i <= σ(start)`, σ_i the
    /// noise level of that step.
    Sigma,
}

impl Window {
    pub fn is_steps(&self) -> bool {
        *self == Window::Steps
    }
}

/// What the negative branch's rows get at the steps where the branch is off (outside its
/// window or step set): README, "The off state".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum NegOff {
    /// IP scale 0: no image attention at all (ComfyUI's, and negimg's before `neg_off`).
    #[default]
    Zero,
    /// The "no image" tokens at the branch weight, as the `negative = "none"` baseline's
    /// uncond row has them: a probe then differs from its baseline at its steps only.
    NoImage,
}

impl NegOff {
    pub const NAMES: &'static str = "zero, no_image";

    pub fn is_zero(&self) -> bool {
        *self == NegOff::Zero
    }
}

/// What one row's image attention takes at one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowIp {
    /// The IP scale (before the per-block factors).
    pub weight: f64,
    /// The "no image" tokens in place of the row's own ([`NegOff::NoImage`] off steps).
    pub no_image_tokens: bool,
}

display_as_serde!(
    NegOff,
    AdapterKind,
    NegativeMode,
    SchedulerKind,
    NoImage,
    Method,
    Window,
    IpScaling
);

/// A fraction of the noise schedule as a noise level σ (`Window::Sigma`); implemented by the
/// sampling layer from the model's schedule.
pub trait PercentToSigma {
    fn percent_to_sigma(&self, fraction: f64) -> f64;
}

/// One sampling step as the window rules see it.
pub struct StepAt<'a> {
    /// 0-based step index.
    pub index: usize,
    pub steps: usize,
    /// The noise level σ of this step (`sqrt((1 - ᾱ_t) / ᾱ_t)` at its timestep for DDIM, the
    /// scheduler's sigma for Euler and DPM++).
    pub sigma: f64,
    pub schedule: &'a dyn PercentToSigma,
}

/// An IP-Adapter image weight and its active window, for one CFG branch.
///
/// Inactive steps use weight 0 (the image tokens are ignored at that step); which steps are
/// active is decided by the cell's [`Window`] rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BranchWeight {
    pub weight: f64,
    pub start: f64,
    pub end: f64,
}

impl BranchWeight {
    pub fn active(&self, window: Window, step: &StepAt) -> bool {
        match window {
            Window::Steps => {
                let t = step.index as f64 / step.steps as f64;
                self.start <= t && t < self.end
            }
            Window::Sigma => {
                // `start` is the earlier, noisier end of the window: the larger sigma.
                let high = step.schedule.percent_to_sigma(self.start);
                let low = step.schedule.percent_to_sigma(self.end);
                low <= step.sigma && step.sigma <= high
            }
        }
    }
    /// The weight that applies at `step`.
    pub fn at(&self, window: Window, step: &StepAt) -> f64 {
        if self.active(window, step) {
            self.weight
        } else {
            0.0
        }
    }
}

/// One UNet row of a cell: the two CFG branches, and the rows a method adds
/// (`sampling::methods`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// The parameters that belong to one negative method, by key (each method declares its
/// own, with defaults and ranges, in `sampling::methods`). Only values away from their
/// default are kept, so a cell's id is the same whether a key is left out or set to its
/// default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MethodParams(BTreeMap<String, f64>);

impl MethodParams {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value set for `key`, if it is not its default.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }

    /// Sets `key` to `value`; at `default` the key is dropped.
    pub fn set(&mut self, key: &str, value: f64, default: f64) {
        if value == default {
            self.0.remove(key);
        } else {
            self.0.insert(key.to_string(), value);
        }
    }
}

/// What cells of one batch share: steps, width, height, scheduler, adapter, ip_scaling.
pub type BatchKey = (usize, usize, usize, SchedulerKind, AdapterKind, IpScaling);

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
    /// Which steps `start`/`end` select, for both branches.
    #[serde(default, skip_serializing_if = "Window::is_steps")]
    pub window: Window,
    /// IP-Adapter weight per cross-attention block of the rows that take the `positive`
    /// branch ([`GenParams::row_blocks`]).
    #[serde(default, skip_serializing_if = "BlockWeights::is_all")]
    pub blocks: BlockWeights,
    /// The same for the rows that take `negative_branch`.
    #[serde(default, skip_serializing_if = "BlockWeights::is_all")]
    pub neg_blocks: BlockWeights,
    /// How the weights enter the image attention (every row of the cell).
    #[serde(default, skip_serializing_if = "IpScaling::is_v")]
    pub ip_scaling: IpScaling,
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
    /// The method's own parameters (`sampling::methods::value` reads them with their
    /// defaults).
    #[serde(default, skip_serializing_if = "MethodParams::is_empty")]
    pub method_params: MethodParams,
    /// The steps where the positive branch is active, in place of its `start`/`end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_at: Option<StepSet>,
    /// The same for the negative branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neg_steps_at: Option<StepSet>,
    /// What the negative branch's rows take where that branch is off.
    #[serde(default, skip_serializing_if = "NegOff::is_zero")]
    pub neg_off: NegOff,
    /// The steps whose predicted clean image x̂₀ is decoded and saved (`traces/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<StepSet>,
    /// SDXL's micro-conditioning (diffusers' names): the (height, width) the image claims to
    /// come from, `None`: the image's own ([`GenParams::time_ids`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_size: Option<MicroPair>,
    /// The (top, left) crop corner it claims.
    #[serde(default, skip_serializing_if = "MicroPair::is_zero")]
    pub crops_coords_top_left: MicroPair,
    /// The (height, width) it aims at, `None`: the image's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_size: Option<MicroPair>,
    /// The micro-conditioning of every row but the cond row (diffusers'
    /// `negative_original_size` etc.); `None`: the cond row's value
    /// ([`GenParams::negative_time_ids`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_original_size: Option<MicroPair>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_crops_coords_top_left: Option<MicroPair>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_target_size: Option<MicroPair>,
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
            window: Window::Steps,
            blocks: BlockWeights::All,
            neg_blocks: BlockWeights::All,
            ip_scaling: IpScaling::V,
            negtome: false,
            negtome_alpha: NEGTOME_ALPHA,
            negtome_threshold: NEGTOME_THRESHOLD,
            negtome_t_min: NEGTOME_T_MIN,
            negtome_t_max: NEGTOME_T_MAX,
            method_params: MethodParams::default(),
            steps_at: None,
            neg_steps_at: None,
            neg_off: NegOff::Zero,
            trace: None,
            original_size: None,
            crops_coords_top_left: MicroPair(0, 0),
            target_size: None,
            negative_original_size: None,
            negative_crops_coords_top_left: None,
            negative_target_size: None,
        }
    }

    /// SDXL's six `add_time_ids` as diffusers' `_get_add_time_ids` lays them out: original
    /// size, crop top-left, target size; sizes left out are the image's (height, width).
    pub fn time_ids(&self) -> [f64; 6] {
        let own = MicroPair(self.height as u32, self.width as u32);
        let o = self.original_size.unwrap_or(own);
        let c = self.crops_coords_top_left;
        let t = self.target_size.unwrap_or(own);
        [o.0, o.1, c.0, c.1, t.0, t.1].map(f64::from)
    }

    /// diffusers' default `add_time_ids` at the image's size (original = target = (height,
    /// width), crop (0, 0)): NegToMe's reference rows take them, whatever the cells set.
    pub fn default_time_ids(&self) -> [f64; 6] {
        let (h, w) = (self.height as f64, self.width as f64);
        [h, w, 0.0, 0.0, h, w]
    }

    /// The `add_time_ids` of the rows other than the cond row (uncond, and the negative row
    /// of the three-row methods): each `negative_*` value where set, else the cond row's
    /// ([`time_ids`](Self::time_ids); diffusers' default when no negative value is given).
    pub fn negative_time_ids(&self) -> [f64; 6] {
        let [o0, o1, c0, c1, t0, t1] = self.time_ids();
        let pair = |set: Option<MicroPair>, a: f64, b: f64| {
            set.map_or([a, b], |p| [p.0, p.1].map(f64::from))
        };
        let [o0, o1] = pair(self.negative_original_size, o0, o1);
        let [c0, c1] = pair(self.negative_crops_coords_top_left, c0, c1);
        let [t0, t1] = pair(self.negative_target_size, t0, t1);
        [o0, o1, c0, c1, t0, t1]
    }

    /// Values equal to their default are their default (sizes equal to the image's, a
    /// negative value equal to the cond row's): the same image, the same cell id.
    pub fn own_sizes_as_auto(self) -> GenParams {
        let own = MicroPair(self.height as u32, self.width as u32);
        let original = self.original_size.unwrap_or(own);
        let target = self.target_size.unwrap_or(own);
        let crop = self.crops_coords_top_left;
        GenParams {
            original_size: self.original_size.filter(|&s| s != own),
            target_size: self.target_size.filter(|&s| s != own),
            negative_original_size: self.negative_original_size.filter(|&s| s != original),
            negative_crops_coords_top_left: self
                .negative_crops_coords_top_left
                .filter(|&s| s != crop),
            negative_target_size: self.negative_target_size.filter(|&s| s != target),
            ..self
        }
    }

    /// Whether a micro-conditioning value (positive or negative) is set away from its
    /// default (SDXL alone reads them).
    pub fn has_micro_conditioning(&self) -> bool {
        self.original_size.is_some()
            || !self.crops_coords_top_left.is_zero()
            || self.target_size.is_some()
            || self.has_negative_micro_conditioning()
    }

    /// Whether a `negative_*` micro-conditioning value is set.
    pub fn has_negative_micro_conditioning(&self) -> bool {
        self.negative_original_size.is_some()
            || self.negative_crops_coords_top_left.is_some()
            || self.negative_target_size.is_some()
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

    /// Whether this cell's block weights fit a UNet with `blocks` cross-attention blocks.
    pub fn check_blocks(&self, blocks: usize) -> Result<(), String> {
        for (name, b) in [("blocks", &self.blocks), ("neg_blocks", &self.neg_blocks)] {
            b.check(blocks).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }

    /// The parameters that decide the image, and that the image is made with: the negative
    /// image dropped where the mode ignores it; a method with nothing to subtract replaced by
    /// `uncond` ([`Method::has_something_to_subtract`]); NegToMe off where it has no image to
    /// merge against. Cells with the same effective parameters share one image.
    pub fn effective(&self) -> GenParams {
        let made = GenParams {
            negative_image: self.uncond_image().cloned(),
            method: self.effective_method(),
            negtome: self.negtome && self.negtome_image().is_some(),
            ..self.clone()
        };
        made.without_idle_negative_steps()
    }

    /// With `neg_off = "no_image"`, a negative branch without a negative image takes the
    /// "no image" tokens at its weight at every step, on or off: its window and step set
    /// then change nothing (the baseline of a probe grid is one image per seed). Every
    /// method's negative-branch rows and terms take "no image" where the cell has no
    /// negative image (`sampling::methods`' test
    /// `negative_branch_rows_without_a_negative_image_take_no_image`).
    fn without_idle_negative_steps(self) -> GenParams {
        let idle = self.neg_off == NegOff::NoImage && self.uncond_image().is_none();
        if !idle {
            return self;
        }
        GenParams {
            negative_branch: BranchWeight {
                start: 0.0,
                end: 1.0,
                ..self.negative_branch
            },
            neg_steps_at: None,
            ..self
        }
    }

    /// Cells with equal keys may share the first steps of their trajectory
    /// (`sampling::trajectory`): the same batch key and seed, and the same positive branch
    /// and guidance up to its window or step set. What the negative branch takes, and when,
    /// is left out: that is what probes and sweeps vary.
    pub fn trunk_key(&self) -> String {
        format!(
            "{:?} {} {:?} {:?} {:?} {} {:x} {:x} {:?} {:x} {} {} {} {:?} {:?} {:?}",
            self.batch_key(),
            self.seed,
            self.prompt,
            self.positive_image,
            self.method,
            self.no_image,
            self.cfg.to_bits(),
            self.neg_cfg().to_bits(),
            self.neg_embed_scale.to_bits(),
            self.positive.weight.to_bits(),
            self.blocks,
            self.negtome_on(),
            self.negtome_alpha,
            (
                self.negtome_threshold,
                self.negtome_t_min,
                self.negtome_t_max
            ),
            self.method_params,
            (self.time_ids(), self.negative_time_ids()),
        )
    }

    /// The method the image is made with: `method`, or `uncond` where it has nothing to
    /// subtract.
    pub fn effective_method(&self) -> Method {
        self.method.effective(self.negative)
    }

    /// Whether this cell is made as another one ([`effective`](Self::effective)): a method
    /// or a NegToMe switch with nothing to subtract.
    pub fn falls_back(&self) -> bool {
        let e = self.effective();
        (e.method, e.negtome) != (self.method, self.negtome)
    }

    /// Cells that can share one UNet call per step: same steps, size, scheduler, adapter
    /// kind and `ip_scaling` (one formula per attention call). Methods and block weights may
    /// mix: a batch's rows are laid out per cell, each row with its own weight per block
    /// (`sampling::guidance`).
    pub fn batch_key(&self) -> BatchKey {
        (
            self.steps,
            self.width,
            self.height,
            self.scheduler,
            self.adapter,
            self.ip_scaling,
        )
    }
}

/// A schedule for the tests of the window rules (here and in `sampling::guidance`).
#[cfg(test)]
pub(crate) mod test_schedule {
    use super::{PercentToSigma, StepAt};

    /// Sigma falls linearly from 10 at fraction 0 to 0 at fraction 1.
    struct Linear;
    impl PercentToSigma for Linear {
        fn percent_to_sigma(&self, p: f64) -> f64 {
            10.0 * (1.0 - p)
        }
    }

    /// Step `index` of `steps` at noise level `sigma` on that schedule.
    pub fn step(index: usize, steps: usize, sigma: f64) -> StepAt<'static> {
        StepAt {
            index,
            steps,
            sigma,
            schedule: &Linear,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_schedule::step;
    use super::*;

    #[test]
    fn sdxl_micro_conditioning_defaults_keep_the_cell_json_and_follow_diffusers() {
        let mut p = GenParams::new(3);
        (p.width, p.height) = (768, 512);
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            !json.contains("original_size") && !json.contains("crops"),
            "{json}"
        );
        // diffusers: original = target = (height, width), crop (0, 0).
        assert_eq!(p.time_ids(), [512.0, 768.0, 0.0, 0.0, 512.0, 768.0]);
        assert!(!p.has_micro_conditioning());
        p.original_size = Some(MicroPair(1024, 2048));
        p.crops_coords_top_left = MicroPair(16, 8);
        assert_eq!(p.time_ids(), [1024.0, 2048.0, 16.0, 8.0, 512.0, 768.0]);
        assert!(p.has_micro_conditioning());
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"original_size\":[1024,2048]"), "{json}");
        // The image's own size is the default: the same JSON (cell id) as unset.
        p.original_size = Some(MicroPair(512, 768));
        p.crops_coords_top_left = MicroPair(0, 0);
        p.target_size = Some(MicroPair(512, 768));
        assert_eq!(
            p.clone().own_sizes_as_auto(),
            GenParams {
                width: 768,
                height: 512,
                ..GenParams::new(3)
            }
        );
        assert_eq!("1024x768".parse::<MicroPair>(), Ok(MicroPair(1024, 768)));
        for bad in ["1024", "-1x2", "99999x1", "axb", ""] {
            assert!(bad.parse::<MicroPair>().is_err(), "{bad}");
        }
    }

    /// diffusers' `negative_original_size` etc.: unset, every value is the cond row's (and
    /// the JSON, so the cell id, is unchanged); each set one replaces its pair alone; a value
    /// equal to the cond row's is the default.
    #[test]
    fn sdxl_negative_micro_conditioning_follows_the_cond_row_and_keeps_the_cell_json() {
        let mut p = GenParams::new(3);
        (p.width, p.height) = (768, 512);
        p.original_size = Some(MicroPair(1024, 2048));
        p.crops_coords_top_left = MicroPair(16, 8);
        let before = serde_json::to_string(&p).unwrap();
        let keys = ["negative_original", "negative_crops", "negative_target"];
        assert!(keys.iter().all(|k| !before.contains(k)), "{before}");
        assert_eq!(p.negative_time_ids(), p.time_ids());
        assert!(!p.has_negative_micro_conditioning());
        p.negative_crops_coords_top_left = Some(MicroPair(0, 0));
        assert_eq!(
            p.negative_time_ids(),
            [1024.0, 2048.0, 0.0, 0.0, 512.0, 768.0]
        );
        p.negative_target_size = Some(MicroPair(256, 256));
        assert_eq!(
            p.negative_time_ids(),
            [1024.0, 2048.0, 0.0, 0.0, 256.0, 256.0]
        );
        assert!(p.has_negative_micro_conditioning() && p.has_micro_conditioning());
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains("\"negative_target_size\":[256,256]"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<GenParams>(&json).unwrap(), p);
        // Equal to the cond row's values (not the image's size): the default.
        let mut same = p.clone();
        same.negative_original_size = Some(MicroPair(1024, 2048));
        same.negative_crops_coords_top_left = Some(MicroPair(16, 8));
        same.negative_target_size = Some(MicroPair(512, 768));
        assert_eq!(
            serde_json::to_string(&same.own_sizes_as_auto()).unwrap(),
            before
        );
        let mut image_size = p.clone();
        image_size.negative_original_size = Some(MicroPair(512, 768));
        assert!(
            image_size
                .own_sizes_as_auto()
                .negative_original_size
                .is_some()
        );
        // The reference rows' ids: diffusers' defaults whatever is set.
        assert_eq!(p.default_time_ids(), [512.0, 768.0, 0.0, 0.0, 512.0, 768.0]);
    }

    #[test]
    fn window_is_active_from_its_first_step_not_one_late() {
        let w = BranchWeight {
            weight: 0.7,
            start: 0.2,
            end: 0.6,
        };
        let on = |i| w.active(Window::Steps, &step(i, 10, 0.0));
        let active: Vec<usize> = (0..10).filter(|&i| on(i)).collect();
        assert_eq!(active, vec![2, 3, 4, 5]);
        assert_eq!(w.at(Window::Steps, &step(1, 10, 0.0)), 0.0);
        assert_eq!(w.at(Window::Steps, &step(2, 10, 0.0)), 0.7);
        let full = BranchWeight {
            weight: 1.0,
            start: 0.0,
            end: 1.0,
        };
        assert!((0..25).all(|i| full.active(Window::Steps, &step(i, 25, 0.0))));
    }

    #[test]
    fn sigma_window_takes_the_steps_whose_sigma_is_between_its_ends() {
        // start 0.2 -> sigma 8, end 0.6 -> sigma 4: both ends included, whatever the index.
        let w = BranchWeight {
            weight: 0.7,
            start: 0.2,
            end: 0.6,
        };
        let on = |sigma| w.active(Window::Sigma, &step(0, 10, sigma));
        assert!(on(8.0) && on(6.0) && on(4.0));
        assert!(!on(8.5) && !on(3.9));
        assert_eq!(Window::Sigma.to_string(), "sigma");
        assert!(Window::default().is_steps());
    }

    #[test]
    fn block_weights_round_trip_as_text_and_follow_comfyui_presets() {
        for text in [
            "all",
            "style",
            "composition",
            "strong_style",
            "style_and_composition",
            "4:0.25, 5:1",
            "0:-0.5",
        ] {
            let b: BlockWeights = text.parse().unwrap();
            assert_eq!(b.to_string(), text);
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(serde_json::from_str::<BlockWeights>(&json).unwrap(), b);
        }
        // Listed in any order, kept sorted by block.
        let b: BlockWeights = " 5:1 ,4:0.25".parse().unwrap();
        assert_eq!(b, BlockWeights::List(vec![(4, 0.25), (5, 1.0)]));
        let on = |b: &BlockWeights| -> Vec<usize> {
            let f = b.factors(SD15_BLOCKS);
            (0..SD15_BLOCKS).filter(|&i| f[i] != 0.0).collect()
        };
        assert_eq!(
            on(&BlockWeights::Style),
            [0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15]
        );
        assert_eq!(
            on(&BlockWeights::StrongStyle),
            [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        );
        let comp = BlockWeights::Composition.factors(SD15_BLOCKS);
        assert_eq!(
            (comp[4], comp[5], comp.iter().sum::<f64>()),
            (0.25, 1.0, 1.25)
        );
        assert_eq!(BlockWeights::All.factors(6), vec![1.0; 6]);
        // "style and composition" at composition weight 1 is the union of the two presets, on
        // either layout; each layout resolves its own table.
        for blocks in [SD15_BLOCKS, SDXL_BLOCKS] {
            let both = BlockWeights::StyleAndComposition.factors(blocks);
            let style = BlockWeights::Style.factors(blocks);
            let comp = BlockWeights::Composition.factors(blocks);
            let union: Vec<f64> = style.iter().zip(&comp).map(|(s, c)| s + c).collect();
            assert_eq!(both, union, "{blocks} blocks");
            assert_ne!(style, BlockWeights::All.factors(blocks));
        }
        assert_ne!(
            BlockWeights::Style.factors(SDXL_BLOCKS)[..],
            BlockWeights::Style.factors(SD15_BLOCKS)[..SDXL_BLOCKS]
        );
        for (bad, why) in [
            ("styles", "not one of all, style"),
            ("4:0.5, 16:1", "block 16"),
            ("4:x", "not a weight factor"),
            ("4:11", "not a weight factor"),
            ("a:1", "not a block index"),
            ("4:1, 4:2", "twice"),
            ("4:1,", "not \"index:weight\""),
        ] {
            let err = bad.parse::<BlockWeights>().unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn block_presets_need_the_sd15_or_sdxl_layout_and_lists_existing_blocks() {
        assert!(BlockWeights::Style.check(SD15_BLOCKS).is_ok());
        assert!(BlockWeights::Style.check(SDXL_BLOCKS).is_ok());
        let err = BlockWeights::Style.check(6).unwrap_err();
        assert!(
            err.contains("has 6 cross-attention blocks") && err.contains("SDXL's 11"),
            "{err}"
        );
        // Resolving a preset on neither layout refuses with the same message.
        let panic = std::panic::catch_unwind(|| BlockWeights::Composition.factors(6)).unwrap_err();
        let msg = panic.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("\"composition\" is defined on SD1.5's 16"),
            "{msg}"
        );
        let list: BlockWeights = "2:1, 5:0.5".parse().unwrap();
        assert!(list.check(6).is_ok());
        let err = list.check(5).unwrap_err();
        assert!(err.contains("block 5") && err.contains("has 5"), "{err}");
        let mut p = GenParams::new(0);
        p.neg_blocks = BlockWeights::Composition;
        assert!(p.check_blocks(6).unwrap_err().starts_with("neg_blocks:"));
    }

    #[test]
    fn enums_display_as_their_toml_names() {
        assert_eq!(SchedulerKind::DpmPp2mKarras.to_string(), "dpmpp_2m_karras");
        assert_eq!(SchedulerKind::EulerAncestral.to_string(), "euler_ancestral");
        assert_eq!(NegativeMode::Both.to_string(), "both");
        assert_eq!(AdapterKind::Plus.to_string(), "plus");
        // Every kind by the name `adapter` takes (and NAMES lists).
        let names: Vec<String> = AdapterKind::ALL.iter().map(|k| k.to_string()).collect();
        assert_eq!(names.join(", "), AdapterKind::NAMES);
        assert_eq!(AdapterKind::PlusFace.to_string(), "plus_face");
        let names: Vec<String> = [
            IpScaling::V,
            IpScaling::Kv,
            IpScaling::KvC,
            IpScaling::KMeanVC,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(names.join(", "), IpScaling::NAMES);
    }

    #[test]
    fn a_method_with_nothing_to_subtract_is_made_as_uncond_with_uncond_rows() {
        use NegativeMode::{Both, Image, None as NoNeg, Text};
        let mut p = GenParams::new(1);
        p.prompt = "house".into();
        p.negative_prompt = "grass".into();
        p.positive_image = Some("house.png".into());
        p.negative_image = Some("lawn.png".into());
        p.negative_branch.weight = 0.4;
        // (method, the negatives it has nothing to subtract from).
        let table = [
            (Method::Uncond, vec![]),
            (Method::Subtract, vec![NoNeg, Text]),
            (Method::Negtome, vec![NoNeg, Text]),
            (Method::Nag, vec![NoNeg, Text]),
            (Method::ThreeBranch, vec![NoNeg]),
            (Method::PerpNeg, vec![NoNeg]),
        ];
        for (method, nothing) in table {
            for negative in [NoNeg, Text, Image, Both] {
                p.method = method;
                p.negative = negative;
                let e = p.effective();
                let falls = nothing.contains(&negative);
                assert_eq!(p.falls_back(), falls, "{method} {negative}");
                assert_eq!(e.method, if falls { Method::Uncond } else { method });
                if !falls {
                    assert_eq!(e.method, p.method);
                }
                // That such a cell's rows are `uncond`'s: sampling::methods's tests.
            }
        }
        // NegToMe on top of a method merges nothing without a negative image.
        p.method = Method::Uncond;
        p.negtome = true;
        p.negative = Text;
        assert!(!p.effective().negtome && p.falls_back());
        p.negative = Image;
        assert!(p.effective().negtome && !p.falls_back());
        assert_eq!(
            p.effective(),
            p,
            "a cell with something to subtract is itself"
        );
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
