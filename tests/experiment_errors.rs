//! Experiment files: valid ones expand as documented; bad ones fail with the file, the key
//! and the line; the binary exits non-zero and leaves no results folder behind.
mod common;

use negimg::experiment::{self, LoadOptions, Param, Value};
use negimg::params::{AdapterKind, NegativeMode};
use std::path::Path;

/// A valid experiment whose models `init_random` would make (nothing is read from disk).
const BASE: &str = r#"
[experiment]
name = "t"
description = "test"

[models]
pipeline = "no-such-models/pipeline"
ip_adapter = { base = "no-such-models/ip-adapter_sd15.safetensors", plus = "no-such-models/ip-adapter-plus_sd15.safetensors" }
image_encoder = "no-such-models/image_encoder"
init_random = { preset = "tiny", dir = "no-such-models" }

[images.house]
generate = { prompt = "a house with a green lawn", seed = 1 }

[images.lawn]
generate = { prompt = "a lawn" }

[defaults]
steps = 4
size = 64
seeds = [1, 2]
positive_image = "house"

[grid]
weight = "0.5-1 (+0.25)"
negative_image = ["lawn", "none"]
"#;

fn parse(text: &str) -> anyhow::Result<experiment::Experiment> {
    experiment::parse(
        Path::new("t.toml"),
        text.to_string(),
        &LoadOptions::default(),
    )
}

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"));
    text[..at].matches('\n').count() + 1
}

/// Parses `text`, expects an error that names `t.toml`, the line of `at` (when given) and
/// contains every one of `words`.
fn expect_error(text: &str, at: Option<&str>, words: &[&str]) -> String {
    let err = match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("t.toml"), "no file name in: {err}");
    if let Some(at) = at {
        let line = line_of(text, at);
        assert!(
            err.contains(&format!("t.toml:{line}:")) || err.contains(&format!("line {line}")),
            "no line {line} in: {err}"
        );
    }
    for w in words {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
    err
}

fn with(extra_grid: &str) -> String {
    format!("{BASE}{extra_grid}\n")
}

#[test]
fn valid_file_expands_axes_in_order_with_seeds_innermost() {
    let e = parse(BASE).unwrap();
    assert_eq!(e.name, "t");
    assert_eq!(e.cells.len(), 3 * 2 * 2);
    let c = &e.cells[0];
    assert_eq!(
        (c.weight, c.negative_image.as_deref(), c.seed),
        (0.5, Some("lawn"), 1)
    );
    assert_eq!(e.cells[1].seed, 2);
    assert_eq!(e.cells[2].negative_image, None);
    assert_eq!(e.cells[4].weight, 0.75);
    // negative follows what the cell has: image with a negative image, none without.
    assert_eq!(c.negative_mode(), NegativeMode::Image);
    assert_eq!(e.cells[2].negative_mode(), NegativeMode::None);
    assert_eq!((c.width, c.height, c.steps), (64, 64, 4));
    let axes = e.axes();
    let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["weight", "negative_image", "seed"]);
    assert_eq!(axes[0].values, ["0.5", "0.75", "1.0"]);
    assert_eq!(axes[1].values, ["lawn", ""]);
}

#[test]
fn zip_varies_parameters_together_and_counts_and_seeds_tables_work() {
    let text = BASE
        .replace(
            "[grid]\nweight = \"0.5-1 (+0.25)\"\nnegative_image = [\"lawn\", \"none\"]",
            r#"[grid]
adapter = "base, plus"
[[grid.zip]]
negative = ["text", "image", "both"]
negative_prompt = ["grass", "", "grass"]
negative_image = ["none", "lawn", "lawn"]
"#,
        )
        .replace("seeds = [1, 2]", "seeds = { count = 3, base = 100 }");
    let e = parse(&text).unwrap();
    assert_eq!(e.cells.len(), 2 * 3 * 3);
    assert_eq!(e.cells[0].adapter, AdapterKind::Base);
    assert_eq!(e.cells[9].adapter, AdapterKind::Plus);
    assert_eq!(
        e.cells.iter().map(|c| c.seed).take(3).collect::<Vec<_>>(),
        [100, 101, 102]
    );
    let text_cell = &e.cells[0];
    assert_eq!(text_cell.negative_mode(), NegativeMode::Text);
    assert_eq!(text_cell.negative_prompt, "grass");
    let image_cell = &e.cells[3];
    assert_eq!(image_cell.negative_mode(), NegativeMode::Image);
    assert_eq!(image_cell.negative_image.as_deref(), Some("lawn"));
    assert_eq!(
        image_cell.get(Param::Negative),
        Value::Negative(NegativeMode::Image)
    );
    // run.json labels a zip by its first parameter that tells its rows apart.
    let axes = e.axes();
    let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["adapter", "negative", "seed"]);
    assert_eq!(axes[1].values, ["text", "image", "both"]);
}

#[test]
fn a_zip_without_a_distinct_column_lists_each_parameter_once_per_value() {
    let text = format!(
        "{}[[grid.zip]]\ncfg = [5, 5, 7]\nsteps = [4, 8, 4]\n",
        BASE.replace("weight = \"0.5-1 (+0.25)\"\n", "")
    );
    let e = parse(&text).unwrap();
    assert_eq!(e.cells.len(), 2 * 3 * 2);
    let axes = e.axes();
    let cfg = axes.iter().find(|a| a.name == "cfg").unwrap();
    let steps = axes.iter().find(|a| a.name == "steps").unwrap();
    assert_eq!(
        (cfg.values.as_slice(), steps.values.as_slice()),
        (
            &["5.0".to_string(), "7.0".to_string()][..],
            &["4".to_string(), "8".to_string()][..]
        )
    );
}

#[test]
fn count_ranges_and_neg_branch_defaults_follow_the_positive() {
    let e = parse(&with("cfg = \"1-10 [4]\"\nneg_start = [0.0, 0.5]")).unwrap();
    let cfgs: Vec<f64> = e.cells.iter().map(|c| c.cfg).collect();
    assert!(cfgs.contains(&4.0) && cfgs.contains(&10.0));
    let c = &e.cells[0];
    let neg = c.negative_branch();
    assert_eq!((neg.weight, neg.end), (c.weight, c.end));
}

#[test]
fn malformed_toml_names_the_line() {
    let text = BASE.replace("[grid]", "[grid");
    expect_error(&text, Some("[grid"), &[]);
}

#[test]
fn unknown_section_is_refused_with_its_name() {
    let text = format!("{BASE}\n[grdi]\nweight = [1]\n");
    expect_error(&text, Some("[grdi]"), &["grdi"]);
}

#[test]
fn unknown_grid_key_is_refused_with_a_suggestion_and_line() {
    let text = with("wieght = [1]");
    expect_error(
        &text,
        Some("wieght"),
        &["grid.wieght", "did you mean `weight`"],
    );
}

#[test]
fn unknown_keys_in_models_images_defaults_and_zip_are_refused() {
    let text = BASE.replace("image_encoder =", "image_encodr =");
    expect_error(&text, Some("image_encodr"), &["image_encodr"]);
    let text = BASE.replace(
        "generate = { prompt = \"a lawn\" }",
        "generate = { promt = \"a lawn\" }",
    );
    expect_error(&text, Some("promt"), &["promt"]);
    let text = BASE.replace("steps = 4", "stepz = 4");
    expect_error(
        &text,
        Some("stepz"),
        &["defaults.stepz", "did you mean `steps`"],
    );
    let text = format!("{BASE}\n[[grid.zip]]\ncfgg = [1, 2]\n");
    expect_error(&text, Some("cfgg"), &["grid.zip[0].cfgg"]);
}

#[test]
fn wrong_types_are_refused() {
    let text = BASE.replace("steps = 4", "steps = \"many\"");
    expect_error(
        &text,
        Some("\"many\""),
        &["defaults.steps", "expected a number"],
    );
    let text = with("cfg = true");
    expect_error(&text, Some("cfg = true"), &["grid.cfg", "expected a list"]);
    let text = BASE.replace("name = \"t\"", "name = 3");
    expect_error(&text, Some("name = 3"), &["string"]);
    let text = with("scheduler = [\"ddm\"]");
    expect_error(&text, Some("\"ddm\""), &["grid.scheduler", "ddim, euler"]);
}

#[test]
fn empty_axes_are_refused() {
    let text = with("cfg = []");
    expect_error(&text, Some("cfg = []"), &["grid.cfg", "at least one value"]);
    let text = format!("{BASE}\n[[grid.zip]]\n");
    expect_error(&text, Some("[[grid.zip]]"), &["grid.zip[0]", "empty"]);
}

#[test]
fn ranges_with_zero_or_negative_step_are_refused() {
    let text = with("cfg = \"1-5 (+0)\"");
    expect_error(&text, Some("cfg ="), &["grid.cfg", "must not be zero"]);
    let text = with("cfg = \"1-5 (-1)\"");
    expect_error(&text, Some("cfg ="), &["grid.cfg", "goes away"]);
}

#[test]
fn out_of_range_values_are_refused() {
    let text = BASE.replace("weight = \"0.5-1 (+0.25)\"", "weight = [-1.5, 1]");
    expect_error(
        &text,
        Some("weight = [-1.5"),
        &["grid.weight", "-1.5", "out of range"],
    );
    let text = BASE.replace("steps = 4", "steps = 0");
    expect_error(
        &text,
        Some("steps = 0"),
        &["defaults.steps", "between 1 and"],
    );
    let text = BASE.replace("size = 64", "size = 100");
    expect_error(
        &text,
        Some("size = 100"),
        &["defaults.size", "multiple of 8"],
    );
    let text = with("cfg = [-1]");
    expect_error(&text, Some("cfg = [-1]"), &["grid.cfg", "out of range"]);
    let text = BASE.replace("steps = 4", "steps = 4\nstart = 0.8\nend = 0.5");
    expect_error(&text, None, &["start", "end", "0.8", "after"]);
    let text = BASE.replace("seeds = [1, 2]", "seeds = 2");
    expect_error(&text, Some("seeds = 2"), &["defaults.seeds", "ambiguous"]);
}

#[test]
fn negative_weight_down_to_minus_one_is_accepted_and_below_is_refused() {
    let text = BASE.replace(
        "weight = \"0.5-1 (+0.25)\"",
        "weight = \"-1-1 (+0.5)\"\nneg_weight = [-1, 0.5]",
    );
    let e = parse(&text).unwrap();
    let weights: Vec<f64> = e.cells.iter().map(|c| c.weight).step_by(8).collect();
    assert_eq!(weights, [-1.0, -0.5, 0.0, 0.5, 1.0]);
    assert_eq!(e.cells[0].negative_branch().weight, -1.0);
    for (line, key) in [
        ("neg_weight = -1.5", "defaults.neg_weight"),
        ("weight = -1.5", "defaults.weight"),
    ] {
        let text = BASE.replace("steps = 4", &format!("steps = 4\n{line}"));
        expect_error(
            &text,
            Some(line),
            &[key, "-1.5 is out of range: it must be between -1 and 10"],
        );
    }
    let text = BASE.replace("weight = \"0.5-1 (+0.25)\"", "neg_weight = \"-2-0 (+1)\"");
    expect_error(
        &text,
        Some("neg_weight = \"-2"),
        &["grid.neg_weight", "-2 is out of range"],
    );
}

#[test]
fn window_is_a_default_an_axis_and_a_zip_column() {
    use negimg::params::Window;
    let text = BASE.replace("steps = 4", "steps = 4\nwindow = \"sigma\"");
    let e = parse(&text).unwrap();
    assert!(e.cells.iter().all(|c| c.window == Window::Sigma));
    let text = with("window = [\"steps\", \"sigma\"]");
    let e = parse(&text).unwrap();
    assert_eq!(e.cells.len(), 3 * 2 * 2 * 2);
    assert_eq!(e.cells[0].get(Param::Window), Value::Window(Window::Steps));
    assert_eq!(e.cells[2].window, Window::Sigma);
    assert!(e.axes().iter().any(|a| a.name == "window"));
    let text = with("[[grid.zip]]\nwindow = [\"steps\", \"sigma\"]\nstart = [0, 0.3]");
    let e = parse(&text).unwrap();
    let pairs: Vec<(Window, f64)> = e
        .cells
        .iter()
        .map(|c| (c.window, c.start))
        .take(4)
        .collect();
    assert_eq!(
        pairs,
        [
            (Window::Steps, 0.0),
            (Window::Steps, 0.0),
            (Window::Sigma, 0.3),
            (Window::Sigma, 0.3)
        ]
    );
    let text = with("window = [\"sigmas\"]");
    expect_error(
        &text,
        Some("window = [\"sigmas"),
        &["grid.window", "\"sigmas\" is not one of steps, sigma"],
    );
}

#[test]
fn duplicate_image_names_are_refused() {
    let text = format!("{BASE}\n[images.lawn]\ngenerate = {{ prompt = \"grass\" }}\n");
    let line = text
        .rfind("[images.lawn]")
        .map(|i| text[..i].matches('\n').count() + 1)
        .unwrap();
    let err = format!("{:#}", parse(&text).unwrap_err());
    assert!(
        err.contains("t.toml") && err.contains(&line.to_string()),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("duplicate") || err.contains("lawn"),
        "{err}"
    );
}

#[test]
fn references_to_missing_images_are_refused() {
    let text = BASE.replace("[\"lawn\", \"none\"]", "[\"lawn\", \"sky\"]");
    expect_error(
        &text,
        Some("negative_image = ["),
        &["grid.negative_image", "[images.sky]"],
    );
    let text = BASE.replace("positive_image = \"house\"", "positive_image = \"hous\"");
    expect_error(&text, Some("positive_image = \"hous\""), &["[images.hous]"]);
    let text = format!("{BASE}\n[scoring]\nnegative_reference = \"grass\"\n");
    expect_error(&text, Some("\"grass\""), &["scoring.negative_reference"]);
    let text = BASE.replace(
        "[images.lawn]\ngenerate = { prompt = \"a lawn\" }",
        "[images.lawn]\npath = \"no-such-file.png\"",
    );
    expect_error(
        &text,
        Some("path = \"no-such-file.png\""),
        &["images.lawn.path", "no-such-file.png"],
    );
}

#[test]
fn a_mode_without_the_image_it_needs_or_a_missing_model_is_refused() {
    let text =
        with("negative = [\"both\"]").replace("[\"lawn\", \"none\"]", "[\"none\", \"lawn\"]");
    expect_error(&text, None, &["negative_image", "cell 1"]);
    let text = BASE.replace(
        ", plus = \"no-such-models/ip-adapter-plus_sd15.safetensors\"",
        "",
    );
    let text = format!("{text}adapter = [\"plus\"]\n");
    expect_error(&text, None, &["ip_adapter.plus"]);
}

#[test]
fn duplicate_values_and_parameters_on_two_axes_are_refused() {
    let text = with("cfg = [7, 7.0]");
    expect_error(&text, Some("cfg ="), &["grid.cfg", "twice"]);
    let text = format!("{BASE}\n[[grid.zip]]\nweight = [1, 2]\ncfg = [3, 4]\n");
    expect_error(
        &text,
        Some("weight = [1, 2]"),
        &["grid.zip[0].weight", "already varies in grid.weight"],
    );
    let text = format!("{BASE}\n[[grid.zip]]\ncfg = [1, 2]\nsteps = [3]\n");
    expect_error(&text, Some("steps = [3]"), &["same length"]);
}

#[test]
fn million_cell_grid_is_refused_with_its_count_unless_allowed() {
    let text = with("cfg = \"0-99.9 (+0.1)\"\nsteps = \"1-100\"");
    let err = expect_error(&text, None, &["--allow-large"]);
    assert!(
        err.contains(&format!("{}", 3 * 2 * 2 * 1000 * 100)),
        "{err}"
    );
    // Allowed, a grid is still bounded by what fits in memory.
    let text = with("cfg = \"0-99.9 (+0.1)\"\nsteps = \"1-1000\"");
    let opts = LoadOptions {
        allow_large: true,
        download: false,
    };
    let err = experiment::parse(Path::new("t.toml"), text, &opts).unwrap_err();
    assert!(format!("{err:#}").contains("at most"), "{err:#}");
}

#[test]
fn bad_files_exit_non_zero_and_leave_no_results_folder() {
    let dir = common::scratch("experiment_errors_binary");
    let bad = [
        ("typo.toml", with("wieght = [1]"), "wieght"),
        ("range.toml", with("cfg = \"1-5 (+0)\""), "grid.cfg"),
        ("syntax.toml", BASE.replace("[grid]", "[grid"), "line"),
        (
            "negtome.toml",
            BASE.replace(
                "steps = 4",
                "steps = 4\nnegtome_t_min = 900\nnegtome_t_max = 100",
            ),
            "negtome_t_min 900 is above negtome_t_max 100",
        ),
    ];
    for (file, text, word) in bad {
        std::fs::write(dir.join(file), text).unwrap();
        for cmd in ["run", "plan"] {
            let out = common::negimg(&[cmd, file, "--device", "cpu"], &dir);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cmd} {file} succeeded");
            assert!(
                stderr.contains(file) && stderr.contains(word),
                "{cmd} {file}: {stderr}"
            );
            assert!(
                !dir.join("results").exists(),
                "{cmd} {file} left a results folder"
            );
        }
    }
}

#[test]
fn scoring_baseline_is_checked_against_the_grid() {
    let good =
        format!("{BASE}\n[scoring]\nbaseline = {{ negative_image = \"none\", weight = 0.5 }}\n");
    let e = parse(&good).unwrap();
    assert_eq!(
        e.scoring.baseline,
        std::collections::BTreeMap::from([
            ("negative_image".to_string(), String::new()),
            ("weight".to_string(), "0.5".to_string()),
        ])
    );
    let text = format!("{BASE}\n[scoring]\nbaseline = {{ cfg = 7 }}\n");
    expect_error(
        &text,
        Some("baseline ="),
        &["scoring.baseline.cfg", "not an axis"],
    );
    let text = format!("{BASE}\n[scoring]\nbaseline = {{ weight = 3 }}\n");
    expect_error(
        &text,
        Some("baseline ="),
        &["scoring.baseline.weight", "not a value"],
    );
    let text = format!("{BASE}\n[models]\n");
    assert!(parse(&text).is_err(), "a duplicate table is refused");
    let dino = BASE.replace(
        "init_random =",
        "scorer_dino = \"no-such-models/dino\"\ninit_random =",
    );
    let e = parse(&dino).unwrap();
    assert_eq!(
        e.models.scorer_dino.as_ref().map(|m| m.reference.as_str()),
        Some("no-such-models/dino")
    );
    assert!(
        e.models
            .iter()
            .any(|(role, _)| role == negimg::roles::Role::ScorerDino)
    );
}

/// Expects `text` to fail at the line of `at` with `key`, "did you mean `hint`" and the
/// known keys `known` listed.
fn expect_unknown(text: &str, at: &str, key: &str, hint: &str, known: &[&str]) {
    let err = expect_error(
        text,
        Some(at),
        &[key, "unknown key", &format!("did you mean `{hint}`")],
    );
    let line = line_of(text, at);
    let col = text[..text.find(at).unwrap()]
        .rsplit('\n')
        .next()
        .unwrap()
        .chars()
        .count()
        + 1;
    assert!(
        err.contains(&format!("t.toml:{line}:{col}: {key}:")),
        "{err}"
    );
    for k in known {
        assert!(err.contains(k), "{k:?} not listed in: {err}");
    }
    assert!(
        !err.contains("TOML parse error"),
        "the parser's text in: {err}"
    );
}

#[test]
fn unknown_experiment_keys_get_place_key_and_suggestion() {
    let text = BASE.replace("description =", "descripton =");
    expect_unknown(
        &text,
        "descripton",
        "experiment.descripton",
        "description",
        &["name", "tags"],
    );
}

#[test]
fn unknown_models_keys_get_place_key_and_suggestion() {
    let text = BASE.replace("image_encoder =", "image_encodr =");
    expect_unknown(
        &text,
        "image_encodr",
        "models.image_encodr",
        "image_encoder",
        &["pipeline", "scorer_dino"],
    );
    let text = BASE.replace("{ base = \"no-such", "{ bas = \"no-such");
    expect_unknown(&text, "bas =", "models.ip_adapter.bas", "base", &["plus"]);
    let text = BASE.replace("preset = \"tiny\"", "presett = \"tiny\"");
    expect_unknown(
        &text,
        "presett",
        "models.init_random.presett",
        "preset",
        &["dir"],
    );
}

#[test]
fn unknown_image_keys_get_place_key_and_suggestion() {
    let text = BASE.replace(
        "generate = { prompt = \"a lawn\" }",
        "generate = { promt = \"a lawn\" }",
    );
    expect_unknown(
        &text,
        "promt",
        "images.lawn.generate.promt",
        "prompt",
        &["negative_prompt"],
    );
    let text = BASE.replace("[images.lawn]\n", "[images.lawn]\npaht = \"x.png\"\n");
    expect_unknown(&text, "paht", "images.lawn.paht", "path", &["derive"]);
}

#[test]
fn unknown_scoring_keys_get_place_key_and_suggestion() {
    let text = format!("{BASE}\n[scoring]\ntarget = [\"house\"]\n");
    expect_unknown(
        &text,
        "target =",
        "scoring.target",
        "targets",
        &["positive_reference", "baseline"],
    );
}

#[test]
fn unknown_plots_keys_get_place_key_and_suggestion() {
    let text = format!("{BASE}\n[plots]\nrow = \"weight\"\n");
    expect_unknown(&text, "row =", "plots.row", "rows", &["cols", "curve_x"]);
}

#[test]
fn unknown_top_level_keys_get_place_key_and_suggestion() {
    let text = format!("dtyp = \"fp16\"\n{BASE}");
    let err = expect_error(&text, Some("dtyp"), &["dtyp", "unknown key", "defaults"]);
    assert!(err.contains("t.toml:1:1: dtyp:"), "{err}");
    let text = format!("{BASE}\n[grdi]\nweight = [1]\n");
    expect_unknown(
        &text,
        "grdi]",
        "grdi",
        "grid",
        &["experiment", "models", "plots"],
    );
}

/// `t.toml:L1 (KEY1) and :L2 (KEY2)` for the lines of `at1` and `at2`.
fn two_places(text: &str, at1: &str, key1: &str, at2: &str, key2: &str) -> String {
    format!(
        "t.toml:{} ({key1}) and :{} ({key2})",
        line_of(text, at1),
        line_of(text, at2)
    )
}

#[test]
fn a_window_that_ends_before_it_starts_names_both_lines() {
    let text = BASE.replace("steps = 4", "steps = 4\nend = 0.5") + "start = [0, 0.6]\n";
    let want = two_places(
        &text,
        "start = [0",
        "grid.start",
        "end = 0.5",
        "defaults.end",
    );
    expect_error(
        &text,
        None,
        &[&want, "start 0.6 is after end 0.5", "cell 3 "],
    );
    // A zipped window: both keys in the zip, each on its line.
    let text = format!("{BASE}\n[[grid.zip]]\nend = [1, 0.2]\nstart = [0, 0.5]\n");
    let want = two_places(
        &text,
        "start = [0, 0.5]",
        "grid.zip[0].start",
        "end = [1, 0.2]",
        "grid.zip[0].end",
    );
    expect_error(&text, None, &[&want, "after end 0.2"]);
}

#[test]
fn a_negative_window_names_the_keys_it_follows() {
    // neg_end is not set: it follows `end`, written in [defaults].
    let text = BASE.replace("steps = 4", "steps = 4\nend = 0.5") + "neg_start = [0.1, 0.7]\n";
    let want = two_places(
        &text,
        "neg_start =",
        "grid.neg_start",
        "end = 0.5",
        "defaults.end",
    );
    expect_error(&text, None, &[&want, "negative window starts at 0.7"]);
}

#[test]
fn a_mode_without_its_image_names_the_mode_line_and_the_unset_image() {
    let text = BASE.replace(
        "negative_image = [\"lawn\", \"none\"]",
        "negative = [\"image\"]",
    );
    let err = expect_error(
        &text,
        None,
        &["negative_image (default)", "needs a negative_image"],
    );
    let line = line_of(&text, "negative = [\"image\"]");
    assert!(
        err.contains(&format!("t.toml:{line} (grid.negative)")),
        "{err}"
    );
}

#[test]
fn block_weights_and_ip_scaling_work_in_defaults_axes_and_zips_and_bad_ones_name_the_line() {
    use negimg::params::{BlockWeights, IpScaling};
    let text = BASE.replace(
        "steps = 4",
        "steps = 4\nblocks = \"style\"\nip_scaling = \"kv\"",
    );
    let text = format!(
        "{}neg_blocks = [\"composition\", \"5:1, 4:0.25, 12:-0.5\"]\n\n[[grid.zip]]\nip_scaling = [\"v\", \"k_mean_v_c\"]\nblocks = [\"all\", \"0:1\"]\n",
        text
    );
    let exp = parse(&text).unwrap();
    let list = BlockWeights::List(vec![(4, 0.25), (5, 1.0), (12, -0.5)]);
    let values = |p: Param| -> Vec<Value> {
        let mut v: Vec<Value> = exp.cells.iter().map(|c| c.get(p)).collect();
        v.dedup();
        v.sort_by_key(|v| v.to_string());
        v.dedup();
        v
    };
    assert_eq!(
        values(Param::NegBlocks),
        vec![
            Value::Blocks(list.clone()),
            Value::Blocks(BlockWeights::Composition)
        ]
    );
    assert_eq!(
        values(Param::Blocks),
        vec![
            Value::Blocks("0:1".parse().unwrap()),
            Value::Blocks(BlockWeights::All)
        ]
    );
    assert_eq!(
        values(Param::IpScaling),
        vec![
            Value::IpScaling(IpScaling::KMeanVC),
            Value::IpScaling(IpScaling::V)
        ]
    );
    // Zipped: blocks = "0:1" only with k_mean_v_c; the [defaults] value is replaced.
    assert!(
        exp.cells
            .iter()
            .all(|c| (c.blocks == BlockWeights::All) == (c.ip_scaling == IpScaling::V))
    );
    // Without `neg_blocks`, the negative branch takes `blocks`, as neg_weight takes weight.
    let text = BASE.replace("steps = 4", "steps = 4\nblocks = \"strong_style\"");
    let exp = parse(&text).unwrap();
    assert!(
        exp.cells
            .iter()
            .all(|c| c.get(Param::NegBlocks) == Value::Blocks(BlockWeights::StrongStyle))
    );
    for (line, words) in [
        (
            "blocks = \"styles\"",
            &["defaults.blocks", "not one of all, style"][..],
        ),
        ("blocks = \"4:0.5, 16:1\"", &["defaults.blocks", "block 16"]),
        (
            "neg_blocks = \"4:1, 4:2\"",
            &["defaults.neg_blocks", "twice"],
        ),
        (
            "neg_blocks = 4",
            &["defaults.neg_blocks", "expected a string"],
        ),
        (
            "ip_scaling = \"k+v\"",
            &["defaults.ip_scaling", "v, kv, kv_c, k_mean_v_c"],
        ),
    ] {
        let text = BASE.replace("steps = 4", &format!("steps = 4\n{line}"));
        expect_error(&text, Some(line), words);
    }
    let text = with("neg_blocks = [\"all\", \"3:x\"]");
    expect_error(
        &text,
        Some("neg_blocks = ["),
        &["grid.neg_blocks", "not a weight factor"],
    );
}

#[test]
fn negtome_values_parse_as_axes_and_bad_ones_name_file_line_and_key() {
    let exp = parse(&with(
        "negtome = [true, false]\nnegtome_threshold = \"0.5-0.7 (+0.1)\"\nmethod = \"uncond, negtome\"",
    ))
    .unwrap();
    // 3 weights x 2 negative images x 2 switches x 3 thresholds x 2 methods x 2 seeds.
    assert_eq!(exp.cells.len(), 144);
    assert!(
        exp.cells
            .iter()
            .any(|c| c.negtome && c.negtome_threshold == 0.7)
    );
    assert_eq!(exp.cells[0].get(Param::Negtome), Value::Bool(true));
    let defaults = BASE.replace("steps = 4", "steps = 4\nnegtome = true\nnegtome_t_min = 0");
    let exp = parse(&defaults).unwrap();
    assert!(
        exp.cells
            .iter()
            .all(|c| c.negtome && c.negtome_t_min == 0.0)
    );
    expect_error(
        &with("negtome = [\"maybe\"]"),
        Some("negtome = [\"maybe\"]"),
        &["negtome", "true, false"],
    );
    expect_error(
        &with("negtome_threshold = [1.5]"),
        Some("negtome_threshold = [1.5]"),
        &["negtome_threshold", "out of range"],
    );
    expect_error(
        &with("negtome_t_max = [2000]"),
        Some("negtome_t_max = [2000]"),
        &["negtome_t_max", "out of range"],
    );
}

#[test]
fn step_sets_work_in_defaults_axes_and_zips_and_the_each_form_expands() {
    // One cell per single step, for every step: one short line.
    let text = with("neg_steps_at = \"each 0-3\"\nneg_off = \"no_image\"");
    let exp = parse(&text).unwrap();
    let sets: Vec<String> = exp
        .cells
        .iter()
        .map(|c| c.get(Param::NegStepsAt).to_string())
        .collect();
    assert_eq!(exp.cells.len(), 3 * 2 * 4 * 2);
    for k in 0..4 {
        assert!(sets.contains(&k.to_string()), "{sets:?}");
    }
    assert!(
        exp.cells
            .iter()
            .all(|c| c.get(Param::NegOff).to_string() == "no_image")
    );
    // from/until sweeps, a list mixing forms, a zip, and [defaults].
    let text = format!(
        "{BASE}\n[[grid.zip]]\nneg_steps_at = [\"each from 1-3\"]\nsteps_at = [\"0, 2\", \"every 2\", 1]\n"
    );
    let exp = parse(&text).unwrap();
    let cell = &exp.cells[0];
    assert_eq!(cell.get(Param::NegStepsAt).to_string(), "from 1");
    assert_eq!(cell.get(Param::StepsAt).to_string(), "0, 2");
    let p = cell.params(&|n| std::path::PathBuf::from(n));
    assert_eq!(p.neg_steps_at.unwrap().active(4), vec![1, 2, 3]);
    // Without neg_steps_at the negative branch follows steps_at.
    let text = BASE.replace("steps = 4", "steps = 4\nsteps_at = \"until 1\"");
    let exp = parse(&text).unwrap();
    assert_eq!(exp.cells[0].get(Param::NegStepsAt).to_string(), "until 1");
}

#[test]
fn bad_step_sets_name_file_line_and_key() {
    for (line, words) in [
        (
            "neg_steps_at = \"3-5, 4\"",
            &["defaults.neg_steps_at", "overlap"][..],
        ),
        (
            "neg_steps_at = \"\"",
            &["defaults.neg_steps_at", "empty step set"],
        ),
        (
            "neg_steps_at = \"2.5\"",
            &["defaults.neg_steps_at", "whole step index"],
        ),
        ("steps_at = 1.5", &["defaults.steps_at", "whole step index"]),
        (
            "neg_off = \"none\"",
            &["defaults.neg_off", "zero, no_image"],
        ),
    ] {
        let text = BASE.replace("steps = 4", &format!("steps = 4\n{line}"));
        expect_error(&text, Some(line), words);
    }
    // A step the cell does not have: the key's line and the step count.
    let text = with("neg_steps_at = [\"1\", \"4\"]");
    let want = two_places(
        &text,
        "neg_steps_at = [",
        "grid.neg_steps_at",
        "steps = 4",
        "defaults.steps",
    );
    expect_error(&text, None, &[&want, "names step 4", "4 steps"]);
    // A set and a window on one branch: both keys with their lines.
    let text = BASE.replace("steps = 4", "steps = 4\nneg_end = 0.5") + "neg_steps_at = \"1\"\n";
    let want = two_places(
        &text,
        "neg_steps_at = \"1\"",
        "grid.neg_steps_at",
        "neg_end = 0.5",
        "defaults.neg_end",
    );
    expect_error(&text, None, &[&want, "not both"]);
    let text =
        BASE.replace("steps = 4", "steps = 4\nsteps_at = \"every 2\"") + "start = [0, 0.5]\n";
    let want = two_places(
        &text,
        "steps_at = \"every 2\"",
        "defaults.steps_at",
        "start = [0",
        "grid.start",
    );
    expect_error(&text, None, &[&want, "not both"]);
    let text = with("neg_steps_at = \"each 0-2 (+0.5)\"");
    expect_error(
        &text,
        Some("neg_steps_at ="),
        &["grid.neg_steps_at", "whole step index"],
    );
}

#[test]
fn trace_steps_read_as_a_set_or_an_array_and_bad_ones_name_the_key() {
    let text = BASE.replace("steps = 4", "steps = 4\ntrace = [0, 2, 3]");
    let exp = parse(&text).unwrap();
    assert_eq!(exp.cells[0].get(Param::Trace).to_string(), "0, 2, 3");
    let text = BASE.replace("steps = 4", "steps = 4\ntrace = \"every 2\"");
    let p = parse(&text).unwrap().cells[0].params(&|n| std::path::PathBuf::from(n));
    assert_eq!(p.trace.unwrap().active(4), vec![0, 2]);
    let line = "trace = \"x\"";
    let text = BASE.replace("steps = 4", &format!("steps = 4\n{line}"));
    expect_error(&text, Some(line), &["defaults.trace", "not a step index"]);
    let text = BASE.replace("steps = 4", "steps = 4\ntrace = [0, 4]");
    expect_error(&text, None, &["defaults.trace", "names step 4", "4 steps"]);
}

#[test]
fn an_inverted_negtome_range_names_both_keys_and_their_lines() {
    let text =
        BASE.replace("steps = 4", "steps = 4\nnegtome_t_max = 100") + "negtome_t_min = [0, 900]\n";
    let want = two_places(
        &text,
        "negtome_t_min = [0",
        "grid.negtome_t_min",
        "negtome_t_max = 100",
        "defaults.negtome_t_max",
    );
    expect_error(
        &text,
        None,
        &[&want, "negtome_t_min 900 is above negtome_t_max 100"],
    );
    // Both in [defaults], with or without NegToMe on: each key named on its line.
    let text = BASE.replace(
        "steps = 4",
        "steps = 4\nnegtome_t_min = 500\nnegtome_t_max = 400",
    );
    let err = expect_error(
        &text,
        None,
        &["negtome_t_min 500 is above negtome_t_max 400"],
    );
    assert!(
        err.contains("(defaults.negtome_t_min)") && err.contains("(defaults.negtome_t_max)"),
        "{err}"
    );
    // Equal ends are one timestep, not an error.
    let text = BASE.replace(
        "steps = 4",
        "steps = 4\nnegtome_t_min = 500\nnegtome_t_max = 500",
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn plan_lists_cells_with_nothing_to_subtract_as_made_like_the_baseline() {
    let dir = common::scratch("experiment_errors_plan_nothing");
    let text = BASE.replace(
        "negative_image = [\"lawn\", \"none\"]",
        "negative = [\"none\", \"text\", \"image\"]\nmethod = \"uncond, three_branch, subtract\"",
    )
    .replace(
        "positive_image = \"house\"",
        "positive_image = \"house\"\nnegative_image = \"lawn\"\nnegative_prompt = \"grass\"",
    );
    std::fs::write(dir.join("m.toml"), &text).unwrap();
    let out = common::negimg(
        &[
            "--device",
            "cpu",
            "plan",
            "m.toml",
            "--no-calibrate",
            "--all",
        ],
        &dir,
    );
    let plan = common::text(&out);
    assert!(out.status.success(), "{plan}");
    // 3 weights x 3 negatives x 3 methods x 2 seeds; at none: three_branch and subtract fall
    // back, at text: subtract (it subtracts images only).
    let listed = |what: &str| plan.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        listed("-> nothing to subtract: made as method = uncond"),
        3 * 3 * 2,
        "{plan}"
    );
    assert!(
        listed("method=three_branch seed=1  -> nothing") == 3
            && listed("negative=none method=subtract seed=1  -> nothing") == 3,
        "{plan}"
    );
    assert!(
        plan.contains(
            "18 cells have nothing for their method to subtract (three_branch with negative = \
             none; subtract with negative = none; subtract with negative = text)"
        ),
        "{plan}"
    );
    assert!(
        plan.contains(
            "note: 36 cells have negative_image lawn but a negative mode that uses no image"
        ),
        "{plan}"
    );
    // 54 cells, 18 of them made as another: 36 images.
    assert!(plan.contains("36 images for 54 cells"), "{plan}");
}

#[test]
fn region_mask_not_binary_or_unreadable_names_the_key_and_line() {
    let dir = common::scratch("experiment_errors_region");
    let file = dir.join("t.toml");
    let load = |text: &str| {
        std::fs::write(&file, text).unwrap();
        experiment::load(&file, &LoadOptions::default())
    };
    let with_region = |mask: &str| format!("{BASE}\n[scoring]\nregion = \"{mask}\"\n");
    image::RgbImage::from_fn(8, 6, |x, _| image::Rgb([if x < 4 { 0 } else { 255 }; 3]))
        .save(dir.join("lawn.png"))
        .unwrap();
    let exp = load(&with_region("lawn.png")).unwrap();
    let region = exp.scoring.region.expect("the mask");
    assert!(region.is_absolute() && region.ends_with("lawn.png"));
    let line = |text: &str| line_of(text, "region =");
    image::RgbImage::from_pixel(8, 6, image::Rgb([0, 128, 0]))
        .save(dir.join("grey.png"))
        .unwrap();
    std::fs::write(dir.join("broken.png"), b"not a png").unwrap();
    for (mask, want) in [
        ("grey.png", "not a binary mask: pixel (0, 0) is (0, 128, 0)"),
        ("broken.png", "broken.png"),
        ("missing.png", "missing.png"),
    ] {
        let text = with_region(mask);
        let err = format!("{:#}", load(&text).unwrap_err());
        assert!(
            err.contains(&format!("t.toml:{}:", line(&text)))
                && err.contains("scoring.region")
                && err.contains(want),
            "{mask}: {err}"
        );
    }
    let text = format!("{BASE}\n[plots]\nshow = \"heat\"\n");
    expect_error(
        &text,
        Some("show ="),
        &["plots.show", "image, change, overlay"],
    );
}

#[test]
fn trace_filmstrip_without_traces_is_a_plan_warning() {
    let text = format!("{BASE}\n[plots]\nfilmstrip = true\n");
    let exp = parse(&text).unwrap();
    let at = format!("t.toml:{}:", line_of(&text, "filmstrip = true"));
    assert!(
        exp.warnings.iter().any(|w| w.contains(&at)
            && w.contains("plots.filmstrip")
            && w.contains("no cell has a `trace`")),
        "{:?}",
        exp.warnings
    );
    let traced = text.replace("steps = 4\n", "steps = 4\ntrace = \"every 2\"\n");
    let exp = parse(&traced).unwrap();
    assert!(exp.warnings.iter().all(|w| !w.contains("filmstrip")));
    assert_eq!(exp.plots.filmstrip, Some(true));
    assert_eq!(parse(BASE).unwrap().plots.filmstrip, None);
}

#[test]
fn plots_overlay_names_the_map_and_acts_only_with_show_overlay() {
    use negimg::run::info::{Overlay, Show};
    let maps = "\n[maps]\nattention = true\n";
    let plots = |keys: &str, maps: &str| format!("{BASE}{maps}\n[plots]\n{keys}\n");
    let e = parse(&plots(
        "show = \"overlay\"\noverlay = \"negative_attention\"",
        maps,
    ))
    .unwrap();
    assert_eq!(
        (e.plots.show, e.plots.overlay),
        (Show::Overlay, Overlay::NegativeAttention)
    );
    // The default overlay is the change map, as before the key existed.
    let e = parse(&plots("show = \"overlay\"", "")).unwrap();
    assert_eq!(e.plots.overlay, Overlay::Change);
    for (keys, maps, words) in [
        (
            "show = \"overlay\"\noverlay = \"heat\"",
            maps,
            &["plots.overlay", "change, negative_attention"][..],
        ),
        (
            "show = \"change\"\noverlay = \"change\"",
            maps,
            &["plots.overlay", "set show = \"overlay\""][..],
        ),
        (
            "show = \"overlay\"\noverlay = \"negative_attention\"",
            "",
            &["plots.overlay", "[maps] attention = true"][..],
        ),
    ] {
        expect_error(&plots(keys, maps), Some("overlay ="), words);
    }
}

/// A map the grids cannot show is no silent fallback to the images: the negative attention
/// map without `[maps] attention` is an error, a DINOv2 map without `scorer_dino` a warning.
#[test]
fn plots_show_of_a_map_the_run_cannot_make_is_an_error_or_a_warning() {
    use negimg::run::info::Show;
    let plots = |keys: &str| format!("{BASE}\n[plots]\n{keys}\n");
    expect_error(
        &plots("show = \"negative_attention\""),
        Some("show ="),
        &["plots.show", "[maps] attention = true"],
    );
    let with_maps =
        format!("{BASE}\n[maps]\nattention = true\n\n[plots]\nshow = \"negative_attention\"\n");
    assert_eq!(
        parse(&with_maps).unwrap().plots.show,
        Show::NegativeAttention
    );
    let dino_warned = |text: &str| {
        parse(text)
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("plots.show") && w.contains("scorer_dino"))
    };
    assert!(dino_warned(&plots("show = \"change_dino\"")));
    assert!(dino_warned(&plots(
        "show = \"overlay\"\noverlay = \"change_dino\""
    )));
    assert!(!dino_warned(&plots("show = \"change_clip\"")));
    let with_dino = plots("show = \"change_dino\"").replace(
        "init_random =",
        "scorer_dino = \"no-such-models/dino\"\ninit_random =",
    );
    assert!(!dino_warned(&with_dino));
}

#[test]
fn map_steps_are_a_step_set_checked_against_every_cell() {
    let maps = |body: &str| format!("{BASE}\n[maps]\n{body}\n");
    let exp = parse(&maps("attention = true\nsteps = \"1, 3\"")).unwrap();
    assert_eq!(exp.maps.steps.unwrap().active(4), vec![1, 3]);
    assert_eq!(parse(&maps("attention = true")).unwrap().maps.steps, None);
    for (body, at, words) in [
        (
            "attention = true\nsteps = \"2-4\"",
            "steps = \"2-4\"",
            &["maps.steps", "names step 4", "4 steps"][..],
        ),
        (
            "attention = true\nsteps = \"1, 1\"",
            "steps = \"1, 1\"",
            &["maps.steps", "overlap"],
        ),
        (
            "steps = \"1\"",
            "steps = \"1\"",
            &["maps.steps", "attention is not true"],
        ),
    ] {
        let text = maps(body);
        expect_error(&text, Some(at), words);
    }
}
