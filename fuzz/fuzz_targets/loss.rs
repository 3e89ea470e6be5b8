//! Loss kernels at extreme logits (±1e8, ±1e30, ±Inf, NaN, ties): never a
//! panic; for finite logits a finite loss and gradient that match an f64
//! evaluation of the same formulas; NaN in, NaN out.
#![no_main]

use arbitrary::Arbitrary;
use backprop::matrix::{MatMut, MatRef};
use backprop::nn::loss::{logistic, mse, softmax_cross_entropy};
use libfuzzer_sys::fuzz_target;

const VALUES: [f32; 16] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -2.5,
    1e4,
    -1e4,
    1e8,
    -1e8,
    1e30,
    -1e30,
    88.0,
    -104.0,
    f32::INFINITY,
    f32::NAN,
];

#[derive(Arbitrary, Debug)]
struct Input {
    batch: u8,
    classes: u8,
    logits: Vec<u8>,
    labels: Vec<u8>,
}

fuzz_target!(|inp: Input| {
    let b = inp.batch as usize % 9;
    let k = 1 + inp.classes as usize % 7;
    let pick = |i: usize| VALUES[*inp.logits.get(i).unwrap_or(&0) as usize % VALUES.len()];
    let h: Vec<f32> = (0..b * k).map(pick).collect();
    let label = |i: usize| *inp.labels.get(i).unwrap_or(&0) as usize;
    let hv = MatRef::from_slice(&h, b, k);
    let mut g = vec![0.0f32; b * k];

    // Softmax cross-entropy with class indices (some out of range on purpose).
    let classes: Vec<usize> = (0..b).map(|i| label(i) % (k + 1)).collect();
    let r = softmax_cross_entropy(hv, &classes, Some(MatMut::from_slice_mut(&mut g, b, k)));
    if classes.iter().all(|&c| c < k) {
        let v = r.expect("valid classes");
        let mut want = 0.0f64;
        for i in 0..b {
            let row: Vec<f64> = (0..k).map(|j| h[i * k + j] as f64).collect();
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|x| (x - m).exp()).sum();
            want += (m - row[classes[i]]) + s.ln();
        }
        let want = if b == 0 { 0.0 } else { want / b as f64 };
        let finite_in = h.iter().all(|x| x.is_finite());
        if finite_in {
            assert!(
                v.is_finite() || want > f32::MAX as f64,
                "finite logits gave loss {v}"
            );
            assert!(
                g.iter().all(|x| x.is_finite()),
                "finite logits gave a non-finite gradient"
            );
            if want.is_finite() && want < 1e38 {
                assert!(
                    (v as f64 - want).abs() <= 1e-5 * want.abs() + 1e-6,
                    "loss {v} vs {want}"
                );
            }
        }
        if h.iter().any(|x| x.is_nan()) {
            assert!(v.is_nan(), "NaN logits gave loss {v}");
        }
    } else {
        assert!(r.is_err(), "an out-of-range class was accepted");
    }

    // Logistic on the first column, labels ±1 (or invalid).
    let h1: Vec<f32> = (0..b).map(|i| h[i * k]).collect();
    let y: Vec<f32> = (0..b).map(|i| [1.0, -1.0, 0.0][label(i) % 3]).collect();
    let mut g1 = vec![0.0f32; b];
    let r = logistic(
        MatRef::from_slice(&h1, b, 1),
        &y,
        Some(MatMut::from_slice_mut(&mut g1, b, 1)),
    );
    if y.iter().all(|&v| v != 0.0) {
        let v = r.expect("valid labels");
        if h1.iter().all(|x| x.is_finite()) {
            let want: f64 = (0..b)
                .map(|i| {
                    let t = -(y[i] as f64) * h1[i] as f64;
                    t.max(0.0) + (-t.abs()).exp().ln_1p()
                })
                .sum::<f64>()
                / b.max(1) as f64;
            assert!(v.is_finite() && g1.iter().all(|x| x.is_finite()));
            assert!(
                (v as f64 - want).abs() <= 1e-5 * want.abs() + 1e-6,
                "logistic {v} vs {want}"
            );
        }
    } else {
        assert!(r.is_err(), "a label that is not ±1 was accepted");
    }

    // MSE against shifted targets.
    let y2: Vec<f32> = h.iter().rev().cloned().collect();
    let v = mse(
        hv,
        MatRef::from_slice(&y2, b, k),
        Some(MatMut::from_slice_mut(&mut g, b, k)),
    );
    if h.iter().all(|x| x.is_finite()) {
        let want: f64 = h
            .iter()
            .zip(&y2)
            .map(|(a, b)| 0.5 * (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            / b.max(1) as f64;
        if want < 1e38 {
            assert!(
                (v as f64 - want).abs() <= 1e-5 * want.abs() + 1e-6,
                "mse {v} vs {want}"
            );
        }
    }
});
