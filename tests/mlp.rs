//! The network's forward and backward passes against the naive f64 reference
//! (which follows the course's formulas sample by sample), the reference
//! against central finite differences, BatchNorm/LayerNorm semantics, and
//! thread-count invariance of the gradients.

use backprop::gemm::GemmOptions;
use backprop::matrix::MatRef;
use backprop::nn::{
    Activation, BatchParallelism, BuildError, Init, Layer, Loss, Mlp, MlpBuilder, StepError,
    Targets,
};
use backprop::reference::mlp_loss_and_grads;
use backprop::Threads;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

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

/// A batch, its targets for `loss`, and the same in f64.
struct Data {
    x: Vec<f32>,
    values: Vec<f32>,
    signs: Vec<f32>,
    classes: Vec<usize>,
}

fn data(rng: &mut StdRng, batch: usize, input: usize, out: usize) -> Data {
    Data {
        x: (0..batch * input)
            .map(|_| rng.random_range(-1.5..1.5))
            .collect(),
        values: (0..batch * out)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect(),
        signs: (0..batch)
            .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect(),
        classes: (0..batch).map(|_| rng.random_range(0..out)).collect(),
    }
}

fn targets<'a>(loss: Loss, d: &'a Data, batch: usize, out: usize) -> Targets<'a> {
    match loss {
        Loss::Mse => Targets::Values(MatRef::from_slice(&d.values, batch, out)),
        Loss::Logistic => Targets::Signs(&d.signs),
        Loss::SoftmaxCrossEntropy => Targets::Classes(&d.classes),
    }
}

fn rows_f64(x: &[f32], width: usize) -> Vec<Vec<f64>> {
    x.chunks(width)
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect()
}

/// Networks covering every layer kind; `act` is used throughout.
fn nets(act: Activation, out: usize) -> Vec<(usize, Vec<Layer>)> {
    let d = |units| Layer::Dense {
        units,
        init: Init::Xavier,
        bias: true,
    };
    // Without bias: a fused δ step into a layer with no ∂b.
    let nb = |units| Layer::Dense {
        units,
        init: Init::Xavier,
        bias: false,
    };
    let bn = Layer::BatchNorm { affine: true };
    let ln = Layer::LayerNorm { affine: true };
    vec![
        (
            4,
            vec![
                nb(6),
                Layer::Act(act),
                d(5),
                Layer::Act(act),
                nb(4),
                Layer::Act(act),
                d(out),
            ],
        ),
        (
            5,
            vec![
                d(6),
                Layer::BatchNorm { affine: false },
                Layer::Act(act),
                nb(5),
                Layer::LayerNorm { affine: false },
                Layer::Act(act),
                nb(out),
            ],
        ),
        (3, vec![d(out)]),
        (
            4,
            vec![d(6), Layer::Act(act), d(5), Layer::Act(act), d(out)],
        ),
        (5, vec![d(6), bn.clone(), Layer::Act(act), d(out)]),
        (5, vec![d(7), ln.clone(), Layer::Act(act), d(out)]),
        (
            4,
            vec![
                d(6),
                Layer::Act(act),
                Layer::Residual(vec![d(6), Layer::Act(act), d(6)]),
                Layer::Act(act),
                d(out),
            ],
        ),
        (
            6,
            vec![
                Layer::Residual(vec![d(6), Layer::Act(act)]),
                ln.clone(),
                d(out),
            ],
        ),
        (
            3,
            vec![
                d(5),
                Layer::Act(act),
                Layer::Act(Activation::Tanh),
                bn.clone(),
                d(out),
            ],
        ),
        // Norms and an activation as the first layers (no ∂L/∂x to pass on).
        (
            4,
            vec![ln.clone(), d(5), Layer::Act(act), bn.clone(), d(out)],
        ),
        (
            4,
            vec![bn.clone(), Layer::Act(act), d(5), Layer::Act(act), d(out)],
        ),
    ]
}

/// Checks the network's last loss `value` and gradients against the f64
/// reference on the same parameters and batch: the loss to 1e-5 relative, each
/// gradient to 1e-3 of itself plus 1e-4 of the largest (f32 through a few layers).
#[track_caller]
fn assert_matches_reference(
    net: &Mlp,
    value: f32,
    input: usize,
    layers: &[Layer],
    loss: Loss,
    d: &Data,
    out: usize,
) {
    let params: Vec<f64> = net.params().iter().map(|&v| v as f64).collect();
    let (want, want_g) = mlp_loss_and_grads(
        input,
        layers,
        loss,
        &params,
        &rows_f64(&d.x, input),
        targets(loss, d, d.classes.len(), out),
    );
    assert!(
        (value as f64 - want).abs() <= 1e-5 * want.abs().max(1e-3),
        "{loss:?} {layers:?}: loss {value} vs {want}"
    );
    let scale = want_g.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    for (k, (&g, &w)) in net.grads().iter().zip(&want_g).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-3 * w.abs() + 1e-4 * scale,
            "{loss:?} {layers:?}: grad[{k}] = {g} vs reference {w}"
        );
    }
}

fn build(input: usize, layers: &[Layer], loss: Loss, seed: u64) -> Mlp {
    let mut b = MlpBuilder::new(input).loss(loss);
    for l in layers {
        b = b.layer(l.clone());
    }
    b.build(seed).expect("valid network")
}

#[test]
fn gradients_match_the_naive_reference() {
    let mut rng = StdRng::seed_from_u64(21);
    let mut cases = 0;
    for loss in [Loss::Mse, Loss::Logistic, Loss::SoftmaxCrossEntropy] {
        let out = if loss == Loss::Logistic { 1 } else { 3 };
        for act in ACTS {
            for (input, layers) in nets(act, out) {
                let batch = 6;
                let mut net = build(input, &layers, loss, rng.random());
                // Non-trivial norm parameters.
                for p in net.params_mut().iter_mut() {
                    if *p == 1.0 {
                        *p = rng.random_range(0.5..1.5);
                    }
                }
                let d = data(&mut rng, batch, input, out);
                let value = net
                    .forward_backward(
                        MatRef::from_slice(&d.x, batch, input),
                        targets(loss, &d, batch, out),
                    )
                    .unwrap();
                assert_matches_reference(&net, value, input, &layers, loss, &d, out);
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 3 * ACTS.len() * 11);
}

/// The reference's backward is the derivative of its forward: central
/// differences in f64 on every parameter, for every layer kind and loss.
#[test]
fn reference_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(5);
    for loss in [Loss::Mse, Loss::Logistic, Loss::SoftmaxCrossEntropy] {
        let out = if loss == Loss::Logistic { 1 } else { 3 };
        // Smooth activations: no kink for a difference to straddle.
        for act in [
            Activation::Tanh,
            Activation::Sigmoid,
            Activation::Gelu,
            Activation::Softplus,
        ] {
            for (input, layers) in nets(act, out) {
                let batch = 5;
                let net = build(input, &layers, loss, rng.random());
                let mut params: Vec<f64> = net.params().iter().map(|&v| v as f64).collect();
                let d = data(&mut rng, batch, input, out);
                let (x, t) = (rows_f64(&d.x, input), targets(loss, &d, batch, out));
                let (_, g) = mlp_loss_and_grads(input, &layers, loss, &params, &x, t);
                let h = 1e-6;
                for k in 0..params.len() {
                    let p = params[k];
                    params[k] = p + h;
                    let (up, _) = mlp_loss_and_grads(input, &layers, loss, &params, &x, t);
                    params[k] = p - h;
                    let (down, _) = mlp_loss_and_grads(input, &layers, loss, &params, &x, t);
                    params[k] = p;
                    let fd = (up - down) / (2.0 * h);
                    assert!(
                        (fd - g[k]).abs() <= 1e-6 + 1e-5 * g[k].abs(),
                        "{loss:?} {act:?} {layers:?}: ∂/∂p[{k}] backprop {} vs fd {fd}",
                        g[k]
                    );
                }
            }
        }
    }
}

#[test]
fn batch_norm_running_stats_move_in_training_and_serve_evaluation() {
    let mut net = MlpBuilder::new(2).batch_norm().build(0).unwrap();
    assert_eq!(net.buffers(), &[0.0, 0.0, 1.0, 1.0]);
    // Feature 0: [1, 3] → mean 2, biased var 1, unbiased var 2. Feature 1: [0, 0].
    let x = [1.0, 0.0, 3.0, 0.0];
    let y = net.forward(MatRef::from_slice(&x, 2, 2)).unwrap().to_vec();
    let s = 1.0 / (1.0f32 + 1e-5).sqrt();
    assert!(
        (y[0] + s).abs() < 1e-6 && (y[2] - s).abs() < 1e-6,
        "normalised with the biased variance: {y:?}"
    );
    let b = net.buffers().to_vec();
    assert!((b[0] - 0.2).abs() < 1e-7, "running mean ← 0.9·0 + 0.1·2");
    assert!(
        (b[2] - (0.9 + 0.1 * 2.0)).abs() < 1e-6,
        "running var ← 0.9·1 + 0.1·2 (unbiased)"
    );
    assert!(
        (b[3] - 0.9).abs() < 1e-7,
        "a constant feature has variance 0"
    );
    // Evaluation uses the running averages and does not move them.
    net.set_training(false);
    let y = net
        .forward(MatRef::from_slice(&[0.2, 5.0], 1, 2))
        .unwrap()
        .to_vec();
    assert!(
        y[0].abs() < 1e-6,
        "(0.2 − 0.2)/√(1.1 + ε) = 0, got {}",
        y[0]
    );
    assert!((y[1] - 5.0 / (0.9f32 + 1e-5).sqrt()).abs() < 1e-5);
    assert_eq!(net.buffers(), &b[..]);
    // A batch of one is fine in evaluation and an error in training.
    net.set_training(true);
    assert_eq!(
        net.forward(MatRef::from_slice(&[0.2, 5.0], 1, 2))
            .unwrap_err(),
        StepError::BatchOfOne
    );
}

#[test]
fn layer_norm_output_of_a_sample_ignores_the_rest_of_the_batch() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut net = MlpBuilder::new(4)
        .dense(6)
        .layer_norm()
        .act(Activation::Tanh)
        .dense(3)
        .build(9)
        .unwrap();
    let x: Vec<f32> = (0..5 * 4).map(|_| rng.random_range(-2.0..2.0)).collect();
    let all = net.forward(MatRef::from_slice(&x, 5, 4)).unwrap().to_vec();
    for i in 0..5 {
        let one = net
            .forward(MatRef::from_slice(&x[i * 4..i * 4 + 4], 1, 4))
            .unwrap()
            .to_vec();
        assert_eq!(one, all[i * 3..i * 3 + 3].to_vec(), "sample {i}");
    }
    net.set_training(false);
    let eval = net.forward(MatRef::from_slice(&x, 5, 4)).unwrap().to_vec();
    assert_eq!(
        eval, all,
        "LayerNorm is the same in training and evaluation"
    );
}

#[test]
fn gradients_are_bitwise_identical_for_1_2_3_threads() {
    let mut rng = StdRng::seed_from_u64(8);
    let (input, batch) = (96, 256);
    let d = data(&mut rng, batch, input, 10);
    let mut results = Vec::new();
    for threads in [1, 2, 3] {
        let mut net = MlpBuilder::new(input)
            .dense(160)
            .act(Activation::Relu)
            .dense(130)
            .batch_norm()
            .act(Activation::Gelu)
            .residual(|r| r.dense(130).act(Activation::Tanh))
            .dense(10)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(3)
            .unwrap();
        net.set_gemm_options(GemmOptions {
            threads: Threads::Fixed(threads),
            ..Default::default()
        });
        let l = net
            .forward_backward(
                MatRef::from_slice(&d.x, batch, input),
                Targets::Classes(&d.classes),
            )
            .unwrap();
        let bits: Vec<u32> = net.grads().iter().map(|g| g.to_bits()).collect();
        results.push((l.to_bits(), bits));
    }
    assert!(results[0] == results[1], "2 threads differ from 1");
    assert!(results[0] == results[2], "3 threads differ from 1");
}

#[test]
fn build_errors_are_reported() {
    assert_eq!(MlpBuilder::new(3).build(0).unwrap_err(), BuildError::Empty);
    assert_eq!(
        MlpBuilder::new(3).dense(0).build(0).unwrap_err(),
        BuildError::ZeroWidth { layer: 0 }
    );
    assert_eq!(
        MlpBuilder::new(3)
            .dense(4)
            .residual(|r| r.dense(5))
            .build(0)
            .unwrap_err(),
        BuildError::ResidualWidth {
            layer: 1,
            width: 4,
            got: 5
        }
    );
    assert_eq!(
        MlpBuilder::new(3)
            .dense(2)
            .loss(Loss::Logistic)
            .build(0)
            .unwrap_err(),
        BuildError::OutputForLoss {
            loss: Loss::Logistic,
            width: 2
        }
    );
    let mut net = MlpBuilder::new(3).dense(2).build(0).unwrap();
    assert_eq!(
        net.forward(MatRef::from_slice(&[0.0; 4], 2, 2))
            .unwrap_err(),
        StepError::InputWidth {
            expected: 3,
            got: 2
        }
    );
    assert_eq!(
        net.forward_backward(MatRef::from_slice(&[0.0; 3], 1, 3), Targets::Classes(&[0]))
            .unwrap_err(),
        StepError::TargetKind { loss: Loss::Mse }
    );
}

#[test]
fn he_initialization_has_the_stated_variance() {
    let net = MlpBuilder::new(400).dense(300).build(1).unwrap();
    let w = &net.params()[..400 * 300];
    let var = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64;
    assert!(
        (var / (2.0 / 400.0) - 1.0).abs() < 0.02,
        "Var[W] = {var}, He says 2/fan_in = 0.005"
    );
    assert!(
        net.params()[400 * 300..].iter().all(|&b| b == 0.0),
        "biases start at zero"
    );
}

/// Shard mode: per-shard gradients summed in shard order equal the reference,
/// and are bitwise identical for 1, 2, 3 threads (shards fixed at 4; one of
/// the batches is smaller than the shard count, so empty shards occur).
#[test]
fn shard_mode_matches_the_reference_and_ignores_the_thread_count() {
    let mut rng = StdRng::seed_from_u64(77);
    for (input, layers) in nets(Activation::Tanh, 3) {
        for batch in [3, 9] {
            let d = data(&mut rng, batch, input, 3);
            let loss = Loss::SoftmaxCrossEntropy;
            let mut results = Vec::new();
            for threads in [1, 2, 3] {
                let mut net = build(input, &layers, loss, 5);
                net.set_parallelism(BatchParallelism::Shards(4));
                net.set_gemm_options(GemmOptions {
                    threads: Threads::Fixed(threads),
                    ..Default::default()
                });
                let v = net
                    .forward_backward(
                        MatRef::from_slice(&d.x, batch, input),
                        targets(loss, &d, batch, 3),
                    )
                    .unwrap();
                if threads == 1 {
                    assert_matches_reference(&net, v, input, &layers, loss, &d, 3);
                }
                results.push(net.grads().iter().map(|g| g.to_bits()).collect::<Vec<_>>());
            }
            assert!(
                results[0] == results[1] && results[0] == results[2],
                "{layers:?}: threads change the bits"
            );
        }
    }
}

/// Sizes from input (a data file's label range, an IDX header, a saved
/// architecture) reach the builder: every size product is checked against
/// `MAX_ELEMENTS` before anything is allocated (issue 11, items 3 to 5).
#[test]
fn sizes_from_input_are_checked_before_allocating() {
    // 65535 × 65535-pixel images into a 512-wide layer: 2.2e12 weights.
    let pixels = 65535usize * 65535;
    assert_eq!(
        MlpBuilder::new(pixels).dense(512).build(0).unwrap_err(),
        BuildError::TooLarge { layer: 0 }
    );
    // (2³² − 1)² inputs: the product with any width overflows usize.
    let huge = (u32::MAX as usize) * (u32::MAX as usize);
    assert_eq!(
        MlpBuilder::new(huge).dense(512).build(0).unwrap_err(),
        BuildError::TooLarge { layer: 0 }
    );
    // 2⁵⁵-pixel images: fan_in × fan_out wraps in 64 bits without the check.
    assert_eq!(
        MlpBuilder::new(1 << 55)
            .dense(1 << 10)
            .build(0)
            .unwrap_err(),
        BuildError::TooLarge { layer: 0 }
    );
    // One huge class label sizes the output layer (1e9 classes after 512).
    let e = MlpBuilder::new(4)
        .dense(512)
        .act(Activation::Relu)
        .dense(1_000_000_000)
        .loss(Loss::SoftmaxCrossEntropy)
        .build(0)
        .unwrap_err();
    // (Positions count the network's ops: the ReLU runs fused into layer 0.)
    assert_eq!(e, BuildError::TooLarge { layer: 1 });
    assert!(e.to_string().contains("layer 1"), "{e}");
    // A norm over an absurd width, and the loader's path (from_parts).
    assert_eq!(
        MlpBuilder::new(usize::MAX)
            .batch_norm()
            .dense(1)
            .build(0)
            .unwrap_err(),
        BuildError::TooLarge { layer: 0 }
    );
    assert_eq!(
        Mlp::from_parts(
            1 << 40,
            &[Layer::Dense {
                units: 1 << 40,
                init: Init::He,
                bias: true,
            }],
            Loss::Mse,
            vec![],
            vec![]
        )
        .unwrap_err(),
        BuildError::TooLarge { layer: 0 }
    );
}

/// A batch whose activation workspace (`batch × width`) would exceed the cap
/// is a typed error, not an abort.
#[test]
fn batch_workspaces_are_checked_before_allocating() {
    use backprop::nn::MAX_ELEMENTS;
    // A 2²⁰-wide layer fits; 2¹² rows of it would need 2³² values. The
    // input is a zero-stride view, so the test itself allocates little.
    let mut net = MlpBuilder::new(1).dense(1 << 20).build(0).unwrap();
    let rows = MAX_ELEMENTS / (1 << 20) * 2;
    let one = [0.5f32];
    let x = MatRef::from_strided(&one, rows, 1, 0, 1);
    let e = net.forward(x).unwrap_err();
    assert_eq!(e, StepError::TooLarge { batch: rows });
    assert!(e.to_string().contains("use a smaller batch"), "{e}");
    // The network still works at a batch that fits.
    assert!(net.forward(MatRef::from_slice(&[0.5, -0.5], 2, 1)).is_ok());
}

/// `Mlp::evaluate` counts correct predictions by the loss's own inference
/// rule: a NaN logit wins the argmax (as `loss::argmax_rows` says), so a row
/// whose class-2 score is NaN predicts class 2.
#[test]
fn evaluate_uses_the_losss_argmax_rule_with_nan() {
    let mut net = MlpBuilder::new(2)
        .dense(3)
        .loss(Loss::SoftmaxCrossEntropy)
        .build(4)
        .unwrap();
    // W is 2 × 3 row-major: column 2 (the weights into output 2) becomes NaN.
    let w = net.dense_layers()[0].weight.clone();
    net.params_mut()[w.start + 2] = f32::NAN;
    net.params_mut()[w.start + 5] = f32::NAN;
    let x = [0.5f32, -1.0, 2.0, 0.25, -3.0, 1.0];
    let xv = MatRef::from_slice(&x, 3, 2);
    let h = net.forward(xv).unwrap().to_vec();
    let mut pred = [0usize; 3];
    backprop::nn::loss::argmax_rows(MatRef::from_slice(&h, 3, 3), &mut pred);
    assert_eq!(pred, [2, 2, 2]);
    let e = net.evaluate(xv, Targets::Classes(&[2, 2, 0])).unwrap();
    assert_eq!(e.correct, Some(2));
    assert!(e.loss.is_nan());
}

/// A strided input (a transposed view) trains as its contiguous copy does
/// when the first layer is dense: the dense layer reads `x` through its
/// strides on the way forward and in `∂W = Xᵀ·δ`.
#[test]
fn forward_backward_takes_a_strided_input_into_a_dense_first_layer() {
    let mut rng = StdRng::seed_from_u64(8);
    // xt is 4 × 3; its transpose is the 3 × 4 batch.
    let xt: Vec<f32> = (0..12).map(|_| rng.random_range(-1.0..1.0)).collect();
    let strided = MatRef::from_slice(&xt, 4, 3).t();
    let copy: Vec<f32> = (0..3)
        .flat_map(|i| (0..4).map(move |j| (i, j)))
        .map(|(i, j)| xt[j * 3 + i])
        .collect();
    let classes = [0usize, 2, 1];
    let run = |x: MatRef<'_>| {
        let mut net = MlpBuilder::new(4)
            .dense(5)
            .act(Activation::Tanh)
            .layer_norm()
            .dense(3)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(2)
            .unwrap();
        let v = net.forward_backward(x, Targets::Classes(&classes)).unwrap();
        (v, net.grads().to_vec())
    };
    let (v1, g1) = run(strided);
    let (v2, g2) = run(MatRef::from_slice(&copy, 3, 4));
    assert_eq!(v1, v2);
    for (a, b) in g1.iter().zip(&g2) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
    }
}

/// Any first layer takes a strided input (issue 14, item 3): a network
/// that starts with a norm, an activation or a residual block copies it to a
/// row-major buffer first, so forward, forward + backward and shared
/// inference give bitwise what the contiguous copy gives.
#[test]
fn every_first_layer_takes_a_strided_input() {
    let mut rng = StdRng::seed_from_u64(9);
    let xt: Vec<f32> = (0..12).map(|_| rng.random_range(-1.0..1.0)).collect();
    let strided = MatRef::from_slice(&xt, 4, 3).t();
    let copy = strided.to_vec();
    let contiguous = MatRef::from_slice(&copy, 3, 4);
    let classes = [0usize, 2, 1];
    let firsts: [fn(MlpBuilder) -> MlpBuilder; 4] = [
        |b| b.layer_norm(),
        |b| b.batch_norm(),
        |b| b.act(Activation::Gelu),
        |b| b.residual(|r| r.layer_norm().dense(4)),
    ];
    for (k, first) in firsts.into_iter().enumerate() {
        let build = || {
            first(MlpBuilder::new(4))
                .dense(5)
                .act(Activation::Tanh)
                .dense(3)
                .loss(Loss::SoftmaxCrossEntropy)
                .build(2)
                .unwrap()
        };
        let run = |x: MatRef<'_>| {
            let mut net = build();
            let v = net.forward_backward(x, Targets::Classes(&classes)).unwrap();
            let h = net.forward(x).unwrap().to_vec();
            net.set_training(false);
            let mut ws = backprop::nn::Inference::default();
            let shared = net.infer(x, &mut ws).unwrap().to_vec();
            (v.to_bits(), bits(net.grads()), bits(&h), bits(&shared))
        };
        assert_eq!(run(strided), run(contiguous), "first layer {k}");
    }
}

/// Debug and Display summarise; they never print the arrays (a 784-512-10
/// network's derived Debug was megabytes long).
#[test]
fn debug_and_display_are_summaries() {
    let net = MlpBuilder::new(784)
        .dense(512)
        .act(Activation::Relu)
        .residual(|r| r.layer_norm().dense(512))
        .dense(10)
        .loss(Loss::SoftmaxCrossEntropy)
        .build(0)
        .unwrap();
    let debug = format!("{net:?}");
    assert!(debug.len() < 300, "{debug}");
    assert!(
        debug.contains(&format!("params: {}", net.num_params())),
        "{debug}"
    );
    let text = net.to_string();
    assert!(text.len() < 1000, "{text}");
    assert!(
        text.contains("0  dense 512 (He)  weight [512, 784], bias [512]"),
        "{text}"
    );
    assert!(
        text.contains("    2.inner.1  dense 512 (He)  weight [512, 512], bias [512]"),
        "{text}"
    );
    assert!(
        text.contains("2.inner.0  layer_norm  weight [512], bias [512]"),
        "{text}"
    );
    // The forms without bias or affine say so.
    let net = MlpBuilder::new(3)
        .dense_without_bias(4)
        .batch_norm_without_affine()
        .layer_norm_without_affine()
        .build(0)
        .unwrap();
    let text = net.to_string();
    assert!(
        text.contains("0  dense 4 (He, no bias)  weight [4, 3]\n"),
        "{text}"
    );
    assert!(
        text.contains("1  batch_norm (no affine)  running_mean [4], running_var [4]\n"),
        "{text}"
    );
    assert!(text.contains("2  layer_norm (no affine)\n"), "{text}");
}

/// The training pass flushes subnormal values to zero on every thread that
/// works on it: with inputs near 1e-20 and δ near 1e-21, every product of
/// ∂W = Xᵀ·δ is subnormal, so ∂W is exactly ±0 (x86-64), whatever the
/// threads or shards, while ∂b = Σ δ stays a normal number.
#[test]
fn the_training_pass_flushes_subnormals_on_every_thread() {
    let mut rng = StdRng::seed_from_u64(21);
    let (input, batch, out) = (64, 256, 64);
    let x: Vec<f32> = (0..batch * input)
        .map(|_| 1e-20 * rng.random_range(0.5f32..1.0))
        .collect();
    let y = vec![0.0f32; batch * out];
    for (threads, shards) in [(1, None), (2, None), (2, Some(2)), (2, Some(3))] {
        let mut net = MlpBuilder::new(input)
            .dense(out)
            .loss(Loss::Mse)
            .build(4)
            .unwrap();
        net.set_gemm_options(GemmOptions {
            threads: Threads::Fixed(threads),
            ..Default::default()
        });
        if let Some(s) = shards {
            net.set_parallelism(BatchParallelism::Shards(s));
        }
        // No bias: the outputs, and with them δ, stay near 1e-20.
        net.params_mut()[input * out..].fill(0.0);
        net.forward_backward(
            MatRef::from_slice(&x, batch, input),
            Targets::Values(MatRef::from_slice(&y, batch, out)),
        )
        .unwrap();
        let (dw, db) = net.grads().split_at(input * out);
        let what = format!("{threads} threads, shards {shards:?}");
        assert!(
            db.iter().all(|&g| g.abs() > 1e-27 && g.abs() < 1e-18),
            "{what}: ∂b {db:?}"
        );
        if cfg!(target_arch = "x86_64") {
            let kept = dw.iter().filter(|&&g| g != 0.0).count();
            assert_eq!(kept, 0, "{what}: {kept} nonzero ∂W entries");
        }
    }
}
