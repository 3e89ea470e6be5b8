//! GEMM demo: checks one product against the reference, then times the crate's
//! GEMM against matrixmultiply (single-threaded) and the gemm crate (its
//! AVX-512 kernels, `x86-v4`, on the same thread count as ours) on the shapes
//! of the AVX-512 measurement file's table, in its order (one run compares the
//! three libraries on all of them on a new machine), then other shapes an MLP
//! training step uses, with the machine's FMA peak for scale. Medians of
//! repeated runs, one process, the libraries timed alternately. Ours is also
//! timed with each path forced (`Packing::Always`, the packed loop nest, and
//! `Packing::Never`, A and B read in place), which shows on a new CPU whether
//! the automatic choice (the `gemm` module docs' path rule) picks the faster
//! one. Last, one
//! training step of the K = 1024, L = 8 network (batch 256, MSE, SGD with
//! momentum) against the same peak.
//!
//! `cargo run --release --example gemm_demo [threads]`

use std::time::Instant;

use backprop::gemm::{gemm_with, GemmOptions, Packing};
use backprop::matrix::{MatMut, MatRef};
use backprop::nn::{Activation, Loss, MlpBuilder, Targets};
use backprop::optim::{Schedule, Sgd, SgdConfig};
use backprop::train::Trainer;
use backprop::{kernel, reference, Threads};
use backprop_support::layout::Layout;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Times the calls in `fs` alternately (one call of each per round, after a
/// warm-up call of each) until each has `min_reps` samples and `budget`
/// seconds have passed; returns their medians in order. Interleaving makes
/// the libraries see the same machine: on a shared host the speed drifts by
/// tens of percent within seconds, which would decide a comparison made one
/// library after the other. Each round starts one call later than the
/// one before, so every call follows each of the others equally often: which
/// call runs just before another moves its time by 1–2 % (the caches it
/// leaves), enough to decide a close comparison if the order were fixed.
fn interleaved_medians(fs: &mut [&mut dyn FnMut()], min_reps: usize, budget: f64) -> Vec<f64> {
    for f in fs.iter_mut() {
        f();
    }
    let mut times = vec![Vec::new(); fs.len()];
    let start = Instant::now();
    let n = fs.len();
    let mut round = 0;
    while times[0].len() < min_reps
        || (start.elapsed().as_secs_f64() < budget && times[0].len() < 1000)
    {
        for j in 0..n {
            let i = (round + j) % n;
            let t0 = Instant::now();
            fs[i]();
            times[i].push(t0.elapsed().as_secs_f64());
        }
        round += 1;
    }
    times
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("threads must be a number"))
        .unwrap_or(1);
    let isa = backprop::active_isa();
    let peak = {
        let iters = 20_000_000;
        let t = Instant::now();
        let flops = kernel::fma_peak_probe(isa, iters);
        flops as f64 / t.elapsed().as_secs_f64() / 1e9
    };
    println!("isa {isa}, {threads} thread(s), one-core FMA peak {peak:.1} GFLOP/s");
    println!(
        "caches {:?}, blocking {:?}",
        kernel::cache_sizes(),
        isa.blocking()
    );

    let mut rng = StdRng::seed_from_u64(42);
    let mut rand_vec =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };

    // Correctness first: one product against the naive reference.
    let (m, k, n) = (67, 129, 45);
    let (a, b) = (rand_vec(m * k), rand_vec(k * n));
    let (mut c, mut r) = (vec![0.0; m * n], vec![0.0; m * n]);
    let opts = GemmOptions {
        threads: Threads::Fixed(threads),
        ..Default::default()
    };
    gemm_with(
        &opts,
        1.0,
        MatRef::from_slice(&a, m, k),
        MatRef::from_slice(&b, k, n),
        0.0,
        MatMut::from_slice_mut(&mut c, m, n),
    );
    reference::gemm(
        1.0,
        MatRef::from_slice(&a, m, k),
        MatRef::from_slice(&b, k, n),
        0.0,
        MatMut::from_slice_mut(&mut r, m, n),
    );
    let err = c
        .iter()
        .zip(&r)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    println!("max |ours - reference| on {m}×{k}×{n}: {err:.2e}");

    println!(
        "{:>20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8}",
        "m×k×n", "ours", "mm", "gemm", "ours/mm", "/gemm", "%peak", "packed", "in place"
    );
    let gemm_par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // The table of the AVX-512 measurement file (`../shared/measurements/`),
    // in its order, then the other MLP shapes.
    let shapes: &[(usize, usize, usize, Layout)] = &[
        (64, 64, 64, Layout::Plain),
        (256, 256, 256, Layout::Plain),
        (512, 512, 512, Layout::Plain),
        (1024, 1024, 1024, Layout::Plain),
        (2048, 2048, 2048, Layout::Plain),
        (128, 784, 512, Layout::Plain),
        (128, 512, 10, Layout::Plain),
        (256, 1024, 1024, Layout::Plain),
        (784, 128, 512, Layout::ATransposed),
        (128, 512, 512, Layout::BTransposed),
        (32, 784, 512, Layout::Plain),
        (128, 512, 512, Layout::Plain),
        (1024, 256, 1024, Layout::ATransposed),
        (256, 1024, 1024, Layout::BTransposed),
    ];
    for &(m, k, n, layout) in shapes {
        let (a, b) = (rand_vec(m * k), rand_vec(k * n));
        // One C each: the closures are alive at once.
        let (mut c, mut c_mm, mut c_gemm) = (
            vec![0.0f32; m * n],
            vec![0.0f32; m * n],
            vec![0.0f32; m * n],
        );
        let (mut c_packed, mut c_in_place) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
        // A is m × k; for the weight-gradient shapes (Xᵀ·δ) it is Xᵀ of a
        // row-major k × m X. B is k × n; for the δ·Wᵀ shapes it is Wᵀ of a
        // row-major n × k W.
        let ((rsa, csa), (rsb, csb)) = layout.strides(m, k, n);
        let av = MatRef::from_strided(&a, m, k, rsa, csa);
        let bv = MatRef::from_strided(&b, k, n, rsb, csb);
        let mut ours = || {
            gemm_with(
                &opts,
                1.0,
                av,
                bv,
                0.0,
                MatMut::from_slice_mut(&mut c, m, n),
            )
        };
        let forced = |packing: Packing, c: &mut [f32]| {
            let opts = GemmOptions { packing, ..opts };
            gemm_with(&opts, 1.0, av, bv, 0.0, MatMut::from_slice_mut(c, m, n))
        };
        let mut packed = || forced(Packing::Always, &mut c_packed);
        let mut in_place = || forced(Packing::Never, &mut c_in_place);
        let mut mm = || {
            // SAFETY: pointers and strides describe the live buffers above.
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
                    c_mm.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        };
        let mut peer = || {
            // SAFETY: as above. gemm takes (column stride, row stride) pairs and
            // computes dst = α·dst + β·lhs·rhs; with read_dst false, dst = lhs·rhs.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c_gemm.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    csa,
                    rsa,
                    b.as_ptr(),
                    csb,
                    rsb,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm_par,
                )
            }
        };
        let t = interleaved_medians(
            &mut [&mut ours, &mut mm, &mut peer, &mut packed, &mut in_place],
            5,
            4.0,
        );
        let flops = 2.0 * (m * n * k) as f64;
        let g: Vec<f64> = t.iter().map(|s| flops / s / 1e9).collect();
        let label = format!("{m}×{k}×{n}{}", layout.suffix());
        println!(
            "{label:>20} {:>8.1} {:>8.1} {:>8.1} {:>8.2} {:>8.2} {:>6.0}% {:>8.1} {:>8.1}",
            g[0],
            g[1],
            g[2],
            g[0] / g[1],
            g[0] / g[2],
            100.0 * g[0] / (peak * threads as f64),
            g[3],
            g[4]
        );
        let drift = c
            .iter()
            .zip(&c_gemm)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            drift <= 1e-3 * k as f32,
            "{label}: ours and gemm differ by {drift}"
        );
    }
    step_k1024(threads, peak, &mut rand_vec);
}

/// Times one training step of the K = 1024, L = 8 network (1024 inputs, eight
/// hidden ReLU layers of 1024, 1024 outputs, MSE, batch 256, SGD with momentum
/// 0.9: `k1024_l8_b256` of `benches/train.rs`) and prints its rate against the
/// FMA peak. The flops counted are the GEMMs the step runs: forward and weight
/// gradient for all nine layers, the δ step for all but the first: 26
/// products (`benches/train.rs` counts 6·B·ΣK², 27, as its throughput unit).
fn step_k1024(threads: usize, peak: f64, rand_vec: &mut impl FnMut(usize) -> Vec<f32>) {
    let (k, hidden, batch) = (1024, 8, 256);
    let mut builder = MlpBuilder::new(k).loss(Loss::Mse);
    for _ in 0..hidden {
        builder = builder.dense(k).act(Activation::Relu);
    }
    let mut net = builder.dense(k).build(1).expect("a valid network");
    net.set_gemm_options(GemmOptions {
        threads: Threads::Fixed(threads),
        ..Default::default()
    });
    let sgd = Sgd::new(
        net.num_params(),
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
    );
    let mut trainer = Trainer::new(net, Box::new(sgd), Schedule::constant(1e-3), 1);
    let (x, y) = (rand_vec(batch * k), rand_vec(batch * k));
    let mut step = || {
        let t = Targets::Values(MatRef::from_slice(&y, batch, k));
        trainer
            .step(MatRef::from_slice(&x, batch, k), t)
            .expect("a finite step");
    };
    let secs = interleaved_medians(&mut [&mut step], 5, 3.0)[0];
    let layers = hidden + 1;
    let flops = 2.0 * (batch * k * k) as f64 * (2 * layers + layers - 1) as f64;
    let rate = flops / secs / 1e9;
    println!(
        "training step K = {k}, L = {hidden}, batch {batch}: {:.1} ms, {rate:.1} GFLOP/s, {:.0}% of peak",
        secs * 1e3,
        100.0 * rate / (peak * threads as f64)
    );
}
