//! A steady-state training step allocates nothing: a counting global
//! allocator watches steps after warm-up, with one and two threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use backprop::gemm::GemmOptions;
use backprop::matrix::MatRef;
use backprop::nn::{Activation, BatchParallelism, Loss, MlpBuilder, Targets};
use backprop::optim::{Adam, AdamConfig, Schedule};
use backprop::train::Trainer;
use backprop::Threads;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_training_steps_do_not_allocate() {
    let (batch, d) = (64, 100);
    let x: Vec<f32> = (0..batch * d)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let classes: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    for (threads, mode, norm_first) in [
        (1, BatchParallelism::SplitGemm, false),
        (2, BatchParallelism::SplitGemm, false),
        (2, BatchParallelism::Shards(4), false),
        (1, BatchParallelism::SplitGemm, true),
        (2, BatchParallelism::Shards(4), true),
    ] {
        // A norm as the first layer has no ∂L/∂x to write (none is made).
        let first = MlpBuilder::new(d);
        let first = if norm_first {
            first.batch_norm()
        } else {
            first
        };
        let mut net = first
            .dense(256)
            .batch_norm()
            .act(Activation::Relu)
            .residual(|r| r.dense(256).act(Activation::Gelu).dense(256))
            .layer_norm()
            .dense(128)
            .act(Activation::Tanh)
            .dense(10)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(1)
            .unwrap();
        net.set_gemm_options(GemmOptions {
            threads: Threads::Fixed(threads),
            ..Default::default()
        });
        net.set_parallelism(mode);
        let opt = Adam::new(net.num_params(), AdamConfig::default());
        let mut t =
            Trainer::new(net, Box::new(opt), Schedule::cosine(1e-3, 0.0, 100), 1).with_clip(5.0);
        let xv = MatRef::from_slice(&x, batch, d);
        // Warm-up: workspaces, thread-local packing buffers, the pool and its
        // queues reach their steady size.
        for _ in 0..20 {
            t.step(xv, Targets::Classes(&classes)).unwrap();
        }
        ALLOCS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        for _ in 0..30 {
            t.step(xv, Targets::Classes(&classes)).unwrap();
        }
        COUNTING.store(false, Ordering::Relaxed);
        assert_eq!(
            ALLOCS.load(Ordering::Relaxed),
            0,
            "{threads} thread(s), {mode:?}, norm first {norm_first}: allocations in 30 steady-state steps"
        );
    }
}
