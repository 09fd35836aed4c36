//! Grids, curves and index.html from a small run the test writes itself (no model needed:
//! scores come from a known scores.csv).
mod common;
mod scoring_fixture;

use image::{Rgb, RgbImage};
use negimg::params::NegativeMode;
use negimg::report::curves;
use negimg::report::grid::{GridOptions, arrange, plan_sheets, render_sheet, write_grids};
use negimg::scoring;
use scoring_fixture::{Fixture, NEG, POS, color, write_run};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

const MODES: [NegativeMode; 3] = [NegativeMode::None, NegativeMode::Image, NegativeMode::Text];

fn is_dark(p: &Rgb<u8>) -> bool {
    p.0.iter().all(|&c| c < 120)
}

fn count_dark(img: &RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> usize {
    (y..y + h)
        .flat_map(|yy| (x..x + w).map(move |xx| (xx, yy)))
        .filter(|&(xx, yy)| is_dark(img.get_pixel(xx, yy)))
        .count()
}

fn has_color(img: &RgbImage, (x, y, w, h): (u32, u32, u32, u32), c: Rgb<u8>) -> bool {
    (y..(y + h).min(img.height()))
        .any(|yy| (x..(x + w).min(img.width())).any(|xx| *img.get_pixel(xx, yy) == c))
}

/// Known scores: clip_i_pos = 0.5 weight + 0.01 seed + (image 0.1, text 0.05, none 0),
/// clip_i_neg = 0.4 - 0.2 weight, subtraction = their difference.
fn known_score(weight: f64, mode: NegativeMode, seed: u64) -> [f64; 3] {
    let bonus = match mode {
        NegativeMode::Image => 0.1,
        NegativeMode::Text => 0.05,
        _ => 0.0,
    };
    let pos = 0.5 * weight + 0.01 * seed as f64 + bonus;
    let neg = 0.4 - 0.2 * weight;
    [pos, neg, pos - neg]
}

fn write_known_scores(dir: &Path, fx: &Fixture, id: &str) {
    scoring_fixture::write_known_scorer(
        dir,
        id,
        "test/known",
        fx,
        &["clip_i_pos", "clip_i_neg", "subtraction"],
        |r| known_score(r.weight, r.negative, r.seed).to_vec(),
    );
}

#[test]
fn grid_places_cells_labels_and_input_headers() {
    let dir = common::scratch("report_grid_layout");
    let fx = write_run(&dir, &[0.5, 1.0], &MODES, &[1, 2], Some((1, 2, 2)), false);
    let opts = GridOptions::default();
    let arr = arrange(&fx.info, &fx.records, &opts);
    assert_eq!(
        arr.cols.as_ref().unwrap().name,
        "negative",
        "most values go on columns"
    );
    assert_eq!(arr.rows.as_ref().unwrap().name, "weight");
    assert_eq!(arr.seeds_in_cell, vec!["1", "2"], "two seeds side by side");

    let mut captions = HashMap::new();
    captions.insert("c000".to_string(), "I+ 0.500".to_string());
    let sheets = plan_sheets(&fx.info, &fx.records, true, &opts);
    assert_eq!(sheets.len(), 1);
    let plan = &sheets[0];
    let l = &plan.layout;
    assert_eq!((l.rows, l.cols, l.subs), (2, 3, 2));
    assert_eq!(
        plan.col_labels,
        vec!["negative: none", "negative: image", "negative: text"]
    );
    assert_eq!(plan.row_labels, vec!["weight: 0.5", "weight: 1.0"]);
    assert_eq!(
        plan.inputs.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(),
        ["positive: pos", "negative: neg"]
    );
    let img = render_sheet(plan, &dir, &fx.records, &captions).unwrap();
    img.save(dir.join("grid.png")).unwrap();
    assert_eq!((img.width(), img.height()), (l.width, l.height));

    for r in 0..2u32 {
        for c in 0..3u32 {
            for (s, seed) in [1u64, 2].into_iter().enumerate() {
                let (x, y, w, h) = l.image_rect(r, c, s as u32);
                assert_eq!((w, h), (48, 32));
                let corner = *img.get_pixel(x + 1, y + 1);
                let far = *img.get_pixel(x + w - 2, y + h - 2);
                if (r, c, seed) == (1, 2, 2) {
                    assert_eq!(corner, Rgb([200, 200, 200]), "failed cell is grey");
                } else {
                    let want = color(r as usize, c as usize, seed);
                    assert_eq!(corner, want, "cell ({r},{c}) seed {seed} top-left");
                    assert_eq!(far, want, "cell ({r},{c}) seed {seed} bottom-right");
                }
                // The caption strip under each image carries text (the seed).
                let cap = (x, y + h, w, l.caption_h);
                assert!(count_dark(&img, cap) > 5, "caption under ({r},{c},{s})");
            }
        }
        assert!(
            count_dark(&img, l.row_label_rect(r)) > 30,
            "row label {r} has text"
        );
        // Left of the row label text and between cells is white.
        let (x0, y0) = l.cell_origin(r, 0);
        assert_eq!(*img.get_pixel(x0 - 1, y0 + 5), Rgb([255, 255, 255]));
    }
    for c in 0..3u32 {
        assert!(
            count_dark(&img, l.col_label_rect(c)) > 30,
            "column label {c} has text"
        );
        let (x, y) = l.cell_origin(0, c);
        if c > 0 {
            assert_eq!(
                *img.get_pixel(x - l.gap / 2, y + 10),
                Rgb([255, 255, 255]),
                "gap"
            );
        }
    }
    // Header: title text and the two input thumbnails in their colours.
    let header = (0, 0, l.width, l.margin + l.header_h);
    assert!(
        has_color(&img, header, POS),
        "positive input shown in the header"
    );
    assert!(
        has_color(&img, header, NEG),
        "negative input shown in the header"
    );
    assert!(count_dark(&img, header) > 50, "header has text");
}

#[test]
fn grid_splits_large_sheets_and_writes_png_and_jpeg() {
    let dir = common::scratch("report_grid_split");
    let fx = write_run(&dir, &[0.5, 1.0], &MODES, &[1, 2], None, false);
    let base = plan_sheets(&fx.info, &fx.records, false, &GridOptions::default());
    let l = &base[0].layout;
    // Room for two columns, not three.
    let cap = 2 * l.margin + l.row_label_w + 2 * l.cell_w() + l.gap + 5;
    let opts = GridOptions {
        max_width: cap,
        jpeg_width: 100,
        ..GridOptions::default()
    };
    let sheets = plan_sheets(&fx.info, &fx.records, false, &opts);
    assert_eq!(sheets.len(), 2);
    assert_eq!(sheets[0].col_labels.len(), 2);
    assert_eq!(sheets[1].col_labels, vec!["negative: text"]);
    assert!(sheets[1].title.contains("part 2 of 2"));
    let files = write_grids(&dir, &fx.info, &fx.records, &HashMap::new(), &opts).unwrap();
    assert_eq!(files.len(), 2);
    for f in &files {
        let png = image::open(dir.join(&f.png)).unwrap();
        assert!(
            png.width() <= cap,
            "{} is {} wide, cap {cap}",
            f.png,
            png.width()
        );
        let jpg = image::open(dir.join(&f.jpg)).unwrap();
        assert_eq!(jpg.width(), 100, "the JPEG is the smaller copy");
    }

    // Seeds beyond max_side_by_side go on pages.
    let opts = GridOptions {
        max_side_by_side: 1,
        ..GridOptions::default()
    };
    let sheets = plan_sheets(&fx.info, &fx.records, false, &opts);
    let stems: Vec<&str> = sheets.iter().map(|s| s.stem.as_str()).collect();
    assert_eq!(stems, ["grid_seed-1", "grid_seed-2"]);
    assert_eq!(sheets[0].layout.subs, 1);
}

#[test]
fn curves_from_known_scores() {
    let dir = common::scratch("report_curves");
    let fx = write_run(
        &dir,
        &[0.0, 0.5, 1.0],
        &[NegativeMode::Text, NegativeMode::Image],
        &[1, 2, 3],
        None,
        false,
    );
    write_known_scores(&dir, &fx, "known-0000");
    let scores = scoring::read_scores(&dir.join("scores/known-0000/scores.csv")).unwrap();
    assert_eq!(curves::x_axis(&fx.info).as_deref(), Some("weight"));
    assert_eq!(
        curves::series_axes(&fx.info, &fx.records, "weight"),
        vec!["negative"]
    );
    let data = curves::curve_data(
        &fx.info,
        &fx.records,
        &scores,
        0,
        "weight",
        &["negative".into()],
    );
    assert_eq!(data.len(), 2);
    assert_eq!(data[0].label, "negative=text");
    assert_eq!(data[1].label, "negative=image");
    for (s, mode) in data.iter().zip([NegativeMode::Text, NegativeMode::Image]) {
        let xs: Vec<f64> = s.points.iter().map(|p| p.0).collect();
        assert_eq!(xs, vec![0.0, 0.5, 1.0]);
        for (x, e) in &s.points {
            let want: f64 = [1, 2, 3]
                .map(|seed| known_score(*x, mode, seed)[0])
                .iter()
                .sum::<f64>()
                / 3.0;
            assert!((e.mean - want).abs() < 1e-12, "mean at {x}");
            assert_eq!(e.n, 3);
            assert!(e.ci_lo < e.mean && e.mean < e.ci_hi, "CI brackets the mean");
        }
    }
    let files =
        curves::write_curves(&dir, &fx.info, &fx.records, "known-0000", &scores, &[]).unwrap();
    let metrics: Vec<&str> = files.iter().map(|f| f.metric.as_str()).collect();
    assert_eq!(metrics, ["clip_i_pos", "clip_i_neg", "subtraction"]);
    for f in &files {
        let svg = std::fs::read_to_string(dir.join(&f.svg)).unwrap();
        assert!(
            svg.contains("negative=text") && svg.contains("negative=image"),
            "legend"
        );
        assert!(svg.contains("\nweight\n"), "x label");
        let png = image::open(dir.join(&f.png)).unwrap().to_rgb8();
        assert_eq!((png.width(), png.height()), curves::SIZE);
        // Both series colours are drawn.
        let full = (0, 0, png.width(), png.height());
        assert!(
            has_color(&png, full, Rgb([31, 119, 180])),
            "{}: first series",
            f.png
        );
        assert!(
            has_color(&png, full, Rgb([255, 127, 14])),
            "{}: second series",
            f.png
        );
    }
}

/// Headless Chromium: screenshot of `page`, and the console lines it logged.
fn chromium(page: &Path, shot: &Path, profile: &Path) -> String {
    let bin = Path::new("/usr/bin/chromium");
    assert!(
        bin.exists(),
        "headless Chromium is missing: run scripts/install-chromium.sh"
    );
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("cannot run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .map(String::from)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every src= and href= of the page resolves to a file of the run folder.
fn relative_links(html: &str) -> Vec<String> {
    let mut links = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').unwrap();
            links.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    links
}

#[test]
fn plot_command_writes_a_report_that_chromium_shows_without_errors() {
    let dir = common::scratch("report_html");
    let fx = write_run(
        &dir,
        &[0.0, 0.5, 1.0],
        &MODES,
        &[1, 2, 3],
        Some((2, 1, 3)),
        false,
    );
    write_known_scores(&dir, &fx, "known-0000");
    let out = common::negimg(&["plot", dir.to_str().unwrap()], &dir);
    assert!(
        out.status.success(),
        "negimg plot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "index.html",
        "grids/grid.png",
        "grids/grid.jpg",
        "curves/known-0000/subtraction.svg",
        "scores/known-0000/summary.tex",
    ] {
        assert!(dir.join(f).is_file(), "{f} written");
    }
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(
        html.contains("a &lt;test&gt; &amp; run"),
        "experiment text, escaped"
    );
    for link in relative_links(&html) {
        assert!(
            !link.contains("://") && !link.starts_with('/'),
            "{link} is not relative"
        );
        assert!(dir.join(&link).is_file(), "{link} points to a file");
    }

    let tmp = common::scratch("report_html_chromium");
    let shot = tmp.join("index.png");
    let console = chromium(&dir.join("index.html"), &shot, &tmp.join("profile"));
    assert!(console.is_empty(), "console output:\n{console}");
    let img = image::open(&shot).unwrap().to_rgb8();
    let full = (0, 0, img.width(), img.height());
    assert!(
        has_color(&img, full, POS),
        "the positive input image is visible"
    );
    assert!(
        has_color(&img, full, NEG),
        "the negative input image is visible"
    );
    assert!(
        has_color(&img, full, Rgb([31, 119, 180])),
        "a curve is visible"
    );

    // The same check notices a broken page: a missing image and a script error.
    let broken = dir.join("broken.html");
    std::fs::write(
        &broken,
        html.replace("inputs/pos.png", "inputs/nothing.png")
            .replace("</body>", "<script>undefined_function();</script></body>"),
    )
    .unwrap();
    let console = chromium(&broken, &tmp.join("broken.png"), &tmp.join("profile2"));
    assert!(
        console.contains("images not loaded: inputs/nothing.png"),
        "{console}"
    );
    assert!(console.contains("Uncaught ReferenceError"), "{console}");
}

#[test]
fn zipped_axes_make_one_grid_axis_and_no_extra_curves() {
    let dir = common::scratch("report_zipped");
    let mut fx = write_run(&dir, &[0.5, 1.0, 1.5], &MODES[..2], &[1], None, false);
    // The fixture sets neg_weight = weight: an experiment that zips the two.
    let values = fx.info.axes[0].values.clone();
    fx.info.axes.insert(
        1,
        negimg::run::info::Axis {
            name: "neg_weight".into(),
            values,
        },
    );
    let arr = arrange(&fx.info, &fx.records, &GridOptions::default());
    let cols = arr.cols.unwrap();
    assert_eq!(cols.name, "weight, neg_weight");
    assert_eq!(cols.values, ["0.5, 0.5", "1.0, 1.0", "1.5, 1.5"]);
    assert_eq!(arr.rows.unwrap().name, "negative");
    let sheets = plan_sheets(&fx.info, &fx.records, false, &GridOptions::default());
    assert_eq!(sheets.len(), 1);
    assert!(
        sheets[0]
            .cells
            .iter()
            .flatten()
            .flatten()
            .all(Option::is_some),
        "no missing cells: zipped axes are not crossed"
    );
    assert_eq!(
        curves::series_axes(&fx.info, &fx.records, "weight"),
        ["negative"]
    );
}

#[test]
fn a_single_failed_cell_still_gets_a_report() {
    let dir = common::scratch("report_single_failed");
    write_run(
        &dir,
        &[1.0],
        &[NegativeMode::Image],
        &[7],
        Some((0, 0, 7)),
        false,
    );
    negimg::report::plot_run(&dir).unwrap();
    let grid = image::open(dir.join("grids/grid.png")).unwrap().to_rgb8();
    let full = (0, 0, grid.width(), grid.height());
    assert!(
        has_color(&grid, full, Rgb([200, 200, 200])),
        "the failed cell is drawn"
    );
    assert!(
        has_color(&grid, full, POS) && has_color(&grid, full, NEG),
        "inputs in the header"
    );
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(html.contains("Not scored yet"));
}

#[test]
fn image_axes_show_their_image_under_the_label() {
    let dir = common::scratch("report_image_axis");
    let mut fx = write_run(&dir, &[0.5, 1.0], &[NegativeMode::Image], &[1], None, false);
    let green = Rgb([20, 200, 20]);
    RgbImage::from_pixel(40, 40, green)
        .save(dir.join("inputs/neg2.png"))
        .unwrap();
    let more: Vec<_> = fx
        .records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.cell_id.push('b');
            r.negative_image = "neg2".into();
            r
        })
        .collect();
    fx.records.extend(more);
    fx.info.axes.insert(
        1,
        negimg::run::info::Axis {
            name: "negative_image".into(),
            values: vec!["neg".into(), "neg2".into()],
        },
    );
    fx.info
        .images
        .insert("neg2".into(), "inputs/neg2.png".into());
    let sheets = plan_sheets(&fx.info, &fx.records, false, &GridOptions::default());
    let plan = &sheets[0];
    assert_eq!(
        plan.row_labels,
        ["negative_image: neg", "negative_image: neg2"]
    );
    assert_eq!(
        plan.row_thumbs,
        [
            Some("inputs/neg.png".to_string()),
            Some("inputs/neg2.png".to_string())
        ]
    );
    let img = render_sheet(plan, &dir, &fx.records, &HashMap::new()).unwrap();
    img.save(dir.join("grid.png")).unwrap();
    let l = &plan.layout;
    assert!(
        has_color(&img, l.row_label_rect(0), NEG) && !has_color(&img, l.row_label_rect(0), green)
    );
    assert!(
        has_color(&img, l.row_label_rect(1), green) && !has_color(&img, l.row_label_rect(1), NEG)
    );
}

#[test]
fn unknown_caption_metric_or_scorer_is_an_error_naming_the_known_ones() {
    let dir = common::scratch("report_caption_unknown");
    let fx = write_run(&dir, &[1.0], &MODES[..2], &[1], None, false);
    write_known_scores(&dir, &fx, "known");
    let with = |metrics: &[&str], scorer: Option<&str>| negimg::report::PlotOptions {
        caption_metrics: Some(metrics.iter().map(|m| m.to_string()).collect()),
        caption_scorer: scorer.map(str::to_string),
        ..Default::default()
    };
    let err = negimg::report::plot_run_with(&dir, &with(&["foo"], None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"foo\"") && err.contains("clip_i_pos, clip_i_neg"),
        "{err}"
    );
    let err = negimg::report::plot_run_with(&dir, &with(&["clip_i_pos"], Some("nope")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"nope\"") && err.contains("known"), "{err}");
    negimg::report::plot_run_with(&dir, &with(&["clip_i_pos"], Some("known"))).unwrap();
}

#[test]
fn captions_on_an_unscored_run_are_refused_saying_to_score_first() {
    let dir = common::scratch("report_caption_unscored");
    write_run(&dir, &[1.0], &MODES[..2], &[1], None, false);
    let with = |metrics: &[&str]| negimg::report::PlotOptions {
        caption_metrics: Some(metrics.iter().map(|m| m.to_string()).collect()),
        ..Default::default()
    };
    let err = negimg::report::plot_run_with(&dir, &with(&["nosuchmetric"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--caption nosuchmetric: this run has no scores; run `negimg score"),
        "{err}"
    );
    // No captions asked for, or none at all: the unscored run plots.
    negimg::report::plot_run_with(&dir, &with(&[])).unwrap();
    negimg::report::plot_run_with(&dir, &negimg::report::PlotOptions::default()).unwrap();
    assert!(dir.join("index.html").is_file());
}
