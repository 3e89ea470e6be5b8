//! GEMM throughput: this crate (1 and 2 threads) against matrixmultiply on the
//! same inputs, plus the machine's FMA peak for scale.
//!
//! `cargo bench --bench gemm`; then `python3 scripts/bench_table.py` prints the
//! medians as a Markdown table. Criterion prints GFLOP/s as "Gelem/s" because
//! each group's throughput is set to 2·m·n·k floating-point operations.

use std::hint::black_box;
use std::time::Duration;

use backprop::gemm::{gemm_with, GemmOptions};
use backprop::matrix::{MatMut, MatRef};
use backprop::{kernel, Threads};
use backprop_support::layout::Layout;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn bench_shapes(c: &mut Criterion, group: &str, shapes: &[(usize, usize, usize)], layout: Layout) {
    let mut g = c.benchmark_group(group);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut rng = StdRng::seed_from_u64(7);
    for &(m, k, n) in shapes {
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let mut c = vec![0.0f32; m * n];
        let ((rsa, csa), (rsb, csb)) = layout.strides(m, k, n);
        let id = format!("{m}x{k}x{n}");
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        for threads in [1usize, 2] {
            let opts = GemmOptions {
                threads: Threads::Fixed(threads),
                ..Default::default()
            };
            g.bench_with_input(
                BenchmarkId::new(format!("ours_{threads}t"), &id),
                &(),
                |bch, _| {
                    bch.iter(|| {
                        gemm_with(
                            &opts,
                            1.0,
                            MatRef::from_strided(&a, m, k, rsa, csa),
                            MatRef::from_strided(&b, k, n, rsb, csb),
                            0.0,
                            MatMut::from_slice_mut(&mut c, m, n),
                        );
                        black_box(&c);
                    })
                },
            );
        }
        g.bench_with_input(BenchmarkId::new("matrixmultiply", &id), &(), |bch, _| {
            bch.iter(|| {
                // SAFETY: the pointers and strides describe the live buffers above,
                // and C does not overlap A or B.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                };
                black_box(&c);
            })
        });
    }
    g.finish();
}

fn fma_peak(c: &mut Criterion) {
    let isa = backprop::active_isa();
    let iterations = 1_000_000;
    let flops = kernel::fma_peak_probe(isa, 1);
    let mut g = c.benchmark_group("fma_peak");
    g.sample_size(20).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(flops * iterations));
    g.bench_function(isa.name(), |b| {
        b.iter(|| kernel::fma_peak_probe(isa, black_box(iterations)))
    });
    g.finish();
}

fn squares(c: &mut Criterion) {
    let s: Vec<_> = [64, 128, 256, 512, 1024, 2048]
        .iter()
        .map(|&n| (n, n, n))
        .collect();
    bench_shapes(c, "gemm_square", &s, Layout::Plain);
}

fn mlp(c: &mut Criterion) {
    // Forward X·W of an MLP: (batch, fan_in) · (fan_in, fan_out).
    let s = [
        (128, 784, 512),
        (128, 512, 512),
        (128, 512, 10),
        (256, 1024, 1024),
    ];
    bench_shapes(c, "gemm_mlp", &s, Layout::Plain);
}

fn weight_grad(c: &mut Criterion) {
    // Xᵀ·δ: (fan_in, batch) · (batch, fan_out), Xᵀ read through strides.
    let s = [(784, 128, 512), (1024, 256, 1024)];
    bench_shapes(c, "gemm_wgrad", &s, Layout::ATransposed);
}

fn backward_delta(c: &mut Criterion) {
    // δ·Wᵀ: (batch, fan_out) · (fan_out, fan_in), Wᵀ read through strides.
    let s = [(128, 512, 784), (128, 512, 512), (256, 1024, 1024)];
    bench_shapes(c, "gemm_abt", &s, Layout::BTransposed);
}

criterion_group!(benches, fma_peak, squares, mlp, weight_grad, backward_delta);
criterion_main!(benches);
