//! CMMD against numpy at test time (`tests/reference/cmmd_reference.py`, the arithmetic of
//! google-research `cmmd/distance.py`): the distance exactly (float64), the permutation
//! p-value statistically against the exact p over every split.
mod common;

use negimg::scoring::cmmd::{PERMUTATIONS, cmmd, cmmd_test};
use negimg::scoring::metrics::normalized;
use negimg::scoring::stats::SplitMix64;

type Points = Vec<Vec<f64>>;

/// `n` unit vectors of dimension `dim`, shifted along the first axis by `shift`.
fn unit_vectors(rng: &mut SplitMix64, n: usize, dim: usize, shift: f64) -> Points {
    (0..n)
        .map(|_| {
            let v: Vec<f64> = (0..dim)
                .map(|d| {
                    let u = rng.below(1_000_000) as f64 / 1e6 - 0.5;
                    if d == 0 { u + shift } else { u }
                })
                .collect();
            normalized(&v)
        })
        .collect()
}

#[test]
fn cmmd_matches_numpy_and_its_permutation_p_the_exact_one() {
    let mut rng = SplitMix64::new(5);
    // Same distribution, a small shift, a large shift; unequal sizes too.
    let cases: Vec<(Points, Points)> = [(5, 5, 0.0), (6, 5, 0.4), (5, 4, 2.0)]
        .iter()
        .map(|&(nx, ny, shift)| {
            (
                unit_vectors(&mut rng, nx, 16, shift),
                unit_vectors(&mut rng, ny, 16, 0.0),
            )
        })
        .collect();
    let dir = common::scratch("cmmd_numpy");
    let (inp, out) = (dir.join("in.json"), dir.join("out.json"));
    let json = serde_json::json!({"cases": cases.iter().map(|(x, y)| serde_json::json!({"x": x, "y": y})).collect::<Vec<_>>()});
    std::fs::write(&inp, json.to_string()).unwrap();
    common::run_python(
        "cmmd_reference.py",
        &[inp.to_str().unwrap(), out.to_str().unwrap()],
    );
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let mut ps = Vec::new();
    for (i, (x, y)) in cases.iter().enumerate() {
        let xs: Vec<&[f64]> = x.iter().map(Vec::as_slice).collect();
        let ys: Vec<&[f64]> = y.iter().map(Vec::as_slice).collect();
        let d = cmmd(&xs, &ys);
        let theirs = want["cmmd"][i].as_f64().unwrap();
        assert!(
            (d - theirs).abs() < 1e-9 * theirs.abs().max(1.0),
            "case {i}: ours {d}, numpy {theirs}"
        );
        let (same, p) = cmmd_test(&xs, &ys, &format!("case {i}"));
        assert_eq!(same, d);
        let exact = want["p"][i].as_f64().unwrap();
        let b = PERMUTATIONS as f64;
        let tol = 4.0 * (exact * (1.0 - exact) / b).sqrt() + 2.0 / b;
        assert!(
            (p - exact).abs() < tol,
            "case {i}: ours {p}, exact {exact}, tolerance {tol}"
        );
        ps.push(exact);
    }
    // The cases span a null and a clear difference, so a constant p would fail.
    assert!(ps[0] > 0.2 && ps[2] < 0.05, "{ps:?}");
    // A set against itself: zero.
    let xs: Vec<&[f64]> = cases[0].0.iter().map(Vec::as_slice).collect();
    assert!(cmmd(&xs, &xs).abs() < 1e-12);
}
