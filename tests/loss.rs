//! The losses and inference rules against literal `f64` references, central
//! finite differences, extreme and non-finite inputs, bad targets and bad
//! shapes, through row-major and strided (transposed, padded, reversed) views.
//!
//! Tolerances:
//! * `REL = 1e-6` for every `f32` result against an `f64` reference. The
//!   library computes in `f64` and rounds once, which alone costs at most 2⁻²⁴ ≈
//!   6e-8 relative; the two `f64` computations differ by ~1e-15 relative
//!   (sums of non-negative terms, no cancellation on these inputs). 1e-6 leaves a
//!   ~16× margin yet would catch any `f32` accumulation of more than a handful of
//!   terms or any unstable formula. An absolute floor of `f32::MIN_POSITIVE`
//!   covers results that round into the subnormal range.
//! * Finite differences of the `f64` reference loss with step 1e-3 have
//!   truncation error δ²/6·|L'''| ≤ 1.7e-7·|L'''| (|L'''| ≤ 1 for these losses
//!   on these inputs) plus round-off ~1e-16·|L|/δ ≈ 1e-12: tolerance 1e-5.
//! * Finite differences of the library's own `f32` loss: see `fd_of_the_f32_api`.

mod common;

use backprop::matrix::{MatMut, MatRef};
use backprop::nn::loss::{
    argmax_rows, logistic, mse, predict_sign, softmax_cross_entropy, Loss, LossError,
};
use common::{Layout, Strided, LAYOUTS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const REL: f64 = 1e-6;
/// Round-off of the literal f64 references: terms are at most ~10 in size
/// (inputs in ±3, K ≤ 10), so a few ε₆₄ of them is < 1e-14.
const LITERAL_ABS: f64 = 1e-14;

/// Batch sizes and output widths swept by the random tests (64 and 65
/// straddle softmax's row buffer: up to 64 classes keep their exponentials,
/// wider rows compute them again).
const BATCHES: [usize; 4] = [1, 2, 7, 33];
const WIDTHS: [usize; 6] = [1, 2, 3, 10, 64, 65];

/// `got` within `REL` (relative) of an exact-to-f64 `want`.
#[track_caller]
fn assert_close(got: f32, want: f64, what: &str) {
    assert_within(got, want, f32::MIN_POSITIVE as f64, what);
}

/// `got` within `REL` of `want` from a *literal* reference, which itself carries
/// f64 round-off of a few ε₆₄ times the size of its terms (e.g. ln(e^h) − h is
/// ~1e-17, not 0, for K = 1): the absolute slack `LITERAL_ABS` allows for that.
#[track_caller]
fn assert_near_literal(got: f32, want: f64, what: &str) {
    assert_within(got, want, LITERAL_ABS, what);
}

#[track_caller]
fn assert_within(got: f32, want: f64, abs: f64, what: &str) {
    let tol = REL * want.abs() + abs;
    assert!(
        got.is_finite() && (got as f64 - want).abs() <= tol,
        "{what}: got {got:e}, want {want:e} (tol {tol:e})"
    );
}

#[track_caller]
fn assert_grad_close(g: &Strided, want: &[f64], abs: f64, what: &str) {
    assert_eq!(want.len(), g.rows * g.cols);
    for i in 0..g.rows {
        for j in 0..g.cols {
            let w = want[i * g.cols + j];
            assert_within(g.get(i, j), w, abs, &format!("{what} grad[{i},{j}]"));
        }
    }
    g.assert_guards(what);
}

fn random_strided(rows: usize, cols: usize, layout: Layout, rng: &mut StdRng) -> Strided {
    let mut s = Strided::new(rows, cols, layout);
    s.fill_with(|_, _| rng.random_range(-3.0f32..3.0));
    s
}

/// A gradient buffer whose elements are NaN: the loss must overwrite, never read, them.
fn nan_grad(rows: usize, cols: usize, layout: Layout) -> Strided {
    let mut g = Strided::new(rows, cols, layout);
    g.fill_with(|_, _| f32::NAN);
    g
}

fn to_f64(s: &Strided) -> Vec<f64> {
    s.to_vec().into_iter().map(f64::from).collect()
}

fn random_labels(b: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..b)
        .map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 })
        .collect()
}

fn random_classes(b: usize, k: usize, rng: &mut StdRng) -> Vec<usize> {
    (0..b).map(|_| rng.random_range(0..k)).collect()
}

// ---------------------------------------------------------------------------
// Literal f64 references (row-major h). Each returns (mean loss, ∂mean/∂h).
// ---------------------------------------------------------------------------

/// L = (1/B) Σ_i ½ Σ_j (h_ij − y_ij)²;  ∂L/∂h_ij = (h_ij − y_ij)/B.
fn ref_mse(h: &[f64], y: &[f64], b: usize, n: usize) -> (f64, Vec<f64>) {
    let mut loss = 0.0;
    let mut grad = vec![0.0; b * n];
    for i in 0..b {
        let mut sample = 0.0;
        for j in 0..n {
            let d = h[i * n + j] - y[i * n + j];
            sample += 0.5 * d * d;
            grad[i * n + j] = d / b as f64;
        }
        loss += sample;
    }
    (loss / b as f64, grad)
}

/// L = (1/B) Σ_i log(1 + e^{−y_i h_i});  ∂L/∂h_i = −y_i e^{−y_i h_i}/(1 + e^{−y_i h_i})/B.
/// Literal: only for moderate |h| (the random inputs are in ±3).
fn ref_logistic(h: &[f64], y: &[f32]) -> (f64, Vec<f64>) {
    let b = h.len();
    let mut loss = 0.0;
    let mut grad = vec![0.0; b];
    for i in 0..b {
        let yi = y[i] as f64;
        let e = (-yi * h[i]).exp();
        loss += (1.0 + e).ln();
        grad[i] = -yi * e / (1.0 + e) / b as f64;
    }
    (loss / b as f64, grad)
}

/// L = (1/B) Σ_i [log Σ_j e^{h_ij} − h_{i,c_i}];  ∂L/∂h_ij = (e^{h_ij}/Σ_k e^{h_ik} − [j = c_i])/B.
/// Literal: only for moderate logits.
fn ref_softmax(h: &[f64], c: &[usize], b: usize, k: usize) -> (f64, Vec<f64>) {
    let mut loss = 0.0;
    let mut grad = vec![0.0; b * k];
    for i in 0..b {
        let row = &h[i * k..(i + 1) * k];
        let s: f64 = row.iter().map(|x| x.exp()).sum();
        loss += s.ln() - row[c[i]];
        for j in 0..k {
            let onehot = if j == c[i] { 1.0 } else { 0.0 };
            grad[i * k + j] = (row[j].exp() / s - onehot) / b as f64;
        }
    }
    (loss / b as f64, grad)
}

/// The same as `ref_softmax` but max-subtracted, for logits up to ±1e8.
fn ref_softmax_stable(h: &[f64], c: &[usize], b: usize, k: usize) -> (f64, Vec<f64>) {
    let mut loss = 0.0;
    let mut grad = vec![0.0; b * k];
    for i in 0..b {
        let row = &h[i * k..(i + 1) * k];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|x| (x - m).exp()).sum();
        loss += (m - row[c[i]]) + s.ln();
        for j in 0..k {
            let onehot = if j == c[i] { 1.0 } else { 0.0 };
            grad[i * k + j] = ((row[j] - m).exp() / s - onehot) / b as f64;
        }
    }
    (loss / b as f64, grad)
}

/// softplus(t) = log(1 + e^t) in f64, without overflow or cancellation.
fn ref_softplus(t: f64) -> f64 {
    if t > 0.0 {
        t + (-t).exp().ln_1p()
    } else {
        t.exp().ln_1p()
    }
}

// ---------------------------------------------------------------------------
// Values and gradients against the references, every layout of h and grad.
// ---------------------------------------------------------------------------

#[test]
fn mse_matches_reference_on_every_layout() {
    let mut rng = StdRng::seed_from_u64(1);
    for &b in &BATCHES {
        for &n in &WIDTHS {
            for &lh in &LAYOUTS {
                for &lg in &LAYOUTS {
                    let h = random_strided(b, n, lh, &mut rng);
                    let y = random_strided(b, n, lg, &mut rng); // y on yet another layout
                    let (want, want_g) = ref_mse(&to_f64(&h), &to_f64(&y), b, n);
                    let what = format!("mse B={b} n={n} h:{lh:?} grad:{lg:?}");

                    let mut g = nan_grad(b, n, lg);
                    let got = mse(h.view(), y.view(), Some(g.view_mut()));
                    assert_near_literal(got, want, &what);
                    assert_grad_close(&g, &want_g, LITERAL_ABS, &what);
                    h.assert_guards(&what);
                    // Without a gradient: the same value.
                    assert_eq!(mse(h.view(), y.view(), None).to_bits(), got.to_bits());
                }
            }
        }
    }
}

#[test]
fn mse_is_a_mean_over_samples_not_elements() {
    // 2 samples × 3 outputs, every difference 1: per sample ½·3, mean over 2 samples = 1.5
    // (a mean over the 6 elements would give 0.5).
    let h = [1.0f32; 6];
    let y = [0.0f32; 6];
    let l = mse(
        MatRef::from_slice(&h, 2, 3),
        MatRef::from_slice(&y, 2, 3),
        None,
    );
    assert_eq!(l, 1.5);
}

#[test]
fn logistic_matches_reference_on_every_layout() {
    let mut rng = StdRng::seed_from_u64(2);
    for &b in &BATCHES {
        for &lh in &LAYOUTS {
            for &lg in &LAYOUTS {
                let h = random_strided(b, 1, lh, &mut rng);
                let y = random_labels(b, &mut rng);
                let (want, want_g) = ref_logistic(&to_f64(&h), &y);
                let what = format!("logistic B={b} h:{lh:?} grad:{lg:?}");

                let mut g = nan_grad(b, 1, lg);
                let got = logistic(h.view(), &y, Some(g.view_mut())).unwrap();
                assert_near_literal(got, want, &what);
                assert_grad_close(&g, &want_g, LITERAL_ABS, &what);
                assert_eq!(
                    logistic(h.view(), &y, None).unwrap().to_bits(),
                    got.to_bits()
                );
            }
        }
    }
    // h as a column of a transposed, padded row: a 1×B row viewed as B×1.
    let data: Vec<f32> = (0..8).map(|i| i as f32 * 0.5 - 2.0).collect();
    let row = MatRef::from_strided(&data, 1, 4, 8, 2); // every other element
    let y = [1.0, -1.0, -1.0, 1.0];
    let hs: Vec<f64> = (0..4).map(|j| row.get(0, j) as f64).collect();
    let (want, _) = ref_logistic(&hs, &y);
    assert_near_literal(logistic(row.t(), &y, None).unwrap(), want, "transposed h");
}

#[test]
fn softmax_cross_entropy_matches_reference_on_every_layout() {
    let mut rng = StdRng::seed_from_u64(3);
    for &b in &BATCHES {
        for &k in &WIDTHS {
            for &lh in &LAYOUTS {
                for &lg in &LAYOUTS {
                    let h = random_strided(b, k, lh, &mut rng);
                    let c = random_classes(b, k, &mut rng);
                    let (want, want_g) = ref_softmax(&to_f64(&h), &c, b, k);
                    let what = format!("softmax B={b} K={k} h:{lh:?} grad:{lg:?}");

                    let mut g = nan_grad(b, k, lg);
                    let got = softmax_cross_entropy(h.view(), &c, Some(g.view_mut())).unwrap();
                    assert_near_literal(got, want, &what);
                    assert_grad_close(&g, &want_g, LITERAL_ABS, &what);
                    h.assert_guards(&what);
                    let again = softmax_cross_entropy(h.view(), &c, None).unwrap();
                    assert_eq!(again.to_bits(), got.to_bits());
                }
            }
        }
    }
}

#[test]
fn softmax_gradient_rows_sum_to_zero() {
    // Σ_j (p_j − onehot_j) = 0: a structural check independent of the reference.
    let mut rng = StdRng::seed_from_u64(4);
    let (b, k) = (16, 9);
    let h = random_strided(b, k, Layout::ColPadded, &mut rng);
    let c = random_classes(b, k, &mut rng);
    let mut g = nan_grad(b, k, Layout::RowMajor);
    softmax_cross_entropy(h.view(), &c, Some(g.view_mut())).unwrap();
    for (i, &ci) in c.iter().enumerate() {
        let s: f64 = (0..k).map(|j| g.get(i, j) as f64).sum();
        assert!(s.abs() <= 1e-7 / b as f64, "row {i} sums to {s:e}");
        assert!(g.get(i, ci) < 0.0);
    }
}

// ---------------------------------------------------------------------------
// Gradients against central finite differences.
// ---------------------------------------------------------------------------

/// Central difference of `f` (an f64 loss of row-major h) at every entry of h.
fn central_fd(h: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    const STEP: f64 = 1e-3;
    let mut x = h.to_vec();
    (0..h.len())
        .map(|p| {
            x[p] = h[p] + STEP;
            let up = f(&x);
            x[p] = h[p] - STEP;
            let down = f(&x);
            x[p] = h[p];
            (up - down) / (2.0 * STEP)
        })
        .collect()
}

#[track_caller]
fn assert_fd(g: &Strided, fd: &[f64], what: &str) {
    // See the module docs: truncation ≤ 1.7e-7, round-off ≈ 1e-12.
    const TOL: f64 = 1e-5;
    for i in 0..g.rows {
        for j in 0..g.cols {
            let (got, want) = (g.get(i, j) as f64, fd[i * g.cols + j]);
            assert!(
                (got - want).abs() <= TOL * (1.0 + want.abs()),
                "{what}: grad[{i},{j}] = {got:e} but finite difference gives {want:e}"
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(5);
    for &(b, k) in &[(1, 1), (3, 2), (5, 4), (8, 7)] {
        // MSE
        let h = random_strided(b, k, Layout::ColMajor, &mut rng);
        let y = random_strided(b, k, Layout::RowMajor, &mut rng);
        let yv = to_f64(&y);
        let mut g = nan_grad(b, k, Layout::RowPadded);
        mse(h.view(), y.view(), Some(g.view_mut()));
        let fd = central_fd(&to_f64(&h), |x| ref_mse(x, &yv, b, k).0);
        assert_fd(&g, &fd, &format!("mse B={b} n={k}"));

        // Logistic (one column)
        let h = random_strided(b, 1, Layout::Reversed, &mut rng);
        let y = random_labels(b, &mut rng);
        let mut g = nan_grad(b, 1, Layout::ColPadded);
        logistic(h.view(), &y, Some(g.view_mut())).unwrap();
        let fd = central_fd(&to_f64(&h), |x| ref_logistic(x, &y).0);
        assert_fd(&g, &fd, &format!("logistic B={b}"));

        // Softmax cross-entropy
        let h = random_strided(b, k, Layout::RowPadded, &mut rng);
        let c = random_classes(b, k, &mut rng);
        let mut g = nan_grad(b, k, Layout::Reversed);
        softmax_cross_entropy(h.view(), &c, Some(g.view_mut())).unwrap();
        let fd = central_fd(&to_f64(&h), |x| ref_softmax(x, &c, b, k).0);
        assert_fd(&g, &fd, &format!("softmax B={b} K={k}"));
    }
}

/// Central differences of the library's own `f32` loss, perturbing one `f32`
/// entry of h by δ = 2⁻⁷ (the step actually taken, after rounding h ± δ to f32,
/// is used in the quotient). Each loss value carries up to 2⁻²⁴·|L| of rounding,
/// so the quotient carries up to 2⁻²⁴·(|L₊| + |L₋|)/(2δ); the truncation error is
/// δ²/6·|L'''| ≤ δ²/(6B) (|ℓ'''| ≤ 1 per sample for these losses with inputs in ±3,
/// and L is a mean over B). The tolerance is twice their sum.
#[test]
fn fd_of_the_f32_api() {
    const DELTA: f32 = 1.0 / 128.0;
    let mut rng = StdRng::seed_from_u64(6);
    for &(b, k) in &[(1, 3), (4, 5), (9, 2)] {
        let y = random_strided(b, k, Layout::RowMajor, &mut rng);
        let labels = random_labels(b, &mut rng);
        let classes = random_classes(b, k, &mut rng);
        type LossFn<'a> = Box<dyn Fn(MatRef<'_>, Option<MatMut<'_>>) -> f32 + 'a>;
        let cases: [(&str, usize, LossFn); 3] = [
            (
                "mse",
                k,
                Box::new(|h: MatRef<'_>, g: Option<MatMut<'_>>| mse(h, y.view(), g)),
            ),
            (
                "logistic",
                1,
                Box::new(|h: MatRef<'_>, g: Option<MatMut<'_>>| logistic(h, &labels, g).unwrap()),
            ),
            (
                "softmax",
                k,
                Box::new(|h: MatRef<'_>, g: Option<MatMut<'_>>| {
                    softmax_cross_entropy(h, &classes, g).unwrap()
                }),
            ),
        ];
        for (name, cols, loss) in cases.iter() {
            let h = random_strided(b, *cols, Layout::ColMajor, &mut rng);
            let mut g = nan_grad(b, *cols, Layout::RowMajor);
            loss(h.view(), Some(g.view_mut()));
            for i in 0..b {
                for j in 0..*cols {
                    let x = h.get(i, j);
                    let (xu, xd) = (x + DELTA, x - DELTA);
                    let mut hp = h.clone();
                    hp.set(i, j, xu);
                    let up = loss(hp.view(), None) as f64;
                    hp.set(i, j, xd);
                    let down = loss(hp.view(), None) as f64;
                    let step = xu as f64 - xd as f64;
                    let fd = (up - down) / step;
                    let roundoff = 2f64.powi(-24) * (up.abs() + down.abs()) / step;
                    let trunc = (DELTA as f64).powi(2) / (6.0 * b as f64);
                    let tol = 2.0 * (roundoff + trunc);
                    let got = g.get(i, j) as f64;
                    assert!(
                        (got - fd).abs() <= tol,
                        "{name} B={b}: grad[{i},{j}] = {got:e}, f32 finite difference {fd:e} (tol {tol:e})"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Extreme inputs.
// ---------------------------------------------------------------------------

#[test]
fn softmax_is_stable_for_huge_logits() {
    for &big in &[1e8f32, 1e4, 1e30, f32::MAX / 4.0] {
        // Rows of h, each with its class: margins of ±big, ties at +big, mixtures.
        let rows: [([f32; 3], usize); 7] = [
            ([big, -big, 0.0], 0),
            ([big, -big, 0.0], 1),
            ([big, -big, 0.0], 2),
            ([big, big, -big], 2),
            ([big, big, -big], 0),
            ([-big, -big, -big], 1),
            ([0.0, big, 1.0], 2),
        ];
        let b = rows.len();
        let h: Vec<f32> = rows.iter().flat_map(|r| r.0).collect();
        let c: Vec<usize> = rows.iter().map(|r| r.1).collect();
        let hv: Vec<f64> = h.iter().map(|&x| x as f64).collect();
        let (want, want_g) = ref_softmax_stable(&hv, &c, b, 3);
        for &layout in &LAYOUTS {
            let mut hs = Strided::new(b, 3, layout);
            hs.fill_with(|i, j| h[i * 3 + j]);
            let mut g = nan_grad(b, 3, layout);
            let got = softmax_cross_entropy(hs.view(), &c, Some(g.view_mut())).unwrap();
            let what = format!("softmax logits ±{big:e} {layout:?}");
            assert_close(got, want, &what);
            assert_grad_close(&g, &want_g, f32::MIN_POSITIVE as f64, &what);
        }
        // Single rows, checked against the exact answers.
        let one = |row: [f32; 3], c: usize| {
            let mut g = [f32::NAN; 3];
            let l = softmax_cross_entropy(
                MatRef::from_slice(&row, 1, 3),
                &[c],
                Some(MatMut::from_slice_mut(&mut g, 1, 3)),
            )
            .unwrap();
            (l, g)
        };
        // The correct class wins by `big`: loss e^{−big}(1 + ...) → 0, gradient 0.
        let (l, g) = one([big, -big, 0.0], 0);
        assert_eq!(l, 0.0);
        assert_eq!(g.map(f32::abs), [0.0; 3]);
        // The wrong class wins by 2·big: loss 2·big, gradient onehot(0) − onehot(1).
        let (l, g) = one([big, -big, 0.0], 1);
        assert_close(l, 2.0 * big as f64, "margin 2·big");
        assert_eq!(g, [1.0, -1.0, 0.0]);
    }
}

#[test]
fn softmax_tiny_loss_keeps_relative_precision() {
    // Logits (t, 0), class 0: loss = log(1 + e^{−t}), far below f64's ε near 1 for
    // t = 40; the gradient's target entry is −e^{−t}/(1 + e^{−t}).
    for &t in &[10.0f32, 20.0, 30.0, 40.0, 80.0] {
        let h = [t, 0.0];
        let mut g = [0.0f32; 2];
        let l = softmax_cross_entropy(
            MatRef::from_slice(&h, 1, 2),
            &[0],
            Some(MatMut::from_slice_mut(&mut g, 1, 2)),
        )
        .unwrap();
        let e = (-(t as f64)).exp();
        assert_close(l, e.ln_1p(), &format!("softmax tiny loss t={t}"));
        assert_close(g[0], -e / (1.0 + e), &format!("softmax tiny grad t={t}"));
        assert_close(g[1], e / (1.0 + e), &format!("softmax tiny grad t={t}"));
    }
}

#[test]
fn softmax_exact_ties_give_ln_k() {
    for &k in &[1usize, 2, 3, 10, 1000] {
        for &v in &[0.0f32, 7.5, -1e8, 1e8, -1e4] {
            let b = 3;
            let h = vec![v; b * k];
            let c: Vec<usize> = (0..b).map(|i| (i * 7) % k).collect();
            let mut g = vec![f32::NAN; b * k];
            let l = softmax_cross_entropy(
                MatRef::from_slice(&h, b, k),
                &c,
                Some(MatMut::from_slice_mut(&mut g, b, k)),
            )
            .unwrap();
            let what = format!("ties K={k} value {v}");
            let ln_k = (k as f64).ln();
            if k == 1 {
                assert_eq!(l, 0.0, "{what}");
            } else {
                assert_close(l, ln_k, &what);
            }
            for i in 0..b {
                for j in 0..k {
                    let onehot = if j == c[i] { 1.0 } else { 0.0 };
                    let want = (1.0 / k as f64 - onehot) / b as f64;
                    let got = g[i * k + j];
                    if want == 0.0 {
                        assert_eq!(got, 0.0, "{what} grad[{i},{j}]");
                    } else {
                        assert_close(got, want, &format!("{what} grad[{i},{j}]"));
                    }
                }
            }
        }
    }
}

#[test]
fn logistic_is_stable_for_huge_margins() {
    // y·h = +1e8: loss ≈ 0, gradient ≈ 0. y·h = −1e8: loss = 1e8, gradient −y.
    for &(h, y) in &[(1e8f32, 1.0f32), (-1e8, -1.0)] {
        let mut g = [f32::NAN];
        let l = logistic(
            MatRef::from_slice(&[h], 1, 1),
            &[y],
            Some(MatMut::from_slice_mut(&mut g, 1, 1)),
        )
        .unwrap();
        assert_eq!(l, 0.0, "h={h} y={y}");
        assert_eq!(g[0], 0.0, "h={h} y={y}");
    }
    for &(h, y) in &[(-1e8f32, 1.0f32), (1e8, -1.0)] {
        let mut g = [f32::NAN];
        let l = logistic(
            MatRef::from_slice(&[h], 1, 1),
            &[y],
            Some(MatMut::from_slice_mut(&mut g, 1, 1)),
        )
        .unwrap();
        assert_close(l, 1e8, &format!("h={h} y={y}"));
        assert_eq!(g[0], -y, "h={h} y={y}");
    }
    // The same four in one batch of B = 4: mean (0 + 0 + 1e8 + 1e8)/4, gradients 0 or −y/4.
    let h = [1e8f32, -1e8, -1e8, 1e8];
    let y = [1.0f32, -1.0, 1.0, -1.0];
    let mut g = [f32::NAN; 4];
    let l = logistic(
        MatRef::from_slice(&h, 4, 1),
        &y,
        Some(MatMut::from_slice_mut(&mut g, 4, 1)),
    )
    .unwrap();
    assert_close(l, 2e8 / 4.0, "batch of margins ±1e8");
    assert_eq!(g.map(f32::abs), [0.0, 0.0, 0.25, 0.25]);
    assert_eq!(g[2], -0.25);
    assert_eq!(g[3], 0.25);
}

#[test]
fn logistic_is_accurate_across_magnitudes() {
    // Scores with |h| log-uniform in [1e-8, 1e8], random signs and labels,
    // against softplus and σ in f64. Covers the tiny-loss regime (e^{−y·h} far
    // below ε), where log(1 + e^{−y·h}) computed literally would lose all digits.
    let mut rng = StdRng::seed_from_u64(7);
    for &layout in &LAYOUTS {
        let b = 64;
        let mut h = Strided::new(b, 1, layout);
        h.fill_with(|_, _| {
            let mag = 10f32.powf(rng.random_range(-8.0f32..8.0));
            if rng.random_bool(0.5) {
                mag
            } else {
                -mag
            }
        });
        let y = random_labels(b, &mut rng);
        let mut g = nan_grad(b, 1, layout);
        let l = logistic(h.view(), &y, Some(g.view_mut())).unwrap();
        let mut want = 0.0;
        let mut want_g = vec![0.0; b];
        for i in 0..b {
            let (hi, yi) = (h.get(i, 0) as f64, y[i] as f64);
            let t = -yi * hi;
            want += ref_softplus(t);
            // σ(t) = 1/(1 + e^{−t}), written as e^t/(1 + e^t) for t < 0 to avoid overflow.
            let sig = if t >= 0.0 {
                1.0 / (1.0 + (-t).exp())
            } else {
                t.exp() / (1.0 + t.exp())
            };
            want_g[i] = -yi * sig / b as f64;
        }
        let what = format!("logistic magnitudes {layout:?}");
        assert_close(l, want / b as f64, &what);
        assert_grad_close(&g, &want_g, f32::MIN_POSITIVE as f64, &what);
    }
    // Single samples with a tiny loss: ln_1p(e^{−20}) ≈ 2.06e-9, not 0.
    for &m in &[5.0f32, 20.0, 50.0, 100.0] {
        let l = logistic(MatRef::from_slice(&[m], 1, 1), &[1.0], None).unwrap();
        assert_close(l, (-(m as f64)).exp().ln_1p(), &format!("tiny loss h={m}"));
        let l = logistic(MatRef::from_slice(&[-m], 1, 1), &[1.0], None).unwrap();
        assert_close(l, ref_softplus(m as f64), &format!("large loss h={m}"));
    }
}

#[test]
fn finite_inputs_never_give_inf_or_nan() {
    let extremes = [
        f32::MAX,
        -f32::MAX,
        1e8,
        -1e8,
        1e4,
        -1e4,
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        1e-45,
    ];
    let b = extremes.len();
    let y: Vec<f32> = (0..b)
        .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
        .collect();
    let mut g = vec![f32::NAN; b];
    let l = logistic(
        MatRef::from_slice(&extremes, b, 1),
        &y,
        Some(MatMut::from_slice_mut(&mut g, b, 1)),
    )
    .unwrap();
    assert!(l.is_finite(), "logistic loss {l}");
    assert!(g.iter().all(|x| x.is_finite()), "logistic grad {g:?}");

    // Every ordered pair of extremes as a 2-logit row, both classes.
    let mut h = Vec::new();
    let mut c = Vec::new();
    for &a in &extremes {
        for &z in &extremes {
            for class in 0..2 {
                h.extend([a, z]);
                c.push(class);
            }
        }
    }
    let rows = c.len();
    let mut g = vec![f32::NAN; rows * 2];
    let l = softmax_cross_entropy(
        MatRef::from_slice(&h, rows, 2),
        &c,
        Some(MatMut::from_slice_mut(&mut g, rows, 2)),
    )
    .unwrap();
    assert!(l.is_finite(), "softmax loss {l}");
    assert!(g.iter().all(|x| x.is_finite()), "softmax grad");
}

// ---------------------------------------------------------------------------
// NaN policy.
// ---------------------------------------------------------------------------

#[test]
fn nan_in_h_gives_nan_loss_and_nan_gradient_for_that_row() {
    let mut rng = StdRng::seed_from_u64(8);
    let (b, k, bad) = (4, 3, 2);

    // MSE: the NaN element's gradient is NaN, every other entry is unaffected.
    let mut h = random_strided(b, k, Layout::RowPadded, &mut rng);
    h.set(bad, 1, f32::NAN);
    let y = random_strided(b, k, Layout::RowMajor, &mut rng);
    let mut g = nan_grad(b, k, Layout::ColMajor);
    assert!(mse(h.view(), y.view(), Some(g.view_mut())).is_nan());
    let (_, want_g) = ref_mse(&to_f64(&h), &to_f64(&y), b, k);
    for i in 0..b {
        for j in 0..k {
            if (i, j) == (bad, 1) {
                assert!(g.get(i, j).is_nan());
            } else {
                assert_near_literal(g.get(i, j), want_g[i * k + j], "mse clean entry");
            }
        }
    }

    // Logistic.
    let mut h = random_strided(b, 1, Layout::RowMajor, &mut rng);
    h.set(bad, 0, f32::NAN);
    let y = random_labels(b, &mut rng);
    let mut g = nan_grad(b, 1, Layout::RowMajor);
    // Poison only the bad row so that the clean rows prove they were written.
    g.fill_with(|i, _| if i == bad { 0.0 } else { f32::NAN });
    assert!(logistic(h.view(), &y, Some(g.view_mut())).unwrap().is_nan());
    let (_, want_g) = ref_logistic(&to_f64(&h), &y);
    for (i, &w) in want_g.iter().enumerate() {
        if i == bad {
            assert!(g.get(i, 0).is_nan());
        } else {
            assert_near_literal(g.get(i, 0), w, "logistic clean row");
        }
    }

    // Softmax, with the NaN first, in the middle and last in its row, and K = 1.
    for &(kk, col) in &[(k, 0), (k, 1), (k, k - 1), (1, 0)] {
        let mut h = random_strided(b, kk, Layout::ColPadded, &mut rng);
        h.set(bad, col, f32::NAN);
        let c = random_classes(b, kk, &mut rng);
        let mut g = Strided::new(b, kk, Layout::RowMajor);
        g.fill_with(|i, _| if i == bad { 0.0 } else { f32::NAN });
        let l = softmax_cross_entropy(h.view(), &c, Some(g.view_mut())).unwrap();
        assert!(l.is_nan(), "softmax K={kk} NaN at column {col}");
        let hv = to_f64(&h);
        for i in 0..b {
            if i == bad {
                for j in 0..kk {
                    assert!(g.get(i, j).is_nan(), "K={kk} NaN at {col}: grad[{i},{j}]");
                }
            } else {
                // Rows are independent: the reference on that row alone, rescaled to 1/B.
                let (_, row_g) = ref_softmax(&hv[i * kk..(i + 1) * kk], &c[i..=i], 1, kk);
                for (j, &w) in row_g.iter().enumerate() {
                    assert_near_literal(g.get(i, j), w / b as f64, "softmax clean row");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Bad targets are errors; bad shapes are panics.
// ---------------------------------------------------------------------------

#[test]
fn invalid_logistic_labels_are_reported() {
    let h = [0.5f32, -1.0, 2.0, 0.0];
    let hv = MatRef::from_slice(&h, 4, 1);
    for &bad in &[0.0f32, 2.0, -0.5, 0.999_999_9, f32::INFINITY] {
        let y = [1.0, -1.0, bad, 1.0];
        let mut g = [7.0f32; 4];
        let e = logistic(hv, &y, Some(MatMut::from_slice_mut(&mut g, 4, 1))).unwrap_err();
        assert_eq!(e, LossError::InvalidLabel { row: 2, value: bad });
        assert_eq!(g, [7.0; 4], "grad must be untouched on error");
        let msg = e.to_string();
        assert!(
            msg.contains("row 2") && msg.contains(&bad.to_string()),
            "{msg}"
        );
    }
    // NaN is not a label either (compare by pattern: NaN ≠ NaN).
    let e = logistic(hv, &[1.0, f32::NAN, 1.0, 1.0], None).unwrap_err();
    assert!(matches!(e, LossError::InvalidLabel { row: 1, value } if value.is_nan()));
    // 0/1 labels are rejected at the first 0.
    let e = logistic(hv, &[1.0, 1.0, 0.0, 1.0], None).unwrap_err();
    assert_eq!(e, LossError::InvalidLabel { row: 2, value: 0.0 });
    // Wrong number of labels.
    assert_eq!(
        logistic(hv, &[1.0, -1.0, 1.0], None).unwrap_err(),
        LossError::TargetLen {
            expected: 4,
            got: 3
        }
    );
    // Usable as a boxed std error.
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("-1 or +1"));
}

#[test]
fn out_of_range_classes_are_reported() {
    let h = [0.0f32; 6];
    let hv = MatRef::from_slice(&h, 2, 3);
    let mut g = [7.0f32; 6];
    let e =
        softmax_cross_entropy(hv, &[0, 3], Some(MatMut::from_slice_mut(&mut g, 2, 3))).unwrap_err();
    assert_eq!(
        e,
        LossError::ClassOutOfRange {
            row: 1,
            class: 3,
            num_classes: 3
        }
    );
    assert_eq!(g, [7.0; 6], "grad must be untouched on error");
    let msg = e.to_string();
    assert!(
        msg.contains("row 1") && msg.contains("index 3") && msg.contains("3 classes"),
        "{msg}"
    );
    assert_eq!(
        softmax_cross_entropy(hv, &[usize::MAX, 0], None).unwrap_err(),
        LossError::ClassOutOfRange {
            row: 0,
            class: usize::MAX,
            num_classes: 3
        }
    );
    assert_eq!(
        softmax_cross_entropy(hv, &[0, 1, 2], None).unwrap_err(),
        LossError::TargetLen {
            expected: 2,
            got: 3
        }
    );
    // No classes at all: every index is out of range.
    let empty: [f32; 0] = [];
    assert_eq!(
        softmax_cross_entropy(MatRef::from_slice(&empty, 1, 0), &[0], None).unwrap_err(),
        LossError::ClassOutOfRange {
            row: 0,
            class: 0,
            num_classes: 0
        }
    );
}

#[test]
fn empty_batch_has_zero_loss() {
    let empty: [f32; 0] = [];
    let mut g: [f32; 0] = [];
    assert_eq!(
        mse(
            MatRef::from_slice(&empty, 0, 3),
            MatRef::from_slice(&empty, 0, 3),
            Some(MatMut::from_slice_mut(&mut g, 0, 3)),
        ),
        0.0
    );
    assert_eq!(
        logistic(
            MatRef::from_slice(&empty, 0, 1),
            &[],
            Some(MatMut::from_slice_mut(&mut g, 0, 1)),
        ),
        Ok(0.0)
    );
    assert_eq!(
        softmax_cross_entropy(
            MatRef::from_slice(&empty, 0, 5),
            &[],
            Some(MatMut::from_slice_mut(&mut g, 0, 5)),
        ),
        Ok(0.0)
    );
    // An empty batch still needs zero targets.
    assert_eq!(
        logistic(MatRef::from_slice(&empty, 0, 1), &[1.0], None),
        Err(LossError::TargetLen {
            expected: 0,
            got: 1
        })
    );
}

#[test]
#[should_panic(expected = "mse: y is 3×2 but h is 4×2")]
fn mse_panics_on_y_shape() {
    let h = [0.0f32; 8];
    let y = [0.0f32; 6];
    mse(
        MatRef::from_slice(&h, 4, 2),
        MatRef::from_slice(&y, 3, 2),
        None,
    );
}

#[test]
#[should_panic(expected = "mse: grad is 3×2 but h is 2×3")]
fn mse_panics_on_transposed_grad() {
    let h = [0.0f32; 6];
    let mut g = [0.0f32; 6];
    mse(
        MatRef::from_slice(&h, 2, 3),
        MatRef::from_slice(&h, 2, 3),
        Some(MatMut::from_slice_mut(&mut g, 3, 2)),
    );
}

#[test]
#[should_panic(expected = "logistic: h must be B×1 (one output per sample) but h is 4×2")]
fn logistic_panics_on_two_columns() {
    let h = [0.0f32; 8];
    let _ = logistic(MatRef::from_slice(&h, 4, 2), &[1.0; 4], None);
}

#[test]
#[should_panic(expected = "logistic: grad is 3×1 but h is 4×1")]
fn logistic_panics_on_grad_shape() {
    let h = [0.0f32; 4];
    let mut g = [0.0f32; 3];
    let _ = logistic(
        MatRef::from_slice(&h, 4, 1),
        &[1.0; 4],
        Some(MatMut::from_slice_mut(&mut g, 3, 1)),
    );
}

#[test]
#[should_panic(expected = "softmax_cross_entropy: grad is 2×4 but h is 2×3")]
fn softmax_panics_on_grad_shape() {
    let h = [0.0f32; 6];
    let mut g = [0.0f32; 8];
    let _ = softmax_cross_entropy(
        MatRef::from_slice(&h, 2, 3),
        &[0, 1],
        Some(MatMut::from_slice_mut(&mut g, 2, 4)),
    );
}

#[test]
#[should_panic(expected = "predict_sign: out has length 3 but h is 4×1")]
fn predict_sign_panics_on_out_len() {
    let h = [0.0f32; 4];
    predict_sign(MatRef::from_slice(&h, 4, 1), &mut [0.0; 3]);
}

#[test]
#[should_panic(expected = "predict_sign: h must be B×1")]
fn predict_sign_panics_on_two_columns() {
    let h = [0.0f32; 4];
    predict_sign(MatRef::from_slice(&h, 2, 2), &mut [0.0; 2]);
}

#[test]
#[should_panic(expected = "argmax_rows: out has length 1 but h is 2×3")]
fn argmax_panics_on_out_len() {
    let h = [0.0f32; 6];
    argmax_rows(MatRef::from_slice(&h, 2, 3), &mut [0; 1]);
}

#[test]
#[should_panic(expected = "argmax_rows: h is 2×0")]
fn argmax_panics_without_columns() {
    let h: [f32; 0] = [];
    argmax_rows(MatRef::from_slice(&h, 2, 0), &mut [0; 2]);
}

// ---------------------------------------------------------------------------
// Inference rules.
// ---------------------------------------------------------------------------

#[test]
fn predict_sign_hand_cases() {
    let h = [
        2.0f32,
        -3.0,
        0.0,
        -0.0,
        f32::NAN,
        1e-45,
        -1e-45,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e8,
        -1e8,
    ];
    let want = [
        1.0f32,
        -1.0,
        1.0,
        1.0,
        f32::NAN,
        1.0,
        -1.0,
        1.0,
        -1.0,
        1.0,
        -1.0,
    ];
    let mut out = [7.0f32; 11];
    predict_sign(MatRef::from_slice(&h, 11, 1), &mut out);
    for (i, (&o, &w)) in out.iter().zip(&want).enumerate() {
        assert!(
            o.to_bits() == w.to_bits() || (o.is_nan() && w.is_nan()),
            "h = {}: got {o}, want {w}",
            h[i]
        );
    }
    // Through a strided view: column 1 of a 3×2 row-major matrix.
    let m = [9.0f32, -2.0, 9.0, 0.0, 9.0, 4.0];
    let mut out = [0.0f32; 3];
    predict_sign(MatRef::from_slice(&m, 3, 2).submatrix(0, 1, 3, 1), &mut out);
    assert_eq!(out, [-1.0, 1.0, 1.0]);
    // Empty batch: nothing to do.
    predict_sign(MatRef::from_slice(&[], 0, 1), &mut []);
}

#[test]
fn argmax_rows_hand_cases() {
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    let cases: [(&[f32], usize); 12] = [
        (&[1.0, 3.0, 3.0], 1), // tie → lowest index
        (&[0.0, 0.0, 0.0], 0), // all equal → 0
        (&[-0.0, 0.0], 0),     // −0 and +0 are equal
        (&[0.0, -0.0], 0),
        (&[-5.0, -1.0, -3.0], 1),   // all negative
        (&[1.0, nan, 5.0, nan], 1), // first NaN wins
        (&[nan, 1.0], 0),
        (&[5.0, 1.0, nan], 2),
        (&[-inf, -inf], 0),
        (&[-inf, -1e30], 1),
        (&[1e8, 1e8, -1e8], 0),
        (&[2.0, inf, inf], 1),
    ];
    for (row, want) in cases {
        let mut out = [99usize];
        argmax_rows(MatRef::from_slice(row, 1, row.len()), &mut out);
        assert_eq!(out[0], want, "row {row:?}");
    }
    // Several rows through a transposed view: h = mᵀ, rows of h are columns of m.
    let m = [
        0.0f32, 4.0, 1.0, //
        2.0, 4.0, 1.0, //
        2.0, 0.0, nan,
    ];
    let mut out = [99usize; 3];
    argmax_rows(MatRef::from_slice(&m, 3, 3).t(), &mut out);
    assert_eq!(out, [1, 0, 2]);
    // One column: always 0.
    let mut out = [99usize; 2];
    argmax_rows(MatRef::from_slice(&[-1.0, 3.0], 2, 1), &mut out);
    assert_eq!(out, [0, 0]);
    // Empty batch with no columns is fine.
    argmax_rows(MatRef::from_slice(&[], 0, 0), &mut []);
}

#[test]
fn inference_rules_agree_with_the_losses() {
    // The argmax class has the lowest softmax loss, and sign h is the label with the
    // lower logistic loss (at h = 0 both labels cost ln 2 and the rule picks +1).
    let mut rng = StdRng::seed_from_u64(9);
    let (b, k) = (20, 6);
    let h = random_strided(b, k, Layout::RowMajor, &mut rng);
    let mut pred = vec![0usize; b];
    argmax_rows(h.view(), &mut pred);
    for (i, &p) in pred.iter().enumerate() {
        let row = h.view().submatrix(i, 0, 1, k);
        let best = softmax_cross_entropy(row, &[p], None).unwrap();
        for c in 0..k {
            assert!(best <= softmax_cross_entropy(row, &[c], None).unwrap());
        }
    }
    let s = random_strided(b, 1, Layout::ColMajor, &mut rng);
    let mut sign = vec![0.0f32; b];
    predict_sign(s.view(), &mut sign);
    for (i, &y) in sign.iter().enumerate() {
        let one = s.view().submatrix(i, 0, 1, 1);
        assert!(logistic(one, &[y], None).unwrap() <= logistic(one, &[-y], None).unwrap());
    }
    let loss = Loss::SoftmaxCrossEntropy;
    let copy = loss; // Copy
    assert_eq!(loss, copy);
    assert_ne!(Loss::Mse, Loss::Logistic);
    assert_eq!(format!("{:?}", Loss::Mse), "Mse");
}
