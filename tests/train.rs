//! The trainer learns what it should (seeded, with stated loss targets: these
//! are correctness tests, not timing tests), is bitwise reproducible across
//! thread counts, and stops cleanly on divergence.

use backprop::gemm::GemmOptions;
use backprop::matrix::MatRef;
use backprop::nn::{Activation, BatchParallelism, Init, Loss, MlpBuilder, Targets};
use backprop::optim::{Adam, AdamConfig, Schedule, Sgd, SgdConfig, WeightDecay};
use backprop::train::{DataError, Dataset, TrainError, Trainer};
use backprop::Threads;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn learns_xor_with_logistic_loss() {
    let x = vec![0., 0., 0., 1., 1., 0., 1., 1.];
    let data = Dataset::new(x, 4, 2, Targets::Signs(&[-1., 1., 1., -1.])).unwrap();
    let net = MlpBuilder::new(2)
        .dense(8)
        .act(Activation::Tanh)
        .dense(1)
        .loss(Loss::Logistic)
        .build(1)
        .unwrap();
    let opt = Adam::new(net.num_params(), AdamConfig::default());
    let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(0.05), 7);
    for _ in 0..400 {
        t.train_epoch(&data, 4).unwrap();
    }
    let e = t.evaluate(&data, 4).unwrap();
    assert_eq!(e.correct, Some(4));
    assert!(e.loss < 0.05, "XOR loss {}", e.loss);
}

#[test]
fn fits_a_nonlinear_regression() {
    let mut rng = StdRng::seed_from_u64(3);
    let n = 256;
    let xs: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let ys: Vec<f32> = xs.iter().map(|x| (3.0 * x).sin()).collect();
    let data = Dataset::new(xs, n, 1, Targets::Values(MatRef::from_slice(&ys, n, 1))).unwrap();
    let net = MlpBuilder::new(1)
        .init(Init::Xavier)
        .dense(32)
        .act(Activation::Tanh)
        .dense(32)
        .act(Activation::Tanh)
        .dense(1)
        .build(2)
        .unwrap();
    let first = {
        let mut probe = net.clone();
        backprop::train::trainer::evaluate(&mut probe, &data, 64)
            .unwrap()
            .loss
    };
    let opt = Adam::new(net.num_params(), AdamConfig::default());
    let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(1e-2), 5);
    for _ in 0..300 {
        t.train_epoch(&data, 32).unwrap();
    }
    let e = t.evaluate(&data, 64).unwrap();
    // ½·mean squared error; sin(3x) has ½·Var ≈ 0.2 to start from.
    assert!(
        e.loss < 2e-3,
        "regression loss {} (started at {first})",
        e.loss
    );
}

/// Three interleaved spirals: needs the hidden layers, BatchNorm and momentum.
#[test]
fn classifies_spirals_with_batch_norm_and_momentum() {
    let mut rng = StdRng::seed_from_u64(11);
    let (per, classes) = (200, 3);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for c in 0..classes {
        for i in 0..per {
            let r = i as f32 / per as f32;
            let a = c as f32 * 2.0 * std::f32::consts::PI / classes as f32
                + 4.0 * r
                + rng.random_range(-0.1..0.1);
            x.push(r * a.cos());
            x.push(r * a.sin());
            y.push(c);
        }
    }
    let data = Dataset::new(x, per * classes, 2, Targets::Classes(&y)).unwrap();
    let net = MlpBuilder::new(2)
        .dense(64)
        .batch_norm()
        .act(Activation::Relu)
        .dense(64)
        .batch_norm()
        .act(Activation::Relu)
        .dense(3)
        .loss(Loss::SoftmaxCrossEntropy)
        .build(4)
        .unwrap();
    let cfg = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: WeightDecay::L2(1e-4),
    };
    let opt = Sgd::new(net.num_params(), cfg);
    let epochs = 150;
    let steps = epochs * (per * classes).div_ceil(32) as u64;
    let schedule = Schedule::warmup(50, 0.1, Schedule::cosine(0.1, 1e-3, steps));
    let mut t = Trainer::new(net, Box::new(opt), schedule, 9);
    for _ in 0..epochs {
        t.train_epoch(&data, 32).unwrap();
    }
    let e = t.evaluate(&data, 128).unwrap();
    assert!(
        e.accuracy().unwrap() > 0.97,
        "spiral accuracy {:?}, loss {}",
        e.accuracy(),
        e.loss
    );
}

#[test]
fn training_is_bitwise_identical_for_1_2_3_threads() {
    let mut rng = StdRng::seed_from_u64(1);
    let (n, d) = (600, 40);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<usize> = (0..n)
        .map(|i| (x[i * d] > 0.0) as usize + (x[i * d + 1] > 0.0) as usize)
        .collect();
    let data = Dataset::new(x, n, d, Targets::Classes(&y)).unwrap();
    let mut finals = Vec::new();
    for (threads, mode) in [1, 2, 3].into_iter().flat_map(|t| {
        [
            (t, BatchParallelism::SplitGemm),
            (t, BatchParallelism::Shards(4)),
        ]
    }) {
        let mut net = MlpBuilder::new(d)
            .dense(200)
            .act(Activation::Relu)
            .dense(150)
            .layer_norm()
            .act(Activation::Gelu)
            .dense(3)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(6)
            .unwrap();
        net.set_gemm_options(GemmOptions {
            threads: Threads::Fixed(threads),
            ..Default::default()
        });
        net.set_parallelism(mode);
        let opt = Adam::new(net.num_params(), AdamConfig::adamw(0.01));
        let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(1e-3), 2).with_clip(1.0);
        for _ in 0..2 {
            t.train_epoch(&data, 128).unwrap();
        }
        finals.push(
            t.net()
                .params()
                .iter()
                .map(|p| p.to_bits())
                .collect::<Vec<_>>(),
        );
    }
    // finals: [1t split, 1t shards, 2t split, 2t shards, 3t split, 3t shards]
    for t in [2, 4] {
        assert!(
            finals[0] == finals[t],
            "split GEMMs: {} threads train differently from 1",
            t / 2 + 1
        );
        assert!(
            finals[1] == finals[t + 1],
            "shards: {} threads train differently from 1",
            t / 2 + 1
        );
    }
}

#[test]
fn divergence_stops_before_the_bad_update() {
    let mut rng = StdRng::seed_from_u64(2);
    let x: Vec<f32> = (0..64 * 4).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<f32> = (0..64).map(|_| rng.random_range(-1.0..1.0)).collect();
    let data = Dataset::new(x, 64, 4, Targets::Values(MatRef::from_slice(&y, 64, 1))).unwrap();
    let net = MlpBuilder::new(4)
        .dense(16)
        .act(Activation::Relu)
        .dense(1)
        .build(1)
        .unwrap();
    let opt = Sgd::new(net.num_params(), SgdConfig::default());
    let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(1e6), 3);
    // Step by step: on divergence, the failing step must not have updated.
    let mut buf = backprop::train::Batch::default();
    let (xv, t_all) = data.slice(0, 64, &mut buf);
    let err = loop {
        let before = t.net().params().to_vec();
        match t.step(xv, t_all) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(
                    t.net().params(),
                    &before[..],
                    "the diverged step updated the parameters"
                );
                break e;
            }
        }
    };
    let TrainError::Diverged { step, loss } = err else {
        panic!("expected divergence, got {err:?}")
    };
    assert!(!loss.is_finite());
    assert_eq!(t.steps(), step, "no update counted for the diverged step");
    assert!(err.to_string().contains("lower learning rate"));
}

/// Without clipping the gradient is still checked: here the loss is finite
/// (½·(10¹⁵)² ≈ 5·10²⁹) but ∂W = x·δ = 10³⁰·10¹⁵ overflows f32.
#[test]
fn a_non_finite_gradient_with_a_finite_loss_is_divergence() {
    let mut net = MlpBuilder::new(1).dense(1).build(0).unwrap();
    net.params_mut().copy_from_slice(&[1e-15, 0.0]);
    let opt = Sgd::new(net.num_params(), SgdConfig::default());
    let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(0.1), 3);
    let (x, y) = ([1e30f32], [0.0f32]);
    let err = t
        .step(
            backprop::matrix::MatRef::from_slice(&x, 1, 1),
            backprop::nn::Targets::Values(backprop::matrix::MatRef::from_slice(&y, 1, 1)),
        )
        .unwrap_err();
    let TrainError::Diverged { step: 0, loss } = err else {
        panic!("expected divergence at step 0, got {err:?}")
    };
    assert!(loss.is_finite(), "the loss itself is finite: {loss}");
    assert_eq!(t.net().params(), &[1e-15, 0.0], "no update was made");
    assert_eq!(t.steps(), 0);
}

#[test]
fn datasets_refuse_bad_values_naming_the_row() {
    let e = Dataset::new(
        vec![0.0, 1.0, f32::INFINITY, 2.0],
        2,
        2,
        Targets::Classes(&[0, 1]),
    )
    .unwrap_err();
    assert_eq!(
        e,
        DataError::NonFinite {
            row: 1,
            col: 0,
            what: "feature"
        }
    );
    let e = Dataset::new(vec![0.0; 4], 2, 2, Targets::Signs(&[1.0, 0.0])).unwrap_err();
    assert_eq!(e, DataError::BadSign { row: 1, value: 0.0 });
    let e = Dataset::new(vec![0.0; 4], 2, 2, Targets::Classes(&[1])).unwrap_err();
    assert_eq!(
        e,
        DataError::LabelCount {
            samples: 2,
            labels: 1
        }
    );
}

/// Byte features (MNIST's pixels, kept as bytes and converted as rows are
/// read) train bit for bit like the same values given as `f32` (issue 14,
/// item 9: a quarter of the memory, the same weights).
#[test]
fn byte_features_train_like_their_f32_values() {
    let mut rng = StdRng::seed_from_u64(21);
    let (n, d) = (90, 12);
    let bytes: Vec<u8> = (0..n * d).map(|_| rng.random()).collect();
    let classes: Vec<usize> = (0..n).map(|i| i % 4).collect();
    let as_bytes =
        Dataset::from_bytes(bytes.clone(), 255.0, n, d, Targets::Classes(&classes)).unwrap();
    let values: Vec<f32> = bytes.iter().map(|&b| b as f32 / 255.0).collect();
    let as_f32 = Dataset::new(values.clone(), n, d, Targets::Classes(&classes)).unwrap();
    assert_eq!(&as_bytes.x_values()[..], &values[..]);
    let train = |data: &Dataset| {
        let net = MlpBuilder::new(d)
            .dense(16)
            .act(Activation::Relu)
            .batch_norm()
            .dense(4)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(5)
            .unwrap();
        let opt = Sgd::new(net.num_params(), SgdConfig::default());
        let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(0.1), 8);
        for _ in 0..3 {
            t.train_epoch(data, 16).unwrap();
        }
        let e = t.evaluate(data, 25).unwrap();
        (
            t.net()
                .params()
                .iter()
                .map(|p| p.to_bits())
                .collect::<Vec<_>>(),
            e.loss.to_bits(),
        )
    };
    assert_eq!(train(&as_bytes), train(&as_f32));
    // A subset keeps the storage and the values.
    let sub = as_bytes.subset(10, 20);
    assert_eq!(&sub.x_values()[..], &values[10 * d..20 * d]);
    // Bad divisors are refused.
    for bad in [0.0, -1.0, f32::INFINITY] {
        let e = Dataset::from_bytes(vec![0; 4], bad, 2, 2, Targets::Classes(&[0, 1])).unwrap_err();
        assert_eq!(e, DataError::Divisor { value: bad });
    }
    let e = Dataset::from_bytes(vec![0; 4], f32::NAN, 2, 2, Targets::Classes(&[0, 1])).unwrap_err();
    assert!(
        e.to_string().contains("finite, positive divisor, got NaN"),
        "{e}"
    );
}
