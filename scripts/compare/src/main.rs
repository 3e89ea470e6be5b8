//! Times the GEMM shapes and training steps the performance targets name, with
//! whatever `backprop` this crate was built against (see `scripts/compare_rev.sh`).
//! Only API that has been stable since the first release is used, so an older
//! checkout builds too. Prints one line per case: `name<TAB>median seconds`.
//!
//! `backprop-compare [--quick] [filter]` (threads: `BACKPROP_NUM_THREADS`, ISA:
//! `BACKPROP_ISA`).

use std::hint::black_box;
use std::time::Instant;

use backprop::gemm::{gemm_with, GemmOptions};
use backprop::matrix::{MatMut, MatRef};
use backprop::nn::{Activation, BatchParallelism, Loss, MlpBuilder, Targets};
use backprop::optim::{Adam, AdamConfig, Optimizer, Schedule, Sgd, SgdConfig};
use backprop::train::Trainer;
use backprop::Threads;

/// Median wall time of `f` over at least `min_reps` runs or `budget` seconds.
fn median_secs(mut f: impl FnMut(), min_reps: usize, budget: f64) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_reps || (start.elapsed().as_secs_f64() < budget && times.len() < 20_000)
    {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Deterministic values in [-1, 1) (a 64-bit LCG; no RNG crate, so the
/// program builds against any checkout).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// How a step case's network differs from the plain dense/ReLU stack.
#[derive(Clone, Copy)]
enum Variant {
    Plain,
    /// BatchNorm between each hidden dense layer and its ReLU.
    BatchNorm,
    /// The plain stack with `BatchParallelism::Shards(n)`.
    Shards(usize),
}

struct Step {
    trainer: Trainer,
    x: Vec<f32>,
    classes: Vec<usize>,
    targets: Vec<f32>,
    batch: usize,
    input: usize,
    output: usize,
    loss: Loss,
}

impl Step {
    fn new(dims: &[usize], batch: usize, loss: Loss, adam: bool, threads: usize, variant: Variant) -> Step {
        let (input, output) = (dims[0], *dims.last().unwrap());
        let mut b = MlpBuilder::new(input).loss(loss);
        for &h in &dims[1..dims.len() - 1] {
            b = match variant {
                Variant::BatchNorm => b.dense(h).batch_norm().act(Activation::Relu),
                _ => b.dense(h).act(Activation::Relu),
            };
        }
        let mut net = b.dense(output).build(1).unwrap();
        net.set_gemm_options(GemmOptions {
            threads: Threads::Fixed(threads),
            ..Default::default()
        });
        if let Variant::Shards(s) = variant {
            net.set_parallelism(BatchParallelism::Shards(s));
        }
        let n = net.num_params();
        let opt: Box<dyn Optimizer + Send> = if adam {
            Box::new(Adam::new(n, AdamConfig::default()))
        } else {
            Box::new(Sgd::new(
                n,
                SgdConfig {
                    momentum: 0.9,
                    ..Default::default()
                },
            ))
        };
        Step {
            trainer: Trainer::new(net, opt, Schedule::constant(1e-3), 1),
            x: values(batch * input, 2),
            classes: (0..batch).map(|i| (i * 7 + 3) % output).collect(),
            targets: values(batch * output, 3),
            batch,
            input,
            output,
            loss,
        }
    }

    fn run(&mut self) {
        let x = MatRef::from_slice(&self.x, self.batch, self.input);
        let t = match self.loss {
            Loss::SoftmaxCrossEntropy => Targets::Classes(&self.classes),
            _ => Targets::Values(MatRef::from_slice(&self.targets, self.batch, self.output)),
        };
        black_box(self.trainer.step(x, t).unwrap());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let filter = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_default();
    let threads = backprop::num_threads();
    let budget = if quick { 0.3 } else { 1.5 };
    let report = |name: &str, secs: f64| println!("{name}\t{secs:.9}");

    let shapes: &[(usize, usize, usize, &str)] = &[
        (32, 64, 64, ""),
        (64, 64, 64, ""),
        (256, 256, 256, ""),
        (1024, 1024, 1024, ""),
        (128, 784, 512, ""),
        (128, 512, 512, ""),
        (128, 512, 10, ""),
        (256, 1024, 1024, ""),
        (784, 32, 512, "At"),
        (784, 128, 512, "At"),
        (128, 512, 512, "Bt"),
    ];
    for &(m, k, n, layout) in shapes {
        let name = format!(
            "gemm {m}x{k}x{n}{}",
            if layout.is_empty() {
                String::new()
            } else {
                format!(" ({layout})")
            }
        );
        if !name.contains(&filter) {
            continue;
        }
        let (a, b) = (values(m * k, 5), values(k * n, 6));
        let mut c = vec![0.0f32; m * n];
        let (rsa, csa) = if layout == "At" { (1, m) } else { (k, 1) };
        let (rsb, csb) = if layout == "Bt" { (1, k) } else { (n, 1) };
        let opts = GemmOptions {
            threads: Threads::Fixed(threads),
            ..Default::default()
        };
        let ours = median_secs(
            || {
                let av = MatRef::from_strided(&a, m, k, rsa as isize, csa as isize);
                let bv = MatRef::from_strided(&b, k, n, rsb as isize, csb as isize);
                gemm_with(
                    &opts,
                    1.0,
                    av,
                    bv,
                    0.0,
                    MatMut::from_slice_mut(&mut c, m, n),
                );
                black_box(&c);
            },
            5,
            budget,
        );
        report(&name, ours);
        let mm = median_secs(
            || {
                // SAFETY: the strides describe the m × k, k × n and m × n
                // buffers above, which do not overlap.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa as isize,
                        csa as isize,
                        b.as_ptr(),
                        rsb as isize,
                        csb as isize,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                };
                black_box(&c);
            },
            5,
            budget,
        );
        report(&format!("{name} matrixmultiply"), mm);
    }

    let sce = Loss::SoftmaxCrossEntropy;
    let steps: Vec<(&str, Vec<usize>, usize, Loss, bool, Variant)> = vec![
        (
            "step small_32-4x64-10_sgd_b32",
            vec![32, 64, 64, 64, 64, 10],
            32,
            sce,
            false,
            Variant::Plain,
        ),
        (
            "step mnist_784-512-512-10_adam_b128",
            vec![784, 512, 512, 10],
            128,
            sce,
            true,
            Variant::Plain,
        ),
        (
            "step mnist_bn_784-512-512-10_adam_b128",
            vec![784, 512, 512, 10],
            128,
            sce,
            true,
            Variant::BatchNorm,
        ),
        (
            "step mnist_shards4_784-512-512-10_adam_b128",
            vec![784, 512, 512, 10],
            128,
            sce,
            true,
            Variant::Shards(4),
        ),
        (
            "step deep_256-8x256-1_momentum_b256",
            [vec![256; 9], vec![1]].concat(),
            256,
            Loss::Mse,
            false,
            Variant::Plain,
        ),
        ("step k1024_l8_b256", vec![1024; 10], 256, Loss::Mse, false, Variant::Plain),
    ];
    for (name, dims, batch, loss, adam, variant) in steps {
        if !name.contains(&filter) {
            continue;
        }
        let mut s = Step::new(&dims, batch, loss, adam, threads, variant);
        report(name, median_secs(|| s.run(), 5, budget));
    }
}
