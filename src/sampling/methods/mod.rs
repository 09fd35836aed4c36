//! The negative methods: one file each, one contract ([`NegativeMethod`]), one registry
//! ([`of`], [`REGISTRY`]). A method says
//! - which UNet rows a cell needs and what conditions each ([`NegativeMethod::rows`],
//!   [`NegativeMethod::row`]: text, image tokens, the branch whose weight, window and block
//!   weights scale them);
//! - how the cell's noise prediction is made from its rows' predictions
//!   ([`NegativeMethod::guide`]), with a [`CellState`] the sampling loop keeps per cell
//!   from step to step;
//! - whether it acts inside the attention layers ([`NegativeMethod::attention`]);
//! - which parameters it reads ([`NegativeMethod::keys`]; its own, declared with their
//!   defaults and ranges by [`NegativeMethod::params`], live in
//!   [`GenParams::method_params`]), so that a key it ignores is reported, not silently
//!   dropped;
//! - (what a cell without a negative image means for it is declared beside the method's
//!   name, by [`Method::has_something_to_subtract`](crate::params::Method), so that
//!   `GenParams::effective` can apply it);
//! - its cost in UNet rows per step ([`NegativeMethod::cost`]).
//!
//! Adding a method: its file here, its entry in [`REGISTRY`] and a name in
//! [`Method`](crate::params::Method), its README section.
mod cond_negative;
mod dng;
mod nag;
mod negtome;
mod perp_neg;
mod sega;
mod subtract;
mod three_branch;
mod uncond;

use crate::params::{
    BlockWeights, BranchWeight, GenParams, Method, NegOff, Row, RowImage, StepAt, StepSet,
};
use crate::sampling::AncestralStep;
use std::any::Any;
use tch::Tensor;

/// Every method, in the order the README presents them.
pub static REGISTRY: &[&dyn NegativeMethod] = &[
    &uncond::Uncond,
    &subtract::Subtract,
    &three_branch::ThreeBranch,
    &perp_neg::PerpNeg,
    &negtome::Negtome,
    &cond_negative::CondNegative,
    &sega::Sega,
    &dng::Dng,
    &nag::Nag,
];

/// The implementation of `method`.
pub fn of(method: Method) -> &'static dyn NegativeMethod {
    *REGISTRY
        .iter()
        .find(|m| m.method() == method)
        .expect("every Method has an entry in REGISTRY")
}

/// The contract of a negative method (see the module's documentation).
pub trait NegativeMethod: Sync {
    fn method(&self) -> Method;

    /// The UNet rows of a cell: `Uncond` and `Cond` first (every cell has them; the
    /// batch lays them out together), then the method's own rows
    /// ([`guidance::row_layout`](super::guidance::row_layout)).
    fn rows(&self) -> &'static [Row] {
        &[Row::Uncond, Row::Cond]
    }

    /// What conditions `row` (one of [`rows`](Self::rows)) of cell `c`.
    fn row<'a>(&self, c: &'a GenParams, row: Row) -> RowCond<'a>;

    /// The cell's guided noise prediction `[C, H, W]` from its rows' predictions `eps`
    /// (in [`rows`](Self::rows) order, float32). Default: classifier-free guidance on the
    /// first two rows.
    fn guide(&self, c: &GenParams, eps: &[Tensor], _state: &mut CellState, _at: &Step) -> Tensor {
        cfg(c, &eps[0], &eps[1])
    }

    /// What the method does inside the attention layers.
    fn attention(&self) -> Attention {
        Attention::None
    }

    /// The experiment keys this method reads beyond those every cell uses (prompts,
    /// images, weights and windows, cfg, steps, ...); its own [`params`](Self::params)
    /// are read too. A file that sets one of the others for a cell of this method gets a
    /// warning in `negimg plan` ([`unused_keys`]).
    fn keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// The parameters that belong to this method alone, with their defaults and ranges.
    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }

    /// What the method learns from the step just taken (DNG's posterior): `x` the cell's
    /// sample before the step and `next` after it, `[C, H, W]`; the step's noise levels
    /// for an ancestral scheduler.
    fn after_step(
        &self,
        _c: &GenParams,
        _state: &mut CellState,
        _x: &Tensor,
        _next: &Tensor,
        _ancestral: Option<AncestralStep>,
    ) {
    }

    /// Whether the method can make cell `c` (a scheduler it needs, parameters that must
    /// agree): the key at fault and why not.
    fn check(&self, _c: &GenParams) -> Result<(), (&'static str, String)> {
        Ok(())
    }

    /// UNet work per step of one cell.
    fn cost(&self) -> Cost {
        Cost {
            rows: self.rows().len(),
            attention_rows: 0.0,
        }
    }
}

/// What conditions one UNet row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowCond<'a> {
    pub text: &'a str,
    pub image: RowImage<'a>,
    /// The branch whose weight, window and block weights scale the image attention.
    pub branch: Branch,
    /// A second image-attention term of the row, if any.
    pub extra: Option<ExtraImage<'a>>,
}

/// A second image-attention term in a row (`cond_negative`): its own tokens and softmax,
/// at `sign` times the weight of `branch` (its window and block weights too). With `nag`,
/// not added: NAG's negative output ([`models::attention::Nag`](crate::models::attention::Nag)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExtraImage<'a> {
    pub image: RowImage<'a>,
    pub branch: Branch,
    pub sign: f64,
    pub nag: Option<NagStrength>,
}

/// NAG's scale, τ and α for one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NagStrength {
    pub scale: f64,
    pub tau: f64,
    pub alpha: f64,
}

/// The two IP-Adapter branches of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branch {
    /// `weight`, `start`, `end`, `blocks`.
    Positive,
    /// `neg_weight`, `neg_start`, `neg_end`, `neg_blocks`.
    Negative,
}

impl Branch {
    pub fn weight(self, c: &GenParams) -> BranchWeight {
        match self {
            Branch::Positive => c.positive,
            Branch::Negative => c.negative_branch,
        }
    }

    pub fn blocks(self, c: &GenParams) -> &BlockWeights {
        match self {
            Branch::Positive => &c.blocks,
            Branch::Negative => &c.neg_blocks,
        }
    }

    /// The branch's step set (`steps_at`, `neg_steps_at`), in place of its window.
    pub fn steps(self, c: &GenParams) -> Option<&StepSet> {
        match self {
            Branch::Positive => c.steps_at.as_ref(),
            Branch::Negative => c.neg_steps_at.as_ref(),
        }
    }

    /// Whether the branch is active at `step`: in its step set, or else in its window.
    pub fn active(self, c: &GenParams, step: &StepAt) -> bool {
        match self.steps(c) {
            Some(set) => set.contains(step.index),
            None => self.weight(c).active(c.window, step),
        }
    }

    /// What a row (or second term) of this branch takes at `step`: the branch weight
    /// where the branch is active; elsewhere scale 0, or for the negative branch with
    /// `neg_off = "no_image"` the "no image" tokens at the branch weight.
    pub fn ip(self, c: &GenParams, step: &StepAt) -> BranchIp {
        let weight = self.weight(c).weight;
        let no_image = self == Branch::Negative && c.neg_off == NegOff::NoImage;
        match (self.active(c, step), no_image) {
            (true, _) => BranchIp {
                weight,
                no_image_tokens: false,
            },
            (false, true) => BranchIp {
                weight,
                no_image_tokens: true,
            },
            (false, false) => BranchIp {
                weight: 0.0,
                no_image_tokens: false,
            },
        }
    }
}

/// What a row's image attention takes at one step ([`Branch::ip`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BranchIp {
    /// The IP scale (before the per-block factors).
    pub weight: f64,
    /// The "no image" tokens in place of the row's own (`neg_off = "no_image"` off steps).
    pub no_image_tokens: bool,
}

/// The cond row every method but `subtract` uses: the prompt and the positive image.
pub fn cond_row(c: &GenParams) -> RowCond<'_> {
    RowCond {
        text: &c.prompt,
        image: image_or_none(c.positive_image.as_ref()),
        branch: Branch::Positive,
        extra: None,
    }
}

/// `Image(p)`, or the "no image" tokens for `None`.
pub fn image_or_none(p: Option<&std::path::PathBuf>) -> RowImage<'_> {
    p.map_or(RowImage::NoImage, RowImage::Image)
}

/// What a method does inside the attention layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    None,
    /// NegToMe's token merge against the negative image's reference row
    /// ([`sampling::negtome`](super::negtome)); any method may add it with `negtome = true`.
    TokenMerge,
    /// Normalized Attention Guidance on the cond row's cross-attention output.
    Nag,
}

/// UNet work per step of one cell: its rows, and attention work beyond them in row
/// equivalents (NAG's second cross-attention).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub rows: usize,
    pub attention_rows: f64,
}

impl Cost {
    pub fn row_equivalents(&self) -> f64 {
        self.rows as f64 + self.attention_rows
    }
}

/// A parameter of one method: its experiment key (also its `generate` flag, `--` and
/// dashes), default, accepted range, and where the default comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub default: f64,
    pub min: f64,
    pub max: f64,
    /// `min` itself is refused (`τ > 0`).
    pub min_exclusive: bool,
    pub about: &'static str,
}

impl ParamSpec {
    /// Whether `x` is in range; the message names the range.
    pub fn check(&self, x: f64) -> Result<(), String> {
        let low_ok = if self.min_exclusive {
            x > self.min
        } else {
            x >= self.min
        };
        if x.is_finite() && low_ok && x <= self.max {
            return Ok(());
        }
        let low = if self.min_exclusive {
            "above"
        } else {
            "at least"
        };
        Err(format!(
            "{x} is out of range: it must be {low} {} and at most {}",
            self.min, self.max
        ))
    }
}

/// Every method's own parameter, with the method.
pub fn all_params() -> impl Iterator<Item = (Method, &'static ParamSpec)> {
    REGISTRY
        .iter()
        .flat_map(|m| m.params().iter().map(move |p| (m.method(), p)))
}

/// The spec of the method parameter named `name`.
pub fn param(name: &str) -> Option<&'static ParamSpec> {
    all_params().map(|(_, p)| p).find(|p| p.name == name)
}

/// The value of method parameter `name` in cell `c`: set, or its default.
pub fn value(c: &GenParams, name: &str) -> f64 {
    c.method_params
        .get(name)
        .or_else(|| param(name).map(|p| p.default))
        .expect("a method reads only the parameters it declares")
}

/// `method`'s own parameters as text, in declaration order: `name{between}value` each,
/// joined by `join`, with `value(name)` the cell's value (set or default) written by
/// `show`; `None` for a method without parameters. records.csv's `method_params` column
/// and the PNG's `parameters` chunk write them so.
pub fn params_text(
    method: Method,
    value: impl Fn(&str) -> f64,
    show: impl Fn(f64) -> String,
    (between, join): (&str, &str),
) -> Option<String> {
    let params = of(method).params();
    let text: Vec<String> = params
        .iter()
        .map(|p| format!("{}{between}{}", p.name, show(value(p.name))))
        .collect();
    (!text.is_empty()).then(|| text.join(join))
}

/// The method-specific keys (the union of every method's [`NegativeMethod::keys`] and
/// parameters): the keys a method may ignore.
pub fn method_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = REGISTRY
        .iter()
        .flat_map(|m| {
            m.keys()
                .iter()
                .copied()
                .chain(m.params().iter().map(|p| p.name))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Of the method-specific keys `set`, those cell `c` ignores. NegToMe's keys belong to
/// any method with `negtome = true`.
pub fn unused_keys(c: &GenParams, set: &[&'static str]) -> Vec<&'static str> {
    let m = of(c.method);
    let reads = |k: &str| {
        m.keys().contains(&k)
            || m.params().iter().any(|p| p.name == k)
            || (c.negtome && negtome::KEYS.contains(&k))
    };
    let specific = method_keys();
    set.iter()
        .copied()
        .filter(|k| specific.contains(k) && !reads(k))
        .collect()
}

/// One sampling step, as a method's guidance sees it.
pub struct Step<'a> {
    pub at: &'a StepAt<'a>,
    /// The UNet timestep of the step.
    pub timestep: f64,
}

/// What a method carries from one step to the next for one cell (SEGA's momentum, DNG's
/// posterior): a value of the method's own type, made at the first step that asks, and
/// copied where a shared trajectory forks ([`CellState::fork`]).
#[derive(Default)]
pub struct CellState(Option<Box<dyn AnyState>>);

/// A method's per-cell state: it can be copied for each branch of a fork.
pub trait MethodState: 'static {
    /// An independent copy (tensors copied, not shared).
    fn fork(&self) -> Self;
}

/// [`MethodState`] as a trait object.
trait AnyState {
    fn fork_box(&self) -> Box<dyn AnyState>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: MethodState> AnyState for T {
    fn fork_box(&self) -> Box<dyn AnyState> {
        Box::new(self.fork())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl CellState {
    /// The state, made by `init` the first time.
    pub fn get_or_init<T: MethodState>(&mut self, init: impl FnOnce() -> T) -> &mut T {
        if !self.0.as_ref().is_some_and(|s| s.as_any().is::<T>()) {
            self.0 = Some(Box::new(init()));
        }
        self.0
            .as_mut()
            .and_then(|s| s.as_any_mut().downcast_mut::<T>())
            .expect("the state was just made with this type")
    }

    /// The state of a cell that goes on from here on a trajectory of its own.
    pub fn fork(&self) -> CellState {
        CellState(self.0.as_ref().map(|s| s.fork_box()))
    }
}

/// Classifier-free guidance: `uncond + cfg * (cond - uncond)`, `cond` alone when
/// `cfg <= 1` (as diffusers when guidance is off).
pub fn cfg(c: &GenParams, uncond: &Tensor, cond: &Tensor) -> Tensor {
    if c.cfg > 1.0 {
        uncond + (cond - uncond) * c.cfg
    } else {
        cond.shallow_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::NegativeMode;
    use std::path::PathBuf;

    #[test]
    fn every_method_has_one_entry_and_starts_with_the_two_cfg_rows() {
        for m in REGISTRY {
            assert_eq!(of(m.method()).method(), m.method());
            assert_eq!(&m.rows()[..2], &[Row::Uncond, Row::Cond]);
            assert_eq!(m.cost().rows, m.rows().len());
        }
        let names: Vec<String> = REGISTRY.iter().map(|m| m.method().to_string()).collect();
        assert_eq!(names.join(", "), Method::NAMES);
        let mut params: Vec<&str> = all_params().map(|(_, p)| p.name).collect();
        params.sort_unstable();
        params.dedup();
        assert_eq!(
            params.len(),
            all_params().count(),
            "parameter names are unique"
        );
    }

    #[test]
    fn a_cell_with_nothing_to_subtract_is_made_with_the_rows_of_uncond() {
        let mut p = GenParams::new(1);
        p.prompt = "house".into();
        p.negative_prompt = "grass".into();
        p.positive_image = Some(PathBuf::from("house.png"));
        p.negative_image = Some(PathBuf::from("lawn.png"));
        p.negative_branch.weight = 0.4;
        for m in REGISTRY {
            let method = m.method();
            for negative in [NegativeMode::None, NegativeMode::Text] {
                p.method = method;
                p.negative = negative;
                if method.has_something_to_subtract(negative) {
                    continue;
                }
                let e = p.effective();
                assert_eq!(e.method, Method::Uncond, "{method} {negative}");
                // Two-row methods make the rows `uncond` makes, so sharing its image
                // changes nothing; `cond_negative`'s uncond row would weigh its "no image"
                // tokens by `weight`, not `neg_weight`: made as `uncond` by definition, as
                // the three-row methods are.
                if m.rows().len() == 2 && method != Method::CondNegative {
                    for &row in m.rows() {
                        let (mine, theirs) = (m.row(&p, row), of(Method::Uncond).row(&e, row));
                        assert_eq!(mine.text, theirs.text, "{method} {negative}");
                        assert_eq!(mine.image, theirs.image, "{method} {negative}");
                        let (a, b) = (mine.branch, theirs.branch);
                        assert_eq!(a.weight(&p), b.weight(&e), "{method} {negative}");
                        assert_eq!(a.blocks(&p), b.blocks(&e), "{method} {negative}");
                    }
                    assert!(p.negtome_image().is_none());
                }
            }
        }
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
        fn row(p: &GenParams, r: Row) -> RowCond<'_> {
            of(p.method).row(p, r)
        }
        let uncond = row(&p, Row::Uncond);
        assert_eq!(uncond.image, RowImage::Image(&neg));
        assert_eq!((uncond.text, uncond.branch), ("grass", Branch::Negative));
        p.method = Method::Subtract;
        p.neg_embed_scale = 0.5;
        assert_eq!(row(&p, Row::Uncond).image, RowImage::NoImage);
        let sub = RowImage::Subtract {
            positive: Some(&pos),
            negative: &neg,
            scale: 0.5,
        };
        assert_eq!(row(&p, Row::Cond).image, sub);
        p.method = Method::PerpNeg;
        assert_eq!(of(p.method).rows().len(), 3);
        let (e0, en) = (row(&p, Row::Uncond), row(&p, Row::Negative));
        assert_eq!((e0.text, en.text), ("", "grass"));
        assert_eq!(e0.image, RowImage::NoImage);
        assert_eq!(en.image, RowImage::Image(&neg));
        // ε∅ takes the positive branch's weight, the negative row the negative one's.
        assert_eq!(e0.branch.weight(&p).weight, 1.0);
        assert_eq!(en.branch.weight(&p).weight, 0.4);
        assert_eq!(p.neg_cfg(), p.cfg);
        p.method = Method::Negtome;
        assert_eq!(row(&p, Row::Uncond).image, RowImage::NoImage);
        assert_eq!(row(&p, Row::Uncond).text, "grass");
    }

    /// `GenParams::effective` drops the negative window and step set of a `neg_off =
    /// "no_image"` cell without a negative image: right only while every method's
    /// negative-branch rows and terms take "no image" there.
    #[test]
    fn negative_branch_rows_without_a_negative_image_take_no_image() {
        let mut p = GenParams::new(1);
        p.prompt = "house".into();
        p.negative_prompt = "grass".into();
        p.positive_image = Some(PathBuf::from("house.png"));
        for negative in [NegativeMode::None, NegativeMode::Text] {
            p.negative = negative;
            for m in REGISTRY {
                p.method = m.method();
                for &row in m.rows() {
                    let r = m.row(&p, row);
                    let mut terms = vec![(r.branch, r.image)];
                    terms.extend(r.extra.map(|x| (x.branch, x.image)));
                    for (branch, image) in terms {
                        if branch == Branch::Negative {
                            assert_eq!(image, RowImage::NoImage, "{} {row:?}", p.method);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn neg_off_no_image_gives_the_off_negative_branch_no_image_at_its_weight() {
        use crate::params::test_schedule::step;
        let mut p = GenParams::new(1);
        p.negative_branch.weight = 0.4;
        p.positive.weight = 0.7;
        p.neg_steps_at = Some("2".parse().unwrap());
        p.steps_at = Some("from 1".parse().unwrap());
        let (on, off) = (step(2, 4, 0.0), step(0, 4, 0.0));
        let ip = |b: Branch, at| b.ip(&p, at);
        assert_eq!(ip(Branch::Negative, &on).weight, 0.4);
        assert_eq!(ip(Branch::Negative, &off).weight, 0.0);
        assert_eq!(ip(Branch::Positive, &off).weight, 0.0);
        p.neg_off = NegOff::NoImage;
        let ip = |b: Branch, at| b.ip(&p, at);
        assert_eq!(
            ip(Branch::Negative, &off),
            BranchIp {
                weight: 0.4,
                no_image_tokens: true
            }
        );
        assert!(!ip(Branch::Negative, &on).no_image_tokens);
        // The cond branch keeps scale 0 where it is off.
        assert_eq!(ip(Branch::Positive, &off).weight, 0.0);
        assert!(!ip(Branch::Positive, &off).no_image_tokens);
        assert_eq!(ip(Branch::Positive, &on).weight, 0.7);
    }

    #[test]
    fn keys_a_cells_method_does_not_read_are_reported() {
        let mut c = GenParams::new(0);
        let set = ["neg_cfg", "neg_embed_scale", "negtome_alpha", "cfg"];
        assert_eq!(
            unused_keys(&c, &set),
            ["neg_cfg", "neg_embed_scale", "negtome_alpha"]
        );
        c.method = Method::ThreeBranch;
        assert_eq!(unused_keys(&c, &set), ["neg_embed_scale", "negtome_alpha"]);
        c.negtome = true;
        assert_eq!(unused_keys(&c, &set), ["neg_embed_scale"]);
        c.method = Method::Negtome;
        c.negtome = false;
        assert_eq!(unused_keys(&c, &set), ["neg_cfg", "neg_embed_scale"]);
    }

    struct Count(u32);
    impl MethodState for Count {
        fn fork(&self) -> Self {
            Count(self.0)
        }
    }

    #[test]
    fn method_params_are_written_in_declaration_order_with_their_values() {
        let mut c = GenParams::new(0);
        c.method = Method::Nag;
        c.method_params.set("nag_tau", 3.0, 2.5);
        let text =
            |c: &GenParams| params_text(c.method, |k| value(c, k), |x| x.to_string(), ("=", "; "));
        let want = "nag_scale=5; nag_tau=3; nag_alpha=0.25";
        assert_eq!(text(&c).as_deref(), Some(want));
        c.method = Method::Uncond;
        assert_eq!(text(&c), None);
    }

    #[test]
    fn a_cells_state_is_made_once_and_kept() {
        let mut s = CellState::default();
        s.get_or_init(|| Count(1)).0 += 1;
        assert_eq!(s.get_or_init(|| Count(7)).0, 2);
        // A shared trajectory's fork: each branch goes on from a copy.
        let mut other = s.fork();
        other.get_or_init(|| Count(0)).0 += 10;
        assert_eq!(s.get_or_init(|| Count(7)).0, 2);
        assert_eq!(other.get_or_init(|| Count(7)).0, 12);
    }

    #[test]
    fn param_ranges_name_their_bounds() {
        let tau = ParamSpec {
            name: "tau",
            default: 1.0,
            min: 0.0,
            max: 10.0,
            min_exclusive: true,
            about: "",
        };
        assert!(tau.check(0.5).is_ok() && tau.check(10.0).is_ok());
        assert!(tau.check(0.0).unwrap_err().contains("above 0"));
        assert!(tau.check(f64::NAN).is_err());
    }
}
