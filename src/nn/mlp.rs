//! Fully connected networks: a builder, one flat parameter arena, and the
//! forward and backward passes built on the fused kernels.
//!
//! # Layout
//! A network is a list of layers applied in order: dense layers `Z = X·W + b`
//! (W is `fan_in × fan_out`, as in `../DESIGN.md` section 1), activations,
//! BatchNorm, LayerNorm and residual blocks `x + f(x)`. A dense layer directly
//! followed by an activation is fused: the activation runs in the GEMM
//! epilogue, and on the way back φ′ and the bias gradient run in the epilogue
//! of the δ step of the layer above.
//!
//! All parameters live in one `Vec<f32>` ([`Mlp::params`]) and their gradients
//! in another of the same layout ([`Mlp::grads`]), so an optimizer step is one
//! pass over two slices. Per layer, in order: dense `W` then `b`; norms `γ`
//! then `β`. BatchNorm running averages are not parameters; they live in
//! [`Mlp::buffers`].
//!
//! # Batches and threads
//! Activations are `(batch, features)` row-major. The whole minibatch goes
//! through each GEMM at once; the GEMMs split the work over threads on the
//! register-tile grid and never split k, so a step gives bitwise the same
//! weights for any thread count. Workspaces are sized for the largest batch
//! seen and reused: a step at a batch size seen before allocates nothing.

use std::fmt;
use std::ops::Range;

use rand::rngs::StdRng;
use rand::SeedableRng;

/// The most `f32` values one array of a network may hold: the parameter
/// arena, the BatchNorm buffer arena, or one activation workspace of
/// `batch × width` (2³¹ values, 8 GiB). Sizes come from input (a data file's
/// label range, an IDX header, a saved architecture, a batch size), so every
/// size product is computed with checked arithmetic and compared against this
/// cap before anything is allocated; [`BuildError::TooLarge`] and
/// [`StepError::TooLarge`] report a network or a batch beyond it, and an
/// allocation the system refuses below it is reported the same way instead of
/// aborting.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// A vector of `n` copies of `fill`, or `None` if `n` exceeds
/// [`MAX_ELEMENTS`] or the allocator refuses the memory.
fn try_filled(n: usize, fill: f32) -> Option<Vec<f32>> {
    if n > MAX_ELEMENTS {
        return None;
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, fill);
    Some(v)
}

/// Appends `add` copies of `fill` to an arena and returns where they start,
/// or `None` if the arena would exceed [`MAX_ELEMENTS`] or the memory is
/// refused.
fn try_grow(v: &mut Vec<f32>, add: usize, fill: f32) -> Option<usize> {
    let start = v.len();
    let end = start.checked_add(add).filter(|&e| e <= MAX_ELEMENTS)?;
    v.try_reserve(add).ok()?;
    v.resize(end, fill);
    Some(start)
}

use crate::gemm::{
    backward_delta, dense_forward, gemm_with, weight_grad, Accum, ActInput, BiasGrad, GemmOptions,
};
use crate::kernel::activation::forward_slice;
use crate::kernel::Activation;
use crate::matrix::{MatMut, MatRef};
use crate::nn::loss::{self, Loss, LossError};
use crate::nn::{batch_norm, layer_norm, Init};
use crate::parallel::{self, SharedMut};
use crate::Threads;

/// One layer of a network description.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// `Z = X·W + b` with `units` outputs, weights drawn by `init`, zero bias.
    Dense {
        /// Output width.
        units: usize,
        /// Weight initialization.
        init: Init,
    },
    /// An elementwise activation.
    Act(Activation),
    /// Batch normalization over features (γ = 1, β = 0 at start).
    BatchNorm,
    /// Layer normalization over features (γ = 1, β = 0 at start).
    LayerNorm,
    /// `x + f(x)` where `f` is the inner list and keeps the width.
    Residual(Vec<Layer>),
}

/// Builds a network description layer by layer.
///
/// ```
/// use backprop::nn::{Activation, Loss, MlpBuilder};
/// let net = MlpBuilder::new(784)
///     .dense(128).act(Activation::Relu)
///     .residual(|r| r.dense(128).act(Activation::Relu).dense(128))
///     .layer_norm()
///     .dense(10)
///     .loss(Loss::SoftmaxCrossEntropy)
///     .build(42)
///     .unwrap();
/// assert_eq!(net.output_dim(), 10);
/// assert_eq!(net.num_params(), 784 * 128 + 128 + 2 * (128 * 128 + 128) + 2 * 128 + 128 * 10 + 10);
/// ```
#[derive(Clone, Debug)]
pub struct MlpBuilder {
    input: usize,
    layers: Vec<Layer>,
    loss: Loss,
    init: Init,
}

impl MlpBuilder {
    /// A network on `input` features. The default loss is [`Loss::Mse`] and the
    /// default initialization He, N(0, 2/fan_in).
    pub fn new(input: usize) -> Self {
        MlpBuilder {
            input,
            layers: Vec::new(),
            loss: Loss::Mse,
            init: Init::He,
        }
    }
    /// Appends a dense layer with `units` outputs and the builder's default init.
    pub fn dense(mut self, units: usize) -> Self {
        let init = self.init;
        self.layers.push(Layer::Dense { units, init });
        self
    }
    /// Appends a dense layer with an explicit initialization.
    pub fn dense_init(mut self, units: usize, init: Init) -> Self {
        self.layers.push(Layer::Dense { units, init });
        self
    }
    /// Sets the initialization of dense layers appended from now on.
    pub fn init(mut self, init: Init) -> Self {
        self.init = init;
        self
    }
    /// Appends an activation.
    pub fn act(mut self, act: Activation) -> Self {
        self.layers.push(Layer::Act(act));
        self
    }
    /// Appends batch normalization.
    pub fn batch_norm(mut self) -> Self {
        self.layers.push(Layer::BatchNorm);
        self
    }
    /// Appends layer normalization.
    pub fn layer_norm(mut self) -> Self {
        self.layers.push(Layer::LayerNorm);
        self
    }
    /// Appends a residual block `x + f(x)`; `f` is built by `inner` from a
    /// builder whose input is the current width.
    pub fn residual(mut self, inner: impl FnOnce(MlpBuilder) -> MlpBuilder) -> Self {
        let sub = inner(MlpBuilder {
            input: 0,
            layers: Vec::new(),
            loss: self.loss,
            init: self.init,
        });
        self.layers.push(Layer::Residual(sub.layers));
        self
    }
    /// Appends a layer description.
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }
    /// Sets the loss (and with it the inference rule).
    pub fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }
    /// The layers so far.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Builds the network, drawing weights from a generator seeded with `seed`.
    ///
    /// # Errors
    /// [`BuildError`] if a width is 0, a residual block changes the width, the
    /// network is empty, the output width does not suit the loss (logistic
    /// needs 1 output, softmax cross-entropy at least 1), or a layer takes the
    /// parameters past [`MAX_ELEMENTS`] ([`BuildError::TooLarge`]).
    pub fn build(self, seed: u64) -> Result<Mlp, BuildError> {
        Mlp::new(self.input, &self.layers, self.loss, seed)
    }
}

/// Why a network description cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The input or a dense layer has width 0 (`layer` is the index in the flat
    /// layer list, residual blocks expanded).
    ZeroWidth {
        /// Position of the offending layer.
        layer: usize,
    },
    /// A residual block's inner layers map `width` features to `got`.
    ResidualWidth {
        /// Position of the block.
        layer: usize,
        /// Width entering the block.
        width: usize,
        /// Width its inner layers produce.
        got: usize,
    },
    /// The network has no layer.
    Empty,
    /// Loaded parameters or buffers do not fit the description
    /// (`(parameters, buffers)` counts).
    ParamCount {
        /// What the description needs.
        expected: (usize, usize),
        /// What was given.
        got: (usize, usize),
    },
    /// The output width does not suit the loss.
    OutputForLoss {
        /// The loss.
        loss: Loss,
        /// The network's output width.
        width: usize,
    },
    /// Layer `layer` (index in the flat list, residual blocks expanded) takes
    /// the parameter or buffer arena past [`MAX_ELEMENTS`] values (its size
    /// product overflows, or exceeds the cap), or the system refused the
    /// memory for it.
    TooLarge {
        /// Position of the offending layer.
        layer: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroWidth { layer } => write!(f, "layer {layer} has zero width"),
            BuildError::ResidualWidth { layer, width, got } => write!(
                f,
                "residual block at layer {layer} maps {width} features to {got}; x + f(x) needs equal widths"
            ),
            BuildError::Empty => write!(f, "the network has no layer"),
            BuildError::ParamCount { expected, got } => write!(
                f,
                "{} parameters and {} buffer values given, the description needs {} and {}",
                got.0, got.1, expected.0, expected.1
            ),
            BuildError::OutputForLoss { loss, width } => write!(
                f,
                "a {loss:?} loss needs {} outputs, the network has {width}",
                if *loss == Loss::Logistic { "exactly 1" } else { "at least 1" }
            ),
            BuildError::TooLarge { layer } => write!(
                f,
                "layer {layer} makes the network larger than {MAX_ELEMENTS} parameters \
                 (or than the memory available)"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Why a training or evaluation step failed.
#[derive(Clone, Debug, PartialEq)]
pub enum StepError {
    /// The targets do not suit the loss (from the data).
    Loss(LossError),
    /// The targets are of the wrong kind for the loss (e.g. class indices for MSE).
    TargetKind {
        /// The network's loss.
        loss: Loss,
    },
    /// BatchNorm in training mode got a batch of one sample.
    BatchOfOne,
    /// The input has the wrong number of features.
    InputWidth {
        /// Features the network expects.
        expected: usize,
        /// Features given.
        got: usize,
    },
    /// A workspace for this batch (`batch × width` for the widest layer)
    /// would exceed [`MAX_ELEMENTS`] values, or the system refused the memory.
    TooLarge {
        /// The batch size asked for.
        batch: usize,
    },
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Loss(e) => write!(f, "{e}"),
            StepError::TargetKind { loss } => {
                write!(f, "targets of the wrong kind for a {loss:?} loss")
            }
            StepError::BatchOfOne => write!(
                f,
                "BatchNorm in training mode needs at least 2 samples per batch (got 1); \
                 use a larger batch or evaluation mode"
            ),
            StepError::InputWidth { expected, got } => {
                write!(
                    f,
                    "the network expects {expected} input features, got {got}"
                )
            }
            StepError::TooLarge { batch } => write!(
                f,
                "a batch of {batch} samples needs activation workspaces larger than \
                 {MAX_ELEMENTS} values (or than the memory available); use a smaller batch"
            ),
        }
    }
}

impl std::error::Error for StepError {}

impl From<LossError> for StepError {
    fn from(e: LossError) -> Self {
        StepError::Loss(e)
    }
}

/// How the rows of a minibatch are spread over threads. Both give bitwise the
/// same result for any thread count; they differ from each other in the order
/// the batch is summed over for the weight and bias gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchParallelism {
    /// Every GEMM splits its own output over the threads (the weight gradient
    /// `Xᵀ·δ` over the rows/columns of `∂W`): no reduction buffers.
    SplitGemm,
    /// The minibatch is cut into this many fixed row shards (independent of
    /// the thread count); each shard's dense-layer GEMMs run on one thread,
    /// and the per-shard weight and bias gradients are summed in shard order.
    Shards(usize),
}

/// Targets of a batch, one kind per loss.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// Regression targets, `batch × outputs` ([`Loss::Mse`]).
    Values(MatRef<'a>),
    /// Labels ±1 ([`Loss::Logistic`]).
    Signs(&'a [f32]),
    /// Class indices ([`Loss::SoftmaxCrossEntropy`]).
    Classes(&'a [usize]),
}

/// A compiled layer: offsets into the arena and buffers.
#[derive(Clone, Debug)]
enum Op {
    Dense {
        fan_in: usize,
        fan_out: usize,
        w: usize,
        b: usize,
        /// Activation fused into the epilogue (identity if none followed).
        act: Activation,
    },
    Act {
        act: Activation,
    },
    BatchNorm {
        gamma: usize,
        beta: usize,
        /// Offset of running mean in `buffers`; running var follows.
        stats: usize,
    },
    LayerNorm {
        gamma: usize,
        beta: usize,
    },
    ResBegin {
        /// Index of the matching end.
        end: usize,
    },
    ResEnd {
        begin: usize,
    },
}

/// A network: its layers, parameters, gradients and workspaces.
#[derive(Clone, Debug)]
pub struct Mlp {
    input: usize,
    loss: Loss,
    /// The description the network was built from.
    layers: Vec<Layer>,
    ops: Vec<Op>,
    /// Output width of each op.
    dims: Vec<usize>,
    params: Vec<f32>,
    grads: Vec<f32>,
    buffers: Vec<f32>,
    training: bool,
    options: GemmOptions,
    parallelism: BatchParallelism,
    ws: Workspace,
}

/// Per-op buffers for one batch size; only ever grows.
#[derive(Clone, Debug, Default)]
struct Workspace {
    batch: usize,
    /// Output of each op, `batch × dims[i]`.
    out: Vec<Vec<f32>>,
    /// Pre-activation of fused dense layers whose φ′ needs it; x̂ of norms.
    aux: Vec<Vec<f32>>,
    /// Per-feature (BatchNorm) or per-sample (LayerNorm) 1/σ; BN mean scratch.
    stat: Vec<Vec<f32>>,
    /// ∂L/∂(output of op i); for dense ops it becomes ∂L/∂Z in place.
    grad: Vec<Vec<f32>>,
    /// Whether `grad[i]` of a dense op already holds ∂L/∂Z (fused from above).
    dz_ready: Vec<bool>,
    /// Shard mode: per-shard weight and bias gradients of one layer at a time.
    shard_dw: Vec<f32>,
    shard_db: Vec<f32>,
}

impl Mlp {
    fn new(input: usize, layers: &[Layer], loss: Loss, seed: u64) -> Result<Mlp, BuildError> {
        if layers.is_empty() {
            return Err(BuildError::Empty);
        }
        if input == 0 {
            return Err(BuildError::ZeroWidth { layer: 0 });
        }
        let mut net = Mlp {
            input,
            loss,
            layers: layers.to_vec(),
            ops: Vec::new(),
            dims: Vec::new(),
            params: Vec::new(),
            grads: Vec::new(),
            buffers: Vec::new(),
            training: true,
            options: GemmOptions::default(),
            parallelism: BatchParallelism::SplitGemm,
            ws: Workspace::default(),
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut width = input;
        net.compile(layers, &mut width, &mut rng)?;
        let ok = match loss {
            Loss::Logistic => width == 1,
            _ => width >= 1,
        };
        if !ok {
            return Err(BuildError::OutputForLoss { loss, width });
        }
        net.grads = try_filled(net.params.len(), 0.0).ok_or(BuildError::TooLarge {
            layer: layers.len() - 1,
        })?;
        Ok(net)
    }

    fn compile(
        &mut self,
        layers: &[Layer],
        width: &mut usize,
        rng: &mut StdRng,
    ) -> Result<(), BuildError> {
        for layer in layers {
            let at = self.ops.len();
            match layer {
                Layer::Dense { units, init } => {
                    if *units == 0 {
                        return Err(BuildError::ZeroWidth { layer: at });
                    }
                    let (fan_in, fan_out) = (*width, *units);
                    let too_large = || BuildError::TooLarge { layer: at };
                    // The sizes come from input (data, headers, files): the
                    // product is checked before anything is allocated.
                    let n = fan_in.checked_mul(fan_out).ok_or_else(too_large)?;
                    let w = try_grow(&mut self.params, n, 0.0).ok_or_else(too_large)?;
                    init.fill(&mut self.params[w..], fan_in, fan_out, rng);
                    let b = try_grow(&mut self.params, fan_out, 0.0).ok_or_else(too_large)?;
                    self.ops.push(Op::Dense {
                        fan_in,
                        fan_out,
                        w,
                        b,
                        act: Activation::Identity,
                    });
                    *width = fan_out;
                }
                Layer::Act(act) => {
                    // Fuse into a dense layer right before it (not across a
                    // residual boundary, which is its own op).
                    if let Some(Op::Dense { act: fused, .. }) = self.ops.last_mut() {
                        if *fused == Activation::Identity {
                            *fused = *act;
                            continue;
                        }
                    }
                    self.ops.push(Op::Act { act: *act });
                }
                Layer::BatchNorm | Layer::LayerNorm => {
                    let too_large = || BuildError::TooLarge { layer: at };
                    let gamma = try_grow(&mut self.params, *width, 1.0).ok_or_else(too_large)?;
                    let beta = try_grow(&mut self.params, *width, 0.0).ok_or_else(too_large)?;
                    if *layer == Layer::BatchNorm {
                        // Running mean, then running variance.
                        let stats =
                            try_grow(&mut self.buffers, *width, 0.0).ok_or_else(too_large)?;
                        try_grow(&mut self.buffers, *width, 1.0).ok_or_else(too_large)?;
                        self.ops.push(Op::BatchNorm { gamma, beta, stats });
                    } else {
                        self.ops.push(Op::LayerNorm { gamma, beta });
                    }
                }
                Layer::Residual(inner) => {
                    let before = *width;
                    let begin = self.ops.len();
                    self.ops.push(Op::ResBegin { end: 0 }); // patched below
                    self.dims.push(before);
                    self.compile(inner, width, rng)?;
                    if *width != before {
                        return Err(BuildError::ResidualWidth {
                            layer: at,
                            width: before,
                            got: *width,
                        });
                    }
                    let end = self.ops.len();
                    self.ops.push(Op::ResEnd { begin });
                    self.ops[begin] = Op::ResBegin { end };
                }
            }
            // Every op pushed above (the residual's end included) records its width.
            while self.dims.len() < self.ops.len() {
                self.dims.push(*width);
            }
        }
        Ok(())
    }

    /// The layer description the network was built from (residual blocks
    /// nested). The parameter arena follows it in order: each dense layer's `W`
    /// (`fan_in × fan_out`, row-major) then `b`; each norm's `γ` then `β`
    /// (`width` each); inner layers of a residual block where the block stands.
    /// BatchNorm running means then variances (`width` each) follow the same
    /// order in [`Mlp::buffers`].
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    /// A network with the same description and seed-drawn weights replaced by
    /// `params` and `buffers` (e.g. loaded from a file).
    ///
    /// # Errors
    /// [`BuildError`] as [`MlpBuilder::build`]; [`BuildError::ParamCount`] if a
    /// length does not match the description.
    pub fn from_parts(
        input: usize,
        layers: &[Layer],
        loss: Loss,
        params: Vec<f32>,
        buffers: Vec<f32>,
    ) -> Result<Mlp, BuildError> {
        let mut net = Mlp::new(input, layers, loss, 0)?;
        if params.len() != net.params.len() || buffers.len() != net.buffers.len() {
            return Err(BuildError::ParamCount {
                expected: (net.params.len(), net.buffers.len()),
                got: (params.len(), buffers.len()),
            });
        }
        net.params = params;
        net.buffers = buffers;
        Ok(net)
    }
    /// Input features.
    pub fn input_dim(&self) -> usize {
        self.input
    }
    /// Output width (columns of `h`).
    pub fn output_dim(&self) -> usize {
        *self.dims.last().expect("a built network has layers")
    }
    /// The loss the network trains with.
    pub fn loss_kind(&self) -> Loss {
        self.loss
    }
    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }
    /// The parameter arena (see the module docs for the layout).
    pub fn params(&self) -> &[f32] {
        &self.params
    }
    /// Mutable parameter arena.
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }
    /// The gradient arena of the last [`Mlp::forward_backward`], same layout as the parameters.
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }
    /// Parameters and gradients together, for an optimizer step (and
    /// gradient clipping, which rescales the gradients in place).
    pub fn params_and_grads(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.params, &mut self.grads)
    }
    /// Non-trainable state: BatchNorm running means and variances.
    pub fn buffers(&self) -> &[f32] {
        &self.buffers
    }
    /// Mutable non-trainable state.
    pub fn buffers_mut(&mut self) -> &mut [f32] {
        &mut self.buffers
    }
    /// Switches BatchNorm between batch statistics (training, the default)
    /// and running averages (evaluation).
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }
    /// Whether the network is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }
    /// GEMM options (thread count, ISA) used by every layer.
    pub fn set_gemm_options(&mut self, options: GemmOptions) {
        self.options = options;
    }
    /// How minibatch rows are spread over threads (default
    /// [`BatchParallelism::SplitGemm`]).
    ///
    /// # Panics
    /// On `Shards(0)`.
    pub fn set_parallelism(&mut self, parallelism: BatchParallelism) {
        assert!(
            parallelism != BatchParallelism::Shards(0),
            "set_parallelism: at least one shard"
        );
        self.parallelism = parallelism;
        self.ws = Workspace::default(); // resized for the shard buffers on the next step
    }
    /// The current [`BatchParallelism`].
    pub fn parallelism(&self) -> BatchParallelism {
        self.parallelism
    }

    /// Per dense layer: the parameter ranges of `W` (`fan_in × fan_out`,
    /// row-major) and `b`, with the fan-in and fan-out.
    pub fn dense_layers(&self) -> Vec<(Range<usize>, Range<usize>, usize, usize)> {
        self.ops
            .iter()
            .filter_map(|op| match *op {
                Op::Dense {
                    fan_in,
                    fan_out,
                    w,
                    b,
                    ..
                } => Some((w..w + fan_in * fan_out, b..b + fan_out, fan_in, fan_out)),
                _ => None,
            })
            .collect()
    }

    /// Sizes the workspaces for batches of up to `batch` rows (no-op when
    /// they are large enough already). Every size is checked against
    /// [`MAX_ELEMENTS`] before anything is allocated.
    fn ensure_batch(&mut self, batch: usize) -> Result<(), StepError> {
        let n = self.ops.len();
        if self.ws.out.len() == n && self.ws.batch >= batch {
            return Ok(());
        }
        let cap = batch.max(self.ws.batch);
        let too_large = || StepError::TooLarge { batch };
        let zeros = |rows: usize, cols: usize| {
            rows.checked_mul(cols)
                .and_then(|len| try_filled(len, 0.0))
                .ok_or_else(too_large)
        };
        let mut ws = Workspace {
            batch: cap,
            dz_ready: vec![false; n],
            ..Default::default()
        };
        for (i, op) in self.ops.iter().enumerate() {
            let d = self.dims[i];
            ws.out.push(zeros(cap, d)?);
            ws.grad.push(zeros(cap, d)?);
            let (aux, stat) = match op {
                Op::Dense { act, .. } if !act.has_output_derivative() => (zeros(cap, d)?, 0),
                Op::BatchNorm { .. } => (zeros(cap, d)?, 2 * d),
                Op::LayerNorm { .. } => (zeros(cap, d)?, cap),
                _ => (Vec::new(), 0),
            };
            ws.aux.push(aux);
            ws.stat.push(zeros(stat, 1)?);
        }
        if let BatchParallelism::Shards(shards) = self.parallelism {
            let (mut wmax, mut bmax) = (0, 0);
            for op in &self.ops {
                if let Op::Dense {
                    fan_in, fan_out, ..
                } = *op
                {
                    // fan_in × fan_out was checked when the network was built.
                    wmax = wmax.max(fan_in * fan_out);
                    bmax = bmax.max(fan_out);
                }
            }
            ws.shard_dw = zeros(shards, wmax)?;
            ws.shard_db = zeros(shards, bmax)?;
        }
        self.ws = ws;
        Ok(())
    }

    /// Runs the network on `x` (`batch × input`) and returns the output `h`
    /// (`batch × outputs`, row-major). In training mode BatchNorm uses (and
    /// updates) batch statistics.
    ///
    /// # Errors
    /// [`StepError::InputWidth`], [`StepError::BatchOfOne`] for BatchNorm in
    /// training mode, or [`StepError::TooLarge`] for a batch whose workspaces
    /// would exceed [`MAX_ELEMENTS`].
    pub fn forward(&mut self, x: MatRef<'_>) -> Result<MatRef<'_>, StepError> {
        let batch = x.rows();
        self.forward_inner(x)?;
        let d = self.output_dim();
        let last = self.ops.len() - 1;
        Ok(MatRef::from_slice(
            &self.ws.out[last][..batch * d],
            batch,
            d,
        ))
    }

    fn forward_inner(&mut self, x: MatRef<'_>) -> Result<(), StepError> {
        if x.cols() != self.input {
            return Err(StepError::InputWidth {
                expected: self.input,
                got: x.cols(),
            });
        }
        let batch = x.rows();
        let has_bn = self.ops.iter().any(|op| matches!(op, Op::BatchNorm { .. }));
        if self.training && has_bn && batch == 1 {
            return Err(StepError::BatchOfOne);
        }
        self.ensure_batch(batch)?;
        let isa = self.options.isa.unwrap_or_else(crate::active_isa);
        for i in 0..self.ops.len() {
            let d = self.dims[i];
            let (before, rest) = self.ws.out.split_at_mut(i);
            let out = &mut rest[0][..batch * d];
            // The input of op i: the previous op's output, or x.
            let input = match before.last() {
                Some(prev) => {
                    MatRef::from_slice(&prev[..batch * self.dims[i - 1]], batch, self.dims[i - 1])
                }
                None => x,
            };
            match self.ops[i] {
                Op::Dense {
                    fan_in,
                    fan_out,
                    w,
                    b,
                    act,
                } => {
                    let wv =
                        MatRef::from_slice(&self.params[w..w + fan_in * fan_out], fan_in, fan_out);
                    let bias = &self.params[b..b + fan_out];
                    let pre = if act.has_output_derivative() {
                        None
                    } else {
                        Some(&mut self.ws.aux[i][..batch * d])
                    };
                    match self.parallelism {
                        BatchParallelism::SplitGemm => {
                            let outv = MatMut::from_slice_mut(out, batch, d);
                            let pre = pre.map(|z| MatMut::from_slice_mut(z, batch, d));
                            dense_forward(&self.options, input, wv, Some(bias), act, outv, pre);
                        }
                        BatchParallelism::Shards(shards) => {
                            let one = single_thread(&self.options);
                            let out = SharedMut::new(out);
                            let pre = pre.map(SharedMut::new);
                            for_each_shard(&self.options, batch, shards, |r| {
                                let rows = r.len();
                                // SAFETY: shards are disjoint row ranges.
                                let o = unsafe { out.range(r.start * d..r.end * d) };
                                let z = pre.as_ref().map(|z| {
                                    // SAFETY: as above.
                                    let z = unsafe { z.range(r.start * d..r.end * d) };
                                    MatMut::from_slice_mut(z, rows, d)
                                });
                                let xin = input.submatrix(r.start, 0, rows, fan_in);
                                let ov = MatMut::from_slice_mut(o, rows, d);
                                dense_forward(&one, xin, wv, Some(bias), act, ov, z);
                            });
                        }
                    }
                }
                Op::Act { act } => {
                    let src = contiguous(&input);
                    forward_slice(isa, act, src, out);
                }
                Op::BatchNorm { gamma, beta, stats } => {
                    let src = contiguous(&input);
                    let (rm, rv) = self.buffers[stats..stats + 2 * d].split_at_mut(d);
                    let g = &self.params[gamma..gamma + d];
                    let bt = &self.params[beta..beta + d];
                    if self.training {
                        let (inv_std, mean) = self.ws.stat[i].split_at_mut(d);
                        let xhat = &mut self.ws.aux[i][..batch * d];
                        batch_norm::forward_train(
                            src, batch, d, g, bt, out, xhat, inv_std, mean, rm, rv,
                        );
                    } else {
                        batch_norm::forward_eval(src, d, g, bt, rm, rv, out);
                    }
                }
                Op::LayerNorm { gamma, beta } => {
                    let src = contiguous(&input);
                    let g = &self.params[gamma..gamma + d];
                    let bt = &self.params[beta..beta + d];
                    let xhat = &mut self.ws.aux[i][..batch * d];
                    let inv_std = &mut self.ws.stat[i][..batch];
                    layer_norm::forward(src, d, g, bt, out, xhat, inv_std);
                }
                Op::ResBegin { .. } => out.copy_from_slice(contiguous(&input)),
                Op::ResEnd { begin } => {
                    // x + f(x): f(x) is the input; x is the input of ResBegin.
                    out.copy_from_slice(contiguous(&input));
                    let skip: &[f32] = if begin == 0 {
                        contiguous(&x)
                    } else {
                        &before[begin - 1][..batch * d]
                    };
                    for (o, s) in out.iter_mut().zip(skip) {
                        *o += s;
                    }
                }
            }
        }
        Ok(())
    }

    /// One forward and backward pass on a batch: returns the mean loss and
    /// leaves ∂(mean loss)/∂params in [`Mlp::grads`] (overwritten).
    ///
    /// # Errors
    /// As [`Mlp::forward`], plus [`StepError::Loss`] / [`StepError::TargetKind`]
    /// for targets that do not suit the loss.
    pub fn forward_backward(
        &mut self,
        x: MatRef<'_>,
        targets: Targets<'_>,
    ) -> Result<f32, StepError> {
        let batch = x.rows();
        self.forward_inner(x)?;
        let n = self.ops.len();
        let last = n - 1;
        let d_out = self.dims[last];
        self.ws.dz_ready.iter_mut().for_each(|r| *r = false);
        // δ⁽ᴸ⁺¹⁾ = ∂loss/∂h into the gradient buffer of the last op.
        let value = {
            let h = MatRef::from_slice(&self.ws.out[last][..batch * d_out], batch, d_out);
            let g = MatMut::from_slice_mut(&mut self.ws.grad[last][..batch * d_out], batch, d_out);
            match (self.loss, targets) {
                (Loss::Mse, Targets::Values(y)) => loss::mse(h, y, Some(g)),
                (Loss::Logistic, Targets::Signs(y)) => loss::logistic(h, y, Some(g))?,
                (Loss::SoftmaxCrossEntropy, Targets::Classes(c)) => {
                    loss::softmax_cross_entropy(h, c, Some(g))?
                }
                (loss, _) => return Err(StepError::TargetKind { loss }),
            }
        };
        for i in (0..n).rev() {
            self.backward_op(i, x, batch);
        }
        Ok(value)
    }

    /// Backward through op `i`: reads `grad[i]`, writes parameter gradients
    /// and `grad[i − 1]` (or, fused, the ∂L/∂Z of a dense op `i − 1`).
    fn backward_op(&mut self, i: usize, x: MatRef<'_>, batch: usize) {
        let d = self.dims[i];
        let d_in = if i == 0 { self.input } else { self.dims[i - 1] };
        let (gbefore, grest) = self.ws.grad.split_at_mut(i);
        let (gcur, gafter) = grest.split_first_mut().expect("op i exists");
        let g = &mut gcur[..batch * d];
        let input: &[f32] = if i == 0 {
            contiguous(&x)
        } else {
            &self.ws.out[i - 1][..batch * d_in]
        };
        match self.ops[i] {
            Op::Dense {
                fan_in,
                fan_out,
                w,
                b,
                act,
            } => {
                let (params, grads) = (&self.params, &mut self.grads);
                if !self.ws.dz_ready[i] {
                    // ∂L/∂Z = ∂L/∂A ⊙ φ′ and ∂b = Σ_rows ∂L/∂Z, unfused.
                    if act != Activation::Identity {
                        let out = &self.ws.out[i][..batch * d];
                        let aux = &self.ws.aux[i];
                        for (k, gv) in g.iter_mut().enumerate() {
                            let dphi = if act.has_output_derivative() {
                                act.df_from_output(out[k]).unwrap_or(1.0)
                            } else {
                                act.df(aux[k])
                            };
                            *gv *= dphi;
                        }
                    }
                    let db = &mut grads[b..b + fan_out];
                    db.fill(0.0);
                    for row in g.chunks_exact(fan_out) {
                        for (s, v) in db.iter_mut().zip(row) {
                            *s += v;
                        }
                    }
                }
                let dz = MatRef::from_slice(g, batch, fan_out);
                let xin = MatRef::from_slice(input, batch, fan_in);
                let dw = &mut grads[w..w + fan_in * fan_out];
                match self.parallelism {
                    BatchParallelism::SplitGemm => {
                        let dwv = MatMut::from_slice_mut(dw, fan_in, fan_out);
                        weight_grad(&self.options, xin, dz, dwv, Accum::Replace);
                    }
                    BatchParallelism::Shards(shards) => {
                        let one = single_thread(&self.options);
                        let parts = &mut self.ws.shard_dw[..shards * dw.len()];
                        let len = dw.len();
                        let sp = SharedMut::new(parts);
                        for_each_shard_or_empty(&self.options, batch, shards, |k, r| {
                            // SAFETY: each shard writes its own slot of `parts`.
                            let part = unsafe { sp.range(k * len..(k + 1) * len) };
                            if r.is_empty() {
                                part.fill(0.0);
                                return;
                            }
                            let xs = xin.submatrix(r.start, 0, r.len(), fan_in);
                            let ds = dz.submatrix(r.start, 0, r.len(), fan_out);
                            let pv = MatMut::from_slice_mut(part, fan_in, fan_out);
                            weight_grad(&one, xs, ds, pv, Accum::Replace);
                        });
                        sum_shards(&self.ws.shard_dw[..shards * len], shards, dw);
                    }
                }
                if i == 0 {
                    return;
                }
                let wv = MatRef::from_slice(&params[w..w + fan_in * fan_out], fan_in, fan_out);
                let gprev = &mut gbefore[i - 1][..batch * d_in];
                if let Op::Dense {
                    act: prev_act,
                    b: prev_b,
                    fan_out: prev_out,
                    ..
                } = self.ops[i - 1]
                {
                    // The δ step: the previous dense layer's ∂L/∂Z and ∂b in one pass.
                    let src = if prev_act.has_output_derivative() {
                        ActInput::Output(MatRef::from_slice(input, batch, d_in))
                    } else {
                        ActInput::PreActivation(MatRef::from_slice(
                            &self.ws.aux[i - 1][..batch * d_in],
                            batch,
                            d_in,
                        ))
                    };
                    let db = &mut grads[prev_b..prev_b + prev_out];
                    match self.parallelism {
                        BatchParallelism::SplitGemm => {
                            let db = BiasGrad {
                                out: db,
                                accum: Accum::Replace,
                            };
                            let gv = MatMut::from_slice_mut(gprev, batch, d_in);
                            backward_delta(&self.options, dz, wv, prev_act, src, gv, Some(db));
                        }
                        BatchParallelism::Shards(shards) => {
                            let one = single_thread(&self.options);
                            let parts = SharedMut::new(&mut self.ws.shard_db[..shards * prev_out]);
                            let gp = SharedMut::new(gprev);
                            for_each_shard_or_empty(&self.options, batch, shards, |k, r| {
                                // SAFETY: each shard writes its own slot and rows.
                                let part = unsafe { parts.range(k * prev_out..(k + 1) * prev_out) };
                                if r.is_empty() {
                                    part.fill(0.0);
                                    return;
                                }
                                let rows = r.len();
                                // SAFETY: as above.
                                let gs = unsafe { gp.range(r.start * d_in..r.end * d_in) };
                                let src_s = match src {
                                    ActInput::Output(a) => {
                                        ActInput::Output(a.submatrix(r.start, 0, rows, d_in))
                                    }
                                    ActInput::PreActivation(z) => {
                                        ActInput::PreActivation(z.submatrix(r.start, 0, rows, d_in))
                                    }
                                };
                                let bg = BiasGrad {
                                    out: part,
                                    accum: Accum::Replace,
                                };
                                let ds = dz.submatrix(r.start, 0, rows, fan_out);
                                let gv = MatMut::from_slice_mut(gs, rows, d_in);
                                backward_delta(&one, ds, wv, prev_act, src_s, gv, Some(bg));
                            });
                            sum_shards(&self.ws.shard_db[..shards * prev_out], shards, db);
                        }
                    }
                    self.ws.dz_ready[i - 1] = true;
                } else {
                    match self.parallelism {
                        BatchParallelism::SplitGemm => {
                            let gv = MatMut::from_slice_mut(gprev, batch, d_in);
                            gemm_with(&self.options, 1.0, dz, wv.t(), 0.0, gv)
                        }
                        BatchParallelism::Shards(shards) => {
                            let one = single_thread(&self.options);
                            let gp = SharedMut::new(gprev);
                            for_each_shard(&self.options, batch, shards, |r| {
                                let rows = r.len();
                                // SAFETY: shards are disjoint row ranges.
                                let gs = unsafe { gp.range(r.start * d_in..r.end * d_in) };
                                let ds = dz.submatrix(r.start, 0, rows, fan_out);
                                let gv = MatMut::from_slice_mut(gs, rows, d_in);
                                gemm_with(&one, 1.0, ds, wv.t(), 0.0, gv);
                            });
                        }
                    }
                }
            }
            Op::Act { act } => {
                if i == 0 {
                    return;
                }
                let gprev = &mut gbefore[i - 1][..batch * d_in];
                let out = &self.ws.out[i][..batch * d];
                for k in 0..g.len() {
                    let dphi = act
                        .df_from_output(out[k])
                        .unwrap_or_else(|| act.df(input[k]));
                    gprev[k] = g[k] * dphi;
                }
            }
            Op::BatchNorm { gamma, beta, .. } | Op::LayerNorm { gamma, beta } => {
                let (gm, rest) = self.grads[gamma..].split_at_mut(beta - gamma);
                let (dgamma, dbeta) = (&mut gm[..d], &mut rest[..d]);
                let gam = &self.params[gamma..gamma + d];
                let xhat = &self.ws.aux[i][..batch * d];
                // A norm on the raw input still needs dx for the formula; only
                // then is a scratch buffer made.
                let mut scratch;
                let dx: &mut [f32] = if i == 0 {
                    scratch = vec![0.0; batch * d];
                    &mut scratch
                } else {
                    &mut gbefore[i - 1][..batch * d]
                };
                if matches!(self.ops[i], Op::BatchNorm { .. }) {
                    let inv_std = &self.ws.stat[i][..d];
                    batch_norm::backward(g, batch, d, gam, xhat, inv_std, dx, dgamma, dbeta);
                } else {
                    let inv_std = &self.ws.stat[i][..batch];
                    layer_norm::backward(g, d, gam, xhat, inv_std, dx, dgamma, dbeta);
                }
            }
            Op::ResEnd { .. } => {
                // ∂L/∂f(x) = ∂L/∂out; the skip's share is added at ResBegin.
                gbefore[i - 1][..batch * d].copy_from_slice(g);
            }
            Op::ResBegin { end } => {
                if i == 0 {
                    return;
                }
                // ∂L/∂x = ∂L/∂(f's input) + ∂L/∂out of the block (the skip).
                let (gb, ge) = (
                    &mut gbefore[i - 1][..batch * d],
                    &gafter[end - i - 1][..batch * d],
                );
                for ((p, a), s) in gb.iter_mut().zip(g.iter()).zip(ge) {
                    *p = a + s;
                }
            }
        }
    }

    /// The loss's inference on `x` in evaluation mode: the mean loss over the
    /// batch and, for classification, the number of correct predictions. The
    /// training mode is restored afterwards.
    ///
    /// # Errors
    /// As [`Mlp::forward_backward`].
    pub fn evaluate(
        &mut self,
        x: MatRef<'_>,
        targets: Targets<'_>,
    ) -> Result<Evaluation, StepError> {
        let was = self.training;
        self.training = false;
        let result = self.evaluate_inner(x, targets);
        self.training = was;
        result
    }

    fn evaluate_inner(
        &mut self,
        x: MatRef<'_>,
        targets: Targets<'_>,
    ) -> Result<Evaluation, StepError> {
        let batch = x.rows();
        let loss = self.loss;
        let h = self.forward(x)?;
        let (value, correct) = match (loss, targets) {
            (Loss::Mse, Targets::Values(y)) => (loss::mse(h, y, None), None),
            (Loss::Logistic, Targets::Signs(y)) => {
                let v = loss::logistic(h, y, None)?;
                let correct = (0..batch)
                    .filter(|&i| (h.get(i, 0) >= 0.0) == (y[i] > 0.0))
                    .count();
                (v, Some(correct))
            }
            (Loss::SoftmaxCrossEntropy, Targets::Classes(c)) => {
                let v = loss::softmax_cross_entropy(h, c, None)?;
                let correct = (0..batch)
                    .filter(|&i| {
                        let row = (0..h.cols()).map(|j| h.get(i, j));
                        let best = row.enumerate().fold((0, f32::NEG_INFINITY), |acc, (j, v)| {
                            if v > acc.1 {
                                (j, v)
                            } else {
                                acc
                            }
                        });
                        best.0 == c[i]
                    })
                    .count();
                (v, Some(correct))
            }
            (loss, _) => return Err(StepError::TargetKind { loss }),
        };
        Ok(Evaluation {
            loss: value,
            correct,
            samples: batch,
        })
    }
}

/// Result of [`Mlp::evaluate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean loss over the samples.
    pub loss: f32,
    /// Correct predictions (classification losses only).
    pub correct: Option<usize>,
    /// Samples evaluated.
    pub samples: usize,
}

impl Evaluation {
    /// `correct / samples`, for classification losses.
    pub fn accuracy(&self) -> Option<f32> {
        self.correct.map(|c| c as f32 / self.samples.max(1) as f32)
    }
}

/// The elements of a view that is row-major and contiguous (all activations
/// the network makes are; an input that reaches a non-dense layer must be).
#[track_caller]
fn contiguous<'a>(m: &MatRef<'a>) -> &'a [f32] {
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

/// The same GEMM options on one thread (a shard's GEMMs run on its thread).
fn single_thread(o: &GemmOptions) -> GemmOptions {
    GemmOptions {
        threads: Threads::Fixed(1),
        ..*o
    }
}

/// Rows of shard `k` of `shards` over a batch: fixed by the batch size and the
/// shard count alone.
fn shard_rows(batch: usize, shards: usize, k: usize) -> Range<usize> {
    k * batch / shards..(k + 1) * batch / shards
}

/// Runs `f(k, rows of shard k)` for every shard, on the team.
fn for_each_shard_or_empty<F>(o: &GemmOptions, batch: usize, shards: usize, f: F)
where
    F: Fn(usize, Range<usize>) + Sync,
{
    parallel::for_each_piece(o.threads.count(), shards, |k| {
        f(k, shard_rows(batch, shards, k))
    });
}

/// Runs `f(rows)` for every non-empty shard, on the team.
fn for_each_shard<F>(o: &GemmOptions, batch: usize, shards: usize, f: F)
where
    F: Fn(Range<usize>) + Sync,
{
    for_each_shard_or_empty(o, batch, shards, |_, r| {
        if !r.is_empty() {
            f(r)
        }
    });
}

/// `out = parts[0] + parts[1] + … + parts[shards − 1]` (each `out.len()` long),
/// always added in shard order; the elements are spread over the team.
fn sum_shards(parts: &[f32], shards: usize, out: &mut [f32]) {
    let len = out.len();
    let dst = SharedMut::new(out);
    parallel::for_each_range(len, |r| {
        // SAFETY: for_each_range hands out disjoint ranges of `out`.
        let d = unsafe { dst.range(r.clone()) };
        d.copy_from_slice(&parts[r.clone()]);
        for k in 1..shards {
            for (x, y) in d.iter_mut().zip(&parts[k * len + r.start..k * len + r.end]) {
                *x += y;
            }
        }
    });
}
