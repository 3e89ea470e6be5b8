//! The layer contract: what a layer kind declares, and the one place the
//! kinds are registered.
//!
//! A network description is a list of [`Layer`]s. Compiling it walks the list
//! once, and each kind (one file each: [`dense`](super::dense),
//! [`activation`](super::activation), [`batch_norm`](super::batch_norm),
//! [`layer_norm`](super::layer_norm), [`residual`](super::residual)) does two
//! things through a [`Compiler`]:
//! 1. **declares its tensors** ([`Tensor`]: the name suffix as PyTorch spells
//!    it, the shape PyTorch stores, whether it is a trainable parameter or a
//!    buffer, how the arena holds it and how it starts). The compiler gives
//!    each its offset; the list of [`Slot`]s is the arena layout. The network
//!    allocates and initialises from it, the model files take their names
//!    and shapes from it, and the f64 reference network reads its offsets
//!    from it: one source of truth.
//! 2. **pushes its compiled op** ([`Op`]): the forward and backward of the
//!    kind, holding its offsets, run by [`Mlp`](super::Mlp) in order.
//!
//! A new layer kind is one file with a `compile` function and an `Op`, plus a
//! variant of [`Layer`] and its line in [`compile_layer`].

use std::fmt;

use crate::kernel::{Activation, Isa};
use crate::matrix::MatRef;
use crate::nn::exec::{Exec, Piece};
use crate::nn::workspace::try_filled;
use crate::nn::{
    activation, batch_norm, dense, dropout, layer_norm, residual, BuildError, Init, MAX_ELEMENTS,
};
use crate::rng::Rng;

/// One layer of a network description.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// `Z = X·W + b` with `units` outputs, weights drawn by `init`, zero bias
    /// (`nn.Linear`); `Z = X·W` with `bias: false` (`nn.Linear(bias=False)`).
    Dense {
        /// Output width.
        units: usize,
        /// Weight initialization.
        init: Init,
        /// Whether the layer has a bias `b`.
        bias: bool,
    },
    /// An elementwise activation.
    Act(Activation),
    /// Batch normalization over features (`nn.BatchNorm1d`): with `affine`,
    /// a learnt scale γ and shift β follow (γ = 1, β = 0 at start); without,
    /// the output is the normalised input (`affine=False`).
    BatchNorm {
        /// Whether γ and β are learnt.
        affine: bool,
    },
    /// Layer normalization over features (`nn.LayerNorm`): with `affine`, a
    /// learnt γ and β follow (γ = 1, β = 0 at start); without, the output is
    /// the normalised input (`elementwise_affine=False`).
    LayerNorm {
        /// Whether γ and β are learnt.
        affine: bool,
    },
    /// `x + f(x)` where `f` is the inner list and keeps the width.
    Residual(Vec<Layer>),
    /// Dropout with drop probability `p` in [0, 1] (`nn.Dropout(p)`): in
    /// training each element is zeroed with probability `p` and the others
    /// scaled by 1/(1 − p); the identity in evaluation.
    Dropout {
        /// Probability of zeroing an element.
        p: f32,
    },
}

/// The registration: which file compiles which description.
pub(crate) fn compile_layer(layer: &Layer, c: &mut Compiler) -> Result<(), BuildError> {
    match layer {
        Layer::Dense { units, init, bias } => dense::compile(c, *units, *init, *bias),
        Layer::Act(act) => activation::compile(c, *act),
        Layer::BatchNorm { affine } => batch_norm::compile(c, *affine),
        Layer::LayerNorm { affine } => layer_norm::compile(c, *affine),
        Layer::Residual(inner) => residual::compile(c, inner),
        Layer::Dropout { p } => dropout::compile(c, *p),
    }
}

/// Which arena a tensor lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Store {
    /// Trainable: [`Mlp::params`](super::Mlp::params), with a gradient.
    Param,
    /// Not trained: [`Mlp::buffers`](super::Mlp::buffers) (running statistics).
    Buffer,
}

/// How the arena holds a tensor against the shape PyTorch stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Element for element.
    Plain,
    /// The arena holds `W` (`fan_in × fan_out`, row-major) and the tensor is
    /// `Wᵀ`, `[fan_out, fan_in]` (`nn.Linear.weight`).
    Transposed {
        /// Rows of the arena's `W`.
        fan_in: usize,
        /// Columns of the arena's `W`.
        fan_out: usize,
    },
}

/// How a tensor starts when a network is built.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Fill {
    /// Every element this value.
    Const(f32),
    /// Drawn by an initializer for a `fan_in × fan_out` weight.
    Draw(Init, usize, usize),
}

/// One tensor a layer declares.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tensor {
    /// The suffix PyTorch gives it (`weight`, `bias`, `running_mean`, …).
    pub name: &'static str,
    /// The shape PyTorch stores.
    pub shape: Vec<usize>,
    /// Parameter or buffer.
    pub store: Store,
    /// How the arena holds it.
    pub layout: Layout,
    /// Its value at build time.
    pub fill: Fill,
}

/// A declared tensor with its place.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Slot {
    /// The layer's path in the description: `"3."`, or `"2.inner.0."` inside
    /// the residual block at index 2.
    pub path: String,
    /// The declaration.
    pub tensor: Tensor,
    /// Offset in its arena.
    pub offset: usize,
    /// Elements.
    pub len: usize,
}

impl Slot {
    /// The arena range.
    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// What a forward pass hands an op.
pub(crate) struct Forward<'a> {
    /// Rows of the batch.
    pub batch: usize,
    /// The op's input, `batch × width of the previous op` (the network's `x`
    /// for the first op: possibly strided).
    pub input: MatRef<'a>,
    /// The op's output, `batch × width` row-major.
    pub out: &'a mut [f32],
    /// The op's saved values for backward (size from [`Op::scratch`]).
    pub aux: &'a mut [f32],
    /// The op's statistics (size from [`Op::scratch`]).
    pub stat: &'a mut [f32],
    /// Outputs of the ops before this one (index `j` = op `j`).
    pub earlier: &'a [Vec<f32>],
    /// The network's input.
    pub x: MatRef<'a>,
    /// The parameter arena.
    pub params: &'a [f32],
    /// The buffer arena, and with it the mode.
    pub buffers: Buffers<'a>,
    /// Vector code for elementwise loops.
    pub isa: Isa,
    /// The thread decomposition for batch-wide GEMMs.
    pub exec: &'a mut Exec,
    /// The pass's noise key (dropout masks; 0 in evaluation).
    pub noise: u64,
}

/// The buffer arena as a forward pass may use it: the mode of the pass.
pub(crate) enum Buffers<'a> {
    /// Training: BatchNorm normalises with batch statistics and updates its
    /// running averages.
    Train(&'a mut [f32]),
    /// Evaluation: BatchNorm reads its running averages; nothing is written,
    /// so a shared network can run it.
    Eval(&'a [f32]),
}

/// What a backward pass hands an op.
pub(crate) struct Backward<'a> {
    /// Rows of the batch.
    pub batch: usize,
    /// The op's forward input (as [`Forward::input`]).
    pub input: MatRef<'a>,
    /// The op's forward output.
    pub out: &'a [f32],
    /// The op's saved values.
    pub aux: &'a [f32],
    /// The op's statistics (from forward; the op may use what its
    /// [`Op::scratch`] sized beyond them as backward scratch).
    pub stat: &'a mut [f32],
    /// ∂L/∂(this op's output), `batch × width`; an op may transform it in place.
    pub grad: &'a mut [f32],
    /// Where ∂L/∂(this op's input) goes; `None` for the first op (nobody needs it).
    pub grad_in: Option<&'a mut [f32]>,
    /// The ∂L/∂output buffers of the ops after this one (index 0 = the next op).
    pub later: &'a [Vec<f32>],
    /// The op that produced this op's input, if any: a dense op asks it
    /// [`Op::delta_target`].
    pub input_op: Option<&'a dyn Op>,
    /// The saved values of that op (its pre-activation, for a fused δ step).
    pub input_aux: &'a [f32],
    /// The op that consumes this op's output, if any.
    pub output_op: Option<&'a dyn Op>,
    /// The parameter arena.
    pub params: &'a [f32],
    /// The gradient arena (same layout).
    pub grads: &'a mut [f32],
    /// Vector code for elementwise loops.
    pub isa: Isa,
    /// The thread decomposition for batch-wide GEMMs.
    pub exec: &'a mut Exec,
}

/// A fused δ step's target: a dense layer whose activation's φ′ and bias
/// gradient the dense layer above forms in its δ GEMM's epilogue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeltaTarget {
    /// The activation fused into the target's epilogue.
    pub act: Activation,
    /// The target's bias range in the arena (`None` for a dense layer without
    /// bias).
    pub bias: Option<(usize, usize)>,
}

/// The sizes of an op's per-batch scratch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scratch {
    /// Whether it saves a `batch × width` array for backward.
    pub aux: bool,
    /// Statistics per row of the batch (LayerNorm's 1/σ).
    pub stat_per_row: usize,
    /// Statistics independent of the batch.
    pub stat_fixed: usize,
}

/// A compiled layer.
pub(crate) trait Op: fmt::Debug + Send + Sync {
    /// Its scratch needs at width `width` (the op's output width).
    fn scratch(&self, width: usize) -> Scratch {
        let _ = width;
        Scratch::default()
    }
    /// Whether, as the first op, it reads the network's input through its
    /// strides (a dense layer's GEMM does); otherwise a strided input is
    /// first copied to a row-major buffer.
    fn reads_strided_input(&self) -> bool {
        false
    }
    /// Whether its forward in training mode needs batch statistics (a batch
    /// of one is then refused).
    fn needs_batch_statistics(&self) -> bool {
        false
    }
    /// Takes `act` into this op's own output (a dense layer's epilogue).
    /// `false` if it cannot.
    fn absorb(&mut self, act: Activation) -> bool {
        let _ = act;
        false
    }
    /// The question a dense layer asks the op below it: can you take a fused
    /// δ step (your φ′ and ∂b formed in my δ GEMM's epilogue)?
    fn delta_target(&self) -> Option<DeltaTarget> {
        None
    }
    /// Whether this op, on its way back, forms the ∂L/∂Z of the op below
    /// when that op has a [`Op::delta_target`].
    fn forms_input_delta(&self) -> bool {
        false
    }
    /// The forward pass.
    fn forward(&self, cx: Forward<'_>);
    /// The backward pass: parameter gradients (overwritten) and ∂L/∂input.
    fn backward(&self, cx: Backward<'_>);
}

/// The compiled network: ops, widths and the arena layout.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// Ops in order.
    pub ops: Vec<Box<dyn Op>>,
    /// Output width of each op.
    pub dims: Vec<usize>,
    /// Every declared tensor, in arena order.
    pub slots: Vec<Slot>,
    /// Parameter arena length.
    pub params: usize,
    /// Buffer arena length.
    pub buffers: usize,
    /// Names (paths included) a file may carry that hold nothing the network
    /// keeps, accepted and ignored on load (BatchNorm's `num_batches_tracked`).
    pub ignored: Vec<String>,
}

/// A network's arenas, sized and initialised from its declarations.
pub(crate) struct Arenas {
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    pub buffers: Vec<f32>,
}

impl Compiled {
    /// Allocates the arenas (checked: `None` if one cannot be allocated) and
    /// fills each declared tensor: its constant, or its draw from a generator
    /// seeded with `seed`, in arena order. With `seed` `None` every value
    /// stays zero.
    pub fn arenas(&self, seed: Option<u64>) -> Option<Arenas> {
        let mut params = try_filled(self.params, 0.0)?;
        let mut buffers = try_filled(self.buffers, 0.0)?;
        let grads = try_filled(self.params, 0.0)?;
        if let Some(seed) = seed {
            let mut rng = Rng::seed_from_u64(seed);
            for s in &self.slots {
                let arena = match s.tensor.store {
                    Store::Param => &mut params[s.range()],
                    Store::Buffer => &mut buffers[s.range()],
                };
                match s.tensor.fill {
                    Fill::Const(v) => arena.fill(v),
                    Fill::Draw(init, fan_in, fan_out) => {
                        init.fill(arena, fan_in, fan_out, &mut rng)
                    }
                }
            }
        }
        Some(Arenas {
            params,
            grads,
            buffers,
        })
    }
}

/// Walks a description: widths, declarations, ops.
pub(crate) struct Compiler {
    /// The current width (the input of the next layer).
    pub width: usize,
    /// Position of the layer being compiled, for errors: the number of ops
    /// before it (a fused activation adds none, a residual block two).
    pub at: usize,
    prefix: String,
    out: Compiled,
}

impl Compiler {
    /// Declares `t` for the current layer; returns its arena offset.
    ///
    /// # Errors
    /// [`BuildError::TooLarge`] if the arena would pass [`MAX_ELEMENTS`].
    pub(crate) fn declare(&mut self, t: Tensor) -> Result<usize, BuildError> {
        let too_large = BuildError::TooLarge { layer: self.at };
        let len = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(too_large.clone())?;
        let arena = match t.store {
            Store::Param => &mut self.out.params,
            Store::Buffer => &mut self.out.buffers,
        };
        let offset = *arena;
        *arena = offset
            .checked_add(len)
            .filter(|&e| e <= MAX_ELEMENTS)
            .ok_or(too_large)?;
        self.out.slots.push(Slot {
            path: self.prefix.clone(),
            tensor: t,
            offset,
            len,
        });
        Ok(offset)
    }

    /// Declares a name the current layer's PyTorch module stores but the
    /// network does not keep: a file may carry it, and loading ignores it.
    pub(crate) fn ignore(&mut self, name: &str) {
        let full = format!("{}{name}", self.prefix);
        self.out.ignored.push(full);
    }

    /// Appends an op whose output has width `width` (the new current width).
    pub(crate) fn push(&mut self, op: Box<dyn Op>, width: usize) {
        self.out.ops.push(op);
        self.out.dims.push(width);
        self.width = width;
    }

    /// The last op so far (to ask it [`Op::absorb`]).
    pub(crate) fn last_op(&mut self) -> Option<&mut dyn Op> {
        Some(self.out.ops.last_mut()?.as_mut())
    }

    /// Number of ops so far.
    pub(crate) fn ops(&self) -> usize {
        self.out.ops.len()
    }

    /// Replaces op `i` (a residual block patches its begin op).
    pub(crate) fn set_op(&mut self, i: usize, op: Box<dyn Op>) {
        self.out.ops[i] = op;
    }

    /// The path of the layer being compiled (`"3."`, `"1.inner.2."`).
    pub(crate) fn path(&self) -> &str {
        &self.prefix
    }

    /// Compiles `layers` nested under the current layer's path plus `sub`
    /// (e.g. `"inner."`).
    pub(crate) fn nested(&mut self, sub: &str, layers: &[Layer]) -> Result<(), BuildError> {
        let saved = self.prefix.clone();
        let base = format!("{saved}{sub}");
        self.walk(&base, layers)?;
        self.prefix = saved;
        Ok(())
    }

    fn walk(&mut self, base: &str, layers: &[Layer]) -> Result<(), BuildError> {
        for (i, layer) in layers.iter().enumerate() {
            self.prefix = format!("{base}{i}.");
            self.at = self.out.ops.len();
            compile_layer(layer, self)?;
        }
        Ok(())
    }
}

/// Compiles a description on `input` features.
///
/// # Errors
/// [`BuildError::Empty`], [`BuildError::ZeroWidth`],
/// [`BuildError::ResidualWidth`], [`BuildError::TooLarge`].
pub(crate) fn compile(input: usize, layers: &[Layer]) -> Result<Compiled, BuildError> {
    if layers.is_empty() {
        return Err(BuildError::Empty);
    }
    if input == 0 {
        return Err(BuildError::ZeroWidth { layer: 0 });
    }
    let mut c = Compiler {
        width: input,
        at: 0,
        prefix: String::new(),
        out: Compiled {
            ops: Vec::new(),
            dims: Vec::new(),
            slots: Vec::new(),
            params: 0,
            buffers: 0,
            ignored: Vec::new(),
        },
    };
    c.walk("", layers)?;
    Ok(c.out)
}

/// The elements of a view that is row-major and contiguous (all activations
/// the network makes are; an input that reaches a layer other than dense
/// must be).
///
/// # Panics
/// If it is not, naming the shape and strides.
#[track_caller]
pub(crate) fn contiguous<'a>(m: &MatRef<'a>) -> &'a [f32] {
    m.as_row_major_slice().unwrap_or_else(|| {
        panic!(
            "network input must be a contiguous row-major {}×{} matrix here (strides ({}, {}))",
            m.rows(),
            m.cols(),
            m.row_stride(),
            m.col_stride()
        )
    })
}

/// Declares a norm's γ (`weight`, ones) and β (`bias`, zeros), each
/// `[width]`, when `affine`; returns their offsets.
pub(crate) fn declare_affine(
    c: &mut Compiler,
    affine: bool,
) -> Result<Option<(usize, usize)>, BuildError> {
    if !affine {
        return Ok(None);
    }
    let mut vector = |name, fill| {
        c.declare(Tensor {
            name,
            shape: vec![c.width],
            store: Store::Param,
            layout: Layout::Plain,
            fill: Fill::Const(fill),
        })
    };
    Ok(Some((vector("weight", 1.0)?, vector("bias", 0.0)?)))
}

/// `j ↦ (γ_j, β_j)` of a norm of width `d`: the learnt values at the
/// offsets `affine`, or (1, 0) without.
pub(crate) fn scale_shift(
    affine: Option<(usize, usize)>,
    d: usize,
    params: &[f32],
) -> impl Fn(usize) -> (f32, f32) + '_ {
    let gb = affine.map(|(g, b)| (&params[g..g + d], &params[b..b + d]));
    move |j| gb.map_or((1.0, 0.0), |(g, b)| (g[j], b[j]))
}

/// A norm's `[Σ g·x̂ | Σ g]` over the minibatch (`∂γ` then `∂β`, `width`
/// each) into `dst[range]`: per shard, then in shard order (across the group
/// for a part of its minibatch), or one sum over the rows in split-GEMM
/// mode. `g` and `xhat` are `rows × width` row-major. With `later`, `dst` is
/// the gradient arena and the sums may wait for the pass's end
/// ([`Exec::run_grad`]); without, they are there on return.
pub(crate) fn affine_sums(
    exec: &mut Exec,
    rows: usize,
    (g, xhat): (&[f32], &[f32]),
    dst: &mut [f32],
    range: std::ops::Range<usize>,
    later: bool,
) {
    let d = range.len() / 2;
    let work = |p: Piece<'_, 0>| {
        let (dgamma, dbeta) = p.partial.expect("norm: sums given").split_at_mut(d);
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        let (r0, r1) = (p.rows.start * d, p.rows.end * d);
        for (gr, hr) in g[r0..r1].chunks_exact(d).zip(xhat[r0..r1].chunks_exact(d)) {
            for j in 0..d {
                dbeta[j] += gr[j];
                dgamma[j] += gr[j] * hr[j];
            }
        }
    };
    if later {
        exec.run_grad(rows, [], dst, Some(range), work);
    } else {
        exec.run(rows, [], Some(&mut dst[range]), work);
    }
}
