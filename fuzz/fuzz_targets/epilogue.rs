//! The fused epilogues on arbitrary tiles, activations and values (±Inf, NaN,
//! ±1e30 included): the forward's stored Z matches the plain GEMM plus bias
//! (same NaN/Inf class, k-scaled tolerance), its output is exactly the vector
//! activation of that Z, and the δ step equals the plain GEMM times φ′ with a
//! bias gradient equal to the column sums of δ.
#![no_main]

use arbitrary::Arbitrary;
use backprop::gemm::{
    gemm_epilogue, gemm_with, Accum, ActInput, BiasGrad, Epilogue, GemmOptions, Packing,
};
use backprop::kernel::activation::{derivative_slice, forward_slice};
use backprop::kernel::available_isas;
use backprop::matrix::{MatMut, MatRef};
use backprop::nn::Activation;
use backprop::Threads;
use libfuzzer_sys::fuzz_target;

const VALUES: [f32; 14] = [
    0.0,
    1.0,
    -1.0,
    0.5,
    -0.25,
    2.0,
    3.0,
    -7.0,
    1e-3,
    1e30,
    -1e30,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
];
const ACTS: [Activation; 8] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu { slope: 0.1 },
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Gelu,
    Activation::GeluErf,
    Activation::Softplus,
];

#[derive(Arbitrary, Debug)]
struct Input {
    m: u8,
    k: u8,
    n: u8,
    act: u8,
    isa: u8,
    threads: u8,
    packing: bool,
    values: Vec<u8>,
}

/// NaN, +Inf, −Inf or finite: the class the tolerance cannot blur.
fn class(x: f32) -> u8 {
    if x.is_nan() {
        0
    } else if x == f32::INFINITY {
        1
    } else if x == f32::NEG_INFINITY {
        2
    } else {
        3
    }
}

fuzz_target!(|inp: Input| {
    let (m, k, n) = (
        inp.m as usize % 20,
        inp.k as usize % 40,
        inp.n as usize % 40,
    );
    let isas = available_isas();
    let isa = isas[inp.isa as usize % isas.len()];
    let packing = if inp.packing {
        Packing::Always
    } else {
        Packing::Never
    };
    let o = GemmOptions {
        threads: Threads::Fixed(1 + inp.threads as usize % 3),
        isa: Some(isa),
        packing,
    };
    let act = ACTS[inp.act as usize % ACTS.len()];
    let mut next = 0usize;
    let mut val = || {
        let v = VALUES[*inp.values.get(next).unwrap_or(&(next as u8)) as usize % VALUES.len()];
        next += 1;
        v
    };
    let a: Vec<f32> = (0..m * k).map(|_| val()).collect();
    let w: Vec<f32> = (0..k * n).map(|_| val()).collect();
    let bias: Vec<f32> = (0..n).map(|_| val()).collect();
    let (av, wv) = (MatRef::from_slice(&a, m, k), MatRef::from_slice(&w, k, n));

    // Forward: fused vs plain GEMM + bias, and C = φ(Z) exactly.
    let (mut c, mut z) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
    let epi = Epilogue::BiasAct {
        bias: Some(&bias),
        act,
        pre_activation: Some(MatMut::from_slice_mut(&mut z, m, n)),
    };
    gemm_epilogue(
        &o,
        1.0,
        av,
        wv,
        0.0,
        MatMut::from_slice_mut(&mut c, m, n),
        epi,
    );
    let mut y = vec![0.0f32; m * n];
    gemm_with(&o, 1.0, av, wv, 0.0, MatMut::from_slice_mut(&mut y, m, n));
    for i in 0..m {
        for j in 0..n {
            let (zf, zu) = (z[i * n + j], y[i * n + j] + bias[j]);
            assert_eq!(
                class(zf),
                class(zu),
                "Z[{i},{j}]: fused {zf} vs GEMM + bias {zu}"
            );
            if zf.is_finite() {
                let mag: f32 = (0..k)
                    .map(|p| (a[i * k + p] * w[p * n + j]).abs())
                    .sum::<f32>()
                    + bias[j].abs();
                let tol = 4.0 * (k as f32 + 2.0) * f32::EPSILON * mag + 1e-30;
                assert!((zf - zu).abs() <= tol, "Z[{i},{j}]: fused {zf} vs {zu}");
            }
        }
    }
    let mut phi = vec![0.0f32; m * n];
    forward_slice(isa, act, &z, &mut phi);
    for (x, p) in c.iter().zip(&phi) {
        assert!(
            x.to_bits() == p.to_bits() || (x.is_nan() && p.is_nan()),
            "C is not φ(Z): {x} vs {p}"
        );
    }

    // δ step: δ = (A·W) ⊙ φ′(Z), ∂b = Σ_rows δ.
    let (mut d, mut db) = (vec![0.0f32; m * n], vec![0.0f32; n]);
    let epi = Epilogue::ActGrad {
        act,
        input: ActInput::PreActivation(MatRef::from_slice(&z, m, n)),
        bias_grad: Some(BiasGrad {
            out: &mut db,
            accum: Accum::Replace,
        }),
    };
    gemm_epilogue(
        &o,
        1.0,
        av,
        wv,
        0.0,
        MatMut::from_slice_mut(&mut d, m, n),
        epi,
    );
    let mut dphi = vec![0.0f32; m * n];
    derivative_slice(isa, act, &z, &mut dphi);
    for x in 0..m * n {
        let want = y[x] * dphi[x];
        assert_eq!(class(d[x]), class(want), "δ[{x}]: fused {} vs {want}", d[x]);
    }
    for j in 0..n {
        let s: f32 = (0..m).map(|i| d[i * n + j]).sum();
        assert_eq!(class(db[j]), class(s), "∂b[{j}]: {} vs Σ δ = {s}", db[j]);
        if s.is_finite() {
            let mag: f32 = (0..m).map(|i| d[i * n + j].abs()).sum();
            assert!(
                (db[j] - s).abs() <= 4.0 * (m as f32 + 2.0) * f32::EPSILON * mag + 1e-30,
                "∂b[{j}]"
            );
        }
    }
});
