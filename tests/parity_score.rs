//! The metric values of `score_run` on a fixed image set equal the same computation done in
//! Python with transformers (CLIPModel + CLIPImageProcessor + CLIPTokenizer), within 1e-4.
mod common;
mod scoring_fixture;

use negimg::models::clip_model::{ClipConfig, write_random_model};
use negimg::models::tokenizer::find_open_clip_vocab;
use negimg::params::NegativeMode;
use negimg::run::records::Status;
use negimg::scoring;
use scoring_fixture::write_run;

#[test]
fn clip_metrics_match_transformers() {
    let dir = common::scratch("parity_score_run");
    let scorer = common::scratch("parity_score_model").join("scorer");
    write_random_model(
        &scorer,
        &ClipConfig::tiny(),
        11,
        &find_open_clip_vocab().unwrap(),
    )
    .unwrap();
    // 48x32 textured images: the resize and centre crop matter; one failed cell.
    let modes = [NegativeMode::None, NegativeMode::Image, NegativeMode::Both];
    let fx = write_run(&dir, &[0.5, 1.0], &modes, &[1, 2], Some((0, 1, 2)), true);

    scoring::score_run(&dir, &scorer, tch::Device::Cpu, tch::Kind::Float).unwrap();
    let id = scoring::scorer_id(&scorer).unwrap();
    let table = scoring::read_scores(&scoring::scorer_dir(&dir, &id).join("scores.csv")).unwrap();
    // The patch-token change maps' scalars are checked against numpy in patch_change_maps.
    let compared: Vec<(usize, &String)> = table
        .metrics
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.starts_with("patch_change_"))
        .collect();
    let names: Vec<&String> = compared.iter().map(|(_, m)| *m).collect();

    let out = dir.join("ref.safetensors");
    common::run_python(
        "score_clip.py",
        &[
            dir.to_str().unwrap(),
            scorer.to_str().unwrap(),
            &serde_json::to_string(&names).unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let reference = tch::Tensor::read_safetensors(&out).unwrap();
    let metrics = &reference.iter().find(|(n, _)| n == "metrics").unwrap().1;
    let done: Vec<_> = fx
        .records
        .iter()
        .filter(|r| r.status == Status::Done)
        .collect();
    assert_eq!(metrics.size(), [done.len() as i64, names.len() as i64]);
    let mut worst = 0.0f64;
    for (i, r) in done.iter().enumerate() {
        let ours = &table.values[&r.cell_id];
        for (m, &(column, name)) in compared.iter().enumerate() {
            let want = metrics.double_value(&[i as i64, m as i64]);
            let got = ours[column];
            assert_eq!(
                want.is_nan(),
                got.is_nan(),
                "{name} of {} defined on one side only",
                r.cell_id
            );
            if want.is_nan() {
                continue;
            }
            let diff = (got - want).abs();
            worst = worst.max(diff);
            assert!(
                diff < 1e-4,
                "{name} of {}: ours {got}, transformers {want}",
                r.cell_id
            );
        }
    }
    println!("max |diff| = {worst:e} over {} images", done.len());
}
