//! Data-parallel training is bitwise one process: ranks as threads
//! (`LocalGroup`), 1 to 4 of them, give the weights, BatchNorm statistics and
//! losses of one process running the same shards (`BatchParallelism::Shards`),
//! with BatchNorm, LayerNorm, dropout, Adam and a schedule, minibatches whose
//! last one leaves shards empty, and any thread count.

use std::sync::Arc;

use backprop::dist::{Communicator, Group, LocalGroup};
use backprop::gemm::GemmOptions;
use backprop::matrix::MatRef;
use backprop::nn::{Activation, BatchParallelism, Loss, MlpBuilder, StepError, Targets};
use backprop::optim::{Adam, AdamConfig, Schedule};
use backprop::train::{Dataset, TrainError, Trainer};
use backprop::Threads;

/// 103 samples of 6 features, 3 classes.
fn data() -> Dataset {
    let n = 103;
    let x: Vec<f32> = (0..n * 6)
        .map(|i| ((i * 7919 % 211) as f32 / 50.0) - 2.0)
        .collect();
    let c: Vec<usize> = (0..n).map(|i| (i * 31 % 7) % 3).collect();
    Dataset::new(x, n, 6, Targets::Classes(&c)).unwrap()
}

fn trainer(threads: usize) -> Trainer {
    let mut net = MlpBuilder::new(6)
        .dense(16)
        .batch_norm()
        .act(Activation::Relu)
        .dropout(0.25)
        .dense(12)
        .layer_norm()
        .act(Activation::Tanh)
        .dense(3)
        .loss(Loss::SoftmaxCrossEntropy)
        .build(5)
        .unwrap();
    net.set_gemm_options(GemmOptions {
        threads: Threads::Fixed(threads),
        ..GemmOptions::default()
    });
    let opt = Adam::new(net.num_params(), AdamConfig::default());
    let schedule = Schedule::warmup(3, 0.1, Schedule::cosine(0.01, 1e-4, 40));
    Trainer::new(net, Box::new(opt), schedule, 11)
}

/// Params, buffers, per-epoch losses and the optimizer's state (as bits)
/// after 3 epochs of batch 20 (the last minibatch has 3 rows: with 8 shards,
/// five are empty).
type Run = (Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>);

fn train(mut t: Trainer) -> Run {
    let d = data();
    let mut losses = Vec::new();
    for _ in 0..3 {
        losses.push(t.train_epoch(&d, 20).unwrap().mean_loss.to_bits());
    }
    t.sync_optimizer();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let state = t.optimizer().state();
    let mut opt: Vec<u32> = state.buffers.iter().flat_map(|b| bits(b)).collect();
    opt.push(state.steps as u32);
    let net = t.into_net();
    (bits(net.params()), bits(net.buffers()), losses, opt)
}

fn alone(shards: usize, threads: usize) -> Run {
    let mut t = trainer(threads);
    t.net_mut()
        .set_parallelism(BatchParallelism::Shards(shards));
    train(t)
}

/// `f` on each of `size` ranks as threads, given that rank's communicator;
/// the results in rank order.
fn on_ranks<T: Send>(size: usize, f: impl Fn(Arc<dyn Communicator>) -> T + Sync) -> Vec<T> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::ranks(size)
            .into_iter()
            .map(|c| s.spawn(move || f(c)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `run` on each of `size` ranks, with a trainer in a group of `shards`.
fn grouped<T: Send>(
    size: usize,
    shards: usize,
    t: impl Fn() -> Trainer + Sync,
    run: impl Fn(Trainer) -> T + Sync,
) -> Vec<T> {
    on_ranks(size, |c| run(t().with_group(Group::new(c), shards)))
}

/// The gradient exchange's settings: in shared memory (the default between
/// threads), or in messages, in the background or at the pass's end, whole
/// or in buckets of a few values (every tensor its own bucket, or some
/// merged).
const EXCHANGES: [(bool, bool, usize); 5] = [
    (true, true, 1 << 18),
    (false, true, 1 << 18),
    (false, false, 1 << 18),
    (false, true, 7),
    (false, true, 100),
];

fn ranks_exchanging(
    size: usize,
    shards: usize,
    (shared, overlap, bucket): (bool, bool, usize),
) -> Vec<Run> {
    on_ranks(size, |c| {
        let g = Group::new(c)
            .with_shared_memory(shared)
            .with_overlap(overlap)
            .with_bucket_values(bucket);
        train(trainer(1).with_group(g, shards))
    })
}

#[test]
fn any_number_of_ranks_gives_one_process_bits() {
    for shards in [4, 8] {
        let want = alone(shards, 1);
        assert_eq!(want, alone(shards, 2), "{shards} shards: thread count");
        for size in 1..=4 {
            for ex in EXCHANGES {
                for (r, got) in ranks_exchanging(size, shards, ex).into_iter().enumerate() {
                    assert!(
                        got == want,
                        "{shards} shards, {size} ranks, (shared memory, overlap, bucket) \
                         {ex:?}: rank {r} differs from one process"
                    );
                }
            }
        }
    }
}

#[test]
fn with_clipping_every_rank_updates_everything_and_the_bits_hold() {
    let clipped = |t: Trainer| t.with_clip(0.5);
    let want = {
        let mut t = clipped(trainer(1));
        t.net_mut().set_parallelism(BatchParallelism::Shards(4));
        train(t)
    };
    let got = grouped(3, 4, || clipped(trainer(1)), train);
    assert!(got.iter().all(|r| r == &want));
}

#[test]
fn the_shard_count_changes_the_bits_the_rank_count_does_not() {
    // Different shard counts sum in different orders: the weights differ
    // (a little), which is what makes the equalities above meaningful.
    assert_ne!(alone(4, 1).0, alone(8, 1).0);
}

#[test]
fn step_takes_the_whole_minibatch_on_every_rank() {
    let d = data();
    let x = d.x_values();
    let Targets::Classes(c) = d.labels() else {
        unreachable!()
    };
    let xs = MatRef::from_slice(&x[..40 * 6], 40, 6);
    let step = |mut t: Trainer| {
        for _ in 0..3 {
            t.step(xs, Targets::Classes(&c[..40])).unwrap();
        }
        t.into_net().params().to_vec()
    };
    let mut one = trainer(1);
    one.net_mut().set_parallelism(BatchParallelism::Shards(3));
    let want = step(one);
    let got = grouped(3, 3, || trainer(1), step);
    assert!(got.iter().all(|p| p == &want));
}

#[test]
fn a_bad_label_on_one_rank_stops_every_rank_at_the_same_step() {
    let d = data();
    let x = d.x_values();
    let mut c: Vec<usize> = (0..40).map(|i| i % 3).collect();
    c[35] = 9; // in the last rank's rows
    let xs = MatRef::from_slice(&x[..40 * 6], 40, 6);
    let errors: Vec<TrainError> = grouped(
        2,
        4,
        || trainer(1),
        |mut t| t.step(xs, Targets::Classes(&c)).unwrap_err(),
    );
    assert!(
        matches!(errors[0], TrainError::Step(StepError::Peer { rank: 1 })),
        "{:?}",
        errors[0]
    );
    assert!(
        matches!(errors[1], TrainError::Step(StepError::Loss(_))),
        "{:?}",
        errors[1]
    );
    assert!(errors[0].to_string().contains("rank 1"), "{}", errors[0]);
    // The failing row is named by its place in the whole minibatch.
    assert!(errors[1].to_string().contains("row 35"), "{}", errors[1]);
}

#[test]
fn a_custom_loss_trains_alike_on_any_number_of_ranks() {
    let d = data();
    let x = d.x_values();
    let xs = MatRef::from_slice(&x[..40 * 6], 40, 6);
    // L = mean over the whole minibatch of Σ_j h_ij² / 2.
    let step = |mut t: Trainer| {
        for _ in 0..3 {
            t.step_with(xs, |h, mut dh| {
                let mut total = 0.0;
                for i in 0..h.rows() {
                    for j in 0..h.cols() {
                        let v = h.get(i, j);
                        total += 0.5 * v * v / 40.0;
                        dh.set(i, j, v / 40.0);
                    }
                }
                total
            })
            .unwrap();
        }
        t.into_net().params().to_vec()
    };
    let mut one = trainer(1);
    one.net_mut().set_parallelism(BatchParallelism::Shards(4));
    let want = step(one);
    let got = grouped(2, 4, || trainer(1), step);
    assert!(got.iter().all(|p| p == &want));
}

/// Rank `from`'s `j`-th message to rank `to`: `j + 1` values that name all three.
fn message(from: usize, to: usize, j: usize) -> Vec<f32> {
    (0..=j)
        .map(|i| (100 * from + 10 * to + j) as f32 + i as f32 / 8.0)
        .collect()
}

#[test]
fn exchange_delivers_each_message_into_its_own_buffer_in_order() {
    // Two messages per ordered pair, of different lengths, and none from a
    // rank to itself: the default exchange (through all_to_all_v).
    let got = on_ranks(3, |c| {
        let me = c.rank();
        let others: Vec<usize> = (0..3).filter(|&q| q != me).collect();
        let out: Vec<(usize, Vec<f32>)> = others
            .iter()
            .flat_map(|&q| (0..2).map(move |j| (q, message(me, q, j))))
            .collect();
        let sends: Vec<(usize, &[f32])> = out.iter().map(|(q, v)| (*q, v.as_slice())).collect();
        let mut bufs: Vec<(usize, Vec<f32>)> = others
            .iter()
            .flat_map(|&q| (0..2).map(move |j| (q, vec![f32::NAN; j + 1])))
            .collect();
        let mut recvs: Vec<(usize, &mut [f32])> = bufs
            .iter_mut()
            .map(|(q, v)| (*q, v.as_mut_slice()))
            .collect();
        c.exchange(&sends, &mut recvs);
        (me, bufs)
    });
    for (me, bufs) in got {
        let want: Vec<(usize, Vec<f32>)> = (0..3)
            .filter(|&q| q != me)
            .flat_map(|q| (0..2).map(move |j| (q, message(q, me, j))))
            .collect();
        assert_eq!(bufs, want, "rank {me}");
    }
}

#[test]
#[should_panic(expected = "cannot exchange with rank 0")]
fn exchange_with_oneself_is_refused() {
    let c = LocalGroup::ranks(1).pop().unwrap();
    c.exchange(&[(0, &[1.0])], &mut []);
}

#[test]
fn a_rank_that_panics_releases_the_others() {
    let comms = LocalGroup::ranks(2);
    let outcomes: Vec<bool> = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    if c.rank() == 1 {
                        panic!("rank 1 fails before the collective");
                    }
                    let mut all = [0.0f32; 2];
                    c.all_gather_v(&[1.0], &mut all, &[1, 1]);
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().is_err()).collect()
    });
    assert_eq!(
        outcomes,
        [true, true],
        "both ranks end, neither waits forever"
    );
}

#[test]
fn communication_is_counted() {
    let stats = on_ranks(2, |c| {
        let g = Group::new(c);
        let mut t = trainer(1).with_group(g.clone(), 2);
        t.train_epoch(&data(), 20).unwrap();
        (g.stats(), t.net().num_params())
    });
    for (st, params) in stats {
        // Each of the 6 steps reduces every parameter tensor once: with two
        // ranks and two shards a rank sends half of each partial and half
        // of each sum (its own piece stays), at least `params` floats.
        assert!(st.bytes_sent >= 6 * params as u64 * 4, "{st:?}");
        assert!(st.calls > 0 && st.seconds >= 0.0, "{st:?}");
    }
}

#[test]
fn each_rank_holds_the_optimizer_state_of_its_slice_only() {
    let held = on_ranks(3, |c| {
        let g = Group::new(c);
        let mut t = trainer(1).with_group(g.clone(), 4);
        t.train_epoch(&data(), 20).unwrap();
        let n = t.net().num_params();
        let own = g.owned_slice(g.rank(), n);
        let opt = t.optimizer();
        let lens: Vec<usize> = opt.state().buffers.iter().map(|b| b.len()).collect();
        let narrowed = (opt.state_range(), lens);
        t.sync_optimizer();
        let widened = t.optimizer().state_range();
        (own, narrowed, widened, n)
    });
    for (own, (range, lens), widened, n) in held {
        assert_eq!(range, own);
        assert_eq!(lens, vec![own.len(); 2], "Adam's m and v over the slice");
        assert_eq!(widened, 0..n, "sync_optimizer gathers the whole state");
    }
}

#[test]
fn clipping_switched_on_after_sharded_steps_keeps_one_process_bits() {
    // An epoch with the update (and the optimizer state) sharded, then
    // clipping: every rank needs the whole state, gathered at that step.
    let run = |mut t: Trainer| {
        let d = data();
        t.train_epoch(&d, 20).unwrap();
        let mut t = t.with_clip(0.5);
        t.train_epoch(&d, 20).unwrap();
        train(t)
    };
    let want = {
        let mut t = trainer(1);
        t.net_mut().set_parallelism(BatchParallelism::Shards(4));
        run(t)
    };
    let got = grouped(2, 4, || trainer(1), run);
    assert!(got.iter().all(|r| r == &want));
}

#[test]
fn ranks_with_different_exchange_settings_fail_alike_instead_of_hanging() {
    let outcomes = std::thread::scope(|s| {
        let hs: Vec<_> = LocalGroup::ranks(2)
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    let overlap = c.rank() == 0;
                    trainer(1).with_group(Group::new(c).with_overlap(overlap), 2);
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                let e = h.join().expect_err("the settings differ");
                e.downcast_ref::<String>().cloned().unwrap_or_default()
            })
            .collect::<Vec<String>>()
    });
    for m in outcomes {
        assert!(m.contains("every rank needs the same settings"), "{m}");
    }
}

#[test]
fn the_shard_count_changed_after_joining_keeps_the_group_working() {
    // set_parallelism keeps the group's gradient exchange (opening a new
    // one is a collective a single call cannot make).
    let want = alone(8, 1);
    let got = on_ranks(2, |c| {
        let mut t = trainer(1).with_group(Group::new(c), 4);
        t.net_mut().set_parallelism(BatchParallelism::Shards(8));
        train(t)
    });
    assert!(got.iter().all(|r| r == &want));
}

#[cfg(feature = "model-files")]
#[test]
fn a_checkpoint_of_a_rank_holding_its_slice_only_is_refused() {
    let msgs = on_ranks(2, |c| {
        let mut t = trainer(1).with_group(Group::new(c), 2);
        t.train_epoch(&data(), 20).unwrap();
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            backprop::io::checkpoint_to_safetensors(&t)
        }))
        .expect_err("the state is a slice");
        t.sync_optimizer();
        let st = backprop::io::checkpoint_to_safetensors(&t);
        assert!(st.tensors.contains_key("optimizer.exp_avg"));
        refused
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    });
    for m in msgs {
        assert!(m.contains("call Trainer::sync_optimizer"), "{m}");
    }
}
