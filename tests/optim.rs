//! Optimizers, gradient clipping and step-size schedules through the public
//! API, against values worked out by hand in the comments beside each assert.
//!
//! * SGD: every input (params, gradients, lr, μ, λ) is a small dyadic
//!   rational, so every intermediate is exact in `f32` and the expected values
//!   are compared with `assert_eq!`.
//! * Adam: the square root and divisions are not exact; the expected values
//!   are evaluated in `f64` from the hand-written per-element arithmetic and
//!   compared within `ADAM_TOL = 2e-6` absolute on parameters of size ≤ 3.
//!   The `f32` computation costs a few ulps (≈ 2.4e-7 at 2–4) and the `f32`
//!   rounding of β₁ = 0.9 and β₂ = 0.999 moves the update by < 1e-7 relative,
//!   so 2e-6 is a ~5× margin that still catches a misplaced ε (which would
//!   matter only at 1e-9 here — see `adam_epsilon_sits_outside_the_sqrt` for that)
//!   or a missing bias correction (which changes the update by 10× or more).
//! * Schedules: formulas in `f64`, results within 1e-6 relative, and exact
//!   where the formula is exact in binary (powers of ½, 1/(1 + k·t) = ¼, …).

use backprop::optim::{
    clip_grad_norm, Adam, AdamConfig, OptimError, OptimState, Optimizer, Schedule, ScheduleError,
    Sgd, SgdConfig, WeightDecay,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ------------------------------------------------------------------------------------------
// SGD: p₀ = [1, 2, −3], three gradients, lr = ½, μ = ½, λ = ½.
// ------------------------------------------------------------------------------------------

const P0: [f32; 3] = [1.0, 2.0, -3.0];
const G: [[f32; 3]; 3] = [[1.0, -2.0, 4.0], [0.5, 1.0, -2.0], [-1.0, 0.25, 2.0]];
const LR: f32 = 0.5;
const HALF: f32 = 0.5;

/// Runs the three steps of `G` from `P0` and returns the params after each.
fn three_steps(cfg: SgdConfig) -> [[f32; 3]; 3] {
    let mut opt = Sgd::new(3, cfg);
    let mut p = P0;
    let mut out = [[0.0; 3]; 3];
    for (t, g) in G.iter().enumerate() {
        opt.step(&mut p, g, LR);
        assert_eq!(opt.steps(), t as u64 + 1);
        out[t] = p;
    }
    out
}

fn sgd_cfg(momentum: f32, nesterov: bool, weight_decay: WeightDecay) -> SgdConfig {
    SgdConfig {
        momentum,
        nesterov,
        weight_decay,
    }
}

#[test]
fn sgd_plain() {
    let got = three_steps(SgdConfig::default());
    // p ← p − ½·g
    // 1: [1 − ½, 2 + 1, −3 − 2]                 = [0.5, 3, −5]
    // 2: [0.5 − ¼, 3 − ½, −5 + 1]               = [0.25, 2.5, −4]
    // 3: [0.25 + ½, 2.5 − ⅛, −4 − 1]            = [0.75, 2.375, −5]
    assert_eq!(
        got,
        [[0.5, 3.0, -5.0], [0.25, 2.5, -4.0], [0.75, 2.375, -5.0]]
    );
}

#[test]
fn sgd_heavy_ball() {
    let got = three_steps(sgd_cfg(HALF, false, WeightDecay::None));
    // v ← ½·v + g, p ← p − ½·v
    // 1: v = g₁ = [1, −2, 4];                         p = [0.5, 3, −5]
    // 2: v = [½ + ½, −1 + 1, 2 − 2] = [1, 0, 0];      p = [0.5 − ½, 3, −5] = [0, 3, −5]
    // 3: v = [½ − 1, 0 + ¼, 0 + 2] = [−½, ¼, 2];      p = [0 + ¼, 3 − ⅛, −5 − 1]
    assert_eq!(
        got,
        [[0.5, 3.0, -5.0], [0.0, 3.0, -5.0], [0.25, 2.875, -6.0]]
    );
}

#[test]
fn sgd_nesterov() {
    let got = three_steps(sgd_cfg(HALF, true, WeightDecay::None));
    // v ← ½·v + g, u = g + ½·v (new v), p ← p − ½·u. Same v as heavy-ball.
    // 1: v = [1, −2, 4];   u = [1 + ½, −2 − 1, 4 + 2] = [1.5, −3, 6]
    //    p = [1 − 0.75, 2 + 1.5, −3 − 3]               = [0.25, 3.5, −6]
    // 2: v = [1, 0, 0];    u = [½ + ½, 1, −2]           = [1, 1, −2]
    //    p = [0.25 − ½, 3.5 − ½, −6 + 1]               = [−0.25, 3, −5]
    // 3: v = [−½, ¼, 2];   u = [−1 − ¼, ¼ + ⅛, 2 + 1]   = [−1.25, 0.375, 3]
    //    p = [−0.25 + 0.625, 3 − 0.1875, −5 − 1.5]     = [0.375, 2.8125, −6.5]
    assert_eq!(
        got,
        [[0.25, 3.5, -6.0], [-0.25, 3.0, -5.0], [0.375, 2.8125, -6.5]]
    );
}

#[test]
fn sgd_plain_coupled_l2() {
    let got = three_steps(sgd_cfg(0.0, false, WeightDecay::L2(HALF)));
    // g' = g + ½·p, p ← p − ½·g'
    // 1: g' = [1 + ½, −2 + 1, 4 − 1.5] = [1.5, −1, 2.5]
    //    p  = [1 − 0.75, 2 + ½, −3 − 1.25]                  = [0.25, 2.5, −4.25]
    // 2: g' = [½ + ⅛, 1 + 1.25, −2 − 2.125] = [0.625, 2.25, −4.125]
    //    p  = [0.25 − 0.3125, 2.5 − 1.125, −4.25 + 2.0625]  = [−0.0625, 1.375, −2.1875]
    // 3: g' = [−1 − 0.03125, ¼ + 0.6875, 2 − 1.09375] = [−1.03125, 0.9375, 0.90625]
    //    p  = [−0.0625 + 0.515625, 1.375 − 0.46875, −2.1875 − 0.453125]
    let want = [
        [0.25, 2.5, -4.25],
        [-0.0625, 1.375, -2.1875],
        [0.453125, 0.90625, -2.640625],
    ];
    assert_eq!(got, want);
    // For plain SGD the two decays are the same map: p − lr·(g + λp) = p·(1 − lr·λ) − lr·g.
    // (Here exactly, since every value is dyadic.)
    assert_eq!(
        three_steps(sgd_cfg(0.0, false, WeightDecay::Decoupled(HALF))),
        want
    );
}

#[test]
fn sgd_heavy_ball_coupled_l2() {
    let got = three_steps(sgd_cfg(HALF, false, WeightDecay::L2(HALF)));
    // g' = g + ½·p, v ← ½·v + g', p ← p − ½·v: the decay enters the velocity.
    // 1: g' = [1.5, −1, 2.5] = v;  p = [1 − 0.75, 2 + ½, −3 − 1.25] = [0.25, 2.5, −4.25]
    // 2: g' = [0.625, 2.25, −4.125]
    //    v  = [0.75 + 0.625, −½ + 2.25, 1.25 − 4.125] = [1.375, 1.75, −2.875]
    //    p  = [0.25 − 0.6875, 2.5 − 0.875, −4.25 + 1.4375] = [−0.4375, 1.625, −2.8125]
    // 3: g' = [−1 − 0.21875, ¼ + 0.8125, 2 − 1.40625] = [−1.21875, 1.0625, 0.59375]
    //    v  = [0.6875 − 1.21875, 0.875 + 1.0625, −1.4375 + 0.59375] = [−0.53125, 1.9375, −0.84375]
    //    p  = [−0.4375 + 0.265625, 1.625 − 0.96875, −2.8125 + 0.421875]
    assert_eq!(
        got,
        [
            [0.25, 2.5, -4.25],
            [-0.4375, 1.625, -2.8125],
            [-0.171875, 0.65625, -2.390625]
        ]
    );
}

#[test]
fn sgd_heavy_ball_decoupled() {
    let got = three_steps(sgd_cfg(HALF, false, WeightDecay::Decoupled(HALF)));
    // p ← p·(1 − ½·½) = 0.75·p, then v ← ½·v + g (v as plain heavy-ball), p ← p − ½·v.
    // 1: v = [1, −2, 4];    p = [0.75 − ½, 1.5 + 1, −2.25 − 2]            = [0.25, 2.5, −4.25]
    // 2: v = [1, 0, 0];     p = [0.1875 − ½, 1.875, −3.1875]               = [−0.3125, 1.875, −3.1875]
    // 3: v = [−½, ¼, 2];    p = [−0.234375 + ¼, 1.40625 − ⅛, −2.390625 − 1]
    let want = [
        [0.25, 2.5, -4.25],
        [-0.3125, 1.875, -3.1875],
        [0.015625, 1.28125, -3.390625],
    ];
    assert_eq!(got, want);
    // With momentum, coupled and decoupled decay are different methods.
    assert_ne!(
        three_steps(sgd_cfg(HALF, false, WeightDecay::L2(HALF)))[2],
        want[2]
    );
}

#[test]
fn sgd_nesterov_coupled_l2() {
    let got = three_steps(sgd_cfg(HALF, true, WeightDecay::L2(HALF)));
    // g' = g + ½·p, v ← ½·v + g', u = g' + ½·v, p ← p − ½·u.
    // 1: g' = v = [1.5, −1, 2.5];  u = [2.25, −1.5, 3.75]
    //    p = [1 − 1.125, 2 + 0.75, −3 − 1.875] = [−0.125, 2.75, −4.875]
    // 2: g' = [½ − 0.0625, 1 + 1.375, −2 − 2.4375] = [0.4375, 2.375, −4.4375]
    //    v  = [0.75 + 0.4375, −½ + 2.375, 1.25 − 4.4375] = [1.1875, 1.875, −3.1875]
    //    u  = [0.4375 + 0.59375, 2.375 + 0.9375, −4.4375 − 1.59375] = [1.03125, 3.3125, −6.03125]
    //    p  = [−0.125 − 0.515625, 2.75 − 1.65625, −4.875 + 3.015625] = [−0.640625, 1.09375, −1.859375]
    // 3: g' = [−1 − 0.3203125, ¼ + 0.546875, 2 − 0.9296875] = [−1.3203125, 0.796875, 1.0703125]
    //    v  = [0.59375 − 1.3203125, 0.9375 + 0.796875, −1.59375 + 1.0703125]
    //       = [−0.7265625, 1.734375, −0.5234375]
    //    u  = [−1.3203125 − 0.36328125, 0.796875 + 0.8671875, 1.0703125 − 0.26171875]
    //       = [−1.68359375, 1.6640625, 0.80859375]
    //    p  = [−0.640625 + 0.841796875, 1.09375 − 0.83203125, −1.859375 − 0.404296875]
    assert_eq!(
        got,
        [
            [-0.125, 2.75, -4.875],
            [-0.640625, 1.09375, -1.859375],
            [103.0 / 512.0, 0.26171875, -1159.0 / 512.0] // [0.201171875, …, −2.263671875]
        ]
    );
}

#[test]
fn sgd_nesterov_decoupled() {
    let got = three_steps(sgd_cfg(HALF, true, WeightDecay::Decoupled(HALF)));
    // p ← 0.75·p − ½·u with v, u as in plain Nesterov.
    // 1: u = [1.5, −3, 6];       p = [0.75 − 0.75, 1.5 + 1.5, −2.25 − 3]      = [0, 3, −5.25]
    // 2: u = [1, 1, −2];         p = [0 − ½, 2.25 − ½, −3.9375 + 1]           = [−0.5, 1.75, −2.9375]
    // 3: u = [−1.25, 0.375, 3];  p = [−0.375 + 0.625, 1.3125 − 0.1875, −2.203125 − 1.5]
    assert_eq!(
        got,
        [
            [0.0, 3.0, -5.25],
            [-0.5, 1.75, -2.9375],
            [0.25, 1.125, -3.703125]
        ]
    );
}

#[test]
fn sgd_momentum_buffer_is_pytorchs() {
    // PyTorch's form: lr multiplies the whole velocity at each step, so a change
    // of lr acts at once (Sutskever's v ← μv − lr·g would keep the old lr in v).
    let mut opt = Sgd::new(1, sgd_cfg(HALF, false, WeightDecay::None));
    let mut p = [0.0f32];
    opt.step(&mut p, &[1.0], 1.0); // v = 1,            p = −1
    opt.step(&mut p, &[1.0], 0.25); // v = ½ + 1 = 1.5,  p = −1 − ¼·1.5 = −1.375
    assert_eq!(p, [-1.375]);
    assert_eq!(opt.state().buffers, vec![&[1.5f32][..]]);
}

#[test]
fn sgd_config_errors() {
    assert_eq!(
        Sgd::try_new(3, sgd_cfg(0.0, true, WeightDecay::None)).err(),
        Some(OptimError::NesterovWithoutMomentum)
    );
    assert!(matches!(
        Sgd::try_new(3, sgd_cfg(-0.5, false, WeightDecay::None)),
        Err(OptimError::InvalidHyperparameter {
            name: "momentum",
            ..
        })
    ));
    assert!(matches!(
        Sgd::try_new(3, sgd_cfg(0.9, false, WeightDecay::L2(f32::NAN))),
        Err(OptimError::InvalidHyperparameter {
            name: "weight_decay",
            ..
        })
    ));
    assert!(matches!(
        Sgd::try_new(3, sgd_cfg(0.9, false, WeightDecay::Decoupled(-1.0))),
        Err(OptimError::InvalidHyperparameter {
            name: "weight_decay",
            ..
        })
    ));
}

#[test]
#[should_panic(expected = "Sgd::new: Nesterov momentum requires momentum > 0")]
fn sgd_new_panics_on_nesterov_without_momentum() {
    Sgd::new(3, sgd_cfg(0.0, true, WeightDecay::None));
}

// ------------------------------------------------------------------------------------------
// Adam: p₀ = [1, 2, −3], g₁ = [1, −2, 4], g₂ = [½, 1, −2], lr = 0.1, defaults.
// ------------------------------------------------------------------------------------------

const ADAM_TOL: f64 = 2e-6;
const ADAM_LR: f32 = 0.1;
const EPS: f64 = 1e-8;

#[track_caller]
fn assert_near(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (tol {tol:e}); all: {got:?} vs {want:?}"
        );
    }
}

fn two_adam_steps(cfg: AdamConfig) -> ([f32; 3], [f32; 3], Adam) {
    let mut opt = Adam::new(3, cfg);
    let mut p = P0;
    opt.step(&mut p, &G[0], ADAM_LR);
    let p1 = p;
    opt.step(&mut p, &G[1], ADAM_LR);
    (p1, p, opt)
}

#[test]
fn adam_first_two_steps() {
    let (p1, p2, opt) = two_adam_steps(AdamConfig::default());

    // Step 1 (t = 1): m = 0.1·g₁, v = 0.001·g₁², 1 − β₁ = 0.1, 1 − β₂ = 0.001, so the
    // bias corrections give m̂ = g₁, v̂ = g₁² and the step is 0.1·g/(|g| + 1e-8):
    let want1 = [
        1.0 - 0.1 * 1.0 / (1.0 + EPS),  // 0.9
        2.0 + 0.1 * 2.0 / (2.0 + EPS),  // 2.1
        -3.0 - 0.1 * 4.0 / (4.0 + EPS), // −3.1
    ];
    assert_near(&p1, &want1, ADAM_TOL, "Adam step 1");
    assert_near(&p1, &[0.9, 2.1, -3.1], ADAM_TOL, "Adam step 1 (rounded)");

    // Step 2 (t = 2): m = 0.9·0.1·g₁ + 0.1·g₂, v = 0.999·0.001·g₁² + 0.001·g₂².
    let m = [
        0.09 * 1.0 + 0.1 * 0.5,  // 0.14
        0.09 * -2.0 + 0.1 * 1.0, // −0.08
        0.09 * 4.0 + 0.1 * -2.0, // 0.16
    ];
    let v = [
        0.000999 * 1.0 + 0.001 * 0.25, // 0.001249
        0.000999 * 4.0 + 0.001 * 1.0,  // 0.004996
        0.000999 * 16.0 + 0.001 * 4.0, // 0.019984
    ];
    let bc1 = 1.0 - 0.9f64 * 0.9; // 0.19
    let bc2 = 1.0 - 0.999f64 * 0.999; // 0.001999
    let mut want2 = [0.0; 3];
    for i in 0..3 {
        let m_hat = m[i] / bc1;
        let v_hat = v[i] / bc2;
        want2[i] = want1[i] - 0.1 * m_hat / (v_hat.sqrt() + EPS);
    }
    // m̂ = [0.7368, −0.4211, 0.8421], √v̂ = [0.7905, 1.5809, 3.1618]
    assert_near(&p2, &want2, ADAM_TOL, "Adam step 2");
    assert_near(
        &p2,
        &[0.806_782_04, 2.126_633_7, -3.126_633_7],
        ADAM_TOL,
        "Adam step 2 (literal)",
    );

    // Without bias correction step 2 would move by 0.1·m/(√v + ε) ≈ [0.396, …]:
    // far outside the tolerance, so the test pins the correction.
    assert_eq!(opt.steps(), 2);
    let st = opt.state();
    assert_eq!(st.steps, 2);
    // The raw moments carry the f32 rounding of β: 1 − β₂ is 0.00099998713 for
    // β₂ = 0.999f32, 1.3e-5 relative (the bias correction divides it back out of v̂).
    assert_near(st.buffers[0], &m, 1e-7, "exp_avg");
    assert_near(st.buffers[1], &v, 0.02 * 2e-5, "exp_avg_sq");
    assert_eq!(opt.state_names(), ["exp_avg", "exp_avg_sq"]);
}

#[test]
fn adam_epsilon_sits_outside_the_sqrt() {
    // g = 1e-6 on the first step: m̂ = 1e-6, v̂ = 1e-12, √v̂ = 1e-6.
    // PyTorch: m̂/(√v̂ + ε) = 1e-6/(1e-6 + 1e-8) = 1/1.01 = 0.990099…
    // ε inside the root, m̂/√(v̂ + ε), would give 1e-6/√(1.000001e-8) ≈ 0.01;
    // ε added to v before the bias correction would give yet another value.
    let mut opt = Adam::new(1, AdamConfig::default());
    let mut p = [0.0f32];
    opt.step(&mut p, &[1e-6], 1.0);
    assert_near(&p, &[-1.0 / 1.01], 1e-6, "ε placement");

    // A custom ε: 1e-6/(1e-6 + 1e-6) = ½.
    let cfg = AdamConfig {
        eps: 1e-6,
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(1, cfg);
    let mut p = [0.0f32];
    opt.step(&mut p, &[1e-6], 1.0);
    assert_near(&p, &[-0.5], 1e-6, "custom ε");
}

#[test]
fn adam_tiny_epsilon_keeps_zero_gradients_finite() {
    // ε = 2e-38 is a normal f32, but ε·√(1 − β₂) at t = 1 (≈ 6e-40) is not:
    // the update runs with denormals read as zero, and an element whose
    // gradient is 0 must still get 0/ε, not 0/0.
    let cfg = AdamConfig {
        eps: 2e-38,
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(2, cfg);
    let mut p = [0.5f32, -0.25];
    for _ in 0..3 {
        opt.step(&mut p, &[0.0, 1e-3], 1e-2);
    }
    assert_eq!(p[0], 0.5, "a zero gradient leaves its parameter alone");
    assert!(p[1].is_finite() && p[1] < -0.25, "{}", p[1]);
}

#[test]
fn adam_coupled_l2_vs_adamw() {
    let lambda = 0.1f32;
    let (l2_1, l2_2, _) = two_adam_steps(AdamConfig {
        weight_decay: WeightDecay::L2(lambda),
        ..AdamConfig::default()
    });
    let (w_1, w_2, _) = two_adam_steps(AdamConfig::adamw(lambda));

    // Adam + L2: g' = g + 0.1·p goes through the moments.
    // Step 1: g' = [1 + 0.1, −2 + 0.2, 4 − 0.3] = [1.1, −1.8, 3.7]; m̂ = g', v̂ = g'²,
    // so the step is again 0.1·sign(g')·|g'|/(|g'| + ε):
    let g1 = [1.1, -1.8, 3.7];
    let mut l2_want1 = [0.0; 3];
    for i in 0..3 {
        l2_want1[i] = [1.0, 2.0, -3.0][i] - 0.1 * g1[i] / (f64::abs(g1[i]) + EPS);
    }
    assert_near(&l2_1, &l2_want1, ADAM_TOL, "Adam+L2 step 1"); // ≈ [0.9, 2.1, −3.1]
                                                               // Step 2: g' = g₂ + 0.1·p₁ = [½ + 0.09, 1 + 0.21, −2 − 0.31] = [0.59, 1.21, −2.31]
    let g2 = [0.59, 1.21, -2.31];
    let mut l2_want2 = [0.0; 3];
    for i in 0..3 {
        let m = 0.09 * g1[i] + 0.1 * g2[i]; // [0.158, −0.041, 0.102]
        let v = 0.000999 * g1[i] * g1[i] + 0.001 * g2[i] * g2[i];
        let m_hat = m / (1.0 - 0.81);
        let v_hat = v / (1.0 - 0.998001);
        l2_want2[i] = l2_want1[i] - 0.1 * m_hat / (v_hat.sqrt() + EPS);
    }
    assert_near(&l2_2, &l2_want2, ADAM_TOL, "Adam+L2 step 2");
    assert_near(
        &l2_2,
        &[0.805_771_8, 2.114_071_7, -3.117_407_4],
        ADAM_TOL,
        "Adam+L2 step 2 (literal)",
    );

    // AdamW: p ← p·(1 − 0.1·0.1) = 0.99·p, then Adam's step from g alone
    // (the same moments as plain Adam in `adam_first_two_steps`).
    // Step 1: [0.99 − 0.1, 1.98 + 0.1, −2.97 − 0.1] = [0.89, 2.08, −3.07]
    let w_want1 = [
        0.99 - 0.1 / (1.0 + EPS),
        1.98 + 0.1 * 2.0 / (2.0 + EPS),
        -2.97 - 0.1 * 4.0 / (4.0 + EPS),
    ];
    assert_near(&w_1, &w_want1, ADAM_TOL, "AdamW step 1");
    // Step 2: 0.99·p₁ − (plain Adam's second step, p₁ − p₂ of `adam_first_two_steps`
    // = [0.093218, −0.026634, 0.026634]).
    let adam_step2 = [0.093_217_96, -0.026_633_70, 0.026_633_70];
    let w_want2: Vec<f64> = (0..3).map(|i| 0.99 * w_want1[i] - adam_step2[i]).collect();
    assert_near(&w_2, &w_want2, ADAM_TOL, "AdamW step 2"); // [0.78788, 2.08583, −3.06593]

    // The two methods differ.
    let diff = l2_2
        .iter()
        .zip(&w_2)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff > 1e-2,
        "Adam+L2 and AdamW should differ: {l2_2:?} vs {w_2:?}"
    );
}

#[test]
fn adamw_default_config() {
    let c = AdamConfig::adamw(0.01);
    assert_eq!(
        c,
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: WeightDecay::Decoupled(0.01),
        }
    );
    assert_eq!(AdamConfig::default().weight_decay, WeightDecay::None);
}

#[test]
fn adam_config_errors() {
    for (cfg, name) in [
        (
            AdamConfig {
                beta1: 1.0,
                ..AdamConfig::default()
            },
            "beta1",
        ),
        (
            AdamConfig {
                beta2: -0.1,
                ..AdamConfig::default()
            },
            "beta2",
        ),
        (
            AdamConfig {
                beta2: f32::NAN,
                ..AdamConfig::default()
            },
            "beta2",
        ),
        (
            AdamConfig {
                eps: -1e-8,
                ..AdamConfig::default()
            },
            "eps",
        ),
        (AdamConfig::adamw(f32::INFINITY), "weight_decay"),
    ] {
        match Adam::try_new(4, cfg) {
            Err(OptimError::InvalidHyperparameter { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: expected InvalidHyperparameter, got {other:?}"),
        }
    }
    // β = 0 is allowed (no averaging).
    assert!(Adam::try_new(
        4,
        AdamConfig {
            beta1: 0.0,
            beta2: 0.0,
            ..AdamConfig::default()
        }
    )
    .is_ok());
}

// ------------------------------------------------------------------------------------------
// Convergence on f(p) = ½·Σ aᵢ·pᵢ², ∇f = a ⊙ p, minimum at 0.
// ------------------------------------------------------------------------------------------

const CURV: [f32; 5] = [1.0, 3.0, 10.0, 30.0, 100.0];

fn quadratic(p: &[f32]) -> f64 {
    p.iter()
        .zip(CURV)
        .map(|(&x, a)| 0.5 * a as f64 * x as f64 * x as f64)
        .sum()
}

/// Minimises the quadratic from p = [1, −1, 2, −2, 0.5] for `steps` steps and
/// returns the final parameters.
fn minimise(opt: &mut dyn Optimizer, schedule: &Schedule, steps: u64) -> Vec<f32> {
    let mut p = vec![1.0f32, -1.0, 2.0, -2.0, 0.5];
    let mut g = vec![0.0f32; p.len()];
    for _ in 0..steps {
        for i in 0..p.len() {
            g[i] = CURV[i] * p[i];
        }
        let lr = schedule.lr_at(opt.steps());
        opt.step(&mut p, &g, lr);
    }
    p
}

#[test]
fn optimizers_converge_on_a_quadratic() {
    let f0 = quadratic(&[1.0, -1.0, 2.0, -2.0, 0.5]);
    // SGD with lr = 0.01: plain SGD needs lr·a_max < 2, heavy-ball < 2(1 + μ) = 3.8,
    // Nesterov (PyTorch's form) < 2(1 + μ)/(1 + 2μ) ≈ 1.36 for μ = 0.9; lr·a_max = 1.
    // The slowest plain mode (a = 1) shrinks by (1 − 0.01)²⁰⁰⁰ ≈ 2e-9.
    let sgd = Schedule::constant(0.01);
    // Adam's steps are ~lr in size whatever the curvature: anneal lr to 0 so it settles.
    let adam = Schedule::warmup(20, 0.1, Schedule::cosine(0.05, 0.0, 1980));
    let cases: Vec<(&str, Box<dyn Optimizer>, &Schedule)> = vec![
        ("sgd", Box::new(Sgd::new(5, SgdConfig::default())), &sgd),
        (
            "heavy-ball",
            Box::new(Sgd::new(5, sgd_cfg(0.9, false, WeightDecay::None))),
            &sgd,
        ),
        (
            "nesterov",
            Box::new(Sgd::new(5, sgd_cfg(0.9, true, WeightDecay::L2(0.01)))),
            &sgd,
        ),
        ("adam", Box::new(Adam::new(5, AdamConfig::default())), &adam),
        (
            "adamw",
            Box::new(Adam::new(5, AdamConfig::adamw(0.01))),
            &adam,
        ),
    ];
    for (name, mut opt, schedule) in cases {
        let p = minimise(opt.as_mut(), schedule, 2000);
        let f = quadratic(&p);
        assert!(
            f < 1e-8 * f0 && p.iter().all(|x| x.abs() < 1e-3),
            "{name}: f = {f:e} (f₀ = {f0}), p = {p:?}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Gradient clipping.
// ------------------------------------------------------------------------------------------

fn norm64(g: &[f32]) -> f64 {
    g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

#[test]
fn clip_scales_to_max_norm() {
    let mut g = [3.0f32, -4.0];
    let norm = clip_grad_norm(&mut g, 1.0);
    assert_eq!(norm, 5.0); // √(9 + 16)
                           // scale = 1/(5 + 1e-6)
    let s = 1.0 / (5.0 + 1e-6);
    assert_near(&g, &[3.0 * s, -4.0 * s], 1e-7, "clipped");
    assert!(norm64(&g) <= 1.0);

    // A larger, random arena whose length is not a multiple of 8.
    let mut rng = StdRng::seed_from_u64(7);
    for n in [1usize, 7, 8, 9, 1001] {
        let mut g: Vec<f32> = (0..n).map(|_| rng.random_range(-10.0f32..10.0)).collect();
        let before = norm64(&g);
        let max = (before / 3.0) as f32;
        let norm = clip_grad_norm(&mut g, max);
        assert!(
            (norm as f64 - before).abs() <= 1e-6 * before,
            "n = {n}: norm {norm} vs {before}"
        );
        let after = norm64(&g);
        assert!(
            after <= max as f64 * (1.0 + 1e-6),
            "n = {n}: clipped norm {after} > {max}"
        );
        assert!(
            after >= max as f64 * (1.0 - 1e-5),
            "n = {n}: over-clipped to {after}"
        );
    }
}

#[test]
fn clip_leaves_small_gradients_alone() {
    let orig = [0.1f32, -0.2, 0.3, 1e-30, -0.0];
    let mut g = orig;
    let norm = clip_grad_norm(&mut g, 1.0);
    assert!((norm as f64 - norm64(&orig)).abs() < 1e-7);
    assert_eq!(g.map(f32::to_bits), orig.map(f32::to_bits));

    // Exactly at the limit: ‖[3, 4]‖ = 5 is not > 5, so nothing changes.
    let mut g = [3.0f32, 4.0];
    assert_eq!(clip_grad_norm(&mut g, 5.0), 5.0);
    assert_eq!(g, [3.0, 4.0]);

    // max_norm = ∞ only measures.
    let mut g = [3.0f32, 4.0];
    assert_eq!(clip_grad_norm(&mut g, f32::INFINITY), 5.0);
    assert_eq!(g, [3.0, 4.0]);

    // Empty arena: norm 0.
    assert_eq!(clip_grad_norm(&mut [], 1.0), 0.0);
}

#[test]
fn clip_accumulates_in_f64() {
    // 10⁶ elements of 0.1: ‖g‖ = 1000·0.1f32 exactly (every square is the same).
    // A running f32 sum of squares would be off by ~1e-3 relative.
    let x = 0.1f32;
    let mut g = vec![x; 1_000_000];
    let norm = clip_grad_norm(&mut g, f32::INFINITY);
    let want = 1000.0 * x as f64;
    assert!(
        (norm as f64 - want).abs() <= 1e-7 * want,
        "{norm} vs {want}"
    );
}

#[test]
fn clip_reports_non_finite_gradients_and_leaves_them() {
    let orig = [1.0f32, f32::NAN, 100.0];
    let mut g = orig;
    assert!(clip_grad_norm(&mut g, 1.0).is_nan());
    assert_eq!(g.map(f32::to_bits), orig.map(f32::to_bits));

    for bad in [f32::INFINITY, f32::NEG_INFINITY] {
        let orig = [1.0f32, bad, 100.0];
        let mut g = orig;
        assert_eq!(clip_grad_norm(&mut g, 1.0), f32::INFINITY);
        assert_eq!(g.map(f32::to_bits), orig.map(f32::to_bits));
    }
    // Inf and NaN together: NaN.
    let mut g = [f32::INFINITY, f32::NAN];
    assert!(clip_grad_norm(&mut g, 1.0).is_nan());
}

#[test]
#[should_panic(expected = "clip_grad_norm: max_norm must be >= 0, got -1")]
fn clip_rejects_negative_max_norm() {
    clip_grad_norm(&mut [1.0], -1.0);
}

// ------------------------------------------------------------------------------------------
// Schedules.
// ------------------------------------------------------------------------------------------

#[track_caller]
fn assert_lr(s: &Schedule, t: u64, want: f64) {
    let got = s.lr_at(t) as f64;
    assert!(
        (got - want).abs() <= 1e-6 * want.abs() + 1e-12,
        "{s} at t = {t}: got {got}, want {want}"
    );
}

#[test]
fn schedule_constant() {
    let s = Schedule::constant(0.01);
    for t in [0, 1, 1000, u64::MAX] {
        assert_eq!(s.lr_at(t), 0.01);
    }
}

#[test]
fn schedule_step_decay() {
    // lr·γ^⌊t/s⌋ with lr = 1, γ = ½, s = 10: exact powers of ½.
    let s = Schedule::step_decay(1.0, 0.5, 10);
    assert_eq!(s.lr_at(0), 1.0);
    assert_eq!(s.lr_at(9), 1.0); // t = s − 1: ⌊9/10⌋ = 0
    assert_eq!(s.lr_at(10), 0.5); // t = s: first decay
    assert_eq!(s.lr_at(19), 0.5);
    assert_eq!(s.lr_at(20), 0.25);
    assert_eq!(s.lr_at(35), 0.125); // ⌊35/10⌋ = 3
                                    // A non-dyadic γ: 0.1·0.9³ at t = 3·s.
    let s = Schedule::step_decay(0.1, 0.9, 100);
    assert_lr(&s, 299, 0.1 * 0.9 * 0.9);
    assert_lr(&s, 300, 0.1 * 0.9 * 0.9 * 0.9);
}

#[test]
fn schedule_exponential() {
    let s = Schedule::exponential(1.0, 0.5);
    assert_eq!(s.lr_at(0), 1.0);
    assert_eq!(s.lr_at(1), 0.5);
    assert_eq!(s.lr_at(3), 0.125);
    let s = Schedule::exponential(0.1, 0.99);
    assert_lr(&s, 2, 0.1 * 0.99 * 0.99); // 0.09801
    assert_lr(&s, 100, 0.1 * 0.366_032_341_273_229_3); // 0.99¹⁰⁰
}

#[test]
fn schedule_inverse_time() {
    // lr/(1 + k·t) with lr = 1, k = ½.
    let s = Schedule::inverse_time(1.0, 0.5);
    assert_eq!(s.lr_at(0), 1.0);
    assert_eq!(s.lr_at(2), 0.5); // 1/(1 + 1)
    assert_eq!(s.lr_at(6), 0.25); // 1/(1 + 3)
    assert_lr(&s, 1, 1.0 / 1.5);
    let s = Schedule::inverse_time(0.1, 0.01);
    assert_lr(&s, 100, 0.05); // 0.1/(1 + 1)
}

#[test]
fn schedule_cosine() {
    // lr_min + (lr − lr_min)·(1 + cos(π·t/T))/2, lr = 1, lr_min = 0.1, T = 4.
    let s = Schedule::cosine(1.0, 0.1, 4);
    assert_eq!(s.lr_at(0), 1.0); // cos 0 = 1
    assert_lr(
        &s,
        1,
        0.1 + 0.9 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0,
    ); // 0.86820
    assert_lr(&s, 2, 0.55); // cos(π/2) = 0: halfway
    assert_lr(
        &s,
        3,
        0.1 + 0.9 * (1.0 - std::f64::consts::FRAC_1_SQRT_2) / 2.0,
    ); // 0.23180
    assert_eq!(s.lr_at(4), 0.1); // t = T: lr_min
    assert_eq!(s.lr_at(5), 0.1); // t > T: stays at lr_min
    assert_eq!(s.lr_at(1_000_000), 0.1);
    // T = 0: lr_min from the start.
    assert_eq!(Schedule::cosine(1.0, 0.25, 0).lr_at(0), 0.25);
    // lr_min > lr rises.
    assert_lr(&Schedule::cosine(0.0, 1.0, 4), 2, 0.5);
}

#[test]
fn schedule_warmup_then_cosine() {
    // W = 4 warm-up steps from ¼·lr, then cosine(1, 0, 4) with its clock at t − 4.
    let s = Schedule::warmup(4, 0.25, Schedule::cosine(1.0, 0.0, 4));
    // t < W: 1·(¼ + ¾·t/4)
    assert_eq!(s.lr_at(0), 0.25); // start_factor·lr
    assert_eq!(s.lr_at(1), 0.4375); // ¼ + 3/16
    assert_eq!(s.lr_at(2), 0.625);
    assert_eq!(s.lr_at(3), 0.8125); // last warm-up step
    assert_eq!(s.lr_at(4), 1.0); // warm-up end = cosine at 0
    assert_lr(&s, 5, (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0); // cosine at 1
    assert_lr(&s, 6, 0.5); // cosine at 2
    assert_eq!(s.lr_at(8), 0.0); // cosine at T
    assert_eq!(s.lr_at(100), 0.0);
}

#[test]
fn schedule_warmup_compositions() {
    // From 0, over a step decay: the ramp targets the inner schedule's first rate.
    let s = Schedule::warmup(10, 0.0, Schedule::step_decay(0.5, 0.5, 3));
    assert_eq!(s.lr_at(0), 0.0);
    assert_eq!(s.lr_at(5), 0.25); // 0.5·5/10
    assert_eq!(s.lr_at(10), 0.5); // inner t = 0
    assert_eq!(s.lr_at(12), 0.5); // inner t = 2 = s − 1
    assert_eq!(s.lr_at(13), 0.25); // inner t = 3 = s
                                   // W = 0 is no warm-up.
    let inner = Schedule::exponential(1.0, 0.5);
    let s = Schedule::warmup(0, 0.0, inner.clone());
    for t in 0..5 {
        assert_eq!(s.lr_at(t), inner.lr_at(t));
    }
    // Nested warm-ups: the outer ramp targets the inner warm-up's start, ¼.
    let s = Schedule::warmup(2, 0.0, Schedule::warmup(2, 0.25, Schedule::constant(1.0)));
    let got: Vec<f32> = (0..6).map(|t| s.lr_at(t)).collect();
    assert_eq!(got, [0.0, 0.125, 0.25, 0.625, 1.0, 1.0]);
}

#[test]
fn schedule_strings_round_trip() {
    let cases = [
        Schedule::constant(0.001),
        Schedule::step_decay(0.1, 0.5, 1000),
        Schedule::exponential(0.1, 0.999),
        Schedule::inverse_time(0.05, 1e-4),
        Schedule::cosine(3e-4, 1e-6, 10_000),
        Schedule::warmup(500, 0.1, Schedule::cosine(1e-3, 0.0, 10_000)),
        Schedule::warmup(2, 0.0, Schedule::warmup(3, 0.5, Schedule::constant(1.0))),
    ];
    for s in cases {
        let text = s.to_string();
        let back: Schedule = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back, s, "{text}");
    }
    assert_eq!(
        "cosine:1e-3:0:10000".parse::<Schedule>(),
        Ok(Schedule::cosine(1e-3, 0.0, 10_000))
    );
    assert_eq!(
        Schedule::warmup(500, 0.1, Schedule::step_decay(0.1, 0.5, 1000)).to_string(),
        "warmup:500:0.1:step_decay:0.1:0.5:1000"
    );
}

#[test]
fn schedule_parse_errors() {
    let err = |s: &str| s.parse::<Schedule>().unwrap_err();
    assert_eq!(
        err("cosin:1:0:10"),
        ScheduleError::UnknownKind {
            token: "cosin".into()
        }
    );
    assert_eq!(err(""), ScheduleError::UnknownKind { token: "".into() });
    assert_eq!(
        err("cosine:1e-3:x:100"),
        ScheduleError::BadNumber {
            kind: "cosine",
            arg: "LR_MIN",
            token: "x".into()
        }
    );
    assert_eq!(
        err("cosine:1e-3:0:1.5"),
        ScheduleError::BadNumber {
            kind: "cosine",
            arg: "T",
            token: "1.5".into()
        }
    );
    assert!(matches!(
        err("cosine:1e-3:0"),
        ScheduleError::ArgCount {
            kind: "cosine",
            expected: 3,
            got: 2,
            ..
        }
    ));
    assert!(matches!(
        err("constant"),
        ScheduleError::ArgCount {
            kind: "constant",
            expected: 1,
            got: 0,
            ..
        }
    ));
    assert!(matches!(
        err("exponential:1:0.5:7"),
        ScheduleError::ArgCount {
            kind: "exponential",
            expected: 2,
            got: 3,
            ..
        }
    ));
    assert!(matches!(
        err("step_decay:1:0.5:0"),
        ScheduleError::OutOfRange {
            kind: "step_decay",
            arg: "S",
            ..
        }
    ));
    assert!(matches!(
        err("constant:-1"),
        ScheduleError::OutOfRange {
            kind: "constant",
            arg: "LR",
            ..
        }
    ));
    assert!(matches!(
        err("inverse_time:1:nan"),
        ScheduleError::OutOfRange {
            kind: "inverse_time",
            arg: "K",
            ..
        }
    ));
    assert!(matches!(
        err("warmup:10:0"),
        ScheduleError::ArgCount {
            kind: "warmup",
            expected: 3,
            got: 2,
            ..
        }
    ));
    assert!(matches!(
        err("warmup:10:1.5:constant:1"),
        ScheduleError::OutOfRange {
            kind: "warmup",
            arg: "F",
            ..
        }
    ));
    assert_eq!(
        err("warmup:ten:0:constant:1"),
        ScheduleError::BadNumber {
            kind: "warmup",
            arg: "W",
            token: "ten".into()
        }
    );
    // An error inside the inner schedule is reported as is.
    assert_eq!(
        err("warmup:10:0:constant:fast"),
        ScheduleError::BadNumber {
            kind: "constant",
            arg: "LR",
            token: "fast".into()
        }
    );
    // The message names the bad token.
    assert_eq!(
        err("cosine:1e-3:x:100").to_string(),
        "schedule cosine: LR_MIN = \"x\" is not a valid number"
    );
}

#[test]
#[should_panic(expected = "schedule step_decay: S = 0 must be >= 1")]
fn schedule_step_decay_rejects_zero_step() {
    Schedule::step_decay(0.1, 0.5, 0);
}

// ------------------------------------------------------------------------------------------
// Checkpoints: save, continue vs restore into a fresh optimizer, continue.
// ------------------------------------------------------------------------------------------

/// A deterministic gradient that depends on the parameters and the step.
fn grad_at(p: &[f32], t: u64, g: &mut [f32]) {
    for (i, (g, &p)) in g.iter_mut().zip(p).enumerate() {
        *g = (1.0 + (i % 5) as f32) * p + ((i as f32 * 0.37 + t as f32).sin());
    }
}

fn run(opt: &mut dyn Optimizer, p: &mut [f32], steps: u64, schedule: &Schedule) {
    let mut g = vec![0.0f32; p.len()];
    for _ in 0..steps {
        grad_at(p, opt.steps(), &mut g);
        let lr = schedule.lr_at(opt.steps());
        opt.step(p, &g, lr);
    }
}

#[test]
fn state_save_restore_is_bitwise() {
    let n = 37;
    let schedule = Schedule::warmup(3, 0.1, Schedule::cosine(0.05, 0.001, 20));
    type Maker = fn(usize) -> Box<dyn Optimizer>;
    let makers: [(&str, Maker); 6] = [
        ("sgd", |n| Box::new(Sgd::new(n, SgdConfig::default()))),
        ("heavy-ball+L2", |n| {
            Box::new(Sgd::new(n, sgd_cfg(0.9, false, WeightDecay::L2(1e-2))))
        }),
        ("nesterov+decoupled", |n| {
            Box::new(Sgd::new(
                n,
                sgd_cfg(0.9, true, WeightDecay::Decoupled(1e-2)),
            ))
        }),
        ("adam", |n| Box::new(Adam::new(n, AdamConfig::default()))),
        ("adam+L2", |n| {
            Box::new(Adam::new(
                n,
                AdamConfig {
                    weight_decay: WeightDecay::L2(1e-2),
                    ..AdamConfig::default()
                },
            ))
        }),
        ("adamw", |n| Box::new(Adam::new(n, AdamConfig::adamw(0.01)))),
    ];
    let mut rng = StdRng::seed_from_u64(42);
    for (name, make) in makers {
        let p0: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();

        // Uninterrupted: 5 steps, snapshot, 9 more.
        let mut a = make(n);
        let mut pa = p0.clone();
        run(a.as_mut(), &mut pa, 5, &schedule);
        let saved_steps = a.state().steps;
        let saved: Vec<Vec<f32>> = a.state().buffers.iter().map(|b| b.to_vec()).collect();
        let saved_params = pa.clone();
        run(a.as_mut(), &mut pa, 9, &schedule);

        // Restored: fresh optimizer, load, 9 steps from the saved parameters.
        let mut b = make(n);
        b.load_state(&OptimState {
            steps: saved_steps,
            buffers: saved.iter().map(Vec::as_slice).collect(),
        })
        .unwrap();
        assert_eq!(b.steps(), 5, "{name}");
        let mut pb = saved_params;
        run(b.as_mut(), &mut pb, 9, &schedule);

        assert_eq!(b.steps(), 14, "{name}");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&pa), bits(&pb), "{name}: params differ after restore");
        assert_eq!(a.state(), b.state(), "{name}: state differs after restore");
        assert_ne!(pa, p0, "{name}: nothing moved");
    }
}

#[test]
fn state_shapes_and_names() {
    let plain = Sgd::new(4, SgdConfig::default());
    assert_eq!(plain.state_names(), [] as [&str; 0]);
    assert_eq!(
        plain.state(),
        OptimState {
            steps: 0,
            buffers: vec![]
        }
    );
    let heavy = Sgd::new(4, sgd_cfg(0.9, false, WeightDecay::None));
    assert_eq!(heavy.state_names(), ["momentum_buffer"]);
    assert_eq!(heavy.state().buffers, vec![&[0.0f32; 4][..]]);
    let adam = Adam::new(4, AdamConfig::default());
    assert_eq!(adam.state().buffers.len(), 2);
    assert!(adam.state().buffers.iter().all(|b| b == &[0.0; 4]));
    assert_eq!(adam.len(), 4);
    assert!(!adam.is_empty());
    assert!(Adam::new(0, AdamConfig::default()).is_empty());
}

#[test]
fn load_state_errors_leave_the_optimizer_unchanged() {
    let mut opt = Adam::new(3, AdamConfig::default());
    let mut p = P0;
    opt.step(&mut p, &G[0], 0.1);
    let before: Vec<Vec<f32>> = opt.state().buffers.iter().map(|b| b.to_vec()).collect();

    let zeros = [0.0f32; 3];
    let short = [0.0f32; 2];
    assert_eq!(
        opt.load_state(&OptimState {
            steps: 9,
            buffers: vec![&zeros]
        }),
        Err(OptimError::StateBufferCount {
            expected: 2,
            got: 1
        })
    );
    // The first buffer fits, the second does not: nothing may be copied.
    assert_eq!(
        opt.load_state(&OptimState {
            steps: 9,
            buffers: vec![&zeros, &short]
        }),
        Err(OptimError::StateLength {
            buffer: "exp_avg_sq",
            expected: 3,
            got: 2
        })
    );
    assert_eq!(opt.steps(), 1);
    let after: Vec<Vec<f32>> = opt.state().buffers.iter().map(|b| b.to_vec()).collect();
    assert_eq!(after, before);

    let mut sgd = Sgd::new(3, SgdConfig::default());
    assert_eq!(
        sgd.load_state(&OptimState {
            steps: 1,
            buffers: vec![&zeros]
        }),
        Err(OptimError::StateBufferCount {
            expected: 0,
            got: 1
        })
    );
    assert_eq!(
        sgd.load_state(&OptimState {
            steps: 7,
            buffers: vec![]
        }),
        Ok(())
    );
    assert_eq!(sgd.steps(), 7);
}

// ------------------------------------------------------------------------------------------
// Length mismatches.
// ------------------------------------------------------------------------------------------

#[test]
#[should_panic(
    expected = "Sgd::step: length mismatch: params has length 2 and grads has length 3, \
                but the optimizer was sized for 3 parameters"
)]
fn sgd_short_params_panics() {
    let mut opt = Sgd::new(3, SgdConfig::default());
    opt.step(&mut [0.0; 2], &[0.0; 3], 0.1);
}

#[test]
#[should_panic(
    expected = "Adam::step: length mismatch: params has length 3 and grads has length 4, \
                but the optimizer was sized for 3 parameters"
)]
fn adam_long_grads_panics() {
    let mut opt = Adam::new(3, AdamConfig::default());
    opt.step(&mut [0.0; 3], &[0.0; 4], 0.1);
}

#[test]
#[should_panic(expected = "Adam::step: length mismatch")]
fn adam_wrong_arena_panics_through_dyn() {
    let mut opt: Box<dyn Optimizer> = Box::new(Adam::new(5, AdamConfig::adamw(0.01)));
    opt.step(&mut [0.0; 4], &[0.0; 4], 0.1);
}

#[test]
fn mismatch_panics_before_touching_anything() {
    let mut opt = Sgd::new(3, sgd_cfg(0.9, false, WeightDecay::None));
    let mut p = [1.0f32, 2.0, 3.0];
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        opt.step(&mut p, &[1.0; 2], 0.1);
    }));
    assert!(r.is_err());
    assert_eq!(p, [1.0, 2.0, 3.0]);
    assert_eq!(opt.steps(), 0);
    assert_eq!(opt.state().buffers, vec![&[0.0f32; 3][..]]);
}

// ------------------------------------------------------------------------------------------
// Stepping a range, and holding the state of a range only (ZeRO-1).
// ------------------------------------------------------------------------------------------

/// The crate's optimizers that step ranges, with a decay mask whose edges
/// fall inside the ranges below.
fn ranged_optimizers(n: usize) -> Vec<(&'static str, Box<dyn Optimizer>)> {
    let mask = || backprop::optim::DecayMask::only(vec![3..20, 29..33], n).unwrap();
    vec![
        (
            "adamw",
            Box::new(
                Adam::new(
                    n,
                    AdamConfig {
                        weight_decay: WeightDecay::Decoupled(0.1),
                        ..AdamConfig::default()
                    },
                )
                .with_decay_mask(mask()),
            ),
        ),
        (
            "adam-l2",
            Box::new(Adam::new(
                n,
                AdamConfig {
                    weight_decay: WeightDecay::L2(0.05),
                    ..AdamConfig::default()
                },
            )),
        ),
        (
            "sgd-nesterov",
            Box::new(
                Sgd::new(
                    n,
                    SgdConfig {
                        momentum: 0.9,
                        nesterov: true,
                        weight_decay: WeightDecay::L2(0.05),
                    },
                )
                .with_decay_mask(mask()),
            ),
        ),
    ]
}

/// Pieces stepped apart, each by an optimizer holding only its piece's
/// state, give the bits of one optimizer stepping everything: parameters
/// and state.
#[test]
fn ranges_stepped_apart_with_their_state_alone_give_the_full_step() {
    let n = 37;
    let pieces = [0..11, 11..12, 12..30, 30..37];
    let mut rng = StdRng::seed_from_u64(8);
    let p0: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let grads: Vec<Vec<f32>> = (0..4)
        .map(|_| (0..n).map(|_| rng.random_range(-2.0..2.0)).collect())
        .collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (name, mut full) in ranged_optimizers(n) {
        let mut p_full = p0.clone();
        for g in &grads {
            full.step(&mut p_full, g, 0.01);
        }
        let mut p = p0.clone();
        for piece in pieces.clone() {
            let mut opt = ranged_optimizers(n)
                .into_iter()
                .find(|(k, _)| *k == name)
                .unwrap()
                .1;
            assert!(opt.keep_state(piece.clone()), "{name}");
            assert_eq!(opt.state_range(), piece, "{name}");
            let mut q = p.clone();
            for g in &grads {
                opt.step_range(&mut q, g, 0.01, piece.clone());
            }
            // Only the piece moved.
            for i in (0..n).filter(|i| !piece.contains(i)) {
                assert_eq!(
                    q[i].to_bits(),
                    p[i].to_bits(),
                    "{name}: element {i} outside {piece:?}"
                );
            }
            p[piece.clone()].copy_from_slice(&q[piece.clone()]);
            let st = opt.state();
            let whole = full.state();
            assert_eq!(st.steps, whole.steps);
            for (b, w) in st.buffers.iter().zip(&whole.buffers) {
                assert_eq!(
                    b.len(),
                    piece.len(),
                    "{name}: the state held is the piece's"
                );
                assert_eq!(
                    bits(b),
                    bits(&w[piece.clone()]),
                    "{name}: state on {piece:?}"
                );
            }
        }
        assert_eq!(bits(&p), bits(&p_full), "{name}: parameters");
    }
}

#[test]
fn a_narrowed_state_loads_full_or_its_own_length_and_widens_with_zeros() {
    let n = 10;
    let mut opt = Adam::new(n, AdamConfig::default());
    let full_m: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let full_v: Vec<f32> = (0..n).map(|i| 100.0 + i as f32).collect();
    opt.load_state(&OptimState {
        steps: 4,
        buffers: vec![&full_m, &full_v],
    })
    .unwrap();
    assert!(opt.keep_state(3..7));
    assert_eq!(opt.state().buffers, vec![&full_m[3..7], &full_v[3..7]]);
    // A full state gives its held part; the held length loads as it is.
    opt.load_state(&OptimState {
        steps: 5,
        buffers: vec![&full_v, &full_m],
    })
    .unwrap();
    assert_eq!(opt.state().buffers, vec![&full_v[3..7], &full_m[3..7]]);
    opt.load_state(&OptimState {
        steps: 6,
        buffers: vec![&[1.0; 4], &[2.0; 4]],
    })
    .unwrap();
    assert_eq!(opt.steps(), 6);
    // Any other length is refused, and nothing changes.
    let err = opt
        .load_state(&OptimState {
            steps: 9,
            buffers: vec![&[0.0; 5], &[0.0; 4]],
        })
        .unwrap_err();
    assert_eq!(
        err,
        OptimError::StateLength {
            buffer: "exp_avg",
            expected: n,
            got: 5
        }
    );
    assert_eq!(opt.steps(), 6);
    // Widening keeps the overlap and starts the rest at zero.
    assert!(opt.keep_state(5..n));
    assert_eq!(opt.state().buffers[0], &[1.0, 1.0, 0.0, 0.0, 0.0]);
    assert!(opt.keep_state(0..n));
    assert_eq!(
        opt.state().buffers[1],
        &[0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0]
    );
}

#[test]
#[should_panic(expected = "outside the state it keeps")]
fn a_full_step_with_a_narrowed_state_is_refused() {
    let mut opt = Sgd::new(
        4,
        SgdConfig {
            momentum: 0.5,
            ..SgdConfig::default()
        },
    );
    opt.keep_state(1..3);
    opt.step(&mut [0.0; 4], &[1.0; 4], 0.1);
}
