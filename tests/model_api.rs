//! The model as users meet it: inference on a shared network from many
//! threads, the loss's prediction rule and probabilities, parameters by
//! name, and weight decay restricted to the dense weights.

use backprop::matrix::MatRef;
use backprop::nn::{Activation, Inference, Loss, Mlp, MlpBuilder, Prediction, StepError, Targets};
use backprop::optim::{Adam, AdamConfig, DecayMask, Optimizer, Sgd, SgdConfig, WeightDecay};
use backprop::rng::Rng;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::seed_from_u64(seed);
    (0..n).map(|_| (rng.uniform() * 4.0 - 2.0) as f32).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A network with every layer kind, trained a few steps so BatchNorm's
/// running statistics are not their initial values.
fn trained(loss: Loss, out: usize) -> Mlp {
    let mut net = MlpBuilder::new(5)
        .dense(16)
        .act(Activation::Gelu)
        .batch_norm()
        .residual(|b| b.dense(16).act(Activation::Tanh).layer_norm())
        .dense(out)
        .loss(loss)
        .build(11)
        .unwrap();
    let x = random(32 * 5, 1);
    let classes: Vec<usize> = (0..32).map(|i| i % out).collect();
    let signs: Vec<f32> = (0..32)
        .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
        .collect();
    let values = random(32 * out, 2);
    let mut opt = Adam::new(net.num_params(), AdamConfig::default());
    for _ in 0..3 {
        let t = match loss {
            Loss::Mse => Targets::Values(MatRef::from_slice(&values, 32, out)),
            Loss::Logistic => Targets::Signs(&signs),
            Loss::SoftmaxCrossEntropy => Targets::Classes(&classes),
        };
        net.forward_backward(MatRef::from_slice(&x, 32, 5), t)
            .unwrap();
        let (p, g) = net.params_and_grads();
        opt.step(p, g, 1e-2);
    }
    net
}

#[test]
fn many_threads_share_one_network_and_get_the_eval_forward_bits() {
    let mut net = trained(Loss::SoftmaxCrossEntropy, 4);
    let x = random(37 * 5, 3);
    let xm = MatRef::from_slice(&x, 37, 5);
    net.set_training(false);
    let want = net.forward(xm).unwrap().to_vec();
    net.set_training(true);
    let shared = &net;
    std::thread::scope(|s| {
        for t in 0..4 {
            let want = &want;
            let x = &x;
            s.spawn(move || {
                let mut ws = Inference::default();
                for round in 0..3 {
                    // Batches of several sizes through one workspace.
                    let rows = [37, 1, 20][(t + round) % 3];
                    let h = shared
                        .infer(MatRef::from_slice(&x[..rows * 5], rows, 5), &mut ws)
                        .unwrap();
                    assert_eq!(bits(&h.to_vec()), bits(&want[..rows * 4]), "thread {t}");
                }
            });
        }
    });
    // Training mode was neither used nor changed.
    assert!(net.is_training());
}

#[test]
fn one_workspace_serves_networks_of_different_shapes() {
    let a = trained(Loss::SoftmaxCrossEntropy, 4);
    let b = MlpBuilder::new(5).dense(3).build(1).unwrap();
    let x = random(6 * 5, 4);
    let xm = MatRef::from_slice(&x, 6, 5);
    let mut ws = Inference::default();
    let ha = a.infer(xm, &mut ws).unwrap().to_vec();
    let hb = b.infer(xm, &mut ws).unwrap().to_vec();
    assert_eq!(hb.len(), 6 * 3);
    assert_eq!(bits(&a.infer(xm, &mut ws).unwrap().to_vec()), bits(&ha));
    let mut fresh = Inference::default();
    assert_eq!(bits(&b.infer(xm, &mut fresh).unwrap().to_vec()), bits(&hb));
    assert!(matches!(
        a.infer(MatRef::from_slice(&x, 10, 3), &mut ws),
        Err(StepError::InputWidth {
            expected: 5,
            got: 3
        })
    ));
}

#[test]
fn predictions_follow_each_losss_rule() {
    let x = random(9 * 5, 5);
    let xm = MatRef::from_slice(&x, 9, 5);
    let mut ws = Inference::default();

    let net = trained(Loss::SoftmaxCrossEntropy, 4);
    let h = net.infer(xm, &mut ws).unwrap().to_vec();
    let Prediction::Classes(c) = net.predict(xm).unwrap() else {
        panic!("classes expected");
    };
    let p = net.predict_proba(xm).unwrap();
    assert_eq!(p.len(), 9 * 4);
    for i in 0..9 {
        let row = &h[i * 4..(i + 1) * 4];
        let best = (0..4).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        assert_eq!(c[i], best, "row {i}");
        let pr = &p[i * 4..(i + 1) * 4];
        assert!((pr.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let pbest = (0..4).fold(0, |b, j| if pr[j] > pr[b] { j } else { b });
        assert_eq!(pbest, best);
        // softmax(h)_j / softmax(h)_0 = e^{h_j − h_0}.
        for j in 1..4 {
            let ratio = f64::from(pr[j]) / f64::from(pr[0]);
            let want = f64::from(row[j] - row[0]).exp();
            assert!((ratio / want - 1.0).abs() < 1e-5, "{ratio} vs {want}");
        }
    }
    // The predictions score perfectly against themselves.
    let pred = net.predict(xm).unwrap();
    assert_eq!(
        net.loss_kind()
            .correct(MatRef::from_slice(&h, 9, 4), pred.as_targets())
            .unwrap(),
        Some(9)
    );

    let net = trained(Loss::Logistic, 1);
    let h = net.infer(xm, &mut ws).unwrap().to_vec();
    let Prediction::Signs(s) = net.predict(xm).unwrap() else {
        panic!("signs expected");
    };
    let p = net.predict_proba(xm).unwrap();
    for i in 0..9 {
        assert_eq!(s[i], if h[i] < 0.0 { -1.0 } else { 1.0 });
        let sigma = 1.0 / (1.0 + (-f64::from(h[i])).exp());
        assert!((f64::from(p[i]) - sigma).abs() < 1e-7);
        assert_eq!(p[i] >= 0.5, s[i] == 1.0);
    }

    let net = trained(Loss::Mse, 2);
    let h = net.infer(xm, &mut ws).unwrap().to_vec();
    assert_eq!(
        net.predict(xm).unwrap(),
        Prediction::Values { data: h, width: 2 }
    );
    assert!(matches!(
        net.predict_proba(xm),
        Err(StepError::NoProbabilities { loss: Loss::Mse })
    ));
}

#[test]
fn tensors_have_pytorch_names_and_point_into_the_arenas() {
    let net = trained(Loss::SoftmaxCrossEntropy, 4);
    let t = net.tensors();
    let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "0.weight",
            "0.bias",
            "2.weight",
            "2.bias",
            "2.running_mean",
            "2.running_var",
            "3.inner.0.weight",
            "3.inner.0.bias",
            "3.inner.2.weight",
            "3.inner.2.bias",
            "4.weight",
            "4.bias",
        ]
    );
    // Parameters tile the parameter arena in order; buffers the buffer arena.
    let mut at = (0, 0);
    for info in &t {
        let next = if info.trainable { &mut at.0 } else { &mut at.1 };
        assert_eq!(info.range.start, *next, "{}", info.name);
        *next = info.range.end;
        assert_eq!(info.range.len(), info.shape.iter().product::<usize>());
        assert_eq!(net.param(&info.name).unwrap().len(), info.range.len());
    }
    assert_eq!(at, (net.num_params(), net.buffers().len()));
    assert_eq!(net.param("2.running_var").unwrap(), &net.buffers()[16..32]);
    assert!(net.tensor("9.weight").is_none());
    // Dense weights: transposed, and exactly what weight_ranges lists.
    let w: Vec<_> = t
        .iter()
        .filter(|t| t.transposed)
        .map(|t| t.range.clone())
        .collect();
    assert_eq!(w, net.weight_ranges());
    assert_eq!(net.tensor("4.weight").unwrap().shape, [4, 16]);
}

/// A mask that decays the dense weights only: inside it the parameters move
/// as under decay everywhere, outside it as under no decay, bit for bit.
#[test]
fn weight_decay_can_be_restricted_to_the_dense_weights() {
    let net = trained(Loss::SoftmaxCrossEntropy, 4);
    let n = net.num_params();
    let weights = net.weight_ranges();
    let mask = DecayMask::only(weights.clone(), n).unwrap();
    let grads: Vec<Vec<f32>> = (0..4).map(|s| random(n, 10 + s)).collect();
    let run = |mut opt: Box<dyn Optimizer>| {
        let mut p = net.params().to_vec();
        for g in &grads {
            opt.step(&mut p, g, 0.05);
        }
        p
    };
    let inside = |i: usize| weights.iter().any(|r| r.contains(&i));
    for decay in [WeightDecay::L2(0.1), WeightDecay::Decoupled(0.1)] {
        let adam = |wd, mask: Option<DecayMask>| -> Box<dyn Optimizer> {
            let cfg = AdamConfig {
                weight_decay: wd,
                ..AdamConfig::default()
            };
            let opt = Adam::new(n, cfg);
            Box::new(match mask {
                Some(m) => opt.with_decay_mask(m),
                None => opt,
            })
        };
        let sgd = |wd, mask: Option<DecayMask>| -> Box<dyn Optimizer> {
            let cfg = SgdConfig {
                momentum: 0.9,
                weight_decay: wd,
                ..SgdConfig::default()
            };
            let opt = Sgd::new(n, cfg);
            Box::new(match mask {
                Some(m) => opt.with_decay_mask(m),
                None => opt,
            })
        };
        for make in [&adam as &dyn Fn(_, _) -> Box<dyn Optimizer>, &sgd] {
            let all = run(make(decay, None));
            let none = run(make(WeightDecay::None, None));
            let masked = run(make(decay, Some(mask.clone())));
            for i in 0..n {
                let want = if inside(i) { all[i] } else { none[i] };
                assert_eq!(
                    masked[i].to_bits(),
                    want.to_bits(),
                    "element {i}, {decay:?}"
                );
            }
            assert_ne!(all, none);
        }
    }
    // The mask is part of the configuration a checkpoint compares.
    let plain = Adam::new(n, AdamConfig::adamw(0.01));
    let masked = Adam::new(n, AdamConfig::adamw(0.01)).with_decay_mask(mask);
    assert_ne!(plain.config_text(), masked.config_text());
}

/// A loss given as a closure trains through the same backward pass: the
/// built-in MSE written as a custom loss gives bitwise the built-in's loss
/// and gradients, for a network whose last dense layer has a fused
/// activation below it; and the trainer steps the same way with it.
#[test]
fn a_custom_loss_runs_the_same_backward_pass() {
    use backprop::matrix::MatMut;
    use backprop::nn::loss::mse;
    use backprop::optim::Schedule;
    use backprop::train::Trainer;
    let build = || {
        MlpBuilder::new(5)
            .dense(16)
            .act(Activation::Gelu)
            .layer_norm()
            .dense(16)
            .act(Activation::Tanh)
            .dense(3)
            .loss(Loss::Mse)
            .build(4)
            .unwrap()
    };
    let x = random(12 * 5, 6);
    let y = random(12 * 3, 7);
    let xm = MatRef::from_slice(&x, 12, 5);
    let ym = MatRef::from_slice(&y, 12, 3);
    let custom = |h: MatRef<'_>, dh: MatMut<'_>| mse(h, ym, Some(dh));

    let mut a = build();
    let mut b = build();
    let la = a.forward_backward(xm, Targets::Values(ym)).unwrap();
    let lb = b.forward_backward_with(xm, custom).unwrap();
    assert_eq!(la.to_bits(), lb.to_bits());
    assert_eq!(bits(a.grads()), bits(b.grads()));

    // The buffer arrives zeroed: a loss that writes nothing gives no gradient.
    let l0 = b.forward_backward_with(xm, |_, _| 0.0).unwrap();
    assert_eq!(l0, 0.0);
    assert!(b.grads().iter().all(|&g| g == 0.0));

    let trainer = |net: Mlp| {
        let opt = Adam::new(net.num_params(), AdamConfig::default());
        Trainer::new(net, Box::new(opt), Schedule::constant(1e-2), 3)
    };
    let (mut ta, mut tb) = (trainer(build()), trainer(build()));
    for _ in 0..5 {
        let la = ta.step(xm, Targets::Values(ym)).unwrap();
        let lb = tb.step_with(xm, custom).unwrap();
        assert_eq!(la.to_bits(), lb.to_bits());
    }
    assert_eq!(bits(ta.net().params()), bits(tb.net().params()));
}

/// Dropout against the f64 reference (its masks from the same noise), as the
/// identity in evaluation, with the kept fraction 1 − p, and bitwise the
/// same for any thread count.
#[test]
fn dropout_matches_the_reference_and_is_thread_invariant() {
    use backprop::gemm::GemmOptions;
    use backprop::reference::mlp_loss_and_grads_with_noise;
    use backprop::Threads;
    let layers = |p: f32| {
        MlpBuilder::new(5)
            .dense(16)
            .act(Activation::Tanh)
            .dropout(p)
            .residual(|r| r.layer_norm().dense(16).act(Activation::Gelu).dropout(p))
            .dense(3)
            .loss(Loss::SoftmaxCrossEntropy)
    };
    let x = random(10 * 5, 31);
    let xm = MatRef::from_slice(&x, 10, 5);
    let classes: Vec<usize> = (0..10).map(|i| i % 3).collect();

    let mut net = layers(0.4).build(3).unwrap();
    net.set_noise(77, 5);
    let v = net
        .forward_backward(xm, Targets::Classes(&classes))
        .unwrap();
    let params: Vec<f64> = net.params().iter().map(|&p| f64::from(p)).collect();
    let xs: Vec<Vec<f64>> = x
        .chunks(5)
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let (rv, rg) = mlp_loss_and_grads_with_noise(
        5,
        net.layers(),
        Loss::SoftmaxCrossEntropy,
        &params,
        &xs,
        Targets::Classes(&classes),
        (77, 5),
    );
    assert!(
        (f64::from(v) - rv).abs() < 1e-5 * rv.abs().max(1.0),
        "{v} vs {rv}"
    );
    let scale = rg.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    for (i, (&g, &r)) in net.grads().iter().zip(&rg).enumerate() {
        assert!(
            (f64::from(g) - r).abs() < 1e-4 * scale,
            "grad {i}: {g} vs {r}"
        );
    }
    // A different step draws different masks.
    let (rv2, _) = mlp_loss_and_grads_with_noise(
        5,
        net.layers(),
        Loss::SoftmaxCrossEntropy,
        &params,
        &xs,
        Targets::Classes(&classes),
        (77, 6),
    );
    assert_ne!(rv, rv2);

    // Evaluation: the identity (the same parameters without dropout's effect).
    let without = layers(0.0).build(3).unwrap();
    assert_eq!(bits(net.params()), bits(without.params()));
    let mut ws = Inference::default();
    let a = net.infer(xm, &mut ws).unwrap().to_vec();
    let b = without.infer(xm, &mut ws).unwrap().to_vec();
    assert_eq!(bits(&a), bits(&b));

    // Kept fraction and scale.
    let mut wide = MlpBuilder::new(1000).dropout(0.25).build(0).unwrap();
    let ones = vec![1.0f32; 100 * 1000];
    let y = wide
        .forward(MatRef::from_slice(&ones, 100, 1000))
        .unwrap()
        .to_vec();
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
    assert!((kept - 0.75).abs() < 0.005, "{kept}");
    assert!(y.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));

    // Any thread count, either parallelism: the same bits.
    let run = |threads: usize, shards: bool| {
        let mut n = layers(0.4).build(3).unwrap();
        n.set_gemm_options(GemmOptions {
            threads: Threads::Fixed(threads),
            ..GemmOptions::default()
        });
        if shards {
            n.set_parallelism(backprop::nn::BatchParallelism::Shards(3));
        }
        n.set_noise(1, 2);
        n.forward_backward(xm, Targets::Classes(&classes)).unwrap();
        bits(n.grads())
    };
    assert_eq!(run(1, false), run(2, false));
    assert_eq!(run(1, true), run(2, true));
}
