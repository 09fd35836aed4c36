//! `dng`: Dynamic Negative Guidance (Koulischer et al., ICLR 2025;
//! FelixKoulischer/Dynamic-Negative-Guidance, `utils/Generate_Batch_pretrained.py`:
//! `gen_batch_DNG`, `compute_posterior_DNG`). Rows of `three_branch`: ε∅ (empty text, "no
//! image"), ε₊, ε₋ (the negative text and image). Guided
//! `ε∅ + cfg·(ε₊ − ε∅) − λ·p/(1 − p)·(ε₋ − ε∅)`, λ = `dng_guidance_scale`, where p is the
//! posterior that the sample shows the negative concept: `dng_prior` at the first step, then
//! after each step x → x′ (σ → σ_next, ancestral σ_down and σ_up)
//! `p ← clamp(p·exp((−dng_temp·(‖x′ − μ₋‖² − ‖x′ − μ∅‖²) + dng_offset) / (2σ_up²)),
//! dng_p_min, dng_p_max)`, `μ = x + (σ_down − σ)·ε` the step's mean under ε∅ or ε₋ (the
//! reference's DDPM transition, N(μ, β̃_t), replaced by the Euler ancestral one,
//! N(μ, σ_up²)). The sums run over one cell's latents. The update needs a transition with
//! noise: DNG runs with `scheduler = "euler_ancestral"` only (a deterministic step has
//! σ_up = 0, where the likelihood ratio is undefined); the update after the last step
//! (σ_up = 0) is never used and not made.
use super::three_branch::{ROWS, row};
use super::{CellState, MethodState, NegativeMethod, ParamSpec, RowCond, Step, value};
use crate::params::{GenParams, Method, Row, SchedulerKind};
use crate::sampling::AncestralStep;
use tch::{Kind, Tensor};

pub struct Dng;

static PARAMS: [ParamSpec; 6] = [
    ParamSpec {
        name: "dng_guidance_scale",
        default: 1.0,
        min: 0.0,
        max: 100.0,
        min_exclusive: false,
        about: "guidance_scale: λ, the negative's scale at p = 1/2",
    },
    ParamSpec {
        name: "dng_prior",
        default: 0.2,
        min: 0.0,
        max: 1.0,
        min_exclusive: true,
        about: "prior: the posterior at the first step",
    },
    ParamSpec {
        name: "dng_temp",
        default: 1.0,
        min: 0.0,
        max: 1000.0,
        min_exclusive: false,
        about: "Temp: the weight of the evidence of each step",
    },
    ParamSpec {
        name: "dng_offset",
        default: 0.0,
        min: -1000.0,
        max: 1000.0,
        min_exclusive: false,
        about: "offset: a bias added to each step's evidence",
    },
    ParamSpec {
        name: "dng_p_min",
        default: 1e-6,
        min: 0.0,
        max: 1.0,
        min_exclusive: true,
        about: "p_min: the posterior's lower clamp",
    },
    ParamSpec {
        name: "dng_p_max",
        default: 0.99,
        min: 0.0,
        max: 1.0,
        min_exclusive: true,
        about: "p_max: the posterior's upper clamp (below 1: λ·p/(1 − p) stays finite)",
    },
];

/// The posterior p, and ε∅, ε₋ of the step being taken.
struct Posterior {
    p: f64,
    rows: Option<(Tensor, Tensor)>,
}

/// Copied whole (forks happen between steps, where `after_step` has taken the rows).
impl MethodState for Posterior {
    fn fork(&self) -> Self {
        Posterior {
            p: self.p,
            rows: self.rows.as_ref().map(|(u, n)| (u.copy(), n.copy())),
        }
    }
}

impl NegativeMethod for Dng {
    fn method(&self) -> Method {
        Method::Dng
    }

    fn rows(&self) -> &'static [Row] {
        &ROWS
    }

    fn row<'a>(&self, c: &'a GenParams, r: Row) -> RowCond<'a> {
        row(c, r)
    }

    fn guide(&self, c: &GenParams, eps: &[Tensor], state: &mut CellState, _: &Step) -> Tensor {
        let (uncond, cond, neg) = (&eps[0], &eps[1], &eps[2]);
        let post = state.get_or_init(|| Posterior {
            p: value(c, "dng_prior"),
            rows: None,
        });
        post.rows = Some((uncond.shallow_clone(), neg.shallow_clone()));
        let scale = value(c, "dng_guidance_scale") * post.p / (1.0 - post.p);
        uncond + (cond - uncond) * c.cfg - (neg - uncond) * scale
    }

    fn after_step(
        &self,
        c: &GenParams,
        state: &mut CellState,
        x: &Tensor,
        next: &Tensor,
        ancestral: Option<AncestralStep>,
    ) {
        let Some(a) = ancestral.filter(|a| a.sigma_up > 0.0) else {
            return;
        };
        let post = state.get_or_init(|| Posterior {
            p: value(c, "dng_prior"),
            rows: None,
        });
        let Some((uncond, neg)) = post.rows.take() else {
            return;
        };
        let drift = a.sigma_down - a.sigma;
        let dist = |eps: &Tensor| {
            (next - (x + eps * drift))
                .square()
                .sum(Kind::Float)
                .double_value(&[])
        };
        let evidence =
            -value(c, "dng_temp") * (dist(&neg) - dist(&uncond)) + value(c, "dng_offset");
        let p = post.p * (evidence / (2.0 * a.sigma_up * a.sigma_up)).exp();
        post.p = p.clamp(value(c, "dng_p_min"), value(c, "dng_p_max"));
    }

    fn check(&self, c: &GenParams) -> Result<(), (&'static str, String)> {
        if c.scheduler != SchedulerKind::EulerAncestral {
            return Err((
                "scheduler",
                format!(
                    "method dng needs scheduler euler_ancestral, not {}: its posterior update weighs the noise of each step (a deterministic step has none)",
                    c.scheduler
                ),
            ));
        }
        if value(c, "dng_p_min") > value(c, "dng_p_max") {
            return Err(("dng_p_min", "dng_p_min is above dng_p_max".into()));
        }
        Ok(())
    }

    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dng_refuses_deterministic_schedulers_and_crossed_clamps() {
        let mut c = GenParams::new(0);
        c.method = Method::Dng;
        assert_eq!(Dng.check(&c).unwrap_err().0, "scheduler");
        c.scheduler = SchedulerKind::EulerAncestral;
        assert!(Dng.check(&c).is_ok());
        c.method_params.set("dng_p_min", 0.995, 1e-6);
        assert_eq!(Dng.check(&c).unwrap_err().0, "dng_p_min");
    }
}
