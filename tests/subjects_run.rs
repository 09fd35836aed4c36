//! `negimg run experiments/subjects-tiny.toml` (tiny random models, offline): the subject
//! axis in records.csv, the removal measure in scores.csv, the pooled rows in pooled.csv and
//! first in the verdict, a forest plot per metric and a grid page per subject.
mod common;

use negimg::run::records::{Status, read_records};
use negimg::scoring;

#[test]
fn subjects_tiny_runs_scores_pools_and_reports_by_subject() {
    // 3 subjects × negative 2 × 2 seeds.
    let (_dir, run) = common::run_copied_experiment("subjects_run", "subjects-tiny", 12);
    let records = read_records(&run.join("records.csv")).unwrap();
    assert!(records.iter().all(|r| r.status == Status::Done));
    for (subject, pos, neg) in [
        ("house_lawn", "house", "lawn"),
        ("street_cars", "street", "cars"),
        ("face_face", "face_a", "face_b"),
    ] {
        let mine: Vec<_> = records.iter().filter(|r| r.subject == subject).collect();
        assert_eq!(mine.len(), 4, "{subject}");
        assert!(
            mine.iter()
                .all(|r| r.positive_image == pos && r.negative_image == neg)
        );
    }
    let info = scoring::read_info(&run).unwrap();
    assert_eq!(info.subjects.len(), 3);
    assert_eq!(info.axes[0].name, "subject");

    let ids = scoring::scorers(&run).unwrap();
    assert_eq!(ids.len(), 1);
    let dir = scoring::scorer_dir(&run, &ids[0]);
    let scores = scoring::read_scores(&dir.join("scores.csv")).unwrap();
    let m = scores
        .metrics
        .iter()
        .position(|m| m == "neg_present")
        .expect("neg_present column");
    // 0/1 for every image: every subject has a negative caption.
    assert!(scores.values.values().all(|v| v[m] == 0.0 || v[m] == 1.0));

    // One pooled row per condition (the negative image), per metric.
    let pooled = std::fs::read_to_string(dir.join("pooled.csv")).unwrap();
    let mut rows = csv::Reader::from_reader(pooled.as_bytes());
    let header = rows.headers().unwrap().clone();
    assert_eq!(&header[0], "subject");
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    let removal: Vec<_> = rows.iter().filter(|r| &r[2] == "neg_present").collect();
    assert_eq!(removal.len(), 1, "{pooled}");
    assert_eq!((&removal[0][0], &removal[0][1]), ("pooled", "image"));
    assert_eq!(&removal[0][3], "3", "3 subjects: {pooled}");

    // CMMD of the image condition against its baseline images, in summary.csv.
    let summary = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    assert!(
        summary.lines().next().unwrap().contains(",cmmd,cmmd_p,"),
        "{summary}"
    );
    assert!(dir.join("cmmd.csv").is_file());

    // The verdict's first rows are the pooled ones.
    let verdict = std::fs::read_to_string(dir.join("verdict.csv")).unwrap();
    let lines: Vec<&str> = verdict.lines().collect();
    assert!(lines[1].starts_with("pooled,"), "{verdict}");
    assert_eq!(lines.len(), 5, "pooled + 3 subjects: {verdict}");
    assert!(lines[2..].iter().all(|l| !l.starts_with("pooled,")));
    assert!(verdict.contains("subjects (significant)"), "{verdict}");

    // Forest plots, linked from the report; a grid page per subject.
    let forest = run.join("forest").join(&ids[0]);
    for metric in ["clip_i_neg", "neg_present"] {
        assert!(forest.join(format!("{metric}.svg")).is_file(), "{metric}");
        assert!(forest.join(format!("{metric}.png")).is_file(), "{metric}");
    }
    let html = std::fs::read_to_string(run.join("index.html")).unwrap();
    assert!(html.contains("Forest plots") && html.contains("pooled.csv"));
    let grids: Vec<String> = std::fs::read_dir(run.join("grids"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    for subject in ["house_lawn", "street_cars", "face_face"] {
        assert!(
            grids
                .iter()
                .any(|g| g.contains(&format!("subject-{subject}"))),
            "{subject}: {grids:?}"
        );
    }
}
