//! The statistics against scipy at test time: sign-flip permutation p-values (exact for
//! n <= 16, Monte Carlo above), Holm's correction, the percentile bootstrap interval.
mod common;

use negimg::scoring::stats::{
    PERMUTATION_EXACT_MAX, PERMUTATION_RESAMPLES, SplitMix64, bootstrap_ci, holm, sign_flip_p,
};

fn normalish(rng: &mut SplitMix64, n: usize, shift: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            (0..6)
                .map(|_| rng.below(1_000_000) as f64 / 1e6)
                .sum::<f64>()
                - 3.0
                + shift
        })
        .collect()
}

fn reference(input: &serde_json::Value) -> serde_json::Value {
    let dir = common::scratch("stats_scipy");
    let (inp, out) = (dir.join("in.json"), dir.join("out.json"));
    std::fs::write(&inp, input.to_string()).unwrap();
    common::run_python(
        "stats_reference.py",
        &[inp.to_str().unwrap(), out.to_str().unwrap()],
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

#[test]
fn sign_flip_holm_and_bootstrap_match_scipy() {
    let mut rng = SplitMix64::new(42);
    // One seed: both signs give the same |mean| (scipy refuses n = 1).
    assert_eq!(sign_flip_p(&[0.3], "one"), 1.0);
    // Exact: n = 2..=16, shifted so that some p-values are small, with ties and zeros.
    let mut samples: Vec<Vec<f64>> = [2, 3, 4, 5, 6, 7, 8, 10, 12, 16]
        .iter()
        .enumerate()
        .map(|(i, &n)| normalish(&mut rng, n, 0.15 * i as f64))
        .collect();
    samples.push(vec![0.06; 8]);
    samples.push(vec![1.0, -1.0, 1.0, -1.0, 0.5, -0.5]);
    samples.push(vec![0.0; 5]);
    samples.push(vec![0.3, 0.0, -0.1, 0.3]);
    let exact_count = samples.len();
    // Monte Carlo: n = 18 (> 16), compared with scipy's exact enumeration.
    for shift in [0.0, 0.35] {
        samples.push(normalish(&mut rng, 18, shift));
    }
    let holm_inputs: Vec<Vec<f64>> = vec![
        vec![0.01, 0.04, 0.03, 0.005],
        vec![0.2, 0.2, 0.01, 0.5, 0.049, 1.0],
        vec![0.9],
        (0..12)
            .map(|_| rng.below(10_000) as f64 / 10_000.0)
            .collect(),
    ];
    let boot: Vec<Vec<f64>> = [8, 12, 30]
        .iter()
        .map(|&n| {
            // Skewed (squared) so that a symmetric normal-theory interval would not do.
            normalish(&mut rng, n, 0.0).iter().map(|x| x * x).collect()
        })
        .collect();
    let want = reference(&serde_json::json!({
        "samples": samples, "holm": holm_inputs, "bootstrap": boot,
    }));

    for (i, x) in samples.iter().enumerate() {
        let ours = sign_flip_p(x, &format!("sample {i}"));
        let theirs = want["sign_flip"][i].as_f64().unwrap();
        if i < exact_count {
            assert!(x.len() <= PERMUTATION_EXACT_MAX);
            assert!(
                (ours - theirs).abs() < 1e-12,
                "exact n={}: ours {ours}, scipy {theirs}",
                x.len()
            );
        } else {
            let b = PERMUTATION_RESAMPLES as f64;
            let tol = 4.0 * (theirs * (1.0 - theirs) / b).sqrt() + 2.0 / b;
            assert!(
                (ours - theirs).abs() < tol,
                "Monte Carlo n={}: ours {ours}, scipy exact {theirs}, tolerance {tol}",
                x.len()
            );
        }
    }
    // The small-p samples really are small: the test would notice a constant p.
    assert!(
        want["sign_flip"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_f64().unwrap() < 0.01)
    );

    for (i, p) in holm_inputs.iter().enumerate() {
        let ours = holm(p);
        let theirs: Vec<f64> = serde_json::from_value(want["holm"][i].clone()).unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a - b).abs() < 1e-12,
                "holm {p:?}: ours {ours:?}, reference {theirs:?}"
            );
        }
    }
    // NaNs are outside the family.
    let with_nan = holm(&[0.01, f64::NAN, 0.04]);
    assert!(with_nan[1].is_nan());
    assert!((with_nan[0] - 0.02).abs() < 1e-15 && (with_nan[2] - 0.04).abs() < 1e-15);

    for (i, x) in boot.iter().enumerate() {
        let (lo, hi) = bootstrap_ci(x, &format!("boot {i}"));
        let theirs = &want["bootstrap"][i];
        let (tlo, thi) = (theirs[0].as_f64().unwrap(), theirs[1].as_f64().unwrap());
        // Our 2000 resamples against scipy's 200000: the quantiles agree within a few
        // Monte Carlo standard errors (about 0.06 of the bootstrap sd each).
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt() / n.sqrt();
        let tol = 0.3 * sd;
        assert!(
            (lo - tlo).abs() < tol && (hi - thi).abs() < tol,
            "bootstrap n={n}: ours [{lo}, {hi}], scipy [{tlo}, {thi}], tolerance {tol}"
        );
    }
}
