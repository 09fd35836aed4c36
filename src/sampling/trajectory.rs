//! Shared trajectories: cells of one batch that are identical up to some step (same seed,
//! and at every step so far the same rows with the same text, image tokens, IP scales,
//! block weights, guidance and NegToMe merge) compute those steps once, and their latents
//! fork at the first step where they differ. A probe grid (the negative at one step each)
//! over N steps then costs about N²/2 row-steps instead of N², and a start or end sweep
//! shares its common prefix with its baseline.
//!
//! The tree is decided from the parameters alone ([`Trajectories::new`]), so `negimg plan`
//! counts the row-steps with and without sharing from the same function the sampler uses.
use super::methods::{self, BranchIp};
use crate::params::{GenParams, IpScaling, RowImage, StepAt};
use std::collections::HashMap;
use std::fmt::Write;

/// The trajectory tree of a batch: at each step, the groups of cells that share latents.
#[derive(Clone, Debug, PartialEq)]
pub struct Trajectories {
    /// For each distinct initial latent, the first cell with that seed.
    pub initial: Vec<usize>,
    /// Per step: each group's parent (a group of the step before, or at step 0 an index
    /// into `initial`) and its first cell, whose rows the UNet computes for the group.
    pub steps: Vec<Vec<Group>>,
    /// Per step, each cell's group.
    pub group_of: Vec<Vec<usize>>,
    /// Per cell, its group after the last step.
    pub last: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    pub parent: usize,
    pub cell: usize,
}

impl Trajectories {
    /// The tree of `cells` (sharing a batch key) over the steps whose window view is
    /// `step_at(i)` and UNet timestep `timesteps[i]`.
    pub fn new<'a>(
        cells: &[&GenParams],
        step_at: &dyn Fn(usize) -> StepAt<'a>,
        timesteps: &[f64],
    ) -> Trajectories {
        let mut initial: Vec<usize> = vec![];
        let mut group: Vec<usize> = Vec::with_capacity(cells.len());
        for (i, c) in cells.iter().enumerate() {
            match initial.iter().position(|&j| cells[j].seed == c.seed) {
                Some(k) => group.push(k),
                None => {
                    group.push(initial.len());
                    initial.push(i);
                }
            }
        }
        let mut steps = Vec::with_capacity(timesteps.len());
        let mut group_of = Vec::with_capacity(timesteps.len());
        for (i, &t) in timesteps.iter().enumerate() {
            let at = step_at(i);
            let mut index: HashMap<(usize, String), usize> = HashMap::new();
            let mut groups: Vec<Group> = vec![];
            for (c, cell) in cells.iter().enumerate() {
                let key = (group[c], signature(cell, &at, t));
                let parent = group[c];
                group[c] = *index.entry(key).or_insert_with(|| {
                    groups.push(Group { parent, cell: c });
                    groups.len() - 1
                });
            }
            steps.push(groups);
            group_of.push(group.clone());
        }
        Trajectories {
            initial,
            steps,
            group_of,
            last: group,
        }
    }

    /// UNet row-steps with sharing: the rows of each group's cell, summed over groups and steps.
    pub fn row_steps(&self, cells: &[&GenParams]) -> usize {
        self.steps
            .iter()
            .flatten()
            .map(|g| rows(cells[g.cell]))
            .sum()
    }
}

/// UNet row-steps without sharing: every cell's rows at every step.
pub fn row_steps_alone(cells: &[&GenParams]) -> usize {
    cells.iter().map(|c| rows(c) * c.steps).sum()
}

/// A cell's UNet rows per step.
pub fn rows(c: &GenParams) -> usize {
    methods::of(c.method).rows().len()
}

/// Everything that decides a cell's guided noise prediction at one step, given its latents
/// and its method's state: two cells with equal signatures at every step so far and equal
/// latents at the start have equal latents and states after it. (Batch-wide settings, the
/// batch key, are equal within a batch; the seed decides the initial latents and an
/// ancestral scheduler's noise.)
fn signature(c: &GenParams, step: &StepAt, t: f64) -> String {
    let mut s = format!(
        "{:?} {:x} {:x} {:?} {:?}",
        c.method,
        c.cfg.to_bits(),
        c.neg_cfg().to_bits(),
        c.method_params,
        (c.time_ids(), c.negative_time_ids())
    );
    let tokens = |image: RowImage, ip: BranchIp| match (ip.no_image_tokens, ip.weight) {
        (_, w) if w == 0.0 && zero_scale_ignores_tokens(c.ip_scaling) => "off".to_string(),
        (true, _) => format!("{:?} {}", RowImage::NoImage, c.no_image),
        (false, _) => format!("{image:?} {}", c.no_image),
    };
    let method = methods::of(c.method);
    for &row in method.rows() {
        let cond = method.row(c, row);
        let ip = cond.branch.ip(c, step);
        let _ = write!(
            s,
            "|{:?} {:x} {} {}",
            cond.text,
            ip.weight.to_bits(),
            cond.branch.blocks(c),
            tokens(cond.image, ip)
        );
        if let Some(extra) = cond.extra {
            let ip = extra.branch.ip(c, step);
            let _ = write!(
                s,
                " +{:x} {:x} {} {}",
                extra.sign.to_bits(),
                ip.weight.to_bits(),
                extra.branch.blocks(c),
                tokens(extra.image, ip)
            );
        }
    }
    if c.negtome_active(t) {
        let _ = write!(
            s,
            "|merge {:?} {:x} {:x}",
            c.negtome_image(),
            c.negtome_alpha.to_bits(),
            c.negtome_threshold.to_bits()
        );
    }
    s
}

/// Whether an image attention at scale 0 is exactly zero whatever the tokens: `λ·Attn(q, K,
/// V)` and `Attn(q, λK, λV)` are; `k_mean_v_c`'s `(V − m) + λm` keeps a rounding residue
/// of the tokens' values.
fn zero_scale_ignores_tokens(scaling: IpScaling) -> bool {
    scaling != IpScaling::KMeanVC
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::NegOff;
    use crate::params::test_schedule::step;

    fn tree(cells: &[GenParams]) -> Trajectories {
        let refs: Vec<&GenParams> = cells.iter().collect();
        let steps = cells[0].steps;
        let timesteps: Vec<f64> = (0..steps).map(|i| (999 - 40 * i) as f64).collect();
        Trajectories::new(&refs, &|i| step(i, steps, 0.0), &timesteps)
    }

    fn probe(seed: u64, at: Option<&str>, off: NegOff) -> GenParams {
        let mut c = GenParams::new(seed);
        c.steps = 10;
        c.negative_image = Some("lawn.png".into());
        c.neg_steps_at = at.map(|s| s.parse().unwrap());
        c.neg_off = off;
        c
    }

    #[test]
    fn shared_trajectory_probes_fork_at_their_step() {
        for off in [NegOff::Zero, NegOff::NoImage] {
            let mut cells: Vec<GenParams> = (0..10)
                .map(|k| probe(1, Some(&k.to_string()), off))
                .collect();
            let mut base = probe(1, None, off);
            base.negative = crate::params::NegativeMode::None;
            cells.push(base);
            let t = tree(&cells);
            let refs: Vec<&GenParams> = cells.iter().collect();
            // Probe k shares the trunk until its step k; with no_image the baseline is the
            // trunk itself (10 + 9 + ... + 1 probe-groups, plus the trunk at each step).
            let groups: Vec<usize> = t.steps.iter().map(Vec::len).collect();
            let expect: Vec<usize> = match off {
                NegOff::NoImage => (0..10).map(|i| i + 2).collect(),
                // The baseline apart; the probes not yet forked share an "off" trunk.
                NegOff::Zero => (0..10).map(|i| if i < 9 { i + 3 } else { 11 }).collect(),
            };
            assert_eq!(groups, expect, "{off}");
            assert!(t.row_steps(&refs) < row_steps_alone(&refs) / 2 + 40);
            let distinct: std::collections::HashSet<usize> = t.last.iter().copied().collect();
            assert_eq!(distinct.len(), 11);
        }
    }

    #[test]
    fn shared_trajectories_need_the_same_seed() {
        let cells = vec![
            probe(1, Some("5"), NegOff::Zero),
            probe(2, Some("5"), NegOff::Zero),
        ];
        let t = tree(&cells);
        assert_eq!(t.initial, vec![0, 1]);
        assert!(t.steps.iter().all(|g| g.len() == 2));
    }

    #[test]
    fn shared_trajectory_end_sweep_shares_its_prefix() {
        let cells: Vec<GenParams> = [2, 5, 10]
            .iter()
            .map(|&k| {
                let mut c = probe(1, None, NegOff::Zero);
                c.negative_branch.end = k as f64 / 10.0;
                c
            })
            .collect();
        let t = tree(&cells);
        let groups: Vec<usize> = t.steps.iter().map(Vec::len).collect();
        assert_eq!(groups, [1, 1, 2, 2, 2, 3, 3, 3, 3, 3]);
    }
}
