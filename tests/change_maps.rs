//! Change maps against the paired baseline (README, "Change maps"): the luma map, its
//! entropy and the region shares against numpy at test time (tests/reference/
//! change_map_ref.py, which decodes the PNGs with torchvision and reads negimg's .npy files
//! with np.load), and the heat-map pictures and grids of `[plots] show`.
mod common;
mod scoring_fixture;

use image::{Rgb, RgbImage};
use negimg::params::NegativeMode;
use negimg::run::info::Show;
use scoring_fixture::write_run;
use serde_json::{Value, json};

const MODES: [NegativeMode; 3] = [NegativeMode::None, NegativeMode::Text, NegativeMode::Image];

/// A 20x12 mask (another size than the 48x32 images, so it is resized): white on the left
/// third and on a diagonal band.
fn write_mask(path: &std::path::Path) {
    RgbImage::from_fn(20, 12, |x, y| {
        if x < 7 || (x + 20 - y) % 5 == 0 {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    })
    .save(path)
    .unwrap();
}

#[test]
fn change_map_and_region_shares_match_numpy_and_draw_as_heat_maps() {
    let dir = common::scratch("change_maps");
    let mut fx = write_run(&dir, &[0.5, 1.0], &MODES, &[1, 2], None, true);
    let mask = dir.join("lawn-mask.png");
    write_mask(&mask);
    fx.info.scoring.region = Some(mask.clone());
    fx.info.plots.show = Show::Change;
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string(&fx.info).unwrap(),
    )
    .unwrap();

    let scalars = negimg::scoring::change_against_baseline(&dir, &fx.info, &fx.records).unwrap();
    let bases = negimg::scoring::metrics::baselines(&fx.info, &fx.records);
    let pixel = negimg::scoring::pixel::METRICS.len();
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for (r, base) in fx.records.iter().zip(&bases) {
        let b = &fx.records[base.expect("every cell has its negative = none baseline")];
        let npy = negimg::scoring::change_map_file(&dir, &r.cell_id, "luma");
        assert!(npy.is_file(), "{}", npy.display());
        cases.push(json!({
            "image": dir.join(&r.file),
            "baseline": dir.join(&b.file),
            "npy": npy,
            "mask": mask,
        }));
        ours.push(scalars[&r.cell_id][pixel..].to_vec());
    }
    let cases_file = dir.join("cases.json");
    let out_file = dir.join("reference.json");
    std::fs::write(&cases_file, serde_json::to_string(&cases).unwrap()).unwrap();
    common::run_python(
        "change_map_ref.py",
        &[cases_file.to_str().unwrap(), out_file.to_str().unwrap()],
    );
    let reference: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let mut changed = 0;
    for ((r, want), got) in fx.records.iter().zip(&reference).zip(&ours) {
        let id = &r.cell_id;
        assert_eq!(want["shape"], json!([32, 48]), "{id}: (height, width)");
        assert_eq!(want["dtype"], "float32", "{id}");
        let max_diff = want["max_diff"].as_f64().unwrap();
        assert!(
            max_diff < 1e-6,
            "{id}: map differs from numpy's by {max_diff}"
        );
        let close = |a: f64, b: &Value| match b.as_f64() {
            Some(b) => (a - b).abs() < 1e-6,
            None => a.is_nan(),
        };
        assert!(
            close(got[0], &want["entropy"]),
            "{id}: entropy {} vs {}",
            got[0],
            want["entropy"]
        );
        assert!(
            close(got[1], &want["in_region"]),
            "{id}: region {} vs {}",
            got[1],
            want["in_region"]
        );
        if r.negative == NegativeMode::None {
            assert_eq!(want["max"], json!(0.0), "{id}: the baseline against itself");
            assert!(
                got[0].is_nan() && got[1].is_nan(),
                "{id}: no change, no shares"
            );
        } else {
            changed += 1;
            assert!(want["max"].as_f64().unwrap() > 0.0);
            assert!(
                (got[1] + got[2] - 1.0).abs() < 1e-12,
                "{id}: inside + outside"
            );
            // The fixture's cells differ from their baseline by a colour shift over the
            // whole image (wrapping in places): change spread nearly evenly.
            assert!(
                got[0] > 0.5 && got[0] <= 1.0 + 1e-9,
                "{id}: entropy {}",
                got[0]
            );
            assert!(got[1] > 0.0 && got[1] < 1.0, "{id}: share {}", got[1]);
        }
    }
    assert_eq!(changed, 8);

    // The report draws each map with its legend, and grids show the maps.
    negimg::report::plot_run(&dir).unwrap();
    let changed_cell = fx
        .records
        .iter()
        .find(|r| r.negative == NegativeMode::Image)
        .unwrap();
    let png =
        negimg::scoring::change_map_file(&dir, &changed_cell.cell_id, "luma").with_extension("png");
    let heat = image::open(&png).unwrap().to_rgb8();
    assert_eq!(
        heat.width(),
        160,
        "narrow maps are centred on the legend's width"
    );
    assert!(heat.height() > 32, "map and legend strip");
    let bar_y = 32 + 4;
    assert_eq!(
        *heat.get_pixel(0, bar_y),
        Rgb([0, 0, 0]),
        "legend starts black"
    );
    assert_eq!(
        *heat.get_pixel(159, bar_y),
        Rgb([255, 255, 255]),
        "and ends white"
    );
    let grids: Vec<_> = std::fs::read_dir(dir.join("grids"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .collect();
    assert!(!grids.is_empty());
    // The fixture's images are textured colours; heat maps are black, red, yellow or white,
    // and the baseline cells (no change) are black: a grid of maps is mostly those.
    let sheet = image::open(grids[0].path()).unwrap().to_rgb8();
    let black = sheet.pixels().filter(|p| p.0 == [0, 0, 0]).count();
    assert!(
        black > 6 * 48 * 32 / 2,
        "baseline maps are black: {black} black pixels"
    );
}

#[test]
fn change_map_npy_is_not_written_without_a_baseline() {
    let dir = common::scratch("change_maps_no_baseline");
    let fx = write_run(&dir, &[1.0], &[NegativeMode::Image], &[1], None, true);
    let scalars = negimg::scoring::change_against_baseline(&dir, &fx.info, &fx.records).unwrap();
    let id = &fx.records[0].cell_id;
    assert!(scalars[id].iter().all(|v| v.is_nan()));
    assert!(!negimg::scoring::change_map_file(&dir, id, "luma").exists());
    assert!(!dir.join("maps").exists());
    // Grids asked to show maps that do not exist show the images (and say so).
    let mut info = fx.info.clone();
    info.plots.show = Show::Overlay;
    std::fs::write(dir.join("run.json"), serde_json::to_string(&info).unwrap()).unwrap();
    negimg::report::plot_run(&dir).unwrap();
    assert!(dir.join("grids").read_dir().unwrap().next().is_some());
}
