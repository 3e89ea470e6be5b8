//! Times training steps of the K = 1024, L = 8 network (batch 256, MSE,
//! SGD with momentum) alone or data-parallel under mpirun, and reports the
//! communication: a benchmark, not a test.
//!
//! ```sh
//! cargo run --release --example dist_step -- 2 4          # one process: 2 threads, 4 shards
//! cargo build --release --features mpi --example dist_step
//! mpirun -np 2 target/release/examples/dist_step 1 4      # 2 ranks × 1 thread, 4 shards
//! ```
//!
//! Arguments: threads per process, shards (0: split-GEMM mode, one process
//! only), optionally steps (default 20), overlap (1, the default: the
//! gradient exchange runs beside the backward pass; 0: on the computing
//! thread) and shared memory (1, the default: ranks on one node exchange
//! through shared memory; 0: in messages). Prints
//! one JSON line (rank 0): the median step time, bytes sent per rank per
//! step, the fraction of the step the computing thread was blocked on
//! communication (transfer and waiting), and the background exchange's
//! time as a fraction of the step.

use backprop::gemm::GemmOptions;
use backprop::matrix::MatRef;
use backprop::nn::{Activation, BatchParallelism, Loss, MlpBuilder, Targets};
use backprop::optim::{Schedule, Sgd, SgdConfig};
use backprop::train::Trainer;
use backprop::Threads;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments: threads shards [steps]"))
        .collect();
    let (threads, shards) = (
        args.first().copied().unwrap_or(1),
        args.get(1).copied().unwrap_or(0),
    );
    let steps = args.get(2).copied().unwrap_or(20);
    let overlap = args.get(3).copied().unwrap_or(1) != 0;
    let shared = args.get(4).copied().unwrap_or(1) != 0;
    let (k, layers, batch) = (1024, 8, 256);
    let mut b = MlpBuilder::new(k).loss(Loss::Mse);
    for _ in 0..layers {
        b = b.dense(k).act(Activation::Relu);
    }
    let mut net = b.dense(k).build(1).unwrap();
    net.set_gemm_options(GemmOptions {
        threads: Threads::Fixed(threads),
        ..GemmOptions::default()
    });
    if shards > 0 {
        net.set_parallelism(BatchParallelism::Shards(shards));
    }
    let opt = Sgd::new(
        net.num_params(),
        SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        },
    );
    let params = net.num_params();
    let mut trainer = Trainer::new(net, Box::new(opt), Schedule::constant(1e-4), 1);
    let group = backprop::dist::world().expect("MPI starts");
    if let Some(g) = &group {
        assert!(shards >= g.size(), "give at least one shard per rank");
        trainer = trainer.with_group(
            g.clone().with_overlap(overlap).with_shared_memory(shared),
            shards,
        );
    }
    let x: Vec<f32> = (0..batch * k)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let y: Vec<f32> = (0..batch * k)
        .map(|i| ((i * 104_729 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let (xv, yv) = (
        MatRef::from_slice(&x, batch, k),
        MatRef::from_slice(&y, batch, k),
    );
    for _ in 0..3 {
        trainer.step(xv, Targets::Values(yv)).unwrap();
    }
    let before = group.as_ref().map(|g| g.stats()).unwrap_or_default();
    let mut times = Vec::with_capacity(steps);
    let start = Instant::now();
    for _ in 0..steps {
        let t = Instant::now();
        trainer.step(xv, Targets::Values(yv)).unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    let total = start.elapsed().as_secs_f64();
    let after = group.as_ref().map(|g| g.stats()).unwrap_or_default();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let flops = 6.0 * batch as f64 * (layers as f64 + 1.0) * (k * k) as f64;
    if group.as_ref().is_none_or(|g| g.rank() == 0) {
        println!(
            "{{\"ranks\":{},\"threads\":{threads},\"shards\":{shards},\"params\":{params},\
             \"median_step_ms\":{:.2},\"gflops\":{:.1},\"bytes_sent_per_step\":{},\
             \"comm_fraction\":{:.3},\"background_fraction\":{:.3},\"isa\":\"{}\"}}",
            group.as_ref().map_or(1, |g| g.size()),
            median * 1e3,
            flops / median * 1e-9,
            (after.bytes_sent - before.bytes_sent) / steps as u64,
            (after.seconds - before.seconds) / total,
            (after.background_seconds - before.background_seconds) / total,
            backprop::active_isa()
        );
    }
}
