//! `[subjects]`: the subject axis (TOML tables and a CSV), how it crosses the grid, the
//! errors for bad input (file:line or CSV line, and the key), and that files without subjects
//! keep their cells, records and ids.
mod common;

use common::parity::write_image;
use negimg::experiment::{self, LoadOptions, Param};
use negimg::run::records::{Record, Status};
use std::path::{Path, PathBuf};

/// Models that `init_random` would make (nothing is read), two images, no grid yet.
const HEAD: &str = r#"
[models]
pipeline = "no-such-models/pipeline"
ip_adapter = { base = "no-such-models/ip-adapter_sd15.safetensors" }
image_encoder = "no-such-models/image_encoder"
init_random = { preset = "tiny", dir = "no-such-models" }

[images.house]
generate = { prompt = "a house", seed = 1 }
[images.lawn]
generate = { prompt = "a lawn", seed = 2 }
[images.street]
generate = { prompt = "a street", seed = 3 }
[images.cars]
generate = { prompt = "cars", seed = 4 }
"#;

const TWO_SUBJECTS: &str = r#"
[subjects.house_lawn]
positive = "house"
negative = "lawn"
negative_caption = "a green lawn"
positive_caption = "a house"

[subjects.street_cars]
positive = "street"
negative = "cars"
negative_caption = "cars"
"#;

/// Writes `text` as `dir/t.toml` and loads it.
fn load_in(dir: &Path, text: &str) -> anyhow::Result<experiment::Experiment> {
    let path = dir.join("t.toml");
    std::fs::write(&path, text).unwrap();
    experiment::load(&path, &LoadOptions::default())
}

fn error_in(dir: &Path, text: &str) -> String {
    match load_in(dir, text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => format!("{e:#}"),
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle:?}"));
    text[..at].matches('\n').count() + 1
}

fn assert_has(err: &str, words: &[&str]) {
    for w in words {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

#[test]
fn subject_axis_crosses_every_axis_and_sets_both_images() {
    let dir = common::scratch("subjects_axis");
    let text = format!(
        "{HEAD}{TWO_SUBJECTS}\n[defaults]\nseeds = [1, 2]\n[grid]\nnegative = [\"none\", \"image\"]\nweight = [0.5, 1]\n"
    );
    let exp = load_in(&dir, &text).unwrap();
    // subject 2 × negative 2 × weight 2 × seed 2, the subject outermost.
    assert_eq!(exp.cells.len(), 16);
    assert_eq!(
        exp.grid.shape(),
        "subject+positive_image+negative_image 2 × negative 2 × weight 2 × seed 2"
    );
    for (i, c) in exp.cells.iter().enumerate() {
        let (subject, pos, neg) = if i < 8 {
            ("house_lawn", "house", "lawn")
        } else {
            ("street_cars", "street", "cars")
        };
        assert_eq!(c.subject.as_deref(), Some(subject));
        assert_eq!(c.positive_image.as_deref(), Some(pos));
        assert_eq!(c.negative_image.as_deref(), Some(neg));
    }
    let axes: Vec<String> = exp.axes().into_iter().map(|a| a.name).collect();
    assert_eq!(axes, ["subject", "negative", "weight", "seed"]);
    // A page per subject by default.
    assert_eq!(exp.plots.pages.as_deref(), Some("subject"));
    assert_eq!(exp.subjects.len(), 2);
    assert_eq!(
        exp.subjects[0].1.negative_caption.as_deref(),
        Some("a green lawn")
    );
    // Records carry the subject; `field` reads it as the axis.
    let r = Record::new("x", &exp.cells[9], Status::Done, "", 0.0, "");
    assert_eq!(r.field("subject").as_deref(), Some("street_cars"));

    // `[grid] subject` picks and orders subjects, and places the axis.
    let text =
        format!("{HEAD}{TWO_SUBJECTS}\n[grid]\nweight = [0.5, 1]\nsubject = [\"street_cars\"]\n");
    let exp = load_in(&dir, &text).unwrap();
    assert_eq!(exp.cells.len(), 2);
    assert!(
        exp.cells
            .iter()
            .all(|c| c.subject.as_deref() == Some("street_cars"))
    );
    let axes: Vec<String> = exp.axes().into_iter().map(|a| a.name).collect();
    assert_eq!(axes, ["weight", "subject"]);
    assert_eq!(
        exp.grid.origin(Param::PositiveImage).unwrap().0,
        "grid.subject"
    );
}

#[test]
fn subject_files_without_subjects_keep_their_cells_records_and_ids() {
    let dir = common::scratch("subjects_unchanged");
    let text = format!(
        "{HEAD}\n[defaults]\npositive_image = \"house\"\nnegative_image = \"lawn\"\n[grid]\nnegative = [\"none\", \"image\"]\n"
    );
    let exp = load_in(&dir, &text).unwrap();
    assert!(exp.subjects.is_empty());
    assert!(exp.cells.iter().all(|c| c.subject.is_none()));
    let axes: Vec<String> = exp.axes().into_iter().map(|a| a.name).collect();
    assert_eq!(axes, ["negative"]);
    // No `subject` key in a record (the record id of shared-image cells hashes the row) nor
    // a column in records.csv.
    let r = Record::new("x", &exp.cells[1], Status::Done, "", 0.0, "");
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("subject"), "{json}");
    let csv_path = dir.join("records.csv");
    negimg::run::records::write_records(&csv_path, std::slice::from_ref(&r)).unwrap();
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert!(!csv.contains("subject"), "{csv}");
    assert_eq!(
        negimg::run::records::read_records(&csv_path).unwrap(),
        vec![r]
    );
    // With a subject the column is written and read back.
    let mut s = Record::new("y", &exp.cells[1], Status::Done, "", 0.0, "");
    s.subject = "house_lawn".into();
    negimg::run::records::write_records(&csv_path, std::slice::from_ref(&s)).unwrap();
    assert_eq!(
        negimg::run::records::read_records(&csv_path).unwrap(),
        vec![s]
    );
}

/// `pairs.csv` beside the TOML with two rows of real image files.
fn write_pairs(dir: &Path, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("pairs")).unwrap();
    for (i, name) in ["a.png", "b.png", "c.png", "d.png"].iter().enumerate() {
        write_image(&dir.join("pairs").join(name), 24, 24, i as u32);
    }
    std::fs::write(dir.join("pairs/notes.txt"), "not an image").unwrap();
    let path = dir.join("pairs/pairs.csv");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn subjects_from_a_csv_with_paths_relative_to_it() {
    let dir = common::scratch("subjects_csv");
    write_pairs(
        &dir,
        "name,positive,negative,negative_caption,positive_caption\n\
         ab,a.png,b.png,a thing b,a thing a\n\
         cd,c.png,d.png,a thing d,\n",
    );
    let text = format!("{HEAD}\n[subjects]\nfrom = \"pairs/pairs.csv\"\n");
    let exp = load_in(&dir, &text).unwrap();
    let names: Vec<&str> = exp.subjects.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ab", "cd"]);
    assert_eq!(exp.subjects[0].1.positive, "ab.positive");
    assert_eq!(exp.subjects[1].1.positive_caption, None);
    match &exp.images["cd.negative"] {
        experiment::ImageSource::File(p) => assert!(p.ends_with("pairs/d.png"), "{p:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(exp.cells.len(), 2);
}

#[test]
fn subject_bad_input_names_the_file_line_and_key() {
    let dir = common::scratch("subjects_errors");
    // A subject naming an image that is not there.
    let text = format!(
        "{HEAD}\n[subjects.x]\npositive = \"house\"\nnegative = \"snow\"\nnegative_caption = \"snow\"\n"
    );
    let err = error_in(&dir, &text);
    let line = line_of(&text, "negative = \"snow\"");
    assert_has(
        &err,
        &[
            &format!("t.toml:{line}:"),
            "subjects.x.negative",
            "no [images.snow]",
        ],
    );
    // A missing image key, an unknown key.
    let text = format!("{HEAD}\n[subjects.x]\npositive = \"house\"\n");
    let err = error_in(&dir, &text);
    assert_has(
        &err,
        &[
            &format!("t.toml:{}:", line_of(&text, "[subjects.x]")),
            "subjects.x.negative",
            "missing",
        ],
    );
    let text = format!("{HEAD}\n[subjects.x]\npositive = \"house\"\nnegativ = \"lawn\"\n");
    let err = error_in(&dir, &text);
    assert_has(
        &err,
        &[
            &format!("t.toml:{}:", line_of(&text, "negativ =")),
            "subjects.x.negativ",
            "did you mean `negative`",
        ],
    );
    // A region mask that is not an image.
    std::fs::write(dir.join("mask.png"), "not a png").unwrap();
    let text = format!(
        "{HEAD}\n[subjects.x]\npositive = \"house\"\nnegative = \"lawn\"\nmask = \"mask.png\"\n"
    );
    let err = error_in(&dir, &text);
    assert_has(
        &err,
        &[
            &format!("t.toml:{}:", line_of(&text, "mask =")),
            "subjects.x.mask",
            "not an image",
        ],
    );
    // A CSV without a required column.
    write_pairs(&dir, "name,positive,negative\nab,a.png,b.png\n");
    let text = format!("{HEAD}\n[subjects]\nfrom = \"pairs/pairs.csv\"\n");
    let from_line = line_of(&text, "from =");
    let err = error_in(&dir, &text);
    assert_has(
        &err,
        &[
            &format!("t.toml:{from_line}:"),
            "subjects.from",
            "pairs.csv:1",
            "missing column(s) negative_caption",
        ],
    );
    // A row of the wrong width.
    write_pairs(
        &dir,
        "name,positive,negative,negative_caption\nab,a.png,b.png,b\ncd,c.png,d.png\n",
    );
    let err = error_in(&dir, &text);
    assert_has(
        &err,
        &["subjects.from", "pairs.csv:3", "3 fields, the header 4"],
    );
    // A row whose image or mask is not an image.
    write_pairs(
        &dir,
        "name,positive,negative,negative_caption,mask\nab,a.png,b.png,b,notes.txt\n",
    );
    let err = error_in(&dir, &text);
    assert_has(&err, &["pairs.csv:2", "column mask", "not an image"]);
    write_pairs(
        &dir,
        "name,positive,negative,negative_caption\nab,a.png,missing.png,b\n",
    );
    let err = error_in(&dir, &text);
    assert_has(&err, &["pairs.csv:2", "column negative", "missing.png"]);
    // Duplicate names: two CSV rows, and a CSV row against a TOML subject.
    write_pairs(
        &dir,
        "name,positive,negative,negative_caption\nab,a.png,b.png,b\nab,c.png,d.png,d\n",
    );
    let err = error_in(&dir, &text);
    assert_has(
        &err,
        &[
            "subjects.from",
            "pairs/pairs.csv:3",
            "already declared at pairs/pairs.csv:2",
        ],
    );
    write_pairs(
        &dir,
        "name,positive,negative,negative_caption\nab,a.png,b.png,b\n",
    );
    let text = format!(
        "{HEAD}\n[subjects.ab]\npositive = \"house\"\nnegative = \"lawn\"\n[subjects]\nfrom = \"pairs/pairs.csv\"\n"
    );
    let err = error_in(&dir, &text);
    assert_has(
        &err,
        &[
            &format!("t.toml:{}:", line_of(&text, "from =")),
            "\"ab\"",
            "already declared at",
        ],
    );
    // The images come from the subjects: setting them elsewhere is refused.
    let text = format!("{HEAD}{TWO_SUBJECTS}\n[grid]\nnegative_image = [\"lawn\", \"cars\"]\n");
    let err = error_in(&dir, &text);
    assert_has(
        &err,
        &[
            &format!("t.toml:{}:", line_of(&text, "negative_image = [")),
            "grid.negative_image",
            "set by each [subjects.NAME]",
        ],
    );
    let text = format!("{HEAD}{TWO_SUBJECTS}\n[defaults]\nsubject = \"house_lawn\"\n");
    let err = error_in(&dir, &text);
    assert_has(&err, &["defaults.subject", "an axis of its own"]);
    let text = format!("{HEAD}{TWO_SUBJECTS}\n[grid]\nsubject = [\"house_lawn\", \"nope\"]\n");
    let err = error_in(&dir, &text);
    assert_has(
        &err,
        &[
            &format!("t.toml:{}:", line_of(&text, "subject = [")),
            "grid.subject",
            "no [subjects.nope]",
            "house_lawn, street_cars",
        ],
    );
}

#[test]
fn subject_plan_lists_the_subjects_offline() {
    let dir = common::scratch("subjects_plan");
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    for name in ["subjects", "subjects-tiny"] {
        let exp = format!("experiments/{name}.toml");
        std::fs::copy(common::repo().join(&exp), dir.join(&exp)).unwrap();
        let out = common::negimg(&["--device", "cpu", "plan", "--no-calibrate", &exp], &dir);
        let plan = common::text(&out);
        assert!(out.status.success(), "{plan}");
        assert!(plan.contains("subject="), "{plan}");
        for line in ["house_lawn", "street_cars"] {
            assert!(
                plan.contains(&format!("  {line}")),
                "{name}: {line}:\n{plan}"
            );
        }
        let count = experiment::load(&dir.join(&exp), &LoadOptions::default())
            .unwrap()
            .subjects
            .len();
        assert!(plan.contains(&format!("subjects: {count}")), "{plan}");
        if name == "subjects" {
            assert!(count >= 12, "{count} subjects");
        }
    }
}
