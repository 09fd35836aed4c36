//! Attention maps (issue 24). Parity: the per-block sums and the upsampled mean maps of
//! negimg's probe against attention processors wrapped around diffusers' own
//! IPAdapterAttnProcessor2_0 (tests/reference/attention_maps_ref.py; CPU, fp32, tiny random
//! UNet with SD1.5's block layout and a random base adapter, 16x16 latents: blocks at
//! 16x16, 8x8, 4x4 and the mid block's 2x2, so the bicubic upsampling is exercised; three
//! calls, per-row IP scales 0, 0.7, 1.3). Guards on the pipeline: a negative at weight 0
//! gives an all-zero negative map while a negative gives one that is not, a cell without a
//! negative image (and NegToMe, which puts it in no row) gets none; maps on leave the image
//! unchanged. The where-tiny run: maps, the report's "where" section, overlays, and
//! `negimg generate --maps` writing a run cell's files. Maps over a step set (`[maps]
//! steps`): the probe's maps of calls 0 and 2 of three against the reference's sums of
//! those calls alone, and in the pipeline all steps as a set give the default map.
mod common;

use common::parity::{self, branch, get};
use negimg::models::attention::TokenMerge;
use negimg::models::attention_probe::{AttentionProbe, Quantity};
use negimg::models::unet::{
    Hooks, IpInput, UNet2DConditionConfig, UNet2DConditionModel, ip_attn_hidden_sizes,
};
use negimg::params::{AdapterKind, Method, NegativeMode};
use negimg::roles::ModelSet;
use negimg::run::records::Record;
use negimg::weights::TensorFile;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Within this before and after upsampling (the bound).
const TOL: f64 = 1e-5;

#[test]
fn attention_map_parity_with_diffusers_processors() {
    let setup = parity::UnetSetup::new(
        "attention_map_parity",
        UNet2DConditionConfig::tiny_sd15_layout(),
    );
    let cfg = &setup.cfg;
    let widths = ip_attn_hidden_sizes(cfg);
    negimg::models::ip_adapter::write_random(
        &setup.adapter,
        AdapterKind::Base,
        cfg.context_dim(),
        16,
        &widths,
        11,
    )
    .unwrap();
    let timesteps = [801.0f64, 501.0, 301.0];
    let x = setup.write_inputs(|| {
        let f = (Kind::Float, Device::Cpu);
        vec![
            ("latents", Tensor::randn([3, 4, 16, 16], f)),
            ("text", Tensor::randn([3, 77, 32], f)),
            ("image_embeds", Tensor::randn([3, 1, 16], f)),
            ("scales", Tensor::from_slice(&[0.0f32, 0.7, 1.3])),
            ("timesteps", Tensor::from_slice(&timesteps)),
            ("negtome_xs", Tensor::randn([3, 64, 8], f)),
            ("negtome_rows", Tensor::from_slice(&[0i64, 1])),
            ("negtome_refs", Tensor::from_slice(&[2i64, 2])),
            ("negtome_threshold", Tensor::from_slice(&[0.7f32, 0.8])),
        ]
    });
    let reference = setup.reference("attention_maps_ref.py");
    let faithful = get(&reference, "faithful").double_value(&[0]);
    assert!(
        faithful < 1e-5,
        "the recording processor's recomputed term differs from diffusers' by {faithful}"
    );
    let unet = setup.load_with_adapter();
    let (latents, text, scales) = (get(&x, "latents"), get(&x, "text"), get(&x, "scales"));
    let tokens = get(&reference, "tokens");
    let probe = AttentionProbe::new(3);
    for (s, &t) in timesteps.iter().enumerate() {
        let ip = IpInput::uniform(&tokens, &scales);
        let hooks = Hooks {
            probe: Some(&probe),
            ..Hooks::default()
        };
        let eps = tch::no_grad(|| unet.forward_hooked(&latents, t, &text, Some(ip), hooks));
        let diff = common::max_abs_diff(&eps, &get(&reference, &format!("eps_{s}")));
        assert!(
            diff <= 1e-4,
            "call {s}: the UNet differs from diffusers by {diff}"
        );
        // The probe leaves the prediction as it is.
        let plain = tch::no_grad(|| unet.forward(&latents, t, &text, Some(ip)));
        assert_eq!(common::max_abs_diff(&eps, &plain), 0.0, "call {s}");
    }
    negtome_merge_decision_matches_numpy(&x, &reference);
    let maps = probe.finish(timesteps.len(), (16, 16));
    map_over_a_step_set_is_the_mean_of_its_calls(&unet, (&x, &timesteps), &tokens, &reference);
    assert_eq!(maps.blocks.len(), 16, "one map per transformer");
    let names = [
        (Quantity::Norm, "norm"),
        (Quantity::IpTokens, "ip"),
        (Quantity::TextTokens, "text"),
    ];
    let mut grids = vec![];
    for (j, block) in maps.blocks.iter().enumerate() {
        grids.push(block.grid.0);
        for (q, name) in names {
            let ours = &block.raw.iter().find(|(k, _)| *k == q).unwrap().1;
            let want = get(&reference, &format!("raw_{name}_{j}"));
            assert_eq!(ours.size(), want.size(), "block {j} {name}");
            let d = common::max_abs_diff(ours, &want);
            eprintln!("block {j} {name}: max abs diff {d:e}");
            assert!(
                d <= TOL,
                "block {j} {name}: differs from the reference by {d}"
            );
        }
    }
    assert_eq!(grids, [16, 16, 8, 8, 4, 4, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]);
    for (q, name) in names {
        let ours = maps.mean(q).unwrap();
        let want = get(&reference, &format!("mean_{name}"));
        let d = common::max_abs_diff(ours, &want);
        eprintln!("mean {name}: max abs diff {d:e}");
        assert!(d <= TOL, "mean {name}: differs from the reference by {d}");
    }
    // The maps say something: the zero-scale row has no image term, the others do, and
    // the image probabilities of each position sum to 1 over the 4 tokens.
    let norm = maps.mean(Quantity::Norm).unwrap();
    assert_eq!(norm.get(0).abs().max().double_value(&[]), 0.0);
    assert!(norm.get(2).min().double_value(&[]) > 0.0);
    // Far above the tolerance, so that the parity says something.
    let largest = norm.max().double_value(&[]);
    eprintln!("largest mean norm {largest}");
    assert!(largest > 1e3 * TOL, "{largest}");
    let raw_ip = &maps.blocks[0]
        .raw
        .iter()
        .find(|(k, _)| *k == Quantity::IpTokens)
        .unwrap()
        .1;
    let total = raw_ip.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    assert!(common::max_abs_diff(&total, &total.ones_like()) < 1e-5);
}

/// NegToMe's merge mask as the attention maps record it (`TokenMerge::apply_with_mask`)
/// against the decision computed in numpy from the same tokens; its merged output is the
/// one `apply` gives.
fn negtome_merge_decision_matches_numpy(x: &TensorFile, reference: &TensorFile) {
    let xs = get(x, "negtome_xs");
    let rows = get(x, "negtome_rows").to_kind(Kind::Int64);
    let merge = TokenMerge {
        refs: get(x, "negtome_refs").to_kind(Kind::Int64),
        threshold: get(x, "negtome_threshold").view([-1, 1]),
        alpha: Tensor::from_slice(&[0.9f32, 0.9]).view([2, 1, 1]),
        min_size: 0,
        rows,
    };
    let gap = get(reference, "negtome_gap").double_value(&[0]);
    assert!(
        gap > 1e-5,
        "a cosine within {gap} of its threshold: float32 may decide otherwise"
    );
    let (out, mask) = merge.apply_with_mask(&xs);
    let want = get(reference, "negtome_mask");
    assert_eq!(mask.size(), [2, 64]);
    assert_eq!(common::max_abs_diff(&mask.to_kind(Kind::Float), &want), 0.0);
    let share = want.mean(Kind::Float).double_value(&[]);
    assert!(
        share > 0.05 && share < 0.95,
        "some merge, some do not: {share}"
    );
    assert_eq!(common::max_abs_diff(&out, &merge.apply(&xs)), 0.0);
}

/// `[maps] steps = "0, 2"` of the three calls: the probe told each step records the calls
/// of steps 0 and 2 only, and its per-block maps are the reference's sums of those two
/// calls alone, averaged.
fn map_over_a_step_set_is_the_mean_of_its_calls(
    unet: &UNet2DConditionModel,
    (x, timesteps): (&TensorFile, &[f64]),
    tokens: &Tensor,
    reference: &TensorFile,
) {
    let probe = AttentionProbe::new(3).with_steps(Some("0, 2".parse().unwrap()));
    let (latents, text, scales) = (get(x, "latents"), get(x, "text"), get(x, "scales"));
    for (s, &t) in timesteps.iter().enumerate() {
        probe.at_step(s);
        let hooks = Hooks {
            probe: Some(&probe),
            ..Hooks::default()
        };
        let ip = IpInput::uniform(tokens, &scales);
        let eps = tch::no_grad(|| unet.forward_hooked(&latents, t, &text, Some(ip), hooks));
        let diff = common::max_abs_diff(&eps, &get(reference, &format!("eps_{s}")));
        assert!(diff <= 1e-4, "call {s} with a step set: {diff}");
    }
    assert_eq!(probe.steps_covered(timesteps.len()), 2);
    let maps = probe.finish(2, (16, 16));
    let mut worst: f64 = 0.0;
    let mut from_all: f64 = 0.0;
    for (j, block) in maps.blocks.iter().enumerate() {
        for (q, name) in [
            (Quantity::Norm, "norm"),
            (Quantity::IpTokens, "ip"),
            (Quantity::TextTokens, "text"),
        ] {
            let ours = &block.raw.iter().find(|(k, _)| *k == q).unwrap().1;
            let call = |s: usize| get(reference, &format!("call_{name}_{j}_{s}"));
            let want = (call(0) + call(2)) / 2.0;
            worst = worst.max(common::max_abs_diff(ours, &want));
            let all = get(reference, &format!("raw_{name}_{j}"));
            from_all = from_all.max(common::max_abs_diff(ours, &all));
        }
    }
    eprintln!("maps over steps 0, 2: max abs diff {worst:e} (vs all steps: {from_all:e})");
    assert!(worst <= TOL, "the map over steps 0, 2 differs by {worst}");
    assert!(
        from_all > 1e3 * TOL,
        "the step set changes the map: {from_all}"
    );
}

/// The negative map of each cell (with a negative image at weight 0.8, without one, at
/// weight 0; `None` where no row carries a negative image), for `method`, from one batch;
/// and the positive maps. Checks that maps off leave the images as they are.
fn negative_maps(method: Method) -> (Vec<Option<Tensor>>, Vec<Tensor>) {
    let dir = common::scratch(&format!("attention_map_guard_{method}"));
    parity::write_pos_neg(&dir, (32, 32));
    let models = common::tiny::tiny_models();
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let mut with = parity::cell(&dir, 5);
    with.method = method;
    with.negative = negimg::params::NegativeMode::Image;
    with.negative_branch = branch(0.8, 0.0, 1.0);
    let mut without = with.clone();
    without.negative_image = None;
    let mut zero = with.clone();
    zero.negative_branch = branch(0.0, 0.0, 1.0);
    let cells = [with, without, zero];
    let plain = pipeline.generate_float(&cells, &mut |_, _| {}).unwrap();
    assert!(
        pipeline.take_attention_maps().is_empty(),
        "maps are off by default"
    );
    pipeline.set_attention_maps(true);
    let mapped = pipeline.generate_float(&cells, &mut |_, _| {}).unwrap();
    for (a, b) in plain.iter().zip(&mapped) {
        // Bit for bit, NegToMe included (its cells without and with a negative image share
        // the steps where it does not merge; maps keep that sharing).
        let d = common::max_abs_diff(a.as_ref().unwrap(), b.as_ref().unwrap());
        assert_eq!(d, 0.0, "{method}: maps changed the image by {d}");
    }
    let maps = pipeline.take_attention_maps();
    assert_eq!(maps.len(), 3);
    let positive: Vec<Tensor> = maps.iter().map(|m| m.positive.shallow_clone()).collect();
    let negative = maps.into_iter().map(|m| m.negative.map(|n| n.mean));
    (negative.collect(), positive)
}

fn max(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn attention_map_is_zero_at_weight_zero_and_absent_without_a_negative_image() {
    for method in [
        Method::Uncond,
        Method::ThreeBranch,
        Method::CondNegative,
        Method::Subtract,
    ] {
        let (negative, positive) = negative_maps(method);
        let map = |i: usize| {
            negative[i]
                .as_ref()
                .unwrap_or_else(|| panic!("{method}: map {i}"))
        };
        assert!(
            max(map(0)) > 1e-4,
            "{method}: a negative image shows in its map"
        );
        assert!(
            negative[1].is_none(),
            "{method}: no negative image, no row carries one: no negative map"
        );
        if method != Method::Subtract {
            // (subtract's negative is in the cond row's tokens, which the weight does not scale)
            assert_eq!(max(map(2)), 0.0, "{method}: weight 0, zero map");
        }
        assert!(
            positive.iter().all(|p| max(p) > 1e-4),
            "{method}: positive maps"
        );
    }
    // NegToMe merges the negative's tokens and puts its image in no row: no negative maps.
    let (negative, positive) = negative_maps(Method::Negtome);
    assert!(
        negative.iter().all(Option::is_none),
        "negtome: no negative maps"
    );
    assert!(
        positive.iter().all(|p| max(p) > 1e-4),
        "negtome: positive maps"
    );
}

/// A probe batch whose cells share trajectories (a baseline, probes at steps 1 and 2 with
/// `neg_off = "no_image"`, the negative at every step), made in UNet calls of 2 groups:
/// maps on leave every image bit-identical and keep the sharing (the same row-steps), and
/// each cell's maps equal those of the cell made alone (up to the rounding of a call over
/// other rows, as the images); NegToMe's merge share is not halved by two calls a step.
#[test]
fn attention_maps_keep_shared_trajectories_and_equal_maps_made_alone() {
    let dir = common::scratch("attention_map_shared");
    parity::write_pos_neg(&dir, (32, 32));
    let models = common::tiny::tiny_models();
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let mut every = parity::cell(&dir, 5);
    every.negative = NegativeMode::Image;
    every.negative_branch = branch(0.8, 0.0, 1.0);
    every.neg_off = negimg::params::NegOff::NoImage;
    let probe = |k: &str| {
        let mut c = every.clone();
        c.neg_steps_at = Some(k.parse().unwrap());
        c
    };
    let mut baseline = every.clone();
    baseline.negative = NegativeMode::None;
    let cells = [baseline, probe("1"), probe("2"), every];
    pipeline.set_call_cells(2);
    let plain = pipeline.generate_float(&cells, &mut |_, _| {}).unwrap();
    let shared = pipeline.take_row_steps();
    assert!(
        shared.computed < 4 * cells.len() * 2,
        "the cells share steps: {shared:?}"
    );
    pipeline.set_attention_maps(true);
    let mapped = pipeline.generate_float(&cells, &mut |_, _| {}).unwrap();
    assert_eq!(pipeline.take_row_steps(), shared, "maps keep the sharing");
    for (a, b) in plain.iter().zip(&mapped) {
        let d = common::max_abs_diff(a.as_ref().unwrap(), b.as_ref().unwrap());
        assert_eq!(d, 0.0, "maps changed the image by {d}");
    }
    let maps = pipeline.take_attention_maps();
    let mut worst: f64 = 0.0;
    for (i, (cell, batch)) in cells.iter().zip(&maps).enumerate() {
        pipeline
            .generate_float(std::slice::from_ref(cell), &mut |_, _| {})
            .unwrap();
        let alone = pipeline.take_attention_maps().remove(0);
        let pairs = [
            (&batch.positive, &alone.positive),
            (&batch.positive_tokens, &alone.positive_tokens),
            (&batch.text_tokens, &alone.text_tokens),
        ];
        let negative = batch.negative.as_ref().map(|n| &n.blocks);
        let negative_alone = alone.negative.as_ref().map(|n| &n.blocks);
        assert_eq!(negative.is_some(), negative_alone.is_some(), "cell {i}");
        let negative = negative.zip(negative_alone);
        for (ours, want) in pairs.into_iter().chain(negative) {
            let d = common::max_abs_diff(ours, want);
            let scale = max(want).max(1e-3);
            assert!(
                d <= 1e-4 * scale,
                "cell {i}: maps differ by {d} (largest {scale})"
            );
            worst = worst.max(d / scale);
        }
    }
    eprintln!("shared maps vs alone: largest relative difference {worst:e}");
    let probes: Vec<&Tensor> = maps[1..3]
        .iter()
        .map(|m| &m.negative.as_ref().expect("a negative").mean)
        .collect();
    assert!(
        common::max_abs_diff(probes[0], probes[1]) > 1e-4,
        "the probes' maps differ"
    );
}

/// In the pipeline, `[maps] steps` over all 4 steps gives the default map bit for bit, one
/// step another map, and the images stay the same.
#[test]
fn attention_map_over_a_step_set_in_the_pipeline() {
    let dir = common::scratch("attention_map_step_set");
    parity::write_pos_neg(&dir, (32, 32));
    let models = common::tiny::tiny_models();
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let mut cell = parity::cell(&dir, 5);
    cell.negative = negimg::params::NegativeMode::Image;
    cell.negative_branch = branch(0.8, 0.0, 1.0);
    pipeline.set_attention_maps(true);
    let mut run = |steps: Option<&str>| {
        pipeline.set_attention_map_steps(steps.map(|s| s.parse().unwrap()));
        let image = pipeline.generate_float(std::slice::from_ref(&cell), &mut |_, _| {});
        let maps = pipeline.take_attention_maps();
        (
            image.unwrap().remove(0).unwrap(),
            maps.into_iter().next().unwrap(),
        )
    };
    fn neg(m: &negimg::pipeline::attention_maps::CellMaps) -> &Tensor {
        &m.negative.as_ref().expect("a negative row").mean
    }
    let (image, all) = run(None);
    let (same_image, every) = run(Some("0-3"));
    let (_, last) = run(Some("3"));
    assert_eq!(common::max_abs_diff(&image, &same_image), 0.0);
    assert_eq!(common::max_abs_diff(neg(&all), neg(&every)), 0.0);
    assert_eq!(
        common::max_abs_diff(&all.text_tokens, &every.text_tokens),
        0.0
    );
    let d = common::max_abs_diff(neg(&all), neg(&last));
    assert!(d > 1e-4, "the last step alone is another map: {d}");
    assert!(max(neg(&last)) > 1e-4);
}

/// NegToMe's merge map in the pipeline at 64 px (the tiny UNet's 32x32 blocks merge; 4 DDIM
/// steps at t = 751, 501, 251, 1 and `negtome_t_min = 400`: two of them merge): a share in
/// [0, 0.5], nonzero, at the latent grid; zero for a cell of the batch that does not merge;
/// none for a batch where nothing merges; the images as without maps.
#[test]
fn attention_map_of_negtome_merges_is_a_share_of_steps_and_zero_where_negtome_is_off() {
    let dir = common::scratch("attention_map_negtome");
    parity::write_pos_neg(&dir, (32, 32));
    let models = common::tiny::tiny_models();
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let mut on = parity::cell(&dir, 5);
    (on.width, on.height) = (64, 64);
    on.method = Method::Negtome;
    on.negative = negimg::params::NegativeMode::Image;
    on.negative_branch = branch(0.8, 0.0, 1.0);
    (on.negtome_threshold, on.negtome_t_min, on.negtome_t_max) = (0.0, 400.0, 1000.0);
    let mut off = on.clone();
    off.method = Method::Uncond;
    let cells = [on, off.clone()];
    let plain = pipeline.generate_float(&cells, &mut |_, _| {}).unwrap();
    pipeline.set_attention_maps(true);
    let mapped = pipeline.generate_float(&cells, &mut |_, _| {}).unwrap();
    for (a, b) in plain.iter().zip(&mapped) {
        let d = common::max_abs_diff(a.as_ref().unwrap(), b.as_ref().unwrap());
        assert_eq!(d, 0.0, "maps changed the image");
    }
    let maps = pipeline.take_attention_maps();
    let merged: Vec<Tensor> = maps
        .iter()
        .map(|m| {
            m.negtome_merged
                .as_ref()
                .expect("the batch merged")
                .shallow_clone()
        })
        .collect();
    assert_eq!(merged[0].size(), [32, 32], "the latent grid");
    let (low, high) = (
        merged[0].min().double_value(&[]),
        merged[0].max().double_value(&[]),
    );
    eprintln!("NegToMe merge share: {low} to {high}");
    assert!(
        low >= 0.0 && high > 0.0 && high <= 0.5 + 1e-6,
        "{low}..{high}"
    );
    assert_eq!(
        max(&merged[1]),
        0.0,
        "uncond without negtome merges nothing"
    );
    // One cell a call, two calls a step: each call's merges counted apart (the share is
    // not halved); a share, so rounding may flip a token or two.
    pipeline.set_call_cells(1);
    pipeline.generate_float(&cells, &mut |_, _| {}).unwrap();
    let maps = pipeline.take_attention_maps();
    let chunked = maps[0].negtome_merged.as_ref().expect("the batch merged");
    let mean = |t: &Tensor| t.mean(Kind::Float).double_value(&[]);
    let (one, two) = (mean(&merged[0]), mean(chunked));
    eprintln!("NegToMe mean merge share: one call {one}, two calls {two}");
    assert!((one - two).abs() <= 0.02 * one, "{one} vs {two}");
    pipeline.set_call_cells(usize::MAX);
    pipeline.generate_float(&[off], &mut |_, _| {}).unwrap();
    let maps = pipeline.take_attention_maps();
    assert!(maps[0].negtome_merged.is_none(), "no merge, no map");
}

/// `negimg run experiments/where-tiny.toml` (with its lawn mask): every done cell has its
/// attention maps (no negative ones without a negative image), their pictures, the grids,
/// the negative map's entropy and region shares in scores.csv, and the report's "where"
/// section; overlays of either map; `negimg generate --maps` writes a run cell's files.
#[test]
fn attention_maps_of_the_where_tiny_run() {
    let dir = common::scratch("attention_map_where_tiny");
    std::fs::create_dir_all(dir.join("experiments/masks")).unwrap();
    for file in ["experiments/where-tiny.toml", "experiments/masks/lawn.png"] {
        std::fs::copy(common::repo().join(file), dir.join(file)).unwrap();
    }
    let out = common::negimg(
        &["--device", "cpu", "run", "experiments/where-tiny.toml"],
        &dir,
    );
    assert!(out.status.success(), "{}", common::text(&out));
    // Maps keep shared trajectories (none here: the cells differ from the first step); the
    // plan says once that the cells without a negative image get no negative maps.
    let plan = common::negimg(
        &["plan", "experiments/where-tiny.toml", "--no-calibrate"],
        &dir,
    );
    let said = common::text(&plan);
    assert!(plan.status.success(), "{said}");
    assert!(!said.contains("no shared trajectories"), "{said}");
    assert!(said.contains("(1.00x fewer"), "{said}");
    let note = "6 cell(s) without a negative image get no negative attention maps";
    assert_eq!(said.matches(note).count(), 1, "{said}");
    let run = common::only_run(&dir.join("results/where-tiny"));
    let records = negimg::run::records::read_records(&run.join("records.csv")).unwrap();
    assert_eq!(records.len(), 12);
    for r in &records {
        let file = |name| negimg::run::attention_maps::file(&run, &r.cell_id, name);
        assert!(file("text_tokens").is_file() && file("positive_blocks").is_file());
        let (rows, cols, _) = negimg::npy::read(&file("positive")).unwrap();
        assert_eq!(
            (rows, cols),
            (32, 32),
            "the latent grid of 64 px (tiny VAE: 2 px each)"
        );
        if r.negative == negimg::params::NegativeMode::None {
            for name in ["negative", "negative_blocks", "negative_tokens"] {
                assert!(!file(name).exists(), "{}: no negative image", r.cell_id);
            }
            continue;
        }
        let (_, _, values) = negimg::npy::read(&file("negative")).unwrap();
        let largest = values.iter().copied().fold(0.0f32, f32::max);
        assert!(largest > 0.0, "{}: {:?}", r.cell_id, r.method);
        assert!(file("negative").with_extension("png").is_file());
    }
    let scores = std::fs::read_dir(run.join("scores"))
        .unwrap()
        .map(|e| e.unwrap().path().join("scores.csv"))
        .find(|p| p.is_file())
        .expect("a scores.csv");
    let header = std::fs::read_to_string(&scores).unwrap();
    let header = header.lines().next().unwrap();
    for column in [
        "attention_entropy",
        "attention_in_region",
        "attention_out_region",
    ] {
        assert!(header.contains(column), "{column} in {header}");
    }
    assert!(run.join("grids").read_dir().unwrap().next().is_some());
    where_section(&run, &records);
    overlays(&run, &records);
    generate_maps(&dir, &run, &records);
}

/// The mean over the seeds of each method's negative maps (cells with a negative image).
fn mean_maps(run: &Path, records: &[Record]) -> Vec<(Method, Vec<f64>)> {
    let mut means: Vec<(Method, Vec<f64>, usize)> = Vec::new();
    for r in records.iter().filter(|r| r.negative != NegativeMode::None) {
        let file = negimg::run::attention_maps::file(run, &r.cell_id, "negative");
        let (_, _, values) = negimg::npy::read(&file).unwrap();
        if !means.iter().any(|(m, _, _)| *m == r.method) {
            means.push((r.method, vec![0.0; values.len()], 0));
        }
        let (_, sum, n) = means.iter_mut().find(|(m, _, _)| *m == r.method).unwrap();
        sum.iter_mut()
            .zip(&values)
            .for_each(|(a, b)| *a += *b as f64);
        *n += 1;
    }
    means
        .into_iter()
        .map(|(m, sum, n)| {
            assert_eq!(n, 2, "{m}: two seeds");
            (m, sum.into_iter().map(|v| v / n as f64).collect())
        })
        .collect()
}

/// The report's "where" section: a mean map per condition with a negative image, drawn at
/// one scale from the mean of its seeds' maps (checked pixel by pixel against the heat
/// colours of the mean computed here), and per-block maps of the strongest condition.
fn where_section(run: &Path, records: &[Record]) {
    let html = std::fs::read_to_string(run.join("index.html")).unwrap();
    assert!(html.contains("<h2>Where</h2>"), "a where section");
    let means = mean_maps(run, records);
    assert_eq!(means.len(), 3, "uncond, three_branch, subtract");
    let scale = means
        .iter()
        .flat_map(|(_, m)| m.iter().copied())
        .fold(0.0, f64::max);
    let strength = |m: &[f64]| m.iter().sum::<f64>() / m.len() as f64;
    let strongest = means
        .iter()
        .max_by(|a, b| strength(&a.1).total_cmp(&strength(&b.1)))
        .unwrap()
        .0;
    let pictures: Vec<_> = std::fs::read_dir(run.join("where"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("condition-"))
        .collect();
    assert_eq!(
        pictures.len(),
        3,
        "one per condition with a negative: {pictures:?}"
    );
    // Conditions come in record order (negative none first: no map, no picture); find each
    // method's picture by its place in the table.
    let table = &html[html.find("<h2>Where</h2>").unwrap()..];
    for (method, mean) in &means {
        let row = table
            .split("<tr>")
            .find(|row| {
                row.contains(&format!("method: {method}<")) && row.contains("negative: image")
            })
            .unwrap_or_else(|| panic!("{method}'s row in {table}"));
        let file = row
            .split("src=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let picture = image::open(run.join(file)).unwrap().to_rgb8();
        // The 64 px map centred on the legend's 160 px width, at 2 px per latent.
        let x0 = (picture.width() - 64) / 2;
        for (i, j) in [(0, 0), (5, 7), (16, 16), (31, 2), (20, 30)] {
            let want = negimg::report::maps::heat((mean[i * 32 + j] / scale) as f32);
            let got = picture.get_pixel(x0 + 2 * j as u32, 2 * i as u32);
            let close = (0..3).all(|c| (want[c] as i32 - got[c] as i32).abs() <= 1);
            assert!(
                close,
                "{method} ({i}, {j}): {got:?} against the mean's {want:?}"
            );
        }
    }
    let per_block = &table[table.find("<h3>Per block:").expect("per-block maps")..];
    let heading = per_block.lines().next().unwrap();
    assert!(
        heading.contains(&format!("method: {strongest}")) && heading.contains("seed 1"),
        "the lowest seed of the strongest condition ({strongest}): {heading}"
    );
    let chosen = records
        .iter()
        .find(|r| r.method == strongest && r.negative == NegativeMode::Image && r.seed == 1)
        .unwrap();
    let blocks_file = negimg::run::attention_maps::file(run, &chosen.cell_id, "negative_blocks");
    let blocks = negimg::npy::read_shape(&blocks_file).unwrap().0[0];
    assert!(
        per_block.contains(&format!(
            "The {blocks} cross-attention blocks of cell {}",
            chosen.cell_id
        )),
        "{per_block}"
    );
    for name in ["blocks-negative.png", "blocks-positive.png"] {
        let sheet = image::open(run.join("where").join(name)).unwrap().to_rgb8();
        // Up to 8 tiles of 64 px to a row (and the legend under them).
        let per_row = blocks.min(8) as u32;
        let rows = blocks.div_ceil(8) as u32;
        assert!(
            sheet.width() >= per_row * 64 && sheet.height() >= rows * 64,
            "{name}"
        );
    }
}

/// `[plots] show = "overlay"` lays the map `overlay` names over each image: the negative
/// attention overlay differs from the image and from the change overlay.
fn overlays(run: &Path, records: &[Record]) {
    use negimg::report::maps::{MapKind, Picture, cell_picture, run_scale};
    let r = records
        .iter()
        .find(|r| r.negative != NegativeMode::None)
        .unwrap();
    let change = negimg::scoring::change_map_file(run, &r.cell_id, "luma");
    assert!(change.is_file(), "a change map against the baseline");
    let picture = |show: Picture| {
        let scale = show
            .kind()
            .map_or(1.0, |k| run_scale(run, records, k).unwrap());
        cell_picture(run, r, show, scale).unwrap()
    };
    let image = picture(Picture::Image);
    let on_attention = picture(Picture::Overlay(MapKind::NegativeAttention));
    let on_change = picture(Picture::Overlay(MapKind::Change));
    assert_ne!(on_attention, image, "the attention overlay shows the map");
    assert_ne!(on_attention, on_change, "the two overlays differ");
    assert_ne!(on_change, image);
    // From the experiment file: overlay = "negative_attention" gets these grids.
    let mut info = negimg::scoring::read_info(run).unwrap();
    info.plots.show = negimg::run::info::Show::Overlay;
    info.plots.overlay = negimg::run::info::Overlay::NegativeAttention;
    assert_eq!(
        Picture::of(&info.plots),
        Picture::Overlay(MapKind::NegativeAttention)
    );
    std::fs::write(run.join("run.json"), serde_json::to_string(&info).unwrap()).unwrap();
    negimg::report::plot_run(run).unwrap();
    assert!(run.join("grids").read_dir().unwrap().next().is_some());
}

/// `negimg generate --maps` with a run cell's parameters writes the cell's map files, with
/// the run's values.
fn generate_maps(dir: &Path, run: &Path, records: &[Record]) {
    let info = negimg::scoring::read_info(run).unwrap();
    let input = |name: &str| run.join(&info.images[name]).display().to_string();
    for method in [Method::Uncond, Method::Subtract] {
        let r = records
            .iter()
            .find(|r| r.negative == NegativeMode::Image && r.method == method && r.seed == 1)
            .unwrap();
        let out = dir.join(format!("generated-{method}.png"));
        let (pos, neg) = (input(&r.positive_image), input(&r.negative_image));
        let seed = r.seed.to_string();
        let [cfg, neg_cfg, weight, neg_weight] =
            [r.cfg, r.neg_cfg.unwrap(), r.weight, r.neg_weight].map(|x| x.to_string());
        let args = [
            "--dtype",
            "fp32",
            "--maps",
            "--out",
            out.to_str().unwrap(),
            "--prompt",
            &r.prompt,
            "--positive",
            &pos,
            "--negative",
            &neg,
            "--negative-mode",
            "image",
            "--method",
            &method.to_string(),
            "--seed",
            &seed,
            "--steps",
            "3",
            "--size",
            "64",
            "--cfg",
            &cfg,
            "--neg-cfg",
            &neg_cfg,
            "--weight",
            &weight,
            "--neg-weight",
            &neg_weight,
        ];
        let made = common::negimg_generate(&dir.join("models/tiny"), &args, dir);
        assert!(made.status.success(), "{}", common::text(&made));
        let maps = dir.join(format!("generated-{method}-maps"));
        let names = |d: &Path| {
            let mut n: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".npy") && n.starts_with("attention_"))
                .collect();
            n.sort();
            n
        };
        let cell = run.join("maps").join(&r.cell_id);
        assert_eq!(names(&maps), names(&cell), "{method}: the run cell's files");
        assert_eq!(names(&maps).len(), 7);
        for name in names(&maps) {
            let (a, b) = (
                negimg::npy::read_shape(&maps.join(&name)).unwrap(),
                negimg::npy::read_shape(&cell.join(&name)).unwrap(),
            );
            assert_eq!(a.0, b.0, "{name}");
            let d =
                a.1.iter()
                    .zip(&b.1)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
            // Float noise only: the run encodes its inputs in batches (its image and
            // generate's differ by at most one level of 255 too).
            let largest = b.1.iter().map(|x| x.abs()).fold(0.0, f32::max);
            assert!(
                d <= 1e-5 * largest,
                "{method} {name}: {d} from the run's ({largest})"
            );
        }
    }
    // Without a negative image: positive maps only, and a note.
    let out = dir.join("generated-none.png");
    let args = [
        "--dtype",
        "fp32",
        "--maps",
        "--out",
        out.to_str().unwrap(),
        "--positive",
        &input("house"),
        "--steps",
        "2",
        "--size",
        "64",
    ];
    let made = common::negimg_generate(&dir.join("models/tiny"), &args, dir);
    let said = common::text(&made);
    assert!(made.status.success(), "{said}");
    assert!(said.contains("no negative maps"), "{said}");
    let maps = dir.join("generated-none-maps");
    assert!(maps.join("attention_positive.npy").is_file());
    assert!(!maps.join("attention_negative.npy").exists());
}
