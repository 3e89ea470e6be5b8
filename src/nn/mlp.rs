//! Fully connected networks: a builder, one flat parameter arena, and the
//! forward and backward passes built on the fused kernels.
//!
//! # Layout
//! A network is a list of layers applied in order: dense layers `Z = X·W + b`
//! (W is `fan_in × fan_out`, as in `../DESIGN.md` section 1), activations,
//! BatchNorm, LayerNorm and residual blocks `x + f(x)`, each kind in its own
//! file behind one contract (`nn/layer.rs`). A dense layer directly followed
//! by an activation is fused: the activation runs in the GEMM epilogue, and
//! on the way back φ′ and the bias gradient run in the epilogue of the δ step
//! of the layer above.
//!
//! All parameters live in one `Vec<f32>` ([`Mlp::params`]) and their gradients
//! in another of the same layout ([`Mlp::grads`]), so an optimizer step is one
//! pass over two slices. Per layer, in order: dense `W` then `b`; norms `γ`
//! then `β`. BatchNorm running averages are not parameters; they live in
//! [`Mlp::buffers`].
//!
//! # Batches and threads
//! Activations are `(batch, features)` row-major. How a minibatch's GEMMs are
//! spread over threads is [`BatchParallelism`]'s choice, carried out by one
//! executor (`nn/exec.rs`): either way a step gives bitwise the same weights
//! for any thread count. Workspaces are sized for the largest batch seen and
//! reused: a step at a batch size seen before allocates nothing.

use crate::gemm::GemmOptions;
use crate::matrix::{MatMut, MatRef};
use crate::nn::dropout::noise_key;
use crate::nn::exec::Exec;
use crate::nn::layer::{self, Backward, Buffers, Forward, Op, Slot};
use crate::nn::workspace::{stage_input, staged, Workspace};
use crate::nn::{BatchParallelism, BuildError, Layer, Loss, StepError};

mod access;
mod entry;
mod eval;
mod infer;
mod params;
mod summary;

pub use access::DenseInfo;
pub use eval::Evaluation;
pub use infer::Inference;
pub use params::TensorInfo;

/// A network: its layers, parameters, gradients and workspaces.
///
/// `Debug` and `Display` give a summary (layers, tensor shapes, parameter
/// count), never the arrays:
///
/// ```
/// use backprop::nn::{Activation, MlpBuilder};
/// let net = MlpBuilder::new(4).dense(8).act(Activation::Relu).batch_norm().dense(3).build(0).unwrap();
/// assert_eq!(
///     net.to_string(),
///     "Mlp: 4 inputs → 3 outputs, Mse loss, 83 parameters, training mode\n\
///      \x20 0  dense 8 (He)  weight [8, 4], bias [8]\n\
///      \x20 1  relu\n\
///      \x20 2  batch_norm  weight [8], bias [8], running_mean [8], running_var [8]\n\
///      \x20 3  dense 3 (He)  weight [3, 8], bias [3]\n"
/// );
/// assert!(format!("{net:?}").len() < 200);
/// ```
pub struct Mlp {
    input: usize,
    loss: Loss,
    /// The description the network was built from.
    layers: Vec<Layer>,
    /// Compiled layers, in order.
    ops: Vec<Box<dyn Op>>,
    /// Output width of each op.
    dims: Vec<usize>,
    /// The arena layout, as the layers declared it.
    slots: Vec<Slot>,
    params: Vec<f32>,
    grads: Vec<f32>,
    buffers: Vec<f32>,
    training: bool,
    exec: Exec,
    ws: Workspace,
    /// Dropout's noise: the seed, and the step of the next training pass.
    noise: (u64, u64),
}

impl Clone for Mlp {
    /// The same description, arenas, mode and settings; the workspaces start
    /// empty.
    fn clone(&self) -> Mlp {
        let c = layer::compile(self.input, &self.layers).expect("a built network compiles again");
        Mlp {
            input: self.input,
            loss: self.loss,
            layers: self.layers.clone(),
            ops: c.ops,
            dims: c.dims,
            slots: c.slots,
            params: self.params.clone(),
            grads: self.grads.clone(),
            buffers: self.buffers.clone(),
            training: self.training,
            exec: Exec::new(self.exec.options, self.exec.parallelism),
            ws: Workspace::default(),
            noise: self.noise,
        }
    }
}

impl Mlp {
    /// Compiles the description; draws the declared initial values from a
    /// generator seeded with `seed`, or leaves the arenas zero for `None`.
    pub(crate) fn new(
        input: usize,
        layers: &[Layer],
        loss: Loss,
        seed: Option<u64>,
    ) -> Result<Mlp, BuildError> {
        let c = layer::compile(input, layers)?;
        let width = *c.dims.last().expect("a compiled network has an op");
        let ok = match loss {
            Loss::Logistic => width == 1,
            _ => width >= 1,
        };
        if !ok {
            return Err(BuildError::OutputForLoss { loss, width });
        }
        let arenas = c.arenas(seed).ok_or(BuildError::TooLarge {
            layer: layers.len() - 1,
        })?;
        Ok(Mlp {
            input,
            loss,
            layers: layers.to_vec(),
            ops: c.ops,
            dims: c.dims,
            slots: c.slots,
            params: arenas.params,
            grads: arenas.grads,
            buffers: arenas.buffers,
            training: true,
            exec: Exec::new(GemmOptions::default(), BatchParallelism::SplitGemm),
            ws: Workspace::default(),
            noise: (seed.unwrap_or(0), 0),
        })
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
    /// The arena layout: every tensor the layers declared, in arena order.
    #[cfg_attr(not(feature = "model-files"), allow(dead_code))]
    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }
    /// A network with the same description and its values replaced by
    /// `params` and `buffers` (e.g. loaded from a file).
    ///
    /// # Errors
    /// [`BuildError`] as [`MlpBuilder::build`](crate::nn::MlpBuilder::build);
    /// [`BuildError::ParamCount`] if a length does not match the description.
    pub fn from_parts(
        input: usize,
        layers: &[Layer],
        loss: Loss,
        params: Vec<f32>,
        buffers: Vec<f32>,
    ) -> Result<Mlp, BuildError> {
        let mut net = Mlp::new(input, layers, loss, None)?;
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
    /// Sizes the workspaces for batches of up to `batch` rows (no-op when
    /// they are large enough already). Every size is checked against
    /// [`MAX_ELEMENTS`](crate::nn::MAX_ELEMENTS) before anything is allocated.
    fn ensure_batch(&mut self, batch: usize) -> Result<(), StepError> {
        if self.ws.fits(self.ops.len(), batch) {
            return Ok(());
        }
        let cap = batch.max(self.ws.batch);
        let ws = Workspace::new(&self.ops, &self.dims, cap, true)
            .ok_or(StepError::TooLarge { batch })?;
        // Shard partials of the largest parameter tensor (a W or a b).
        let widest = self.slots.iter().map(|s| s.len).max().unwrap_or(0);
        self.exec
            .reserve(widest)
            .ok_or(StepError::TooLarge { batch })?;
        self.ws = ws;
        Ok(())
    }

    /// Runs the network on `x` (`batch × input`, any strides) and returns the
    /// output `h` (`batch × outputs`, row-major). In training mode BatchNorm
    /// uses (and updates) batch statistics.
    ///
    /// # Errors
    /// [`StepError::InputWidth`], [`StepError::BatchOfOne`] for BatchNorm in
    /// training mode, or [`StepError::TooLarge`] for a batch whose workspaces
    /// would exceed [`MAX_ELEMENTS`](crate::nn::MAX_ELEMENTS).
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::{Activation, MlpBuilder};
    /// let mut net = MlpBuilder::new(3).dense(5).act(Activation::Tanh).dense(2).build(1).unwrap();
    /// let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    /// // Any strides: the transpose of a 3 × 2 buffer is a 2 × 3 input.
    /// let h = net.forward(MatRef::from_slice(&x, 3, 2).t()).unwrap();
    /// assert_eq!((h.rows(), h.cols()), (2, 2));
    /// ```
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
        self.check_input(x, self.training)?;
        self.ensure_batch(x.rows())?;
        let (buffers, noise) = match self.training {
            true => {
                let (seed, step) = self.noise;
                self.noise.1 = step.wrapping_add(1);
                (Buffers::Train(&mut self.buffers), noise_key(seed, step))
            }
            false => (Buffers::Eval(&self.buffers), 0),
        };
        run_forward(
            &self.ops,
            &self.dims,
            &self.params,
            buffers,
            x,
            &mut self.ws,
            &mut self.exec,
            noise,
        );
        Ok(())
    }

    /// Checks `x`'s width, and refuses a batch of one where a layer needs
    /// batch statistics (BatchNorm in training mode).
    pub(crate) fn check_input(&self, x: MatRef<'_>, training: bool) -> Result<(), StepError> {
        if x.cols() != self.input {
            return Err(StepError::InputWidth {
                expected: self.input,
                got: x.cols(),
            });
        }
        let batch = self.exec.cut(x.rows()).batch;
        if training && batch == 1 && self.ops.iter().any(|op| op.needs_batch_statistics()) {
            return Err(StepError::BatchOfOne);
        }
        Ok(())
    }

    /// Forward, `loss(h, dh)`, backward: the body of both entry points, with
    /// subnormal results flushed to zero throughout (on every thread that
    /// works on the pass, see [`crate::parallel`]).
    pub(crate) fn backprop(
        &mut self,
        x: MatRef<'_>,
        loss: impl FnOnce(MatRef<'_>, MatMut<'_>, &mut Exec) -> Result<f32, StepError>,
    ) -> Result<f32, StepError> {
        // A network that fits its data well drives δ towards zero, and every
        // product with a subnormal operand or result then costs a microcode
        // assist (a pass over a batch the network has learned ran 2× slower
        // on a Zen 4). Only values below f32::MIN_POSITIVE are flushed (see
        // Mlp::forward_backward for what that can change).
        let _flush = crate::kernel::subnormal::flush_subnormals();
        // Out of line, so that no arithmetic of the pass (such as the loss
        // value, which lives in a register) can be scheduled across the
        // guard's MXCSR writes, which order memory accesses only.
        self.backprop_flushed(x, loss)
    }

    /// [`Mlp::backprop`]'s body, run under its guard.
    #[inline(never)]
    fn backprop_flushed(
        &mut self,
        x: MatRef<'_>,
        loss: impl FnOnce(MatRef<'_>, MatMut<'_>, &mut Exec) -> Result<f32, StepError>,
    ) -> Result<f32, StepError> {
        let batch = x.rows();
        self.forward_inner(x)?;
        let last = self.ops.len() - 1;
        let d_out = self.dims[last];
        // δ⁽ᴸ⁺¹⁾ = ∂loss/∂h into the gradient buffer of the last op.
        let h = MatRef::from_slice(&self.ws.out[last][..batch * d_out], batch, d_out);
        let g = MatMut::from_slice_mut(&mut self.ws.grad[last][..batch * d_out], batch, d_out);
        let value = loss(h, g, &mut self.exec)?;
        let isa = self.exec.isa();
        let ws = &mut self.ws;
        let x = staged(&*self.ops[0], x, &ws.input);
        for i in (0..self.ops.len()).rev() {
            let (before, rest) = ws.grad.split_at_mut(i);
            let (grad, later) = rest.split_first_mut().expect("op i has a gradient buffer");
            self.ops[i].backward(Backward {
                batch,
                input: input_of(x, &ws.out[..i], &self.dims, i, batch),
                out: &ws.out[i],
                aux: &ws.aux[i],
                stat: &mut ws.stat[i],
                grad,
                grad_in: before.last_mut().map(|g| &mut g[..]),
                later,
                input_op: i.checked_sub(1).map(|j| &*self.ops[j]),
                input_aux: i.checked_sub(1).map_or(&[], |j| &ws.aux[j][..]),
                output_op: self.ops.get(i + 1).map(|o| &**o),
                params: &self.params,
                grads: &mut self.grads,
                isa,
                exec: &mut self.exec,
            });
        }
        // A group's parameter gradients, kept during the pass, in one exchange.
        self.exec.flush(&mut self.grads);
        Ok(value)
    }
}

/// Runs every op forward on `x` into `ws` (sized for `x`'s rows), with the
/// pass's dropout noise key.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_forward(
    ops: &[Box<dyn Op>],
    dims: &[usize],
    params: &[f32],
    mut buffers: Buffers<'_>,
    x: MatRef<'_>,
    ws: &mut Workspace,
    exec: &mut Exec,
    noise: u64,
) {
    let batch = x.rows();
    let isa = exec.isa();
    let x = stage_input(&*ops[0], x, &mut ws.input);
    for (i, op) in ops.iter().enumerate() {
        let (earlier, rest) = ws.out.split_at_mut(i);
        op.forward(Forward {
            batch,
            input: input_of(x, earlier, dims, i, batch),
            out: &mut rest[0],
            aux: &mut ws.aux[i],
            stat: &mut ws.stat[i],
            earlier,
            x,
            params,
            buffers: match &mut buffers {
                Buffers::Train(b) => Buffers::Train(b),
                Buffers::Eval(b) => Buffers::Eval(b),
            },
            isa,
            exec,
            noise,
        });
    }
}

/// The input of op `i`: the output of op `i − 1`, or the network's `x`.
fn input_of<'a>(
    x: MatRef<'a>,
    outs: &'a [Vec<f32>],
    dims: &[usize],
    i: usize,
    batch: usize,
) -> MatRef<'a> {
    match i.checked_sub(1) {
        Some(j) => MatRef::from_slice(&outs[j][..batch * dims[j]], batch, dims[j]),
        None => x,
    }
}
