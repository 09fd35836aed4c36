//! Shared trajectories must not change images: a probe grid (the negative at one step
//! each), a start sweep and an end sweep of the negative branch with their baselines, two
//! seeds with a two-row and a three-row method in one batch, DDIM and DPM++ (whose
//! multistep history forks with the latents), Euler ancestral (each step's noise, drawn from
//! the cell's seed) with probe grids of the methods that keep state (SEGA's momentum, DNG's
//! posterior: forked with the latents) and of `cond_negative`'s second image term, made in
//! one batch with sharing and UNet calls of 3 groups, give the images each cell gives alone
//! (CPU, fp32, tiny models). Also `neg_off`: with `no_image` a probe is its baseline's
//! trajectory until its step. A batch made for some of its cells (a resume) skips the calls
//! that lead to no other cell and gives those cells' images and traces bit for bit.
mod common;

use negimg::params::{GenParams, Method, NegOff, NegativeMode, SchedulerKind};
use negimg::roles::ModelSet;
use negimg::sampling::trajectory::{Trajectories, row_steps_alone};
use std::path::Path;

const STEPS: usize = 4;

fn base(dir: &Path, seed: u64, method: Method, off: NegOff) -> GenParams {
    let mut c = common::parity::cell(dir, seed);
    c.negative = NegativeMode::Image;
    c.steps = STEPS;
    c.method = method;
    c.neg_off = off;
    c.negative_branch.weight = 0.8;
    // SEGA's edit from step 1 (its momentum then matters from the first fork on).
    if method == Method::Sega {
        c.method_params.set("sega_warmup_steps", 1.0, 10.0);
    }
    c
}

/// Per seed and method: the baseline, a probe at every step, a start sweep and an end
/// sweep of the negative branch.
fn grid(dir: &Path, seeds: &[u64], methods: &[Method], off: NegOff) -> Vec<GenParams> {
    let mut cells = vec![];
    for &method in methods {
        for &seed in seeds {
            let mut none = base(dir, seed, method, off);
            none.negative = NegativeMode::None;
            cells.push(none);
            for k in 0..STEPS {
                let mut probe = base(dir, seed, method, off);
                probe.neg_steps_at = Some(k.to_string().parse().unwrap());
                cells.push(probe);
            }
            let mut from = base(dir, seed, method, off);
            from.negative_branch.start = 0.5;
            cells.push(from);
            let mut until = base(dir, seed, method, off);
            until.negative_branch.end = 0.5;
            cells.push(until);
        }
    }
    cells
}

fn tree_row_steps(pipeline: &negimg::pipeline::Pipeline, cells: &[GenParams]) -> (usize, usize) {
    let refs: Vec<&GenParams> = cells.iter().collect();
    let first = &cells[0];
    let sched =
        negimg::sampling::make_scheduler(first.scheduler, pipeline.scheduler_config(), first.steps)
            .unwrap();
    let s = sched.as_ref();
    let at = |i| negimg::sampling::step_at(s, i, first.steps);
    let tree = Trajectories::new(&refs, &at, s.timesteps());
    (tree.row_steps(&refs), row_steps_alone(&refs))
}

/// One batch of all `cells` with sharing, calls of 3 groups, against each cell alone;
/// returns the largest difference. Not bit-identical: a UNet call of more rows rounds
/// differently (as batching does); the tiny random models amplify that along a trajectory
/// (measured up to 2e-5 with `perp_neg` at 6 steps).
fn shared_vs_alone(pipeline: &mut negimg::pipeline::Pipeline, cells: &[GenParams]) -> f64 {
    let alone = common::generate_alone(pipeline, cells);
    pipeline.set_call_cells(3);
    let shared = pipeline.generate_float(cells, &mut |_, _| {}).unwrap();
    let mut worst = 0.0f64;
    for (i, (a, b)) in alone.iter().zip(&shared).enumerate() {
        let d = common::max_abs_diff(a.as_ref().unwrap(), b.as_ref().unwrap());
        assert!(
            d <= 1e-4,
            "cell {i} ({:?}): differs by {d}",
            cells[i].neg_steps_at
        );
        worst = worst.max(d);
    }
    worst
}

#[test]
fn shared_trajectories_equal_cells_generated_alone() {
    let dir = common::scratch("shared_trajectories");
    common::parity::write_pos_neg(&dir, (64, 48));
    let models = common::tiny::tiny_models();
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let mut report = vec![];
    let two_methods = [
        grid(&dir, &[5], &[Method::Uncond], NegOff::NoImage),
        grid(&dir, &[6], &[Method::PerpNeg], NegOff::NoImage),
    ]
    .concat();
    let stateful = [Method::Sega, Method::Dng, Method::CondNegative];
    let mut probes = grid(&dir, &[5], &stateful, NegOff::NoImage);
    probes.retain(|c| c.neg_steps_at.is_some() || c.negative == NegativeMode::None);
    for (off, mut cells, scheduler, most) in [
        (NegOff::NoImage, two_methods, SchedulerKind::Ddim, 0.65),
        (
            NegOff::Zero,
            grid(&dir, &[5], &[Method::Uncond], NegOff::Zero),
            SchedulerKind::DpmPp2mKarras,
            0.8,
        ),
        (NegOff::NoImage, probes, SchedulerKind::EulerAncestral, 0.8),
    ] {
        for c in &mut cells {
            c.scheduler = scheduler;
        }
        let (shared, alone) = tree_row_steps(&pipeline, &cells);
        assert!(
            (shared as f64) < most * alone as f64,
            "{off}: {shared} of {alone} row-steps"
        );
        let worst = shared_vs_alone(&mut pipeline, &cells);
        report.push(format!(
            "{off} {scheduler}: {} cells, {shared} of {alone} row-steps, largest difference {worst:e}",
            cells.len()
        ));
    }
    println!("{}", report.join("\n"));
}

/// With `neg_off = "no_image"` a probe is its baseline's trajectory at every step but its
/// own: the same probe cut to the steps before its own makes the baseline's image bit for
/// bit (with `zero` it does not: there the negative rows lose their "no image" tokens), and
/// the full probe differs from the baseline.
#[test]
fn neg_off_no_image_probe_equals_the_baseline_trajectory_before_its_step() {
    let dir = common::scratch("neg_off_probe");
    common::parity::write_pos_neg(&dir, (64, 48));
    let models = common::tiny::tiny_models();
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let k = 3;
    let mut none = base(&dir, 9, Method::Uncond, NegOff::NoImage);
    none.negative = NegativeMode::None;
    let mut probe = base(&dir, 9, Method::Uncond, NegOff::NoImage);
    probe.neg_steps_at = Some(k.to_string().parse().unwrap());
    let mut zero = probe.clone();
    zero.neg_off = NegOff::Zero;
    let cut = |c: &GenParams| GenParams {
        steps: k,
        ..c.clone()
    };
    let cells = [
        cut(&none),
        cut(&probe),
        cut(&zero),
        none.clone(),
        probe.clone(),
    ];
    let out = common::generate_alone(&mut pipeline, &cells);
    let img = |i: usize| out[i].as_ref().unwrap();
    assert_eq!(
        common::max_abs_diff(img(0), img(1)),
        0.0,
        "no_image before step {k}"
    );
    assert!(
        common::max_abs_diff(img(0), img(2)) > 1e-3,
        "zero before step {k}"
    );
    assert!(
        common::max_abs_diff(img(3), img(4)) > 1e-3,
        "the probe's step acts"
    );
    // The trajectory tree agrees: one trunk until step k, where the probe forks.
    let (shared, alone) = tree_row_steps(&pipeline, &[none, probe]);
    assert_eq!((shared, alone), (2 * (STEPS + STEPS - k), 4 * STEPS));
}

/// x̂₀ traces with shared trajectories equal the traces of each cell made alone (a trace is
/// taken from its group's guided prediction at the step: the trunk's before a probe forks),
/// at the steps of the set, in order.
#[test]
fn traces_with_shared_trajectories_equal_traces_made_alone() {
    let dir = common::scratch("shared_traces");
    common::parity::write_pos_neg(&dir, (64, 48));
    let models = common::tiny::tiny_models();
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let mut cells = grid(&dir, &[7], &[Method::Uncond], NegOff::NoImage);
    for c in &mut cells {
        c.trace = Some("0, 2-3".parse().unwrap());
    }
    let mut alone = vec![];
    for c in &cells {
        pipeline
            .generate_float(std::slice::from_ref(c), &mut |_, _| {})
            .unwrap();
        alone.push(pipeline.take_traces_float().pop().unwrap());
    }
    pipeline.set_call_cells(3);
    let images = pipeline.generate_float(&cells, &mut |_, _| {}).unwrap();
    let shared = pipeline.take_traces_float();
    assert_eq!(shared.len(), cells.len());
    let mut worst = 0.0f64;
    for (i, (a, b)) in alone.iter().zip(&shared).enumerate() {
        let steps = |t: &Vec<(usize, negimg::pipeline::FloatOutcome)>| -> Vec<usize> {
            t.iter().map(|s| s.0).collect()
        };
        assert_eq!(steps(a), [0, 2, 3]);
        assert_eq!(steps(b), [0, 2, 3]);
        for ((_, x), (_, y)) in a.iter().zip(b) {
            let d = common::max_abs_diff(x.as_ref().unwrap(), y.as_ref().unwrap());
            assert!(d <= 1e-4, "cell {i}: trace differs by {d}");
            worst = worst.max(d);
        }
        // x̂₀ of the first step is not the image.
        let first = common::max_abs_diff(b[0].1.as_ref().unwrap(), images[i].as_ref().unwrap());
        assert!(first > 1e-3, "cell {i}: the step-0 trace is the image");
    }
    println!("traces: largest difference to alone {worst:e}");
}

#[test]
fn shared_trajectory_batch_made_for_some_cells_equals_the_whole_batch_for_them() {
    let dir = common::scratch("shared_trajectories_wanted");
    common::parity::write_pos_neg(&dir, (64, 48));
    let models = common::tiny::tiny_models();
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let mut cells = grid(&dir, &[7, 8], &[Method::Uncond], NegOff::NoImage);
    for c in &mut cells {
        c.trace = Some("1, 3".parse().unwrap());
    }
    pipeline.set_call_cells(2);
    let all = vec![true; cells.len()];
    let whole = pipeline
        .generate_float_wanted(&cells, &all, &mut |_, _| {})
        .unwrap();
    let whole_traces = pipeline.take_traces_float();
    let whole_steps = pipeline.take_row_steps();
    assert_eq!(whole_steps.computed, whole_steps.planned);
    // The probe at step 2 of the first seed and the until-sweep of the second.
    let wanted: Vec<bool> = (0..cells.len()).map(|i| i == 3 || i == 13).collect();
    let some = pipeline
        .generate_float_wanted(&cells, &wanted, &mut |_, _| {})
        .unwrap();
    let some_traces = pipeline.take_traces_float();
    let steps = pipeline.take_row_steps();
    assert_eq!(steps.planned, whole_steps.planned);
    assert!(
        steps.computed < steps.planned,
        "{} of {} row-steps computed",
        steps.computed,
        steps.planned
    );
    let same = |a: &negimg::pipeline::FloatOutcome, b: &negimg::pipeline::FloatOutcome| {
        common::max_abs_diff(a.as_ref().unwrap(), b.as_ref().unwrap()) == 0.0
    };
    for i in (0..cells.len()).filter(|&i| wanted[i]) {
        let image = some[i].as_ref().expect("a wanted cell is made");
        assert!(same(image, whole[i].as_ref().unwrap()), "cell {i} differs");
        assert_eq!(some_traces[i].len(), 2, "cell {i}");
        for ((s, a), (t, b)) in some_traces[i].iter().zip(&whole_traces[i]) {
            assert_eq!(s, t);
            assert!(same(a, b), "cell {i}: the trace of step {s} differs");
        }
    }
    assert!(some.iter().any(Option::is_none), "some decode was skipped");
}
