//! One training step (forward, backward, optimizer update) of fully connected
//! networks: the O(K²·L) grid at batch 256 (L dense layers of K × K, MSE,
//! SGD with momentum), and the named networks of the targets. Throughput is 6·B·ΣK² flops per step (three GEMMs per layer), so
//! criterion's "elem/s" reads as FLOP/s. `python3 scripts/bench_table.py`
//! fits the exponents of step time in K and L.
//!
//! `cargo bench --bench train`

use std::time::Duration;

use backprop::gemm::GemmOptions;
use backprop::matrix::MatRef;
use backprop::nn::{Activation, BatchParallelism, Loss, MlpBuilder, Targets};
use backprop::optim::{Adam, AdamConfig, Optimizer, Schedule, Sgd, SgdConfig};
use backprop::train::Trainer;
use backprop::Threads;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Case {
    trainer: Trainer,
    x: Vec<f32>,
    batch: usize,
    input: usize,
    classes: Vec<usize>,
    values: Vec<f32>,
    loss: Loss,
    flops: u64,
}

/// `input`, hidden widths, `output`: a ReLU MLP with the given optimizer.
#[allow(clippy::too_many_arguments)]
fn case(
    input: usize,
    hidden: &[usize],
    output: usize,
    batch: usize,
    loss: Loss,
    adam: bool,
    threads: usize,
    mode: BatchParallelism,
) -> Case {
    let mut b = MlpBuilder::new(input).loss(loss);
    for &h in hidden {
        b = b.dense(h).act(Activation::Relu);
    }
    let mut net = b.dense(output).build(1).unwrap();
    net.set_gemm_options(GemmOptions {
        threads: Threads::Fixed(threads),
        ..Default::default()
    });
    net.set_parallelism(mode);
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
    let trainer = Trainer::new(net, opt, Schedule::constant(1e-3), 1);
    let mut rng = StdRng::seed_from_u64(2);
    let x = (0..batch * input)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let classes = (0..batch).map(|_| rng.random_range(0..output)).collect();
    let values = (0..batch * output)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut dims = vec![input];
    dims.extend_from_slice(hidden);
    dims.push(output);
    let flops = dims
        .windows(2)
        .map(|w| 6 * batch * w[0] * w[1])
        .sum::<usize>() as u64;
    Case {
        trainer,
        x,
        batch,
        input,
        classes,
        values,
        loss,
        flops,
    }
}

impl Case {
    fn step(&mut self) {
        let x = MatRef::from_slice(&self.x, self.batch, self.input);
        let out = self.values.len() / self.batch;
        let t = match self.loss {
            Loss::SoftmaxCrossEntropy => Targets::Classes(&self.classes),
            _ => Targets::Values(MatRef::from_slice(&self.values, self.batch, out)),
        };
        self.trainer.step(x, t).unwrap();
    }
}

fn grid(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_grid");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for threads in [1, 2] {
        for k in [128, 256, 512, 1024, 2048] {
            for l in [1, 2, 4, 8] {
                // L dense layers of K × K: K-(L−1)×K-K.
                let mut cs = case(k, &vec![k; l - 1], k, 256, Loss::Mse, false, threads, SPLIT);
                g.throughput(Throughput::Elements(cs.flops));
                g.bench_function(
                    BenchmarkId::new(format!("{threads}t"), format!("K{k}_L{l}")),
                    |b| b.iter(|| cs.step()),
                );
            }
        }
    }
    g.finish();
}

const SPLIT: BatchParallelism = BatchParallelism::SplitGemm;
const SHARDS: BatchParallelism = BatchParallelism::Shards(4);

fn named(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_named");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    // One thread runs both modes the same way; two threads compare them.
    for (threads, mode, tag) in [(1, SPLIT, "1t"), (2, SPLIT, "2t"), (2, SHARDS, "2t_shards")] {
        let sce = Loss::SoftmaxCrossEntropy;
        let cases = [
            (
                "mnist_784-512-512-10_adam_b128",
                case(784, &[512, 512], 10, 128, sce, true, threads, mode),
            ),
            (
                "small_32-4x64-10_sgd_b32",
                case(32, &[64; 4], 10, 32, sce, false, threads, mode),
            ),
            (
                "deep_256-8x256-1_momentum_b256",
                case(256, &[256; 8], 1, 256, Loss::Mse, false, threads, mode),
            ),
            (
                "k1024_l8_b256",
                case(1024, &[1024; 8], 1024, 256, Loss::Mse, false, threads, mode),
            ),
        ];
        for (name, mut cs) in cases {
            g.throughput(Throughput::Elements(cs.flops));
            g.bench_function(BenchmarkId::new(tag, name), |b| b.iter(|| cs.step()));
        }
    }
    g.finish();
}

criterion_group!(benches, named, grid);
criterion_main!(benches);
