//! Adam and AdamW.

use super::{
    check_step, config_fail, load_buffers, rewindow, DecayMask, OptimError, OptimState, Optimizer,
    WeightDecay,
};
use std::ops::Range;

use crate::parallel::{self, SharedMut};

/// Hyperparameters of [`Adam`]. `AdamConfig::default()` is PyTorch's `Adam`
/// default (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, no weight decay);
/// [`AdamConfig::adamw`] is PyTorch's `AdamW` with the given λ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// β₁, the decay of the first-moment average m; in [0, 1).
    pub beta1: f32,
    /// β₂, the decay of the second-moment average v; in [0, 1).
    pub beta2: f32,
    /// ε, added to √v̂ in the denominator; finite and ≥ 0. With ε = 0 an
    /// element whose gradient has always been 0 gets 0/0 = NaN.
    pub eps: f32,
    /// [`WeightDecay::L2`] is Adam's coupled `weight_decay`,
    /// [`WeightDecay::Decoupled`] makes this AdamW.
    pub weight_decay: WeightDecay,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: WeightDecay::None,
        }
    }
}

impl AdamConfig {
    /// AdamW: the defaults with decoupled weight decay λ
    /// ([`WeightDecay::Decoupled`]). PyTorch's `AdamW` default is λ = 0.01.
    pub fn adamw(lambda: f32) -> Self {
        AdamConfig {
            weight_decay: WeightDecay::Decoupled(lambda),
            ..AdamConfig::default()
        }
    }
}

/// Adam (Kingma & Ba) and, with [`WeightDecay::Decoupled`], AdamW
/// (Loshchilov & Hutter), with **PyTorch's update** (`amsgrad = false`,
/// `maximize = false`).
///
/// Per element, at step t = 1, 2, … with step size `lr`, gradient g and the
/// moment estimates m, v (zero before the first step):
///
/// ```text
/// g  ← g + λ·p                     only with WeightDecay::L2(λ)  (Adam's weight_decay)
/// p  ← p·(1 − lr·λ)                only with WeightDecay::Decoupled(λ)  (AdamW)
/// m  ← β₁·m + (1 − β₁)·g
/// v  ← β₂·v + (1 − β₂)·g²
/// m̂  = m / (1 − β₁ᵗ)
/// v̂  = v / (1 − β₂ᵗ)
/// p  ← p − lr·m̂ / (√v̂ + ε)
/// ```
///
/// ε is added **after** the square root and after the bias correction of v,
/// exactly where PyTorch adds it. PyTorch evaluates the last line as
/// `p − (lr/(1 − β₁ᵗ))·m / (√v/√(1 − β₂ᵗ) + ε)`; this crate multiplies the
/// fraction through by `√(1 − β₂ᵗ)`, `p − (lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ))·m /
/// (√v + ε·√(1 − β₂ᵗ))`, the same value with one division per element
/// instead of two: the update is bound by its square root and divisions, not
/// by memory, and one division fewer took it to 0.78× the time (Zen 4, one
/// thread). The per-step scalars are computed in `f64` and rounded once (the
/// scaled ε no smaller than `f32::MIN_POSITIVE` when ε > 0), everything per
/// element in `f32`. The results agree with PyTorch to `f32` rounding, not
/// necessarily bitwise (PyTorch updates m with `lerp`, for one).
///
/// State: `"exp_avg"` (m) and `"exp_avg_sq"` (v), each of length n, and the
/// step count t.
///
/// ```
/// use backprop::optim::{Adam, AdamConfig, Optimizer};
///
/// let mut params = vec![1.0f32, -1.0];
/// let grads = vec![0.25f32, -4.0];
/// let mut opt = Adam::new(params.len(), AdamConfig::default());
/// opt.step(&mut params, &grads, 0.1);
/// // First step: m̂ = g and v̂ = g², so every element moves by lr·g/(|g| + ε) ≈ ±lr.
/// assert!((params[0] - 0.9).abs() < 1e-6 && (params[1] + 0.9).abs() < 1e-6);
///
/// let mut adamw = Adam::new(2, AdamConfig::adamw(0.01));
/// let mut q = vec![1.0f32, -1.0];
/// adamw.step(&mut q, &[0.0, 0.0], 0.1);
/// // Zero gradient: only the decoupled decay acts, q ← q·(1 − 0.1·0.01).
/// assert_eq!(q, [0.999, -0.999]);
/// ```
#[derive(Clone, Debug)]
pub struct Adam {
    config: AdamConfig,
    mask: DecayMask,
    n: usize,
    steps: u64,
    /// The elements whose state is kept (`0..n` unless `keep_state`).
    held: Range<usize>,
    /// m over `held`.
    exp_avg: Vec<f32>,
    /// v over `held`.
    exp_avg_sq: Vec<f32>,
}

const NAMES: &[&str] = &["exp_avg", "exp_avg_sq"];

impl Adam {
    /// An optimizer for `n` parameters; allocates m and v (n zeros each).
    ///
    /// # Errors
    ///
    /// [`OptimError::InvalidHyperparameter`] if β₁ or β₂ is not in [0, 1),
    /// ε is negative or not finite, or λ is negative or not finite.
    pub fn try_new(n: usize, config: AdamConfig) -> Result<Self, OptimError> {
        for (name, b) in [("beta1", config.beta1), ("beta2", config.beta2)] {
            if !((0.0..1.0).contains(&b)) {
                return Err(OptimError::InvalidHyperparameter {
                    name,
                    value: b,
                    requirement: "in [0, 1)",
                });
            }
        }
        if !(config.eps.is_finite() && config.eps >= 0.0) {
            return Err(OptimError::InvalidHyperparameter {
                name: "eps",
                value: config.eps,
                requirement: "finite and >= 0",
            });
        }
        config.weight_decay.validate()?;
        Ok(Adam {
            config,
            mask: DecayMask::all(),
            n,
            steps: 0,
            held: 0..n,
            exp_avg: vec![0.0; n],
            exp_avg_sq: vec![0.0; n],
        })
    }

    /// Like [`try_new`](Adam::try_new), for configurations known to be valid.
    ///
    /// # Panics
    ///
    /// On any error `try_new` reports, with its message.
    #[track_caller]
    pub fn new(n: usize, config: AdamConfig) -> Self {
        match Adam::try_new(n, config) {
            Ok(a) => a,
            Err(e) => config_fail("Adam", e),
        }
    }

    /// The configuration this optimizer was built with.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// The same optimizer with weight decay only where `mask` says (see
    /// [`DecayMask`]); elsewhere it steps as Adam without weight decay.
    pub fn with_decay_mask(mut self, mask: DecayMask) -> Self {
        self.mask = mask;
        self
    }
}

/// The per-step scalars of the element loop, all rounded to `f32` once.
#[derive(Clone, Copy)]
struct Scalars {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    /// lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)
    step_size: f32,
    /// ε·√(1 − β₂ᵗ)
    eps: f32,
    /// λ for coupled L2, else 0.
    l2: f32,
    /// 1 − lr·λ for decoupled decay, else 1.
    decay: f32,
}

impl Optimizer for Adam {
    /// One Adam/AdamW step; see [`Adam`] for the exact update.
    ///
    /// # Panics
    ///
    /// If `params.len()` or `grads.len()` is not [`len`](Optimizer::len).
    #[track_caller]
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        let n = self.n;
        self.step_range(params, grads, lr, 0..n);
    }

    fn can_step_range(&self) -> bool {
        true
    }

    /// The update of `step` on `range` alone (elementwise: the same bits).
    #[track_caller]
    fn step_range(&mut self, params: &mut [f32], grads: &[f32], lr: f32, range: Range<usize>) {
        check_step("Adam", self.n, &self.held, params, grads, &range);
        self.steps += 1;
        let c = &self.config;
        // t as f64 is exact up to 2⁵³ steps; β^t underflows to 0 long before.
        let t = self.steps as f64;
        let bc1 = 1.0 - (c.beta1 as f64).powf(t);
        let bc2_sqrt = (1.0 - (c.beta2 as f64).powf(t)).sqrt();
        let (l2, decay) = c.weight_decay.split(lr);
        let s = Scalars {
            beta1: c.beta1,
            one_minus_beta1: (1.0 - c.beta1 as f64) as f32,
            beta2: c.beta2,
            one_minus_beta2: (1.0 - c.beta2 as f64) as f32,
            step_size: (lr as f64 / bc1 * bc2_sqrt) as f32,
            // Kept a normal number: the update runs with denormals read as
            // zero, and a positive ε must keep 0/0 out of the update.
            eps: if c.eps > 0.0 {
                ((c.eps as f64 * bc2_sqrt) as f32).max(f32::MIN_POSITIVE)
            } else {
                0.0
            },
            l2,
            decay,
        };
        let l2_coupled = matches!(c.weight_decay, WeightDecay::L2(_));
        // Outside the decay mask: the same scalars without decay.
        let plain = Scalars {
            l2: 0.0,
            decay: 1.0,
            ..s
        };
        let mask = &self.mask;
        // Elementwise, so cutting the arena across threads changes no bit.
        let (p, m, v) = (
            SharedMut::new(params),
            SharedMut::new(&mut self.exp_avg[..]),
            SharedMut::new(&mut self.exp_avg_sq[..]),
        );
        let (base, h) = (range.start, self.held.start);
        parallel::for_each_range(range.len(), |r| {
            mask.split(base + r.start..base + r.end, |r, decayed| {
                // The state of element i sits at i − h.
                let at = r.start - h..r.end - h;
                // SAFETY: for_each_range hands out disjoint ranges and the
                // mask cuts each into disjoint pieces; the three slices stay
                // borrowed until it returns.
                let (p, m, v) = unsafe { (p.range(r.clone()), m.range(at.clone()), v.range(at)) };
                let g = &grads[r];
                super::vectorized(|| match (decayed, l2_coupled) {
                    (true, true) => adam_loop::<true>(p, g, m, v, s),
                    (true, false) => adam_loop::<false>(p, g, m, v, s),
                    (false, _) => adam_loop::<false>(p, g, m, v, plain),
                });
            });
        });
    }

    fn len(&self) -> usize {
        self.n
    }

    fn state_range(&self) -> Range<usize> {
        self.held.clone()
    }

    fn keep_state(&mut self, range: Range<usize>) -> bool {
        self.held = rewindow(
            "Adam",
            self.n,
            &mut [&mut self.exp_avg, &mut self.exp_avg_sq],
            &self.held,
            range,
        );
        true
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn state_names(&self) -> &'static [&'static str] {
        NAMES
    }

    fn state(&self) -> OptimState<'_> {
        OptimState {
            steps: self.steps,
            buffers: vec![&self.exp_avg[..], &self.exp_avg_sq[..]],
        }
    }

    fn load_state(&mut self, state: &OptimState<'_>) -> Result<(), OptimError> {
        load_buffers(
            NAMES,
            self.n,
            &self.held,
            state,
            &mut [&mut self.exp_avg, &mut self.exp_avg_sq],
        )?;
        self.steps = state.steps;
        Ok(())
    }

    fn config_text(&self) -> String {
        let c = &self.config;
        format!(
            "adam:beta1={}:beta2={}:eps={}:weight_decay={}{}",
            c.beta1,
            c.beta2,
            c.eps,
            c.weight_decay.text(),
            self.mask.text()
        )
    }
}

/// The element loop. All slices are re-sliced to `n` so the bounds checks
/// vanish; `L2` is a compile-time choice, so the body is branch-free and
/// vectorises (`sqrt` and the division map to packed instructions).
#[inline(always)]
fn adam_loop<const L2: bool>(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: Scalars) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = if L2 { g[i] + s.l2 * p[i] } else { g[i] };
        let mi = s.beta1 * m[i] + s.one_minus_beta1 * gi;
        let vi = s.beta2 * v[i] + s.one_minus_beta2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * s.decay - s.step_size * (mi / (vi.sqrt() + s.eps));
    }
}
