//! Fuzzing the experiment parser and validator: random text, random edits of a valid file,
//! and random axis expressions must give a result or an error naming the file, never a
//! panic (no unwrap on user data). Bounded: a few hundred cases per property.
use negimg::experiment::{self, LoadOptions};
use proptest::prelude::*;
use std::path::Path;

const VALID: &str = r#"[experiment]
name = "fz"
[models]
pipeline = "fz-models/pipeline"
ip_adapter = { base = "fz-models/a.safetensors", plus = "fz-models/b.safetensors" }
image_encoder = "fz-models/image_encoder"
init_random = { preset = "tiny", dir = "fz-models" }
[images.house]
generate = { prompt = "a house", seed = 3, steps = 2, cfg = 5 }
[images.lawn]
generate = { prompt = "a lawn" }
[defaults]
steps = 4
size = [64, 48]
seeds = { count = 2, base = 7 }
positive_image = "house"
neg_weight = 0.5
[grid]
weight = "0-1 [3]"
start = [0, 0.25]
scheduler = "ddim, euler"
[[grid.zip]]
negative = ["text", "image"]
negative_prompt = ["grass", ""]
negative_image = ["none", "lawn"]
[scoring]
targets = ["a house in winter"]
negative_reference = "lawn"
[plots]
rows = "weight"
cols = "negative"
curve_x = "weight"
"#;

fn check(text: &str) {
    let opts = LoadOptions::default();
    if let Err(e) = experiment::parse(Path::new("fz.toml"), text.to_string(), &opts) {
        let msg = format!("{e:#}");
        assert!(
            msg.contains("fz.toml"),
            "error without the file name: {msg}"
        );
    }
}

/// Pieces that make TOML and our value syntax interesting.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[".to_string()),
        Just("]".to_string()),
        Just("\"".to_string()),
        Just("=".to_string()),
        Just("\n".to_string()),
        Just("-".to_string()),
        Just(",".to_string()),
        Just(" (+0.5)".to_string()),
        Just(" [4]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[[grid.zip]]\n".to_string()),
        Just("1e309".to_string()),
        Just("-0".to_string()),
        Just("nan".to_string()),
        Just("é".to_string()),
        "[a-z_]{1,8}",
        "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        check(&text);
    }

    #[test]
    fn edited_valid_files_never_panic(
        edits in prop::collection::vec((0usize..2000, 0usize..6, token()), 1..6)
    ) {
        let mut text = VALID.to_string();
        for (at, cut, insert) in edits {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(at..end, &insert);
        }
        check(&text);
    }

    #[test]
    fn random_axis_expressions_never_panic(
        key in prop_oneof![Just("weight"), Just("cfg"), Just("steps"), Just("seed"), Just("neg_end"), Just("adapter"), Just("negative_image")],
        expr in "[0-9 .,eE+()\\[\\]-]{0,24}"
    ) {
        check(&format!("{VALID}\n[[grid.zip]]\n{key} = \"{expr}\"\n"));
        check(&VALID.replace("weight = \"0-1 [3]\"", &format!("{key} = \"{expr}\"")));
    }
}

#[test]
fn the_fuzzed_base_file_is_valid() {
    let e = experiment::parse(
        Path::new("fz.toml"),
        VALID.to_string(),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(e.cells.len(), 3 * 2 * 2 * 2 * 2);
    assert_eq!((e.cells[0].width, e.cells[0].height), (64, 48));
}
