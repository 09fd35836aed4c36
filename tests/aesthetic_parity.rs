//! The LAION improved aesthetic predictor against torch at test time
//! (`tests/reference/aesthetic_reference.py`): random heads saved with torch.save in the
//! release's state-dict layout, loaded through the pickle-safe `.pth` conversion; scores
//! within 1e-5 of the torch MLP; another head gives other scores; bad files and a scorer of
//! the wrong width are errors naming what is wrong.
mod common;

use negimg::models::aesthetic::{AestheticHead, EMBED_DIM};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const TOL: f64 = 1e-5;

struct Reference {
    dir: PathBuf,
    embeddings: Vec<Vec<f64>>,
    head_a: Vec<f64>,
    head_b: Vec<f64>,
}

/// The heads and scores the reference script writes, once per test binary; converted `.pth`
/// files go to the scratch folder, not the user's cache.
fn reference() -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let dir = common::scratch("aesthetic_parity");
        // SAFETY: set once, before any test of this binary converts a file.
        unsafe { std::env::set_var("NEGIMG_CONVERTED", dir.join("converted")) };
        common::run_python("aesthetic_reference.py", &[dir.to_str().unwrap()]);
        let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        Reference {
            embeddings: json["embeddings"]
                .as_array()
                .unwrap()
                .iter()
                .map(floats)
                .collect(),
            head_a: floats(&json["head_a"]),
            head_b: floats(&json["head_b"]),
            dir,
        }
    })
}

fn scores(head: &Path) -> Vec<f64> {
    let head = AestheticHead::load(head).unwrap();
    reference()
        .embeddings
        .iter()
        .map(|e| head.score(e))
        .collect()
}

#[test]
fn aesthetic_scores_match_torch_on_a_random_head_in_the_release_layout() {
    let r = reference();
    for (name, want) in [("head_a", &r.head_a), ("head_b", &r.head_b)] {
        let got = scores(&r.dir.join(format!("{name}.pth")));
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= TOL, "{name} image {i}: {g} vs torch {w}");
        }
        // The scores differ between images: the head is not ignoring its input.
        assert!(
            want.iter().any(|w| (w - want[0]).abs() > 1e-3),
            "{name}: {want:?}"
        );
    }
    // Guard: another head gives other scores (the file is really read).
    let a = scores(&r.dir.join("head_a.pth"));
    let b = scores(&r.dir.join("head_b.pth"));
    let moved = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(moved > 1e-2, "two heads gave the same scores: {a:?} {b:?}");
}

#[test]
fn aesthetic_bad_heads_and_a_scorer_of_another_width_are_clear_errors() {
    let r = reference();
    let err = |file: &str| {
        format!(
            "{:#}",
            AestheticHead::load(&r.dir.join(file)).err().unwrap()
        )
    };
    let e = err("bad_shape.pth");
    assert!(
        e.contains("bad_shape.pth") && e.contains("layers.2.weight") && e.contains("[128, 1024]"),
        "{e}"
    );
    let e = err("missing.pth");
    assert!(
        e.contains("missing.pth") && e.contains("layers.7.bias"),
        "{e}"
    );
    let e = err("no-such.pth");
    assert!(e.contains("no-such.pth"), "{e}");

    let head = AestheticHead::load(&r.dir.join("head_a.pth")).unwrap();
    head.check_scorer(Path::new("models/clip-vit-l14"), EMBED_DIM)
        .unwrap();
    let e = format!(
        "{:#}",
        head.check_scorer(Path::new("models/tiny-clip"), 32)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("head_a.pth") && e.contains("models/tiny-clip") && e.contains("32"),
        "{e}"
    );
}
