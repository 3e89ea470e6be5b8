//! Stochastic gradient descent with optional heavy-ball or Nesterov momentum.

use super::{
    check_step, config_fail, load_buffers, rewindow, DecayMask, OptimError, OptimState, Optimizer,
    WeightDecay,
};
use std::ops::Range;

use crate::parallel::{self, SharedMut};

/// Hyperparameters of [`Sgd`]. `SgdConfig::default()` is plain SGD: no
/// momentum, no Nesterov, no weight decay (PyTorch's defaults).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SgdConfig {
    /// μ, finite and ≥ 0. 0 disables momentum (and then no buffer is kept).
    pub momentum: f32,
    /// Nesterov's variant instead of heavy-ball; requires `momentum > 0`.
    pub nesterov: bool,
    /// Coupled L2 (PyTorch's `weight_decay`) or decoupled decay; see [`Sgd`].
    pub weight_decay: WeightDecay,
}

/// SGD with optional momentum, in **PyTorch's formulation with dampening 0**.
///
/// Per element, at step t with step size `lr`, gradient g, momentum buffer v
/// (zero before the first step) and μ = `momentum`:
///
/// ```text
/// g ← g + λ·p                 only with WeightDecay::L2(λ)    (coupled)
/// p ← p·(1 − lr·λ)            only with WeightDecay::Decoupled(λ)
/// if μ = 0:   p ← p − lr·g                                   (plain SGD)
/// else:       v ← μ·v + g
///             heavy-ball:  p ← p − lr·v
///             Nesterov:    p ← p − lr·(g + μ·v)              (with the new v)
/// ```
///
/// On the first step v becomes g exactly, as PyTorch's lazily created buffer
/// does. Note that this is PyTorch's form, not Sutskever's `v ← μ·v − lr·g`,
/// `p ← p + v`: the two agree for a constant `lr` but differ when the
/// schedule changes it, because here `lr` multiplies the whole velocity at
/// each step. Neither dampening nor `maximize` is supported. Decoupled decay
/// is not offered by PyTorch's `SGD`; it is applied to p before the gradient
/// update and does not enter v.
///
/// State: one buffer, `"momentum_buffer"` (v), when μ > 0; none otherwise.
///
/// ```
/// use backprop::optim::{Optimizer, Sgd, SgdConfig, WeightDecay};
///
/// let mut params = vec![1.0f32, -2.0];
/// let grads = vec![0.5f32, 1.0];
/// let cfg = SgdConfig { momentum: 0.5, nesterov: false, weight_decay: WeightDecay::None };
/// let mut opt = Sgd::new(params.len(), cfg);
/// opt.step(&mut params, &grads, 0.1); // v = g;       p -= 0.1·v
/// opt.step(&mut params, &grads, 0.1); // v = 0.5v + g; p -= 0.1·v
/// // p₀ − 0.1·g − 0.1·1.5·g = p₀ − 0.25·g
/// assert!((params[0] - 0.875).abs() < 1e-6 && (params[1] + 2.25).abs() < 1e-6);
/// assert_eq!(opt.steps(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct Sgd {
    config: SgdConfig,
    mask: DecayMask,
    n: usize,
    steps: u64,
    /// The elements whose state is kept (`0..n` unless `keep_state`).
    held: Range<usize>,
    /// v over `held` if momentum > 0, else empty.
    velocity: Vec<f32>,
}

const NAMES_MOMENTUM: &[&str] = &["momentum_buffer"];
const NAMES_PLAIN: &[&str] = &[];

impl Sgd {
    /// An optimizer for `n` parameters; allocates the momentum buffer (n
    /// zeros) when `momentum > 0`.
    ///
    /// # Errors
    ///
    /// [`OptimError::NesterovWithoutMomentum`] for `nesterov` with
    /// `momentum == 0`; [`OptimError::InvalidHyperparameter`] for a negative or
    /// non-finite momentum or weight decay λ.
    pub fn try_new(n: usize, config: SgdConfig) -> Result<Self, OptimError> {
        let mu = config.momentum;
        if !(mu.is_finite() && mu >= 0.0) {
            return Err(OptimError::InvalidHyperparameter {
                name: "momentum",
                value: mu,
                requirement: "finite and >= 0",
            });
        }
        if config.nesterov && mu == 0.0 {
            return Err(OptimError::NesterovWithoutMomentum);
        }
        config.weight_decay.validate()?;
        let velocity = if mu > 0.0 { vec![0.0; n] } else { Vec::new() };
        Ok(Sgd {
            config,
            mask: DecayMask::all(),
            n,
            steps: 0,
            held: 0..n,
            velocity,
        })
    }

    /// Like [`try_new`](Sgd::try_new), for configurations known to be valid.
    ///
    /// # Panics
    ///
    /// On any error `try_new` reports, with its message.
    #[track_caller]
    pub fn new(n: usize, config: SgdConfig) -> Self {
        match Sgd::try_new(n, config) {
            Ok(s) => s,
            Err(e) => config_fail("Sgd", e),
        }
    }

    /// The configuration this optimizer was built with.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// The same optimizer with weight decay only where `mask` says (see
    /// [`DecayMask`]); elsewhere it steps as SGD without weight decay.
    pub fn with_decay_mask(mut self, mask: DecayMask) -> Self {
        self.mask = mask;
        self
    }
}

impl Optimizer for Sgd {
    /// One SGD step; see [`Sgd`] for the exact update.
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
        check_step("Sgd", self.n, &self.held, params, grads, &range);
        self.steps += 1;
        let (l2, decay) = self.config.weight_decay.split(lr);
        let coupled = matches!(self.config.weight_decay, WeightDecay::L2(_));
        let mu = self.config.momentum;
        let nesterov = self.config.nesterov;
        let mask = &self.mask;
        // Elementwise, so cutting the arena across threads changes no bit.
        let (p, v) = (
            SharedMut::new(params),
            SharedMut::new(&mut self.velocity[..]),
        );
        let (base, h) = (range.start, self.held.start);
        parallel::for_each_range(range.len(), |r| {
            mask.split(base + r.start..base + r.end, |r, decayed| {
                // Outside the decay mask: no decay (λ = 0, factor exactly 1).
                let (coupled, l2, decay) = match decayed {
                    true => (coupled, l2, decay),
                    false => (false, 0.0, 1.0),
                };
                // SAFETY: for_each_range hands out disjoint ranges and the
                // mask cuts each into disjoint pieces; both slices stay
                // borrowed until it returns.
                let p = unsafe { p.range(r.clone()) };
                let g = &grads[r.clone()];
                if mu == 0.0 {
                    super::vectorized(|| {
                        if coupled {
                            plain::<true>(p, g, lr, l2, decay);
                        } else {
                            plain::<false>(p, g, lr, l2, decay);
                        }
                    });
                    return;
                }
                // SAFETY: as above (the state of element i sits at i − h).
                let v = unsafe { v.range(r.start - h..r.end - h) };
                super::vectorized(|| match (coupled, nesterov) {
                    (false, false) => momentum::<false, false>(p, g, v, lr, mu, l2, decay),
                    (false, true) => momentum::<false, true>(p, g, v, lr, mu, l2, decay),
                    (true, false) => momentum::<true, false>(p, g, v, lr, mu, l2, decay),
                    (true, true) => momentum::<true, true>(p, g, v, lr, mu, l2, decay),
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
        let buffers: &mut [&mut Vec<f32>] = if self.config.momentum > 0.0 {
            &mut [&mut self.velocity]
        } else {
            &mut []
        };
        self.held = rewindow("Sgd", self.n, buffers, &self.held, range);
        true
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn state_names(&self) -> &'static [&'static str] {
        if self.config.momentum > 0.0 {
            NAMES_MOMENTUM
        } else {
            NAMES_PLAIN
        }
    }

    fn state(&self) -> OptimState<'_> {
        let buffers = if self.config.momentum > 0.0 {
            vec![&self.velocity[..]]
        } else {
            Vec::new()
        };
        OptimState {
            steps: self.steps,
            buffers,
        }
    }

    fn load_state(&mut self, state: &OptimState<'_>) -> Result<(), OptimError> {
        let names = self.state_names();
        if names.is_empty() {
            load_buffers(names, self.n, &self.held, state, &mut [])?;
        } else {
            load_buffers(names, self.n, &self.held, state, &mut [&mut self.velocity])?;
        }
        self.steps = state.steps;
        Ok(())
    }

    fn config_text(&self) -> String {
        let c = &self.config;
        format!(
            "sgd:momentum={}:nesterov={}:weight_decay={}{}",
            c.momentum,
            c.nesterov,
            c.weight_decay.text(),
            self.mask.text()
        )
    }
}

// The loops. Every slice is re-sliced to `n` first so that the indexing below
// provably stays in bounds and the bounds checks disappear; the const
// parameters select the variant at compile time, so each loop body is
// branch-free and vectorises.

/// `p ← p·decay − lr·(g [+ λ·p])`.
#[inline(always)]
fn plain<const L2: bool>(p: &mut [f32], g: &[f32], lr: f32, l2: f32, decay: f32) {
    let n = p.len();
    let g = &g[..n];
    for i in 0..n {
        let gi = if L2 { g[i] + l2 * p[i] } else { g[i] };
        p[i] = p[i] * decay - lr * gi;
    }
}

/// `v ← μ·v + g'`, `p ← p·decay − lr·u` with `u = v` (heavy-ball) or
/// `u = g' + μ·v` (Nesterov), where `g' = g [+ λ·p]`.
#[inline(always)]
fn momentum<const L2: bool, const NESTEROV: bool>(
    p: &mut [f32],
    g: &[f32],
    v: &mut [f32],
    lr: f32,
    mu: f32,
    l2: f32,
    decay: f32,
) {
    let n = p.len();
    let (g, v) = (&g[..n], &mut v[..n]);
    for i in 0..n {
        let gi = if L2 { g[i] + l2 * p[i] } else { g[i] };
        let vi = mu * v[i] + gi;
        v[i] = vi;
        let u = if NESTEROV { gi + mu * vi } else { vi };
        p[i] = p[i] * decay - lr * u;
    }
}
