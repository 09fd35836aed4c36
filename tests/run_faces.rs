//! `negimg plan` and `negimg run` of experiments/faces-tiny.toml (tiny random models,
//! offline): the face adapters (plus_face, full_face) beside Plus, each cell made with its
//! own adapter file, and records.csv naming each cell's adapter.
mod common;

use negimg::params::{AdapterKind, NegativeMode};
use negimg::run::records::{Status, read_records};

#[test]
fn faces_tiny_runs_the_face_adapters() {
    let (dir, run) = common::run_copied_experiment("run_faces", "faces-tiny", 24);
    let plan = common::plan("experiments/faces-tiny.toml", &dir);
    for a in ["plus_face", "full_face"] {
        assert!(plan.contains(a), "plan lists {a}:\n{plan}");
    }
    let records = read_records(&run.join("records.csv")).unwrap();
    assert_eq!(records.len(), 24);
    for kind in [
        AdapterKind::Plus,
        AdapterKind::PlusFace,
        AdapterKind::FullFace,
    ] {
        let of_kind: Vec<_> = records.iter().filter(|r| r.adapter == kind).collect();
        assert_eq!(of_kind.len(), 8, "{kind}");
        assert!(of_kind.iter().all(|r| r.status == Status::Done), "{kind}");
    }
    // The same cell with another adapter is another image (each kind used its own file).
    let image_of = |kind: AdapterKind| {
        records
            .iter()
            .find(|r| {
                r.adapter == kind
                    && r.seed == 3000
                    && r.negative == NegativeMode::Image
                    && r.weight == 0.8
            })
            .map(|r| image::open(run.join(&r.file)).unwrap().to_rgb8())
            .unwrap()
    };
    let plus = image_of(AdapterKind::Plus);
    for kind in [AdapterKind::PlusFace, AdapterKind::FullFace] {
        assert_ne!(image_of(kind), plus, "{kind} made Plus' image");
    }
}
