//! Which steps a branch window selects under each rule (`window = "steps" | "sigma"`), for
//! `negimg plan` and the README's comparison table.
use super::{SchedulerConfig, make_scheduler, step_at};
use crate::params::{BranchWeight, SchedulerKind, Window};
use anyhow::Result;

/// The steps (0-based) at which `branch` is active under `window`, for the scheduler `kind`
/// with `steps` steps on `cfg`'s schedule.
pub fn active_steps(
    cfg: &SchedulerConfig,
    kind: SchedulerKind,
    steps: usize,
    window: Window,
    branch: &BranchWeight,
) -> Result<Vec<usize>> {
    let scheduler = make_scheduler(kind, cfg, steps)?;
    Ok((0..scheduler.timesteps().len())
        .filter(|&i| branch.active(window, &step_at(scheduler.as_ref(), i, steps)))
        .collect())
}

/// `0-3, 6` for steps 0, 1, 2, 3 and 6; `none` for no step.
pub fn step_ranges(steps: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let mut j = i;
        while j + 1 < steps.len() && steps[j + 1] == steps[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            steps[i].to_string()
        } else {
            format!("{}-{}", steps[i], steps[j])
        });
        i = j + 1;
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// One row of the comparison: a scheduler, a step count and a `start`-`end` window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowCase {
    pub scheduler: SchedulerKind,
    pub steps: usize,
    pub start: f64,
    pub end: f64,
}

/// A Markdown table of the steps each rule makes active, one row per case, on `cfg`'s
/// schedule; rows where the rules differ are marked.
pub fn comparison_table(cfg: &SchedulerConfig, cases: &[WindowCase]) -> Result<String> {
    let mut out = String::from(
        "| scheduler | steps | start-end | active with `steps` | active with `sigma` | differ |\n\
         |---|---|---|---|---|---|\n",
    );
    for c in cases {
        let branch = BranchWeight {
            weight: 1.0,
            start: c.start,
            end: c.end,
        };
        let by = |w| active_steps(cfg, c.scheduler, c.steps, w, &branch);
        let (steps, sigma) = (by(Window::Steps)?, by(Window::Sigma)?);
        out.push_str(&format!(
            "| {} | {} | {}-{} | {} | {} | {} |\n",
            c.scheduler,
            c.steps,
            c.start,
            c.end,
            step_ranges(&steps),
            step_ranges(&sigma),
            if steps == sigma { "" } else { "yes" }
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_sets_print_as_ranges() {
        assert_eq!(step_ranges(&[0, 1, 2, 3, 6]), "0-3, 6");
        assert_eq!(step_ranges(&[4]), "4");
        assert_eq!(step_ranges(&[]), "none");
    }

    #[test]
    fn full_windows_are_every_step_under_both_rules() {
        let cfg = SchedulerConfig::sd15_ddim();
        let full = BranchWeight {
            weight: 1.0,
            start: 0.0,
            end: 1.0,
        };
        for kind in [SchedulerKind::Ddim, SchedulerKind::DpmPp2mKarras] {
            for w in [Window::Steps, Window::Sigma] {
                let on = active_steps(&cfg, kind, 8, w, &full).unwrap();
                assert_eq!(on, (0..8).collect::<Vec<_>>(), "{kind} {w}");
            }
        }
    }
}
