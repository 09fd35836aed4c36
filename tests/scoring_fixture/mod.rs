//! A small finished run written by the tests themselves: solid-colour images, records.csv
//! and run.json, for the scoring and report tests.
#![allow(dead_code)]
use image::{Rgb, RgbImage};
use negimg::params::{AdapterKind, NegativeMode, NoImage, SchedulerKind};
use negimg::run::info::{Axis, PlotsSpec, RunInfo, ScoringSpec};
use negimg::run::records::{Record, Status, write_records};
use std::collections::BTreeMap;
use std::path::Path;

pub const POS: Rgb<u8> = Rgb([230, 20, 20]);
pub const NEG: Rgb<u8> = Rgb([20, 20, 230]);

/// The colour of the image of (weight index, mode index, seed): distinct per cell.
pub fn color(w: usize, m: usize, seed: u64) -> Rgb<u8> {
    Rgb([40 + 60 * w as u8, 30 + 50 * m as u8, 20 + 70 * seed as u8])
}

pub fn record(cell_id: &str, file: &str, seed: u64, weight: f64, negative: NegativeMode) -> Record {
    Record {
        cell_id: cell_id.into(),
        status: Status::Done,
        file: file.into(),
        seed,
        prompt: "a photo".into(),
        negative_prompt: "blue".into(),
        negative,
        positive_image: "pos".into(),
        negative_image: "neg".into(),
        adapter: AdapterKind::Base,
        weight,
        start: 0.0,
        end: 1.0,
        neg_weight: weight,
        neg_start: 0.0,
        neg_end: 1.0,
        cfg: 7.5,
        steps: 4,
        scheduler: SchedulerKind::Ddim,
        width: 48,
        height: 32,
        no_image: NoImage::Reference,
        method: Default::default(),
        neg_embed_scale: 1.0,
        neg_cfg: Some(7.5),
        window: Default::default(),
        blocks: Default::default(),
        neg_blocks: Default::default(),
        ip_scaling: Default::default(),
        negtome: false,
        negtome_alpha: negimg::params::NEGTOME_ALPHA,
        negtome_threshold: negimg::params::NEGTOME_THRESHOLD,
        negtome_t_min: negimg::params::NEGTOME_T_MIN,
        negtome_t_max: negimg::params::NEGTOME_T_MAX,
        method_params: String::new(),
        subject: String::new(),
        steps_at: None,
        neg_steps_at: None,
        neg_off: Default::default(),
        trace: None,
        original_size: "auto".into(),
        crops_coords_top_left: "0x0".into(),
        target_size: "auto".into(),
        negative_original_size: "auto".into(),
        negative_crops_coords_top_left: "auto".into(),
        negative_target_size: "auto".into(),
        seconds: 0.1,
        error: String::new(),
    }
}

pub struct Fixture {
    pub info: RunInfo,
    pub records: Vec<Record>,
    pub weights: Vec<f64>,
    pub modes: Vec<NegativeMode>,
    pub seeds: Vec<u64>,
}

/// A run over weight x negative x seed with 48x32 images; `failed` names a cell
/// (weight index, mode index, seed) that failed. Images are solid colours unless
/// `textured`, then they carry a gradient so that CLIP embeddings differ more.
pub fn write_run(
    dir: &Path,
    weights: &[f64],
    modes: &[NegativeMode],
    seeds: &[u64],
    failed: Option<(usize, usize, u64)>,
    textured: bool,
) -> Fixture {
    std::fs::create_dir_all(dir.join("inputs")).unwrap();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    RgbImage::from_pixel(40, 40, POS)
        .save(dir.join("inputs/pos.png"))
        .unwrap();
    RgbImage::from_pixel(40, 40, NEG)
        .save(dir.join("inputs/neg.png"))
        .unwrap();
    let mut records = Vec::new();
    for (wi, &w) in weights.iter().enumerate() {
        for (mi, &m) in modes.iter().enumerate() {
            for &s in seeds {
                let id = format!("c{wi}{mi}{s}");
                let file = format!("images/{id}.png");
                let mut r = record(&id, &file, s, w, m);
                if failed == Some((wi, mi, s)) {
                    r.status = Status::Failed;
                    r.file = String::new();
                    r.error = "NaN in latents".into();
                } else {
                    let c = color(wi, mi, s);
                    let img = RgbImage::from_fn(48, 32, |x, y| {
                        if textured {
                            Rgb([
                                c.0[0].wrapping_add((x * 3) as u8),
                                c.0[1].wrapping_add((y * 5) as u8),
                                c.0[2].wrapping_add(((x * y) % 97) as u8),
                            ])
                        } else {
                            c
                        }
                    });
                    img.save(dir.join(&file)).unwrap();
                }
                records.push(r);
            }
        }
    }
    write_records(&dir.join("records.csv"), &records).unwrap();
    let axis = |name: &str, values: Vec<String>| Axis {
        name: name.into(),
        values,
    };
    let info = RunInfo {
        experiment: "fixture".into(),
        run_id: "run-1".into(),
        axes: vec![
            axis("weight", weights.iter().map(|w| format!("{w:?}")).collect()),
            axis("negative", modes.iter().map(|m| m.to_string()).collect()),
            axis("seed", seeds.iter().map(|s| s.to_string()).collect()),
        ],
        plots: PlotsSpec::default(),
        scoring: ScoringSpec {
            targets: vec!["a red square".into(), "a blue square".into()],
            positive_reference: None,
            negative_reference: None,
            baseline: BTreeMap::new(),
            region: None,
        },
        images: BTreeMap::from([
            ("neg".to_string(), "inputs/neg.png".to_string()),
            ("pos".to_string(), "inputs/pos.png".to_string()),
        ]),
        captions: BTreeMap::new(),
        subjects: BTreeMap::new(),
    };
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(&info).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("experiment.toml"),
        "name = \"fixture\"\n# a <test> & run\n",
    )
    .unwrap();
    Fixture {
        info,
        records,
        weights: weights.to_vec(),
        modes: modes.to_vec(),
        seeds: seeds.to_vec(),
    }
}

/// Writes a scorer folder `scores/<id>/` with known values, as `score_run` would: one row
/// per done record of `fx`, `score(record)` giving the values of `metrics` in order.
pub fn write_known_scorer(
    run_dir: &Path,
    id: &str,
    scorer_path: &str,
    fx: &Fixture,
    metrics: &[&str],
    score: impl Fn(&Record) -> Vec<f64>,
) {
    let sdir = negimg::scoring::scorer_dir(run_dir, id);
    std::fs::create_dir_all(&sdir).unwrap();
    let metrics: Vec<String> = metrics.iter().map(|m| m.to_string()).collect();
    let rows: Vec<(String, String, Vec<f64>)> = fx
        .records
        .iter()
        .filter(|r| r.status == Status::Done)
        .map(|r| (r.cell_id.clone(), r.file.clone(), score(r)))
        .collect();
    negimg::scoring::write_scores(&sdir.join("scores.csv"), &metrics, &rows).unwrap();
    let info = negimg::scoring::ScorerInfo {
        id: id.into(),
        path: scorer_path.into(),
        targets: vec![],
        positive_reference: None,
        negative_reference: None,
        aesthetic: None,
        metrics,
    };
    std::fs::write(
        sdir.join("scorer.json"),
        serde_json::to_string(&info).unwrap(),
    )
    .unwrap();
}
