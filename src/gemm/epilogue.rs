//! GEMM with a fused epilogue: bias + activation on the way out (forward), or
//! the Hadamard product with φ′ plus the bias gradient (the backprop δ step).
//!
//! The epilogue runs on each register tile of C on the **last** pass over k,
//! before the tile is stored, so the result is written once and never re-read.

use std::cell::RefCell;

use crate::kernel::{active_isa, dispatch, Activation, Epilogue as TileEpilogue};
use crate::matrix::{MatMut, MatRef};

use super::loops::Problem;
use super::{check_shapes, execute, GemmOptions};

/// Overwrite or accumulate into an output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accum {
    /// `out = value`.
    #[default]
    Replace,
    /// `out += value` (e.g. summing gradients over micro-batches).
    Add,
}

/// Where φ′ is computed from in [`Epilogue::ActGrad`].
#[derive(Clone, Copy, Debug)]
pub enum ActInput<'a> {
    /// The pre-activation Z (any activation).
    PreActivation(MatRef<'a>),
    /// The output A = φ(Z); only for activations with
    /// [`Activation::has_output_derivative`], so Z need not be kept.
    Output(MatRef<'a>),
}

/// Destination of the bias gradient `∂b[j] = Σ_i C[i, j]` computed by
/// [`Epilogue::ActGrad`].
#[derive(Debug)]
pub struct BiasGrad<'a> {
    /// One float per column of C.
    pub out: &'a mut [f32],
    /// Overwrite or accumulate.
    pub accum: Accum,
}

/// What happens to `Y = α·A·B + β·C` before it is stored in C.
#[derive(Debug, Default)]
pub enum Epilogue<'a> {
    /// `C = Y`: a plain GEMM.
    #[default]
    None,
    /// Forward pass of a dense layer: `Z = Y + bias` (bias broadcast over rows,
    /// one value per column), `C = φ(Z)`, and `Z` stored into `pre_activation`
    /// when given (for a backward pass that needs it).
    BiasAct {
        /// `n` floats, or no bias.
        bias: Option<&'a [f32]>,
        /// φ.
        act: Activation,
        /// `m × n`, any strides; receives Z.
        pre_activation: Option<MatMut<'a>>,
    },
    /// The backprop δ step: `C = Y ⊙ φ′(input)` and, when given,
    /// `bias_grad = Σ_rows C` (the bias gradient of the same layer) from the
    /// same pass. The column sums are reduced in a fixed order, so they are
    /// bitwise identical for any thread count.
    ActGrad {
        /// φ.
        act: Activation,
        /// `m × n`: Z, or A = φ(Z).
        input: ActInput<'a>,
        /// `n` floats, or no bias gradient.
        bias_grad: Option<BiasGrad<'a>>,
    },
}

thread_local! {
    /// Per-strip partial column sums of the bias gradient, reused across calls.
    static PARTIALS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `C = epilogue(α·A·B + β·C)`: the GEMM of [`super::gemm_with`] with a fused
/// epilogue (see [`Epilogue`]). Shapes: A `m × k`, B `k × n`, C `m × n`, any
/// strides; bias and bias gradient `n` floats; pre-activation and φ′ input `m × n`.
///
/// # Panics
/// If any shape disagrees (the message names the operand and both shapes), if
/// [`ActInput::Output`] is used with an activation whose derivative needs Z, or
/// if `options.isa` names a path this CPU lacks.
///
/// ```
/// use backprop::gemm::{gemm_epilogue, Epilogue, GemmOptions};
/// use backprop::matrix::{MatMut, MatRef};
/// use backprop::nn::Activation;
/// // One dense layer: A = relu(X·W + b), keeping Z.
/// let x = [1.0, -2.0, 0.5, 1.0]; // 2 × 2
/// let w = [1.0, 0.0, 0.0, 1.0]; // identity
/// let b = [0.5, 0.0];
/// let (mut a, mut z) = ([0.0f32; 4], [0.0f32; 4]);
/// gemm_epilogue(
///     &GemmOptions::default(), 1.0,
///     MatRef::from_slice(&x, 2, 2), MatRef::from_slice(&w, 2, 2), 0.0,
///     MatMut::from_slice_mut(&mut a, 2, 2),
///     Epilogue::BiasAct {
///         bias: Some(&b),
///         act: Activation::Relu,
///         pre_activation: Some(MatMut::from_slice_mut(&mut z, 2, 2)),
///     },
/// );
/// assert_eq!(z, [1.5, -2.0, 1.0, 1.0]);
/// assert_eq!(a, [1.5, 0.0, 1.0, 1.0]);
/// ```
#[track_caller]
pub fn gemm_epilogue(
    options: &GemmOptions,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
    epilogue: Epilogue<'_>,
) {
    check_shapes(&a, &b, &c);
    let isa = options.isa.unwrap_or_else(active_isa);
    dispatch::require(isa);
    let (m, n) = (c.rows(), c.cols());
    let mr = isa.blocking().mr;
    let strips = m.div_ceil(mr);
    // The tile epilogue and, for a bias gradient, where its partials go.
    let mut partials = None;
    let tile = match epilogue {
        Epilogue::None => TileEpilogue::None,
        Epilogue::BiasAct {
            bias,
            act,
            pre_activation,
        } => {
            if let Some(bias) = bias {
                check_len("bias", bias.len(), n);
            }
            let (pre, pre_rs, pre_cs) = match pre_activation {
                Some(mut z) => {
                    check_same("pre_activation", (z.rows(), z.cols()), (m, n));
                    (z.as_mut_ptr(), z.row_stride(), z.col_stride())
                }
                None => (core::ptr::null_mut(), 0, 0),
            };
            TileEpilogue::Forward {
                bias: bias.map_or(core::ptr::null(), |b| b.as_ptr()),
                act,
                pre,
                pre_rs,
                pre_cs,
            }
        }
        Epilogue::ActGrad {
            act,
            input,
            bias_grad,
        } => {
            let (src, from_output) = match input {
                ActInput::PreActivation(z) => (z, false),
                ActInput::Output(y) => {
                    if !act.has_output_derivative() {
                        panic!(
                            "gemm_epilogue: φ′ of {} cannot be computed from the output; \
                             pass ActInput::PreActivation",
                            act.name()
                        );
                    }
                    (y, true)
                }
            };
            check_same("φ′ input", (src.rows(), src.cols()), (m, n));
            let colsum = match bias_grad {
                Some(g) => {
                    check_len("bias_grad", g.out.len(), n);
                    partials = Some(g);
                    PARTIALS.with(|p| {
                        let mut p = p.borrow_mut();
                        // At least one row: it holds the sums afterwards.
                        if p.len() < strips.max(1) * n {
                            p.resize(strips.max(1) * n, 0.0);
                        }
                        p.as_mut_ptr()
                    })
                }
                None => core::ptr::null_mut(),
            };
            TileEpilogue::Backward {
                act,
                src: src.as_ptr(),
                src_rs: src.row_stride(),
                src_cs: src.col_stride(),
                from_output,
                colsum,
                colsum_rs: n as isize,
            }
        }
    };
    let p = Problem::from_views(alpha, &a, &b, beta, &mut c, tile);
    // SAFETY: the views guarantee A, B, C and the epilogue's matrices are in
    // bounds with the checked shapes; C and the pre-activation are exclusive
    // borrows; the partials buffer holds strips × n floats and is this thread's.
    unsafe { execute(p, isa, options.threads.count(), options.packing) };
    if let Some(g) = partials {
        // Strip partials summed in strip order: the same sequence of additions
        // whatever the thread count. Row by row, so the additions run along
        // contiguous columns (and vectorise); column j still gets
        // 0 + p₀ⱼ + p₁ⱼ + … in that order.
        PARTIALS.with(|p| {
            let mut p = p.borrow_mut();
            if strips == 0 {
                // No rows (and no partials written): every sum is the empty
                // one, 0 + nothing.
                p[..n].fill(0.0);
            }
            let (sum, rest) = p[..strips.max(1) * n].split_at_mut(n);
            // 0 + p₀ⱼ, not p₀ⱼ alone: it turns −0 into +0, as the first
            // addition of a sum started at 0 does.
            for s in sum.iter_mut() {
                *s += 0.0;
            }
            // (n = 0: no columns, and `chunks_exact` needs a non-zero size.)
            for row in rest.chunks_exact(n.max(1)) {
                for (s, x) in sum.iter_mut().zip(row) {
                    *s += x;
                }
            }
            for (out, s) in g.out.iter_mut().zip(sum.iter()) {
                match g.accum {
                    Accum::Replace => *out = *s,
                    Accum::Add => *out += s,
                }
            }
        });
    }
}

#[track_caller]
fn check_len(what: &str, len: usize, n: usize) {
    if len != n {
        panic!("gemm_epilogue: {what} has {len} elements but C has {n} columns");
    }
}

#[track_caller]
fn check_same(what: &str, got: (usize, usize), want: (usize, usize)) {
    if got != want {
        panic!(
            "gemm_epilogue: {what} is {}×{} but C is {}×{}",
            got.0, got.1, want.0, want.1
        );
    }
}

/// Forward pass of a dense layer: `out = φ(X·W + bias)`, keeping
/// `Z = X·W + bias` in `pre_activation` when given. X is `batch × fan_in`, W
/// `fan_in × fan_out`, bias `fan_out`, out and Z `batch × fan_out`.
///
/// # Panics
/// On a shape mismatch (see [`gemm_epilogue`]).
#[track_caller]
pub fn dense_forward(
    options: &GemmOptions,
    x: MatRef<'_>,
    w: MatRef<'_>,
    bias: Option<&[f32]>,
    act: Activation,
    out: MatMut<'_>,
    pre_activation: Option<MatMut<'_>>,
) {
    let epilogue = Epilogue::BiasAct {
        bias,
        act,
        pre_activation,
    };
    gemm_epilogue(options, 1.0, x, w, 0.0, out, epilogue)
}

/// The δ step of backpropagation for layer l:
/// `δ⁽ˡ⁾ = (δ⁽ˡ⁺¹⁾·(W⁽ˡ⁺¹⁾)ᵀ) ⊙ φ′(Z⁽ˡ⁾)`, with `Wᵀ` read through strides, and
/// the bias gradient `∂b⁽ˡ⁾ = Σ_rows δ⁽ˡ⁾` from the same pass when `bias_grad`
/// is given. `delta_next` is `batch × fan_out⁽ˡ⁺¹⁾`, `w_next` is
/// `fan_in⁽ˡ⁺¹⁾ × fan_out⁽ˡ⁺¹⁾` (as stored for the forward pass), `input` and
/// `delta` are `batch × fan_in⁽ˡ⁺¹⁾`.
///
/// # Panics
/// On a shape mismatch, or [`ActInput::Output`] with an activation whose φ′
/// needs Z.
///
/// ```
/// use backprop::gemm::{backward_delta, ActInput, Accum, BiasGrad, GemmOptions};
/// use backprop::matrix::{MatMut, MatRef};
/// use backprop::nn::Activation;
/// let delta_next = [1.0, 2.0]; // 1 × 2
/// let w_next = [1.0, 1.0, 0.5, -1.0]; // 2 × 2
/// let z = [3.0, -1.0]; // 1 × 2, ReLU pre-activation
/// let (mut delta, mut db) = ([0.0f32; 2], [0.0f32; 2]);
/// backward_delta(
///     &GemmOptions::default(),
///     MatRef::from_slice(&delta_next, 1, 2),
///     MatRef::from_slice(&w_next, 2, 2),
///     Activation::Relu,
///     ActInput::PreActivation(MatRef::from_slice(&z, 1, 2)),
///     MatMut::from_slice_mut(&mut delta, 1, 2),
///     Some(BiasGrad { out: &mut db, accum: Accum::Replace }),
/// );
/// // δ·Wᵀ = [1·1 + 2·1, 1·0.5 + 2·(−1)] = [3, −1.5]; ⊙ relu′(z) = [3, 0]
/// assert_eq!(delta, [3.0, 0.0]);
/// assert_eq!(db, [3.0, 0.0]);
/// ```
#[track_caller]
pub fn backward_delta(
    options: &GemmOptions,
    delta_next: MatRef<'_>,
    w_next: MatRef<'_>,
    act: Activation,
    input: ActInput<'_>,
    delta: MatMut<'_>,
    bias_grad: Option<BiasGrad<'_>>,
) {
    let epilogue = Epilogue::ActGrad {
        act,
        input,
        bias_grad,
    };
    gemm_epilogue(options, 1.0, delta_next, w_next.t(), 0.0, delta, epilogue)
}

/// The weight gradient `∂W = Xᵀ·δ` (or `∂W += Xᵀ·δ` with [`Accum::Add`]), with
/// `Xᵀ` read through strides, no transposed copy. X is `batch × fan_in`, δ
/// `batch × fan_out`, ∂W `fan_in × fan_out`. `Replace` never reads ∂W.
///
/// # Panics
/// On a shape mismatch.
#[track_caller]
pub fn weight_grad(
    options: &GemmOptions,
    x: MatRef<'_>,
    delta: MatRef<'_>,
    dw: MatMut<'_>,
    accum: Accum,
) {
    let beta = match accum {
        Accum::Replace => 0.0,
        Accum::Add => 1.0,
    };
    super::gemm_with(options, 1.0, x.t(), delta, beta, dw)
}
