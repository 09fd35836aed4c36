//! `negimg generate` end to end on the tiny models: writes the PNG the library makes, and
//! rejects bad flags with a message; `negimg models init-random` refuses a non-empty folder.
mod common;

use negimg::params::{GenParams, NegativeMode, SchedulerKind};

#[test]
fn generate_writes_the_library_image_as_png() {
    let dir = common::scratch("pipeline_cli_generate");
    let models = common::tiny::tiny_models();
    let pos = dir.join("pos.png");
    let neg = dir.join("neg.png");
    image::RgbImage::from_fn(50, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, 90])
    })
    .save(&pos)
    .unwrap();
    image::RgbImage::from_fn(30, 60, |x, y| {
        image::Rgb([20, (x * 8) as u8, (y * 4) as u8])
    })
    .save(&neg)
    .unwrap();
    let out = dir.join("sub/out.png");
    let args = [
        "--positive",
        pos.to_str().unwrap(),
        "--negative",
        neg.to_str().unwrap(),
        "--negative-prompt",
        "grass",
        "--weight",
        "0.8",
        "--neg-weight",
        "0.5",
        "--start",
        "0.25",
        "--steps",
        "4",
        "--scheduler",
        "euler",
        "--seed",
        "3",
        "--size",
        "32",
        "--cfg",
        "6",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = common::negimg_generate(&models, &args, &dir);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let written = image::open(&out).unwrap().to_rgb8();

    let mut cell = GenParams::new(3);
    cell.positive_image = Some(pos);
    cell.negative_image = Some(neg);
    cell.negative_prompt = "grass".into();
    cell.negative = NegativeMode::Both;
    cell.positive.weight = 0.8;
    cell.positive.start = 0.25;
    cell.negative_branch.weight = 0.5;
    cell.negative_branch.start = 0.25;
    cell.steps = 4;
    cell.scheduler = SchedulerKind::Euler;
    cell.width = 32;
    cell.height = 32;
    cell.cfg = 6.0;
    assert_eq!(written, common::library_image(&models, cell));
    // The PNG carries the same text chunks as a grid cell.
    let texts = negimg::run::png::read_texts(&out).unwrap();
    let parameters = texts
        .iter()
        .find(|(k, _)| k == "parameters")
        .map(|(_, v)| v.as_str());
    assert!(
        parameters.is_some_and(|p| p.contains("Seed: ") && p.contains("IP-Adapter")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|(k, v)| k == "negimg" && v.contains("\"seed\"")),
        "{texts:?}"
    );

    let bad = common::negimg_generate(&models, &["--negative-mode", "image"], &dir);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--negative IMAGE"));

    let taken = common::negimg(
        &["models", "init-random", "--out", models.to_str().unwrap()],
        &dir,
    );
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("not empty"));
}

/// Every file under `dir`, by relative path.
fn files_of(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn init_random_twice_with_one_seed_writes_identical_files() {
    let dir = common::scratch("pipeline_cli_init_random_twice");
    let sets: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let out = dir.join(name);
            let run = common::negimg(
                &[
                    "models",
                    "init-random",
                    "--out",
                    out.to_str().unwrap(),
                    "--seed",
                    "11",
                ],
                &dir,
            );
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            files_of(&out)
        })
        .collect();
    assert!(
        sets[0].keys().any(|k| k.contains("unet")),
        "{:?}",
        sets[0].keys()
    );
    assert_eq!(
        sets[0].keys().collect::<Vec<_>>(),
        sets[1].keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &sets[0] {
        assert!(
            &sets[1][name] == bytes,
            "{name} differs between the two runs"
        );
    }
}
