//! `sega`: semantic guidance (Brack et al. 2023, diffusers' `SemanticStableDiffusionPipeline`)
//! with the negative image (and text) as its one editing concept, reversed. Rows of
//! `three_branch`: ε∅ (empty text, "no image"), ε₊, ε₋ (the concept). At step i:
//! `g = −sega_guidance_scale·(ε₋ − ε∅)`, kept where `|g|` reaches the `sega_threshold`
//! quantile of `|g|` over the pixels of its channel (zero elsewhere, and zero from step
//! `sega_cooldown_steps` on); `e = g + sega_momentum_scale·m`, then
//! `m ← sega_mom_beta·m + (1 − sega_mom_beta)·e` (m starts at 0 and builds up during the
//! warm-up); guided `ε∅ + cfg·(ε₊ − ε∅) + e` from step `sega_warmup_steps` on, plain CFG
//! before. As the pipeline, at `cfg <= 1` the cell is its cond row alone (no guidance).
use super::three_branch::{ROWS, row};
use super::{CellState, MethodState, NegativeMethod, ParamSpec, RowCond, Step, cfg, value};
use crate::params::{GenParams, Method, Row};
use tch::Tensor;

pub struct Sega;

static PARAMS: [ParamSpec; 6] = [
    ParamSpec {
        name: "sega_guidance_scale",
        default: 5.0,
        min: 0.0,
        max: 100.0,
        min_exclusive: false,
        about: "edit_guidance_scale: the concept's guidance scale",
    },
    ParamSpec {
        name: "sega_threshold",
        default: 0.9,
        min: 0.0,
        max: 1.0,
        min_exclusive: false,
        about: "edit_threshold: the quantile of |guidance| per channel below which it is masked",
    },
    ParamSpec {
        name: "sega_warmup_steps",
        default: 10.0,
        min: 0.0,
        max: 1000.0,
        min_exclusive: false,
        about: "edit_warmup_steps: steps before the concept's guidance applies",
    },
    ParamSpec {
        name: "sega_cooldown_steps",
        default: 1000.0,
        min: 0.0,
        max: 1000.0,
        min_exclusive: false,
        about: "edit_cooldown_steps: the step from which the masked term is zero (1000: never, diffusers' None)",
    },
    ParamSpec {
        name: "sega_momentum_scale",
        default: 0.1,
        min: 0.0,
        max: 100.0,
        min_exclusive: false,
        about: "edit_momentum_scale: the momentum's weight in the guidance",
    },
    ParamSpec {
        name: "sega_mom_beta",
        default: 0.4,
        min: 0.0,
        max: 1.0,
        min_exclusive: false,
        about: "edit_mom_beta: how much of the momentum each step keeps",
    },
];

/// The momentum m, per cell, from step to step.
struct Momentum(Tensor);

impl MethodState for Momentum {
    fn fork(&self) -> Self {
        Momentum(self.0.copy())
    }
}

impl NegativeMethod for Sega {
    fn method(&self) -> Method {
        Method::Sega
    }

    fn rows(&self) -> &'static [Row] {
        &ROWS
    }

    fn row<'a>(&self, c: &'a GenParams, r: Row) -> RowCond<'a> {
        row(c, r)
    }

    fn guide(&self, c: &GenParams, eps: &[Tensor], state: &mut CellState, step: &Step) -> Tensor {
        let (uncond, cond, concept) = (&eps[0], &eps[1], &eps[2]);
        if c.cfg <= 1.0 {
            return cfg(c, uncond, cond);
        }
        let i = step.at.index as f64;
        let text = (cond - uncond) * c.cfg;
        let masked = if i >= value(c, "sega_cooldown_steps") {
            uncond.zeros_like()
        } else {
            let g = (concept - uncond) * -value(c, "sega_guidance_scale");
            top_quantile(&g, value(c, "sega_threshold"))
        };
        let m = state.get_or_init(|| Momentum(uncond.zeros_like()));
        let edit = masked + &m.0 * value(c, "sega_momentum_scale");
        let beta = value(c, "sega_mom_beta");
        m.0 = &m.0 * beta + &edit * (1.0 - beta);
        match i >= value(c, "sega_warmup_steps") {
            true => uncond + (text + edit),
            false => uncond + text,
        }
    }

    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
}

/// `g` `[C, H, W]` where `|g|` reaches the `q` quantile (linear interpolation, as
/// `torch.quantile`) of `|g|` over its channel's pixels, zero elsewhere.
fn top_quantile(g: &Tensor, q: f64) -> Tensor {
    let a = g.abs();
    let channels = a.size()[0];
    let cut = a
        .flatten(1, -1)
        .quantile_scalar(q, 1, false, "linear")
        .view([channels, 1, 1]);
    g.where_self(&a.greater_equal_tensor(&cut), &g.zeros_like())
}
