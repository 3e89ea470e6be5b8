//! Optimizers and step-size schedules over one flat parameter arena.
//!
//! # The flat-arena contract
//!
//! A model keeps **all** of its parameters in one `Vec<f32>` of length n (the
//! arena) and its gradients in a second one of the same length and the same
//! layout: `grads[i]` is ∂loss/∂`params[i]`. An optimizer sizes its state for
//! that n once, in its constructor — a momentum buffer for [`Sgd`], the two
//! moment estimates for [`Adam`] — and every state vector uses the same layout
//! again, so `state[i]` belongs to `params[i]`. One [`Optimizer::step`] is then
//! a single pass over flat slices:
//!
//! * no allocation: the state was allocated in `new`, and the gradient is only
//!   read (even coupled weight decay forms `g + λ·p` in a register, never in
//!   `grads`);
//! * no per-element branch on data: the choice of weight decay, momentum and
//!   Nesterov is made once per call, outside the loop, and each combination has
//!   its own loop that the compiler vectorises;
//! * no knowledge of the model: which ranges of the arena are weights, biases
//!   or BatchNorm scales does not matter here. (Decaying only some of them
//!   would take a mask or several arenas; weight decay applies to every
//!   element.)
//! * subnormals flushed to zero: on x86-64 the update runs with the FTZ and DAZ
//!   bits set (restored afterwards), so a parameter, momentum or moment that
//!   would come out below `f32::MIN_POSITIVE` in magnitude (≈ 1.18e-38) is
//!   stored as 0. State that decays geometrically, such as the momentum of a
//!   weight with a zero gradient, otherwise spends ~150 steps in the subnormal
//!   range, where each x86 operation costs about a hundred cycles (a small
//!   network's SGD-momentum step measured 57 µs with them, 35 µs without).
//!
//! The step size is an argument of `step`, not part of the optimizer, so a
//! [`Schedule`] can drive it:
//!
//! ```
//! use backprop::optim::{Adam, AdamConfig, Optimizer, Schedule};
//!
//! // f(p) = ½·Σ pᵢ², whose gradient is p itself.
//! let mut params = vec![1.0f32, -2.0, 0.5];
//! let mut grads = vec![0.0f32; params.len()];
//! let mut opt = Adam::new(params.len(), AdamConfig::adamw(0.01));
//! let schedule = Schedule::warmup(10, 0.1, Schedule::cosine(0.1, 0.0, 290));
//! for _ in 0..300 {
//!     grads.copy_from_slice(&params); // backward pass
//!     let lr = schedule.lr_at(opt.steps());
//!     opt.step(&mut params, &grads, lr);
//! }
//! assert!(params.iter().all(|p| p.abs() < 1e-2), "{params:?}");
//! ```
//!
//! # Weight decay
//!
//! [`WeightDecay`] selects between the two meanings the literature gives the
//! term; each optimizer's docs state exactly where it enters its update:
//!
//! * [`WeightDecay::L2`]`(λ)` is **coupled**: `g ← g + λ·p` before anything
//!   else, i.e. the gradient of an extra (λ/2)·‖p‖² in the loss. This is the
//!   `weight_decay` argument of PyTorch's `SGD` and `Adam`. With Adam the decay
//!   term is rescaled per element by 1/(√v̂ + ε) like the rest of the gradient.
//! * [`WeightDecay::Decoupled`]`(λ)` shrinks the parameters directly,
//!   `p ← p·(1 − lr·λ)` = `p − lr·λ·p`, before the gradient update and from the
//!   gradient alone (Loshchilov & Hutter; PyTorch's `AdamW`). Note that the
//!   shrinkage scales with the *scheduled* `lr`, as in PyTorch.
//!
//! # Checkpoints
//!
//! [`Optimizer::state`] borrows the complete state — the step count and every
//! buffer, in the documented order — and [`Optimizer::load_state`] copies one
//! back, so `save → load → continue` gives bitwise the same parameters as
//! never stopping. The configuration (β's, momentum, decay) is not part of the
//! state; rebuild the optimizer with the same config, then load.
//!
//! # Gradient clipping
//!
//! [`clip_grad_norm`] rescales the whole gradient arena to a maximum global L2
//! norm (PyTorch's `clip_grad_norm_`) and reports the norm, which doubles as a
//! divergence detector: NaN or ±∞ anywhere gives a non-finite norm.

mod adam;
mod decay;
mod schedule;
mod sgd;

use std::fmt;
use std::ops::Range;

pub use adam::{Adam, AdamConfig};
pub use decay::DecayMask;
pub use schedule::{Schedule, ScheduleError, MAX_WARMUP_NESTING};
pub use sgd::{Sgd, SgdConfig};

/// How weight decay enters an optimizer's update. λ must be finite and ≥ 0
/// (checked by the optimizer's constructor).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum WeightDecay {
    /// No weight decay.
    #[default]
    None,
    /// Coupled L2 regularisation: `g ← g + λ·p` before the update, the gradient
    /// of (λ/2)·‖p‖² (PyTorch's `weight_decay` for `SGD` and `Adam`).
    L2(f32),
    /// Decoupled decay: `p ← p·(1 − lr·λ)` before the gradient update, with
    /// the step's `lr` (PyTorch's `AdamW`; also accepted by [`Sgd`]).
    Decoupled(f32),
}

impl WeightDecay {
    /// λ, or 0 for [`WeightDecay::None`].
    pub fn lambda(self) -> f32 {
        match self {
            WeightDecay::None => 0.0,
            WeightDecay::L2(l) | WeightDecay::Decoupled(l) => l,
        }
    }

    /// `none`, `l2(λ)` or `decoupled(λ)`, for [`Optimizer::config_text`].
    fn text(self) -> String {
        match self {
            WeightDecay::None => "none".into(),
            WeightDecay::L2(l) => format!("l2({l})"),
            WeightDecay::Decoupled(l) => format!("decoupled({l})"),
        }
    }

    /// Checks that λ is finite and ≥ 0.
    fn validate(self) -> Result<(), OptimError> {
        let l = self.lambda();
        if l.is_finite() && l >= 0.0 {
            Ok(())
        } else {
            Err(OptimError::InvalidHyperparameter {
                name: "weight_decay",
                value: l,
                requirement: "finite and >= 0",
            })
        }
    }

    /// The coupled λ (0 unless `L2`) and the decoupled factor `1 − lr·λ`
    /// (exactly 1 unless `Decoupled`, and multiplying by 1 is the identity on
    /// every float, NaN and ±0 included). The factor is formed in `f64` and
    /// rounded once, as PyTorch rounds its Python-float `1 - lr*weight_decay`.
    #[inline]
    fn split(self, lr: f32) -> (f32, f32) {
        match self {
            WeightDecay::None => (0.0, 1.0),
            WeightDecay::L2(l) => (l, 1.0),
            WeightDecay::Decoupled(l) => (0.0, (1.0 - lr as f64 * l as f64) as f32),
        }
    }
}

/// A borrowed snapshot of an optimizer's complete state, for checkpoints.
///
/// `buffers[i]` is named [`Optimizer::state_names`]`()[i]` and holds the
/// state of the elements [`Optimizer::state_range`] (all [`Optimizer::len`]
/// of them unless [`Optimizer::keep_state`] narrowed it), in the arena's
/// layout. Build one from owned vectors to
/// restore: `OptimState { steps, buffers: saved.iter().map(Vec::as_slice).collect() }`.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimState<'a> {
    /// Steps taken so far ([`Optimizer::steps`]; Adam's t).
    pub steps: u64,
    /// The state buffers, each of length n (or of the held range's length),
    /// in the order of [`Optimizer::state_names`].
    pub buffers: Vec<&'a [f32]>,
}

/// An optimizer over a flat parameter arena: see the [module docs](self) for
/// the contract shared by every implementation.
pub trait Optimizer {
    /// One update of every parameter, `params ← update(params, grads, state)`,
    /// with step size `lr`, used as given (`lr = 0` leaves the parameters
    /// unchanged but still advances the state; a negative `lr` ascends).
    /// Increments [`steps`](Optimizer::steps) first, so the first call uses
    /// t = 1.
    ///
    /// Non-finite values are not checked for; they propagate into the
    /// parameters and the state (use [`clip_grad_norm`]'s return value to
    /// catch them before stepping).
    ///
    /// # Panics
    ///
    /// If `params.len()` or `grads.len()` differs from [`len`](Optimizer::len);
    /// nothing is updated then.
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32);

    /// Whether [`step_range`](Optimizer::step_range) is supported: an
    /// elementwise update, whose slices can be stepped apart (a rank's share
    /// in data-parallel training). `false` by default.
    fn can_step_range(&self) -> bool {
        false
    }

    /// [`step`](Optimizer::step) restricted to the elements in `range`:
    /// those parameters and their state get exactly the update `step` gives
    /// them (bit for bit); the others, and their state, are untouched.
    /// Increments [`steps`](Optimizer::steps) as `step` does.
    ///
    /// # Panics
    /// As `step`, or if `range` reaches past [`len`](Optimizer::len) or
    /// outside [`state_range`](Optimizer::state_range), or if
    /// [`can_step_range`](Optimizer::can_step_range) is false (the default).
    fn step_range(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        lr: f32,
        range: std::ops::Range<usize>,
    ) {
        let _ = (params, grads, lr, range);
        panic!("this optimizer cannot step a range of its parameters (can_step_range is false)");
    }

    /// The elements whose state this optimizer holds: `0..len()` unless
    /// [`keep_state`](Optimizer::keep_state) narrowed it.
    fn state_range(&self) -> std::ops::Range<usize> {
        0..self.len()
    }

    /// Holds the state of the elements in `range` only, and frees the rest
    /// (ZeRO-1: a rank of a data-parallel group keeps the state of the
    /// parameters it updates, `1/R` of it). Where the new range reaches past
    /// the held one, the state starts at zero; `keep_state(0..len())`
    /// widens back to the full size. Afterwards
    /// [`step_range`](Optimizer::step_range) takes ranges within `range`,
    /// [`step`](Optimizer::step) needs the full range, and
    /// [`state`](Optimizer::state) returns buffers of `range.len()` values.
    /// Returns `false` and changes nothing where the optimizer cannot (the
    /// default); the crate's optimizers can.
    ///
    /// # Panics
    /// If `range` reaches past [`len`](Optimizer::len).
    fn keep_state(&mut self, range: std::ops::Range<usize>) -> bool {
        let _ = range;
        false
    }

    /// The number of parameters n the state was sized for.
    fn len(&self) -> usize;

    /// Whether n = 0 (a step is then a no-op apart from counting).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Steps taken so far: 0 after construction, t after t calls of
    /// [`step`](Optimizer::step), or whatever [`load_state`](Optimizer::load_state) set.
    fn steps(&self) -> u64;

    /// Names of the state buffers in the order [`state`](Optimizer::state)
    /// returns them, PyTorch's: `["momentum_buffer"]` or `[]` for SGD,
    /// `["exp_avg", "exp_avg_sq"]` for Adam.
    fn state_names(&self) -> &'static [&'static str];

    /// The state: the step count and every buffer, each over
    /// [`state_range`](Optimizer::state_range) (length n unless
    /// [`keep_state`](Optimizer::keep_state) narrowed it). Allocates the
    /// small `Vec` of slices; the buffers are borrowed.
    fn state(&self) -> OptimState<'_>;

    /// Restores a state saved with [`state`](Optimizer::state) from an
    /// optimizer of the same kind, length and configuration. Everything is
    /// checked before anything is copied. With a narrowed
    /// [`state_range`](Optimizer::state_range), buffers of length n (a full
    /// state: the held range is taken from them) and buffers of the held
    /// range's length are both accepted.
    ///
    /// # Errors
    ///
    /// [`OptimError::StateBufferCount`] if the number of buffers is not
    /// `state_names().len()`, [`OptimError::StateLength`] if a buffer's length
    /// is neither n nor the held range's. The optimizer is unchanged on
    /// error.
    fn load_state(&mut self, state: &OptimState<'_>) -> Result<(), OptimError>;

    /// The optimizer's kind and hyperparameters as text, e.g.
    /// `adam:beta1=0.9:beta2=0.999:eps=0.00000001:weight_decay=decoupled(0.01)`
    /// (`f32`s in Rust's shortest round-trip form): two optimizers with the
    /// same text update identically. Checkpoints store it so that a run
    /// cannot resume under another optimizer whose state buffers happen to
    /// have the same names (Adam and AdamW). The default, for optimizers
    /// defined outside this crate, is empty: nothing to compare.
    fn config_text(&self) -> String {
        String::new()
    }
}

/// An invalid optimizer configuration or a state that does not fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimError {
    /// `nesterov: true` with `momentum == 0` (Nesterov momentum without
    /// momentum; PyTorch rejects it too).
    NesterovWithoutMomentum,
    /// A hyperparameter outside its valid range.
    InvalidHyperparameter {
        /// The config field, e.g. `"beta2"`.
        name: &'static str,
        /// The value given.
        value: f32,
        /// The valid range, in words.
        requirement: &'static str,
    },
    /// [`Optimizer::load_state`] got a different number of buffers than the
    /// optimizer has.
    StateBufferCount {
        /// Buffers the optimizer has (`state_names().len()`).
        expected: usize,
        /// Buffers given.
        got: usize,
    },
    /// [`Optimizer::load_state`] got a buffer whose length is not n.
    StateLength {
        /// Name of the buffer ([`Optimizer::state_names`]).
        buffer: &'static str,
        /// n, the optimizer's length.
        expected: usize,
        /// The buffer's length.
        got: usize,
    },
    /// [`DecayMask::only`] got ranges that do not fit the arena.
    DecayRanges {
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for OptimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OptimError::NesterovWithoutMomentum => {
                write!(f, "Nesterov momentum requires momentum > 0")
            }
            OptimError::InvalidHyperparameter {
                name,
                value,
                requirement,
            } => write!(f, "invalid {name} = {value}: must be {requirement}"),
            OptimError::StateBufferCount { expected, got } => write!(
                f,
                "optimizer state has {got} buffers but this optimizer has {expected}"
            ),
            OptimError::StateLength {
                buffer,
                expected,
                got,
            } => write!(
                f,
                "optimizer state buffer {buffer} has length {got} but the optimizer \
                 was sized for {expected} parameters"
            ),
            OptimError::DecayRanges { reason } => {
                write!(f, "invalid weight-decay ranges: {reason}")
            }
        }
    }
}

impl std::error::Error for OptimError {}

/// Validates `state` against `names` and `n`, then copies each buffer into
/// `dst` (the state of the elements `held`; a buffer of length n gives its
/// `held` part): the shared body of every `load_state`.
fn load_buffers(
    names: &'static [&'static str],
    n: usize,
    held: &Range<usize>,
    state: &OptimState<'_>,
    dst: &mut [&mut Vec<f32>],
) -> Result<(), OptimError> {
    debug_assert_eq!(names.len(), dst.len());
    if state.buffers.len() != names.len() {
        return Err(OptimError::StateBufferCount {
            expected: names.len(),
            got: state.buffers.len(),
        });
    }
    for (&name, b) in names.iter().zip(&state.buffers) {
        if b.len() != n && b.len() != held.len() {
            return Err(OptimError::StateLength {
                buffer: name,
                expected: n,
                got: b.len(),
            });
        }
    }
    for (d, s) in dst.iter_mut().zip(&state.buffers) {
        d.copy_from_slice(if s.len() == held.len() {
            s
        } else {
            &s[held.clone()]
        });
    }
    Ok(())
}

/// `keep_state`'s body: moves each of `bufs`, the state of the elements
/// `held`, to hold those of `new` (the overlap is kept, elements new to it
/// start at zero, the rest is freed) and returns `new`.
///
/// # Panics
/// If `new` reaches past the `n` parameters.
#[track_caller]
fn rewindow(
    who: &str,
    n: usize,
    bufs: &mut [&mut Vec<f32>],
    held: &Range<usize>,
    new: Range<usize>,
) -> Range<usize> {
    assert!(
        new.start <= new.end && new.end <= n,
        "{who}::keep_state: {new:?} is outside the {n} parameters"
    );
    let (lo, hi) = (held.start.max(new.start), held.end.min(new.end));
    for buf in bufs.iter_mut() {
        let mut out = vec![0.0f32; new.len()];
        if lo < hi {
            out[lo - new.start..hi - new.start]
                .copy_from_slice(&buf[lo - held.start..hi - held.start]);
        }
        **buf = out;
    }
    new
}

/// Panics unless both slices have the optimizer's length `n` and `range`
/// (the elements a step updates) lies within it and within `held`, the
/// elements whose state is kept.
#[track_caller]
#[inline]
fn check_step(
    who: &str,
    n: usize,
    held: &Range<usize>,
    params: &[f32],
    grads: &[f32],
    range: &Range<usize>,
) {
    if params.len() != n || grads.len() != n {
        len_fail(who, n, params.len(), grads.len());
    }
    assert!(
        range.start <= range.end && range.end <= n,
        "{who}::step_range: {range:?} is outside the {n} parameters"
    );
    assert!(
        range.is_empty() || (held.start <= range.start && range.end <= held.end),
        "{who}: elements {range:?} are outside the state it keeps, {held:?} (keep_state)"
    );
}

#[cold]
#[inline(never)]
#[track_caller]
fn len_fail(who: &str, n: usize, params: usize, grads: usize) -> ! {
    panic!(
        "{who}::step: length mismatch: params has length {params} and grads has length \
         {grads}, but the optimizer was sized for {n} parameters"
    )
}

/// Panics with the error's message: the checked constructors' `new` path.
#[cold]
#[inline(never)]
#[track_caller]
fn config_fail(who: &str, e: OptimError) -> ! {
    panic!("{who}::new: {e}")
}

/// Clips the gradient arena to a global L2 norm of at most `max_norm` and
/// returns the norm it had **before** clipping (PyTorch's `clip_grad_norm_`
/// with `norm_type = 2`, over the whole arena as one vector).
///
/// The norm ‖g‖ = √(Σ gᵢ²) is accumulated in `f64` (each square is exact in
/// `f64`; eight interleaved partial sums, in a fixed order, so the result is
/// deterministic and the loop vectorises). Then:
///
/// * if ‖g‖ > `max_norm`, every element is multiplied by
///   `max_norm / (‖g‖ + 1e-6)` (the 1e-6 is PyTorch's; it keeps the clipped
///   norm just below `max_norm`), so afterwards ‖g‖ ≤ `max_norm` up to one
///   `f32` rounding per element;
/// * otherwise `grads` is left untouched (PyTorch also scales when ‖g‖ lies
///   within 1e-6 below `max_norm`, by a factor within 1e-6/`max_norm` of 1;
///   here exactly nothing happens);
/// * if any element is NaN or ±∞, the norm is NaN or +∞, `grads` is left
///   untouched and that non-finite norm is returned, so the caller can detect
///   divergence and skip the step (`if !norm.is_finite() { ... }`).
///
/// The returned norm is rounded to `f32`. For finite gradients whose norm
/// exceeds `f32::MAX` (≈ 3.4e38, possible since it sums many elements) it is
/// therefore +∞ even though the clipping itself, done in `f64`, is correct.
/// `max_norm = f32::INFINITY` never clips: the call then just measures the norm.
/// An empty arena has norm 0.
///
/// # Panics
///
/// If `max_norm` is negative or NaN.
///
/// ```
/// use backprop::optim::clip_grad_norm;
/// let mut g = vec![3.0f32, 4.0];
/// let norm = clip_grad_norm(&mut g, 1.0);
/// assert_eq!(norm, 5.0);
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
///
/// let mut bad = vec![1.0f32, f32::NAN];
/// assert!(clip_grad_norm(&mut bad, 1.0).is_nan());
/// assert_eq!(bad[0], 1.0); // untouched
/// ```
#[track_caller]
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    if max_norm.is_nan() || max_norm < 0.0 {
        max_norm_fail(max_norm);
    }
    let norm = sum_of_squares(grads).sqrt();
    if norm.is_finite() && norm > max_norm as f64 {
        let scale = (max_norm as f64 / (norm + 1e-6)) as f32;
        for g in grads.iter_mut() {
            *g *= scale;
        }
    }
    norm as f32
}

#[cold]
#[inline(never)]
#[track_caller]
fn max_norm_fail(max_norm: f32) -> ! {
    panic!("clip_grad_norm: max_norm must be >= 0, got {max_norm}")
}

/// Σ xᵢ² in `f64`, with eight partial sums so that the loop vectorises (a
/// single running sum would serialise on the add latency and cannot be
/// reordered by the compiler).
fn sum_of_squares(x: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            let v = c[j] as f64;
            acc[j] += v * v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        let v = v as f64;
        *a += v * v;
    }
    // Fixed pairwise combination order.
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Runs an elementwise update inside the active ISA's `#[target_feature]`
/// entry point, so the plain-Rust loop it calls is inlined there and
/// vectorised for that ISA (AVX2 or AVX-512 instead of the SSE2 baseline).
/// IEEE arithmetic without contraction gives the same bits on every ISA.
///
/// Subnormal values are flushed to zero during the update (see
/// `kernel::subnormal`): decaying optimizer state would otherwise cross the
/// subnormal range at ~100 cycles per operation on x86.
pub(crate) fn vectorized<F: FnOnce()>(f: F) {
    crate::kernel::dispatch::run(crate::active_isa(), Vectorized(f));
}

struct Vectorized<F>(F);

impl<F: FnOnce()> crate::kernel::KernelOp for Vectorized<F> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: crate::kernel::Simd, const MR: usize, const NV: usize>(
        self,
        _: S,
        _: &crate::kernel::Blocking,
    ) {
        let _flush = crate::kernel::subnormal::flush_subnormals();
        (self.0)()
    }
}
