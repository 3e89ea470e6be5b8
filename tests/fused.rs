//! Fused training kernels against the unfused composition and the naive
//! reference: activations (vector vs f64, derivatives vs finite differences),
//! the bias+activation forward epilogue, the δ step with its bias gradient,
//! over tile edges, layouts, packings, threads and every ISA path.

mod common;

use backprop::gemm::{
    backward_delta, gemm_epilogue, gemm_with, weight_grad, Accum, ActInput, BiasGrad, Epilogue,
    GemmOptions, Packing,
};
use backprop::kernel::activation::{derivative_from_output_slice, derivative_slice, forward_slice};
use backprop::kernel::available_isas;
use backprop::matrix::{MatMut, MatRef};
use backprop::nn::Activation;
use backprop::{reference, Isa, Threads};
use common::*;
use rand::Rng;

const ACTS: [Activation; 9] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu { slope: 0.1 },
    Activation::LeakyRelu { slope: -0.5 },
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Gelu,
    Activation::GeluErf,
    Activation::Softplus,
];

/// Inputs that exercise every branch: zeros, tiny, the polynomial/exp switch of
/// tanh, saturation, clamping of exp, huge, infinities.
fn probe_inputs() -> Vec<f32> {
    let mut v = vec![0.0, -0.0, 1e-8, -1e-8, 0.01, -0.01, 0.0624, 0.0626, -0.0626];
    for x in [
        0.3f32, 0.5, 1.0, 2.0, 5.0, 9.0, 15.0, 20.0, 40.0, 87.0, 88.0, 100.0, 1e4, 1e30,
    ] {
        v.push(x);
        v.push(-x);
    }
    let mut r = rng(5);
    for _ in 0..2000 {
        v.push(r.random_range(-12.0f32..12.0));
    }
    v
}

/// |got − want| ≤ 2·10⁻⁷ + 2·10⁻⁶·|want|: a few f32 ulp relative, plus an
/// absolute floor for outputs near 0 of functions computed through 1 − e.
fn close(got: f32, want: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        return got as f64 == want;
    }
    (got as f64 - want).abs() <= 2e-7 + 2e-6 * want.abs()
}

#[test]
fn vector_activations_match_f64_on_every_isa() {
    let xs = probe_inputs();
    for isa in available_isas() {
        for act in ACTS {
            let mut f = vec![0.0; xs.len()];
            let mut d = vec![0.0; xs.len()];
            forward_slice(isa, act, &xs, &mut f);
            derivative_slice(isa, act, &xs, &mut d);
            for (i, &x) in xs.iter().enumerate() {
                let want = reference::activation(act, x as f64);
                assert!(
                    close(f[i], want),
                    "{isa} {act:?}: φ({x}) = {} want {want}",
                    f[i]
                );
                let want_d = reference::activation_derivative(act, x as f64);
                assert!(
                    close(d[i], want_d),
                    "{isa} {act:?}: φ′({x}) = {} want {want_d}",
                    d[i]
                );
                // The scalar API agrees too.
                assert!(close(act.f(x), want), "{act:?}: scalar φ({x})");
                assert!(close(act.df(x), want_d), "{act:?}: scalar φ′({x})");
            }
        }
    }
}

/// The reference derivatives are the derivatives: central differences in f64.
#[test]
fn derivatives_match_central_differences() {
    let mut r = rng(11);
    for act in ACTS {
        for _ in 0..500 {
            let x: f64 = r.random_range(-6.0..6.0);
            if matches!(act, Activation::Relu | Activation::LeakyRelu { .. }) && x.abs() < 1e-3 {
                continue; // the kink
            }
            let h = 1e-5;
            let fd =
                (reference::activation(act, x + h) - reference::activation(act, x - h)) / (2.0 * h);
            let an = reference::activation_derivative(act, x);
            assert!((fd - an).abs() < 1e-7, "{act:?} at {x}: fd {fd} vs φ′ {an}");
        }
    }
}

#[test]
fn derivative_from_output_agrees_with_pre_activation() {
    let xs = probe_inputs();
    for isa in available_isas() {
        for act in ACTS.into_iter().filter(|a| a.has_output_derivative()) {
            let mut a = vec![0.0; xs.len()];
            let mut d_out = vec![0.0; xs.len()];
            forward_slice(isa, act, &xs, &mut a);
            derivative_from_output_slice(isa, act, &a, &mut d_out);
            for (i, &x) in xs.iter().enumerate() {
                let want = reference::activation_derivative(act, x as f64);
                // From the output, tanh′ = 1 − a² loses relative accuracy where
                // a ≈ ±1 (the derivative is tiny there): absolute 1e-6.
                assert!(
                    (d_out[i] as f64 - want).abs() <= 1e-6 + 2e-6 * want.abs(),
                    "{isa} {act:?}: φ′ from output at {x}: {} want {want}",
                    d_out[i]
                );
                assert!(act.df_from_output(a[i]).is_some());
            }
        }
    }
}

#[test]
fn nan_in_nan_out_everywhere() {
    for isa in available_isas() {
        for act in ACTS {
            let x = [f32::NAN; 11];
            let mut o = [0.0; 11];
            forward_slice(isa, act, &x, &mut o);
            assert!(o.iter().all(|v| v.is_nan()), "{isa} {act:?}: φ(NaN)");
            derivative_slice(isa, act, &x, &mut o);
            assert!(o.iter().all(|v| v.is_nan()), "{isa} {act:?}: φ′(NaN)");
            assert!(act.f(f32::NAN).is_nan() && act.df(f32::NAN).is_nan());
        }
    }
}

#[test]
fn infinities_follow_the_limits() {
    let x = [f32::INFINITY, f32::NEG_INFINITY];
    for isa in available_isas() {
        let mut o = [0.0; 2];
        forward_slice(isa, Activation::Relu, &x, &mut o);
        assert_eq!(o, [f32::INFINITY, 0.0]);
        forward_slice(isa, Activation::Tanh, &x, &mut o);
        assert_eq!(o, [1.0, -1.0]);
        forward_slice(isa, Activation::Sigmoid, &x, &mut o);
        assert_eq!(o[0], 1.0);
        assert!(o[1] >= 0.0 && o[1] < 1e-37);
        forward_slice(isa, Activation::Softplus, &x, &mut o);
        assert_eq!(o[0], f32::INFINITY);
        assert!(o[1] >= 0.0 && o[1] < 1e-37);
        derivative_slice(isa, Activation::Tanh, &x, &mut o);
        assert_eq!(o, [0.0, 0.0]);
    }
}

fn opts(isa: Isa, threads: usize, packing: Packing) -> GemmOptions {
    GemmOptions {
        threads: Threads::Fixed(threads),
        isa: Some(isa),
        packing,
    }
}

/// One fused forward: checks Z against the reference, C = φ(Z) against φ of
/// our own Z (the unfused composition), guards, and returns (C, Z) bits.
#[allow(clippy::too_many_arguments)]
fn check_forward(
    o: &GemmOptions,
    (m, k, n): (usize, usize, usize),
    lc: Layout,
    act: Activation,
    with_bias: bool,
    beta: f32,
    seed: u64,
) -> (Vec<u32>, Vec<u32>) {
    let mut r = rng(seed);
    let a = Strided::random(m, k, Layout::RowMajor, &mut r);
    let b = Strided::random(k, n, Layout::RowMajor, &mut r);
    let bias: Vec<f32> = (0..n).map(|_| r.random_range(-1.0..1.0)).collect();
    let mut c = Strided::random(m, n, lc, &mut r);
    if beta == 0.0 {
        c.fill_with(|_, _| f32::NAN);
    }
    let c0 = c.to_vec();
    let mut z = Strided::new(m, n, lc);
    z.fill_with(|_, _| f32::NAN);
    gemm_epilogue(
        o,
        1.0,
        a.view(),
        b.view(),
        beta,
        c.view_mut(),
        Epilogue::BiasAct {
            bias: with_bias.then_some(&bias[..]),
            act,
            pre_activation: Some(z.view_mut()),
        },
    );
    c.assert_guards("forward C");
    z.assert_guards("forward Z");
    for i in 0..m {
        for j in 0..n {
            let (y, tol) = gemm_elem(1.0, &a, &b, beta, c0[i * n + j], i, j);
            let want_z = y + if with_bias { bias[j] as f64 } else { 0.0 };
            let got_z = z.get(i, j);
            assert!(
                (got_z as f64 - want_z).abs() <= tol + 1e-7 * want_z.abs(),
                "{o:?} {act:?}: Z[{i},{j}] = {got_z}, want {want_z}"
            );
            // Unfused composition: φ applied to the Z we stored.
            let want_c = reference::activation(act, got_z as f64);
            assert!(
                close(c.get(i, j), want_c),
                "{o:?} {act:?}: C[{i},{j}] = {} want φ(Z) = {want_c}",
                c.get(i, j)
            );
        }
    }
    let bits = |s: &Strided| s.to_vec().iter().map(|x| x.to_bits()).collect();
    (bits(&c), bits(&z))
}

fn edges(isa: Isa) -> Vec<(usize, usize, usize)> {
    let b = isa.blocking();
    let mut v = Vec::new();
    for m in [
        1,
        b.mr - 1,
        b.mr,
        b.mr + 1,
        b.mr + 4,
        b.mr + 5,
        b.mr + 8,
        2 * b.mr + 3,
    ] {
        for n in [1, b.nr - 1, b.nr, b.nr + 1, b.nr + b.nr / 2, 2 * b.nr + 5] {
            for k in [0, 1, 7, b.kc + 1] {
                v.push((m, k, n));
            }
        }
    }
    v
}

#[test]
fn fused_forward_equals_unfused_over_edges() {
    let mut seed = 0;
    for isa in available_isas() {
        for (m, k, n) in edges(isa) {
            for packing in [Packing::Always, Packing::Never] {
                seed += 1;
                let act = ACTS[seed as usize % ACTS.len()];
                let lc = [Layout::RowMajor, Layout::RowPadded, Layout::ColMajor][seed as usize % 3];
                let beta = if seed % 4 == 0 { 0.5 } else { 0.0 };
                check_forward(
                    &opts(isa, 1, packing),
                    (m, k, n),
                    lc,
                    act,
                    seed % 5 != 0,
                    beta,
                    seed,
                );
            }
        }
    }
}

#[test]
fn fused_forward_is_bitwise_identical_across_threads() {
    for isa in available_isas() {
        for &(m, k, n) in &[(128, 300, 200), (130, 513, 47), (9, 600, 900)] {
            for act in [Activation::Relu, Activation::Gelu] {
                let one = check_forward(
                    &opts(isa, 1, Packing::Auto),
                    (m, k, n),
                    Layout::RowMajor,
                    act,
                    true,
                    0.0,
                    3,
                );
                for t in [2, 3] {
                    let other = check_forward(
                        &opts(isa, t, Packing::Auto),
                        (m, k, n),
                        Layout::RowMajor,
                        act,
                        true,
                        0.0,
                        3,
                    );
                    assert!(
                        one == other,
                        "{isa} {m}×{k}×{n} {act:?}: {t} threads differ from 1"
                    );
                }
            }
        }
    }
}

/// One δ step: δ = (D·Wᵀ) ⊙ φ′(Z) and ∂b = Σ_rows δ, checked against the
/// unfused composition (GEMM, then φ′, then a column sum in f64).
fn check_delta(
    o: &GemmOptions,
    (m, k, n): (usize, usize, usize),
    act: Activation,
    from_output: bool,
    seed: u64,
) -> (Vec<u32>, Vec<u32>) {
    let mut r = rng(seed);
    // D = δ⁽ˡ⁺¹⁾ is m × k; W⁽ˡ⁺¹⁾ is n × k (fan_in × fan_out), read as Wᵀ.
    let d = Strided::random(m, k, Layout::RowMajor, &mut r);
    let w = Strided::random(n, k, Layout::RowMajor, &mut r);
    let mut z = Strided::random(m, n, Layout::RowMajor, &mut r);
    z.fill_with(|_, _| r.random_range(-3.0f32..3.0));
    let mut a_out = Strided::new(m, n, Layout::RowMajor);
    a_out.fill_with(|i, j| act.f(z.get(i, j)));
    let mut delta = Strided::new(m, n, Layout::RowMajor);
    delta.fill_with(|_, _| f32::NAN);
    let mut db = vec![0.25f32; n];
    let input = if from_output {
        ActInput::Output(a_out.view())
    } else {
        ActInput::PreActivation(z.view())
    };
    backward_delta(
        o,
        d.view(),
        w.view(),
        act,
        input,
        delta.view_mut(),
        Some(BiasGrad {
            out: &mut db,
            accum: Accum::Add,
        }),
    );
    delta.assert_guards("δ");
    // Unfused: plain GEMM D·Wᵀ, then ⊙ φ′ in f64.
    let mut y = Strided::new(m, n, Layout::RowMajor);
    gemm_with(o, 1.0, d.view(), w.view().t(), 0.0, y.view_mut());
    let mut colsum = vec![0.0f64; n];
    for i in 0..m {
        for (j, col) in colsum.iter_mut().enumerate() {
            let dphi = if from_output {
                act.df_from_output(a_out.get(i, j)).unwrap() as f64
            } else {
                reference::activation_derivative(act, z.get(i, j) as f64)
            };
            let mut s = 0.0f64;
            let mut mag = 0.0f64;
            for p in 0..k {
                let x = d.get(i, p) as f64 * w.get(j, p) as f64;
                s += x;
                mag += x.abs();
            }
            // GEMM rounding scaled by φ′, plus φ′'s own error (as `close`) scaled
            // by the GEMM value, plus the final f32 rounding of the product.
            let phi_err = 2e-7 + 2e-6 * dphi.abs();
            let gemm_err = 2.0 * (k as f64 + 2.0) * f32::EPSILON as f64 * mag;
            let tol = gemm_err * dphi.abs()
                + (s.abs() + gemm_err) * phi_err
                + 1e-7 * (s * dphi).abs()
                + 1e-30;
            let got = delta.get(i, j) as f64;
            assert!(
                (got - s * dphi).abs() <= tol,
                "{o:?} {act:?}: δ[{i},{j}] = {got}, want {}",
                s * dphi
            );
            // Fused equals our own unfused GEMM followed by the multiply, to φ′'s
            // accuracy and rounding.
            let yv = y.get(i, j) as f64;
            let unfused = yv * dphi;
            let tol = yv.abs() * phi_err + 1e-7 * unfused.abs() + 1e-30;
            assert!(
                (got - unfused).abs() <= tol,
                "{o:?} {act:?}: fused {got} vs unfused {unfused} at [{i},{j}]"
            );
            *col += got;
        }
    }
    for j in 0..n {
        let want = 0.25 + colsum[j];
        let tol = 4.0
            * (m as f64 + 2.0)
            * f32::EPSILON as f64
            * (0.25 + (0..m).map(|i| (delta.get(i, j) as f64).abs()).sum::<f64>());
        assert!(
            (db[j] as f64 - want).abs() <= tol,
            "{o:?}: ∂b[{j}] = {}, want {want}",
            db[j]
        );
    }
    let bits = delta.to_vec().iter().map(|x| x.to_bits()).collect();
    (bits, db.iter().map(|x| x.to_bits()).collect())
}

#[test]
fn fused_delta_equals_unfused_over_edges() {
    let mut seed = 100;
    for isa in available_isas() {
        for (m, k, n) in edges(isa) {
            for packing in [Packing::Always, Packing::Never] {
                seed += 1;
                let act = ACTS[seed as usize % ACTS.len()];
                let from_output = act.has_output_derivative() && seed % 2 == 0;
                check_delta(&opts(isa, 1, packing), (m, k, n), act, from_output, seed);
            }
        }
    }
}

#[test]
fn fused_delta_and_bias_grad_bitwise_identical_across_threads() {
    for isa in available_isas() {
        for &(m, k, n) in &[(128, 512, 300), (256, 100, 97), (13, 700, 1000)] {
            let one = check_delta(
                &opts(isa, 1, Packing::Auto),
                (m, k, n),
                Activation::Tanh,
                false,
                9,
            );
            for t in [2, 3] {
                let other = check_delta(
                    &opts(isa, t, Packing::Auto),
                    (m, k, n),
                    Activation::Tanh,
                    false,
                    9,
                );
                assert!(one == other, "{isa} {m}×{k}×{n}: {t} threads differ from 1");
            }
        }
    }
}

/// The no-packing and the packed path sum every element alike (k in passes
/// of `kc` steps, β on the first, the epilogue on the last), so the path,
/// which the shape and the CPU choose, never changes a bit of the fused
/// forward, of δ or of the bias gradient.
#[test]
fn both_paths_give_the_same_bits() {
    for isa in available_isas() {
        let kc = isa.blocking().kc;
        for &(m, k, n) in &[
            (37, kc + 1, 70),
            (13, 2 * kc + 3, 33),
            (24, kc, 64),
            (5, 0, 9),
        ] {
            for beta in [0.0, 0.5] {
                let forward = |packing| {
                    let o = opts(isa, 1, packing);
                    check_forward(
                        &o,
                        (m, k, n),
                        Layout::RowMajor,
                        Activation::Tanh,
                        true,
                        beta,
                        7,
                    )
                };
                assert!(
                    forward(Packing::Always) == forward(Packing::Never),
                    "{isa} {m}×{k}×{n} β = {beta}: forward differs between paths"
                );
            }
            let delta = |packing| {
                check_delta(
                    &opts(isa, 1, packing),
                    (m, k, n),
                    Activation::Relu,
                    false,
                    8,
                )
            };
            assert!(
                delta(Packing::Always) == delta(Packing::Never),
                "{isa} {m}×{k}×{n}: δ or ∂b differs between paths"
            );
        }
    }
}

/// The fused tiles are compiled apart from the plain GEMM's (which skips the
/// epilogue code altogether), so an epilogue that changes nothing must give
/// the plain product's bits: δ with φ′ = 1 exactly, and a bias-free identity
/// forward (C and Z) up to the sign of zero (it adds a zero bias, +0).
#[test]
fn identity_epilogues_give_the_plain_products_bits() {
    let same = |what: &str, got: &Strided, want: &Strided, signed_zero: bool| {
        for (i, (x, y)) in got.to_vec().iter().zip(want.to_vec()).enumerate() {
            let equal = x.to_bits() == y.to_bits() || (!signed_zero && *x == 0.0 && y == 0.0);
            assert!(equal, "{what}: element {i} is {x}, the plain GEMM's {y}");
        }
    };
    let mut seed = 100;
    for isa in available_isas() {
        for (m, k, n) in edges(isa) {
            for packing in [Packing::Always, Packing::Never] {
                for (alpha, beta) in [(1.0, 0.0), (-0.5, 2.0)] {
                    seed += 1;
                    let o = opts(isa, 1, packing);
                    let what = format!("{isa} {packing:?} {m}×{k}×{n} α = {alpha} β = {beta}");
                    let mut r = rng(seed);
                    let a = Strided::random(m, k, Layout::RowMajor, &mut r);
                    let b = Strided::random(k, n, Layout::ColMajor, &mut r);
                    let input = Strided::random(m, n, Layout::RowMajor, &mut r);
                    let mut c0 = Strided::random(m, n, Layout::RowPadded, &mut r);
                    if beta == 0.0 {
                        c0.fill_with(|_, _| f32::NAN);
                    }
                    let run = |epilogue: Option<Epilogue<'_>>| {
                        let mut c = c0.clone();
                        let (a, b) = (a.view(), b.view());
                        match epilogue {
                            None => gemm_with(&o, alpha, a, b, beta, c.view_mut()),
                            Some(e) => gemm_epilogue(&o, alpha, a, b, beta, c.view_mut(), e),
                        }
                        c.assert_guards(&what);
                        c
                    };
                    let plain = run(None);
                    let mut z = Strided::new(m, n, Layout::RowMajor);
                    let forward = run(Some(Epilogue::BiasAct {
                        bias: None,
                        act: Activation::Identity,
                        pre_activation: Some(z.view_mut()),
                    }));
                    let delta = run(Some(Epilogue::ActGrad {
                        act: Activation::Identity,
                        input: ActInput::PreActivation(input.view()),
                        bias_grad: None,
                    }));
                    same(&format!("{what}: forward C"), &forward, &plain, false);
                    same(&format!("{what}: forward Z"), &z, &plain, false);
                    same(&format!("{what}: δ"), &delta, &plain, true);
                }
            }
        }
    }
}

#[test]
fn nan_in_pre_activation_reaches_delta() {
    let (m, k, n) = (5, 4, 9);
    let d = vec![1.0f32; m * k];
    let w = vec![1.0f32; n * k];
    let mut z = vec![1.0f32; m * n];
    z[2 * n + 3] = f32::NAN;
    let mut delta = vec![0.0f32; m * n];
    let mut db = vec![0.0f32; n];
    backward_delta(
        &GemmOptions::default(),
        MatRef::from_slice(&d, m, k),
        MatRef::from_slice(&w, n, k),
        Activation::Relu,
        ActInput::PreActivation(MatRef::from_slice(&z, m, n)),
        MatMut::from_slice_mut(&mut delta, m, n),
        Some(BiasGrad {
            out: &mut db,
            accum: Accum::Replace,
        }),
    );
    assert!(delta[2 * n + 3].is_nan());
    assert!(db[3].is_nan());
    assert_eq!(delta[0], 4.0);
    assert_eq!(db[0], 20.0);
}

#[test]
fn bias_grad_of_an_empty_batch_or_layer() {
    // No rows: ∂b is the empty sum, 0, even after a call with rows left old
    // partials in this thread's buffer. No columns: nothing to write.
    let k = 4;
    for isa in available_isas() {
        let o = opts(isa, 1, Packing::Auto);
        for (m, n) in [(3, 9), (0, 9), (3, 0), (0, 0)] {
            let w = vec![1.0f32; n * k];
            let d = vec![1.0f32; m * k];
            let y = vec![1.0f32; m * n];
            let mut delta = vec![0.0f32; m * n];
            let mut replaced = vec![f32::NAN; n];
            let mut added = vec![2.5f32; n];
            for (out, accum) in [(&mut replaced, Accum::Replace), (&mut added, Accum::Add)] {
                backward_delta(
                    &o,
                    MatRef::from_slice(&d, m, k),
                    MatRef::from_slice(&w, n, k),
                    Activation::Relu,
                    ActInput::Output(MatRef::from_slice(&y, m, n)),
                    MatMut::from_slice_mut(&mut delta, m, n),
                    Some(BiasGrad { out, accum }),
                );
            }
            let (want_r, want_a) = if m == 0 { (0.0, 2.5) } else { (12.0, 14.5) };
            assert!(
                replaced.iter().all(|&v| v == want_r),
                "{isa} {m}×{n}: {replaced:?}"
            );
            assert!(
                added.iter().all(|&v| v == want_a),
                "{isa} {m}×{n}: {added:?}"
            );
        }
    }
}

#[test]
fn weight_grad_replaces_or_accumulates() {
    let (batch, fan_in, fan_out) = (7, 5, 3);
    let mut r = rng(3);
    let x: Vec<f32> = (0..batch * fan_in)
        .map(|_| r.random_range(-1.0..1.0))
        .collect();
    let dl: Vec<f32> = (0..batch * fan_out)
        .map(|_| r.random_range(-1.0..1.0))
        .collect();
    let mut want = vec![0.0f32; fan_in * fan_out];
    reference::gemm(
        1.0,
        MatRef::from_slice(&x, batch, fan_in).t(),
        MatRef::from_slice(&dl, batch, fan_out),
        0.0,
        MatMut::from_slice_mut(&mut want, fan_in, fan_out),
    );
    let mut dw = vec![f32::NAN; fan_in * fan_out];
    let o = GemmOptions::default();
    let xv = MatRef::from_slice(&x, batch, fan_in);
    let dv = MatRef::from_slice(&dl, batch, fan_out);
    weight_grad(
        &o,
        xv,
        dv,
        MatMut::from_slice_mut(&mut dw, fan_in, fan_out),
        Accum::Replace,
    );
    for (g, w) in dw.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "replace: {g} vs {w}");
    }
    weight_grad(
        &o,
        xv,
        dv,
        MatMut::from_slice_mut(&mut dw, fan_in, fan_out),
        Accum::Add,
    );
    for (g, w) in dw.iter().zip(&want) {
        assert!((g - 2.0 * w).abs() < 2e-5, "accumulate: {g} vs {}", 2.0 * w);
    }
}

#[test]
#[should_panic(expected = "gemm_epilogue: bias has 3 elements but C has 2 columns")]
fn bias_length_is_checked() {
    let x = [0.0f32; 4];
    let mut c = [0.0f32; 4];
    gemm_epilogue(
        &GemmOptions::default(),
        1.0,
        MatRef::from_slice(&x, 2, 2),
        MatRef::from_slice(&x, 2, 2),
        0.0,
        MatMut::from_slice_mut(&mut c, 2, 2),
        Epilogue::BiasAct {
            bias: Some(&[0.0; 3]),
            act: Activation::Relu,
            pre_activation: None,
        },
    );
}

#[test]
#[should_panic(expected = "cannot be computed from the output")]
fn gelu_needs_the_pre_activation() {
    let x = [0.0f32; 4];
    let mut c = [0.0f32; 4];
    gemm_epilogue(
        &GemmOptions::default(),
        1.0,
        MatRef::from_slice(&x, 2, 2),
        MatRef::from_slice(&x, 2, 2),
        0.0,
        MatMut::from_slice_mut(&mut c, 2, 2),
        Epilogue::ActGrad {
            act: Activation::Gelu,
            input: ActInput::Output(MatRef::from_slice(&x, 2, 2)),
            bias_grad: None,
        },
    );
}

/// Without a pre-activation output (or a bias) the forward epilogue gives the
/// same bits as with one, on full and edge tiles and both paths.
#[test]
fn forward_without_pre_activation_matches_with() {
    for isa in available_isas() {
        for (m, k, n) in edges(isa).into_iter().chain([(128, 784, 512)]) {
            for packing in [Packing::Always, Packing::Never] {
                for with_bias in [true, false] {
                    let o = opts(isa, 1, packing);
                    let mut r = rng((m * 7 + n) as u64);
                    let a = Strided::random(m, k, Layout::RowMajor, &mut r);
                    let b = Strided::random(k, n, Layout::RowMajor, &mut r);
                    let bias: Vec<f32> = (0..n).map(|_| r.random_range(-1.0..1.0)).collect();
                    let bias = with_bias.then_some(&bias[..]);
                    let act = Activation::Tanh;
                    let mut c1 = Strided::new(m, n, Layout::RowMajor);
                    let mut c2 = Strided::new(m, n, Layout::RowPadded);
                    let mut z = Strided::new(m, n, Layout::RowMajor);
                    let epi = Epilogue::BiasAct {
                        bias,
                        act,
                        pre_activation: Some(z.view_mut()),
                    };
                    gemm_epilogue(&o, 1.0, a.view(), b.view(), 0.0, c1.view_mut(), epi);
                    let epi = Epilogue::BiasAct {
                        bias,
                        act,
                        pre_activation: None,
                    };
                    gemm_epilogue(&o, 1.0, a.view(), b.view(), 0.0, c2.view_mut(), epi);
                    c2.assert_guards("no pre-activation");
                    let bits = |s: &Strided| -> Vec<u32> {
                        s.to_vec().iter().map(|x| x.to_bits()).collect()
                    };
                    assert!(
                        bits(&c1) == bits(&c2),
                        "{isa} {m}×{k}×{n} {packing:?} bias {with_bias}"
                    );
                }
            }
        }
    }
}
