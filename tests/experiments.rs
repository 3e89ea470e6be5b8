//! The trends the experiment report (`cargo run --release --example
//! experiments`) shows, asserted at small sizes on the same code
//! (`support/src/lab.rs`). Margins are wide: each test states the
//! value the theory predicts beside the bound it checks.
//!
//! The MNIST experiments (4 and 5) are ignored by plain `cargo test` (a fresh
//! machine has no MNIST); CI runs them with
//! `cargo test --release --test experiments -- --ignored` and
//! `BACKPROP_MNIST_DIR` pointing at the files.

use backprop::nn::Activation;
use backprop_support::lab::*;
use backprop_support::{mnist, plot};

/// Seeds for the cheap tests: each trend must hold in every one.
const SEEDS: [u64; 3] = [3, 4, 5];

#[test]
fn spread_is_mean_sample_sd_and_range_of_the_finite_values() {
    let s = Spread::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0, f64::NAN]);
    assert_eq!((s.n, s.mean, s.min, s.max), (8, 5.0, 2.0, 9.0));
    // Σ(x − 5)² = 32 over n − 1 = 7.
    assert!((s.sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12, "{s:?}");
    assert_eq!(Spread::of(&[3.0]).sd, 0.0);
    assert_eq!(Spread::of(&[f64::INFINITY]).n, 0);
    assert!(Spread::of(&[]).mean.is_nan());
}

#[test]
fn par_map_keeps_the_order_and_matches_a_serial_run() {
    let items: Vec<u64> = (0..17).collect();
    let par = par_map(&items, |&i| i * i + 1);
    assert_eq!(par, items.iter().map(|&i| i * i + 1).collect::<Vec<_>>());
    // A training-sized job: the same numbers on one thread inside a worker as
    // with the crate's thread setting outside.
    let net = PlainNet {
        input: 6,
        widths: vec![7, 5],
        acts: vec![Activation::Tanh, Activation::Sigmoid],
        classes: 4,
    };
    let serial: Vec<f64> = SEEDS
        .iter()
        .map(|&s| gradient_check(&net, 5, s).crate_err)
        .collect();
    let parallel = par_map(&SEEDS, |&s| gradient_check(&net, 5, s).crate_err);
    assert_eq!(serial, parallel);
}

#[test]
fn backprop_equals_finite_differences_and_the_per_weight_chain_rule() {
    let net = PlainNet {
        input: 6,
        widths: vec![7, 5],
        acts: vec![Activation::Tanh, Activation::Sigmoid],
        classes: 4,
    };
    for seed in SEEDS {
        let c = gradient_check(&net, 5, seed);
        eprintln!("seed {seed}: {c:?}");
        assert!(c.scale > 1e-3, "a gradient worth checking: {c:?}");
        // f32 SIMD backprop vs f64 reference: rounding only (~1e-7 relative).
        assert!(c.crate_err < 1e-4, "{c:?}");
        // Central differences: O(h²) truncation + O(ε/h) rounding ≈ 1e-10.
        assert!(c.fd_err < 1e-6, "{c:?}");
        // The per-weight chain rule is the same sum in a different order.
        assert!(c.chain_err < 1e-12, "{c:?}");
    }
}

#[test]
fn he_init_keeps_the_variance_and_others_vanish_or_explode() {
    let (k, depth, batch) = (256, 50, 256);
    let s = (1.0 / k as f32).sqrt();
    let run = |sigma| variance_through_depth(k, depth, batch, sigma, 8, 1);
    let (he, small, large) = (run(2f32.sqrt() * s), run(s), run(2.0 * 2f32.sqrt() * s));
    for r in [&he, &small, &large] {
        eprintln!(
            "σ·√K = {:.3}: Var[z1] = {:.3e}, Var[z50] = {:.3e}, forward mismatch {:.1e}",
            r.sigma * (k as f32).sqrt(),
            r.var[0],
            r.var[depth - 1],
            r.forward_mismatch
        );
        assert!(r.forward_mismatch < 1e-5, "{:?}", r.forward_mismatch);
    }
    // He: Var[z⁽ˡ⁾] = (K·σ²/2)·Var[z⁽ˡ⁻¹⁾] = Var[z⁽ˡ⁻¹⁾] ≈ 1 at every layer.
    for (l, v) in he.var.iter().enumerate() {
        assert!((0.25..4.0).contains(v), "He: Var[z{}] = {v}", l + 1);
    }
    // σ = √(1/K): Var[z⁽¹⁾] = K·σ²/2 = 1/2, then ×1/2 per layer: log2 Var[z⁽⁵⁰⁾] ≈ −50.
    let l2 = |r: &VarianceRun| r.var[depth - 1].log2();
    assert!((-55.0..-43.0).contains(&l2(&small)), "{}", l2(&small));
    // σ = 2·√(2/K): Var[z⁽¹⁾] = 4, then ×4 per layer: log2 Var[z⁽⁵⁰⁾] ≈ 100.
    assert!((90.0..108.0).contains(&l2(&large)), "{}", l2(&large));
    // Every single network's per-layer factor K·σ²/2 (1, 1/2, 4), to within
    // the drift of one draw (relative sd of one layer's gain ≈ √(5/K) = 0.14,
    // ≈ 0.02 for a fit over 50 layers).
    for (r, want) in [(&he, 1.0), (&small, 0.5), (&large, 4.0)] {
        assert_eq!(r.per_net.len(), 8);
        for v in &r.per_net {
            let f = semilog_slope(&plot::Series::from_y("", v).points).exp();
            assert!((f / want - 1.0).abs() < 0.1, "factor {f}, want {want}");
        }
    }
}

#[test]
fn gradient_norms_vanish_or_explode_unless_init_skip_or_norm_fix_them() {
    let (k, depth, batch) = (64, 20, 64);
    let range = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        (lo, hi)
    };
    // δ⁽¹⁾ relative to δ⁽ᴸ⁾, read from the bias gradients ∂b = Σ_batch δ.
    let back = |g: &GradNorms| g.bias[0] / g.bias[depth - 1];
    for seed in SEEDS {
        let run = |net| gradient_norms(net, k, depth, batch, seed);
        let he = run(DeepNet::He);
        let (he_lo, he_hi) = range(&he.weight);
        // He: every layer's ‖∂W‖ within a factor 10 of the others, δ kept.
        assert!(he_hi / he_lo < 10.0, "seed {seed}: He {he:?}");
        assert!((0.1..10.0).contains(&back(&he)), "seed {seed}: He {he:?}");

        // σ = √(1/K): δ shrinks by √2 per layer on the way back (≈ 2^-9.5 over 19
        // layers), and every ‖∂W‖ is ≈ 2^-(L-1)/2 ≈ 1e-3 of He's.
        let small = run(DeepNet::Plain { scale: 1.0 });
        assert!(back(&small) < 0.05, "seed {seed}: {small:?}");
        assert!(
            range(&small.weight).1 < 1e-2 * he_lo,
            "seed {seed}: {small:?}"
        );

        // σ = 2·√(2/K): a factor 4 in variance per layer, ‖∂W‖ ≈ 2^(L-1) larger.
        let large = run(DeepNet::Plain {
            scale: 2.0 * 2f32.sqrt(),
        });
        assert!(back(&large) > 1e3, "seed {seed}: {large:?}");
        assert!(
            range(&large.weight).0 > 1e2 * he_hi,
            "seed {seed}: {large:?}"
        );

        // Skip connections carry δ back undiminished (δ⁽ˡ⁾ = δ⁽ˡ⁺¹⁾·(I + J)):
        // no vanishing even with the small init. Unscaled branches compound the
        // variance (×1.5 per block); branches scaled by 1/√L keep it flat.
        let skip = run(DeepNet::Skip { scale: 1.0 });
        assert!(back(&skip) > 1.0, "seed {seed}: {skip:?}");
        let skip_scaled = run(DeepNet::Skip {
            scale: 1.0 / (depth as f32).sqrt(),
        });
        let (lo, hi) = range(&skip_scaled.weight);
        assert!(
            hi / lo < 30.0 && lo > 0.1 * he_lo,
            "seed {seed}: {skip_scaled:?}"
        );
        assert!(back(&skip_scaled) > 0.3, "seed {seed}: {skip_scaled:?}");

        // Normalization undoes the small init's scale: ‖∂W‖ back at He's level
        // (BatchNorm with ReLU still grows the gradient ≈ 1.2× per layer going
        // back, the known mean-field result, hence the wider bound).
        let bn = run(DeepNet::BatchNorm { scale: 1.0 });
        let (lo, hi) = range(&bn.weight);
        assert!(
            lo > 0.1 * he_lo && hi < 100.0 * he_hi,
            "seed {seed}: {bn:?}"
        );
        // ‖∂W⁽ˡ⁾‖ grows toward the input: ×1.22 per layer in the report.
        let growth = (-semilog_slope(&plot::Series::from_y("", &bn.weight).points)).exp();
        assert!(
            (1.1..1.4).contains(&growth),
            "seed {seed}: BN growth {growth}"
        );
        // The bias of a dense layer feeding BatchNorm has no effect: ∂b = 0.
        assert!(range(&bn.bias).1 < 1e-4 * hi, "seed {seed}: {bn:?}");
        let ln = run(DeepNet::LayerNorm { scale: 1.0 });
        let (lo, hi) = range(&ln.weight);
        assert!(lo > 0.1 * he_lo && hi < 10.0 * he_hi, "seed {seed}: {ln:?}");
    }
}

#[test]
fn batch_norm_properties() {
    let (mean_rms, var_rms) = running_stats_rms_theory(0.1, 60);
    // m/(2 − m)/60 = 1/1140 and 2/59 of that.
    assert!((mean_rms - (1.0f64 / 1140.0).sqrt()).abs() < 1e-12);
    assert!((var_rms - (2.0f64 / 59.0 / 19.0).sqrt()).abs() < 1e-12);
    for seed in 4..9 {
        let p = bn_properties(32, 60, seed);
        eprintln!("seed {seed}: {p:?}");
        // BN(a⊙z + b) = BN(z) for a > 0 (up to ε = 1e-5 against Var ≥ 0.25·a²).
        assert!(p.affine_invariance < 1e-3, "{p:?}");
        assert!(
            p.bias_grad_before_bn < 1e-5 * p.weight_grad_before_bn,
            "{p:?}"
        );
        // Training mode normalises with the batch: other samples change the output.
        assert!(p.train_partner_change > 1e-2, "{p:?}");
        // Evaluation mode uses the running statistics: they cannot.
        assert_eq!(p.eval_partner_change, 0.0, "{p:?}");
        // Running averages (momentum 0.1 ⇒ about the last 10 batches of 60)
        // keep the sampling error the theory gives: rms over 32 features within
        // ±50 % of it (the rms of 32 draws has a relative sd of ≈ 1/√64), the
        // worst feature within ≈ 4× of it.
        assert!(
            (0.5..1.5).contains(&(p.running_mean_rms / mean_rms)),
            "{p:?} vs {mean_rms}"
        );
        assert!(
            (0.5..1.5).contains(&(p.running_var_rms / var_rms)),
            "{p:?} vs {var_rms}"
        );
        assert!(p.running_mean_err < 4.0 * mean_rms, "{p:?}");
        assert!(p.running_var_err < 4.0 * var_rms, "{p:?}");
        // So the two modes nearly agree on a large batch.
        assert!(p.train_vs_eval < 0.4, "{p:?}");
    }
}

#[test]
fn layer_norm_is_per_sample_and_the_same_in_train_and_eval() {
    for seed in SEEDS {
        let p = ln_properties(20, 16, seed);
        eprintln!("seed {seed}: {p:?}");
        // Same sample, other batch mates or none: only GEMM rounding can differ
        // (different batch sizes may take different blocking paths).
        assert!(p.partner_change < 1e-5, "{p:?}");
        assert!(p.alone_change < 1e-5, "{p:?}");
        assert_eq!(p.train_vs_eval, 0.0, "{p:?}");
        // BatchNorm in the same place, for contrast, does depend on the batch.
        assert!(p.bn_partner_change > 1e-2, "{p:?}");
    }
}

fn mnist_data() -> (backprop::train::Dataset, backprop::train::Dataset) {
    let dir = mnist::default_dir();
    mnist::load(&dir).unwrap_or_else(|e| panic!("MNIST from {}: {e}", dir.display()))
}

#[test]
#[ignore = "needs MNIST: set BACKPROP_MNIST_DIR (CI uses ../shared/data/mnist)"]
fn deep_relu_net_trains_with_he_init_and_stalls_with_half_the_variance() {
    let (train, test) = mnist_data();
    // 30 layers of 128, SGD momentum 0.9, step 0.01, 300 steps of 128, 2 seeds.
    let runs = deep_init_curves(&train, &test, 30, 128, 300, 0.01, 100, &[5, 7]);
    let (xavier, he) = (&runs[0], &runs[1]);
    for r in &runs {
        for (c, seed) in r.curves.iter().zip(&r.seeds) {
            eprintln!("{} seed {seed}: {:?}", r.label, c.points);
            assert_eq!(c.diverged_at, None, "{} seed {seed}", r.label);
        }
    }
    for i in 0..2 {
        let (x, h) = (&xavier.curves[i], &he.curves[i]);
        // σ = √(1/K): output and gradient scaled by 2^-15; the loss stays at
        // ln 10 = 2.303 and the predictions at chance (≈ 10 %).
        assert!(x.final_train_loss() > 2.2, "{x:?}");
        assert!(x.final_accuracy() < 0.3, "{x:?}");
        // He: learning from the first steps. Where a 30-layer net is after 300
        // steps depends chaotically on rounding: over seeds 5, 7, …, 17 the
        // train loss here is 0.67–0.98 and the test accuracy 53–84 % (mean
        // 74 %) with the AVX-512 path's kc = 256, and 0.62–0.91 and 79–87 %
        // with kc = 192, where only the first layer's k = 784 is rounded
        // differently; with kc = 512 seeds 5 and 7 end at train loss 0.75 and
        // 0.65, test accuracy 78 and 84 %. The claim is the gap to the stalled
        // net's ln 10 and ≈ 10 %, so the bounds sit below every seed measured.
        assert!(h.final_train_loss() < 1.2, "{h:?}");
        assert!(h.final_accuracy() > 0.5, "{h:?}");
    }
}

#[test]
#[ignore = "needs MNIST: set BACKPROP_MNIST_DIR (CI uses ../shared/data/mnist)"]
fn batch_norm_trains_faster_and_tolerates_larger_steps() {
    let (train, test) = mnist_data();
    // 3 × 100 sigmoid, batch 60, plain SGD, 1000 steps per run, 2 seeds.
    let seeds = [8, 10];
    let sweep = bn_lr_sweep(
        &train,
        &test,
        &[0.1, 0.3, 1.0, 3.0, 10.0, 30.0],
        1000,
        &seeds,
    );
    for (s, seed) in seeds.iter().enumerate() {
        for (i, lr) in sweep.lrs.iter().enumerate() {
            eprintln!(
                "seed {seed} step {lr}: plain {:.4}, BatchNorm {:.4}",
                sweep.plain[s][i], sweep.bn[s][i]
            );
        }
    }
    for s in 0..seeds.len() {
        let (plain, bn) = (&sweep.plain[s], &sweep.bn[s]);
        // Faster: at a moderate step the plain sigmoid net has barely started
        // (≈ 0.5 after 1000 steps) while the BatchNorm one is past 0.9.
        let i = sweep.index(0.1);
        assert!(
            bn[i] > 0.85 && bn[i] > plain[i] + 0.15,
            "step 0.1: {plain:?} vs {bn:?}"
        );
        // Never worse by more than a point at any step size.
        for (lr, (p, b)) in sweep.lrs.iter().zip(plain.iter().zip(bn)) {
            assert!(*b > p - 0.01, "step {lr}: {p} vs {b}");
        }
        // Larger steps: BatchNorm trains well at every step size up to 30,
        // while the plain net collapses to chance at 30.
        for (lr, b) in sweep.lrs.iter().zip(bn) {
            assert!(*b > 0.8, "step {lr}: BatchNorm {b}");
        }
        assert!(plain[sweep.index(30.0)] < 0.2, "step 30: plain {plain:?}");
    }
}
