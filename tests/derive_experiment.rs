//! `[images.X] derive = {...}` in experiment files: families expand on axes and zips in
//! order of strength; bad recipes fail at plan time with the file, line and key.
use negimg::derive::NoiseKind;
use negimg::experiment::{self, ImageSource, LoadOptions, Param, Value};
use std::path::Path;

const BASE: &str = r#"
[models]
pipeline = "m/pipeline"
ip_adapter = { base = "m/ip-adapter_sd15.safetensors" }
image_encoder = "m/image_encoder"
init_random = { preset = "tiny", dir = "m" }

[images.house]
generate = { prompt = "a house", seed = 1 }

[images.lawn]
generate = { prompt = "a lawn", seed = 2 }

[defaults]
size = 64
positive_image = "house"
"#;

fn parse(text: &str) -> anyhow::Result<experiment::Experiment> {
    experiment::parse(
        Path::new("t.toml"),
        text.to_string(),
        &LoadOptions::default(),
    )
}

/// Expects an error naming `t.toml`, the line of `at` and every one of `words`.
fn expect_error(text: &str, at: &str, words: &[&str]) {
    let err = match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => format!("{e:#}"),
    };
    let line = text[..text.find(at).expect("`at` in the text")]
        .matches('\n')
        .count()
        + 1;
    assert!(
        err.contains(&format!("t.toml:{line}:")),
        "no line {line} in: {err}"
    );
    for w in words {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

fn images_of(exp: &experiment::Experiment) -> Vec<String> {
    exp.cells
        .iter()
        .map(|c| c.get(Param::NegativeImage).to_string())
        .collect()
}

#[test]
fn a_family_expands_on_an_axis_in_order_and_members_can_be_named() {
    let text = format!(
        "{BASE}\n[images.fade]\nderive = {{ from = \"house\", noise = \"fade\", strength = \"0-1 [5]\", blur = 5 }}\n\
         [images.flat]\nderive = {{ noise = \"mean_color\" }}\n\
         [grid]\nnegative_image = [\"none\", \"fade\", \"flat\", \"fade@0.5\"]\n"
    );
    let err = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("appears twice"), "fade@0.5 twice: {err}");
    let text = text
        .replace(", \\\"fade@0.5\\\"", "")
        .replace(", \"fade@0.5\"", "");
    let exp = parse(&text).unwrap();
    assert_eq!(
        images_of(&exp),
        [
            "",
            "fade@0",
            "fade@0.25",
            "fade@0.5",
            "fade@0.75",
            "fade@1",
            "flat"
        ]
    );
    assert_eq!(exp.families["fade"].len(), 5);
    match &exp.images["fade@0.25"] {
        ImageSource::Derive(r) => {
            assert_eq!((r.noise, r.strength, r.blur), (NoiseKind::Fade, 0.25, 5));
            assert_eq!(r.from.as_deref(), Some("house"));
        }
        other => panic!("{other:?}"),
    }
    // No `from`: a black image; no strength: ComfyUI's default 1.
    match &exp.images["flat"] {
        ImageSource::Derive(r) => assert_eq!((r.from.as_deref(), r.strength), (None, 1.0)),
        other => panic!("{other:?}"),
    }
    assert!(!exp.images.contains_key("fade"), "a family is not an image");
}

#[test]
fn a_family_in_a_zip_pairs_its_members_with_the_other_column() {
    let text = format!(
        "{BASE}\n[images.d]\nderive = {{ from = \"lawn\", noise = \"dissolve\", strength = [0.2, 0.8] }}\n\
         [[grid.zip]]\nnegative_image = \"d\"\nneg_weight = [0.5, 1]\n"
    );
    let exp = parse(&text).unwrap();
    assert_eq!(images_of(&exp), ["d@0.2", "d@0.8"]);
    assert_eq!(exp.cells[1].get(Param::NegWeight), Value::Num(1.0));
}

#[test]
fn a_family_in_defaults_or_as_a_source_is_refused() {
    let fam =
        "[images.f]\nderive = { from = \"house\", noise = \"fade\", strength = \"0-1 [3]\" }\n";
    let text = format!("{BASE}negative_image = \"f\"\n{fam}");
    expect_error(
        &text,
        "negative_image = \"f\"",
        &["defaults.negative_image", "family of 3", "f@0"],
    );
    let text = format!("{BASE}{fam}[images.g]\nderive = {{ from = \"f\", noise = \"shuffle\" }}\n");
    expect_error(
        &text,
        "from = \"f\"",
        &["images.g.derive.from", "family", "\"f@0\""],
    );
}

#[test]
fn an_unknown_kind_is_refused_with_a_suggestion() {
    let text = format!("{BASE}[images.x]\nderive = {{ from = \"house\", noise = \"fdae\" }}\n");
    expect_error(
        &text,
        "noise = \"fdae\"",
        &["images.x.derive.noise", "did you mean `fade`", "legacy"],
    );
}

#[test]
fn a_strength_outside_0_to_1_is_refused() {
    for strength in ["1.5", "-0.1", "\"0-2 [3]\"", "[0.5, 7]"] {
        let text = format!(
            "{BASE}[images.x]\nderive = {{ from = \"house\", noise = \"gaussian\", strength = {strength} }}\n"
        );
        expect_error(
            &text,
            "strength",
            &["images.x.derive.strength", "between 0 and 1"],
        );
    }
}

#[test]
fn a_missing_source_is_refused() {
    let text = format!("{BASE}[images.x]\nderive = {{ from = \"hosue\", noise = \"fade\" }}\n");
    expect_error(
        &text,
        "from = \"hosue\"",
        &["images.x.derive.from", "no [images.hosue]"],
    );
}

#[test]
fn a_cycle_of_derived_images_is_refused() {
    let text = format!(
        "{BASE}[images.a]\nderive = {{ from = \"b\", noise = \"fade\" }}\n\
         [images.b]\nderive = {{ from = \"a\", noise = \"shuffle\" }}\n"
    );
    expect_error(
        &text,
        "from = \"b\"",
        &["images.a.derive.from", "cycle", "a -> b -> a"],
    );
    let text = format!("{BASE}[images.a]\nderive = {{ from = \"a\", noise = \"fade\" }}\n");
    expect_error(&text, "from = \"a\"", &["cycle", "a -> a"]);
}

#[test]
fn blur_needs_a_kernel_and_kernels_are_bounded() {
    let text = format!("{BASE}[images.x]\nderive = {{ from = \"house\", noise = \"blur\" }}\n");
    expect_error(&text, "derive = {", &["images.x.derive.blur", "kernel"]);
    let text =
        format!("{BASE}[images.x]\nderive = {{ from = \"house\", noise = \"fade\", blur = 33 }}\n");
    expect_error(
        &text,
        "blur = 33",
        &["images.x.derive.blur", "between 0 and 32"],
    );
    let text = format!(
        "{BASE}[images.x]\nderive = {{ from = \"house\", noise = \"fade\", sharpen = 1 }}\n"
    );
    assert!(format!("{:#}", parse(&text).unwrap_err()).contains("sharpen"));
    let text = format!(
        "{BASE}[images.x]\npath = \"a.png\"\nderive = {{ from = \"house\", noise = \"fade\" }}\n"
    );
    assert!(format!("{:#}", parse(&text).unwrap_err()).contains("exactly one of"));
}
