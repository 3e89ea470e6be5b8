//! Fused training kernels against the unfused composition on the same inputs,
//! one thread: the forward `A = φ(X·W + b)` and the δ step
//! `δ = (δ′·Wᵀ) ⊙ φ′` with its bias gradient. "bare" is the GEMM alone, so
//! bare/fused is the epilogue's overhead and unfused/fused its gain.
//!
//! `cargo bench --bench fused`

use std::hint::black_box;
use std::time::Duration;

use backprop::gemm::{
    backward_delta, gemm_epilogue, gemm_with, Accum, ActInput, BiasGrad, Epilogue, GemmOptions,
};
use backprop::kernel::activation::{derivative_from_output_slice, forward_slice};
use backprop::matrix::{MatMut, MatRef};
use backprop::nn::Activation;
use backprop::Threads;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SHAPES: [(usize, usize, usize); 3] = [(128, 784, 512), (128, 512, 512), (256, 1024, 1024)];

fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn one_thread() -> GemmOptions {
    GemmOptions {
        threads: Threads::Fixed(1),
        ..Default::default()
    }
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("fused_forward");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let o = one_thread();
    let isa = backprop::active_isa();
    let act = Activation::Relu;
    let mut rng = StdRng::seed_from_u64(1);
    for (m, k, n) in SHAPES {
        let (x, w, b) = (
            random(m * k, &mut rng),
            random(k * n, &mut rng),
            random(n, &mut rng),
        );
        let (mut z, mut a) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
        let id = format!("{m}x{k}x{n}");
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let xv = MatRef::from_slice(&x, m, k);
        let wv = MatRef::from_slice(&w, k, n);
        g.bench_with_input(BenchmarkId::new("fused", &id), &(), |bch, _| {
            bch.iter(|| {
                let epi = Epilogue::BiasAct {
                    bias: Some(&b),
                    act,
                    pre_activation: None,
                };
                gemm_epilogue(
                    &o,
                    1.0,
                    xv,
                    wv,
                    0.0,
                    MatMut::from_slice_mut(&mut a, m, n),
                    epi,
                );
                black_box(&a);
            })
        });
        g.bench_with_input(BenchmarkId::new("unfused", &id), &(), |bch, _| {
            bch.iter(|| {
                gemm_with(&o, 1.0, xv, wv, 0.0, MatMut::from_slice_mut(&mut z, m, n));
                for (zr, ar) in z.chunks_exact_mut(n).zip(a.chunks_exact_mut(n)) {
                    for (zj, bj) in zr.iter_mut().zip(&b) {
                        *zj += bj;
                    }
                    forward_slice(isa, act, zr, ar);
                }
                black_box(&a);
            })
        });
        g.bench_with_input(BenchmarkId::new("bare", &id), &(), |bch, _| {
            bch.iter(|| {
                gemm_with(&o, 1.0, xv, wv, 0.0, MatMut::from_slice_mut(&mut a, m, n));
                black_box(&a);
            })
        });
    }
    g.finish();
}

fn delta(c: &mut Criterion) {
    let mut g = c.benchmark_group("fused_delta");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let o = one_thread();
    let isa = backprop::active_isa();
    let act = Activation::Relu;
    let mut rng = StdRng::seed_from_u64(2);
    // δ′ is batch × fan_out (m × k), W is fan_in × fan_out (n × k), δ is m × n.
    for (m, k, n) in SHAPES {
        let (dn, w) = (random(m * k, &mut rng), random(n * k, &mut rng));
        let out: Vec<f32> = random(m * n, &mut rng)
            .iter()
            .map(|&v| v.max(0.0))
            .collect();
        let (mut d, mut dphi) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
        let mut db = vec![0.0f32; n];
        let id = format!("{m}x{k}x{n}");
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let dv = MatRef::from_slice(&dn, m, k);
        let wv = MatRef::from_slice(&w, n, k);
        let av = MatRef::from_slice(&out, m, n);
        g.bench_with_input(BenchmarkId::new("fused", &id), &(), |bch, _| {
            bch.iter(|| {
                let bg = BiasGrad {
                    out: &mut db,
                    accum: Accum::Replace,
                };
                backward_delta(
                    &o,
                    dv,
                    wv,
                    act,
                    ActInput::Output(av),
                    MatMut::from_slice_mut(&mut d, m, n),
                    Some(bg),
                );
                black_box((&d, &db));
            })
        });
        g.bench_with_input(BenchmarkId::new("unfused", &id), &(), |bch, _| {
            bch.iter(|| {
                gemm_with(
                    &o,
                    1.0,
                    dv,
                    wv.t(),
                    0.0,
                    MatMut::from_slice_mut(&mut d, m, n),
                );
                derivative_from_output_slice(isa, act, &out, &mut dphi);
                for (x, y) in d.iter_mut().zip(&dphi) {
                    *x *= y;
                }
                db.iter_mut().for_each(|v| *v = 0.0);
                for row in d.chunks_exact(n) {
                    for (s, x) in db.iter_mut().zip(row) {
                        *s += x;
                    }
                }
                black_box((&d, &db));
            })
        });
        g.bench_with_input(BenchmarkId::new("bare", &id), &(), |bch, _| {
            bch.iter(|| {
                gemm_with(
                    &o,
                    1.0,
                    dv,
                    wv.t(),
                    0.0,
                    MatMut::from_slice_mut(&mut d, m, n),
                );
                black_box(&d);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, forward, delta);
criterion_main!(benches);
