//! The network's accessors: sizes, the arenas, the mode and the execution
//! settings.

use std::ops::Range;

use crate::gemm::GemmOptions;
use crate::nn::exec::Exec;
use crate::nn::layer::Layout;
use crate::nn::workspace::Workspace;
use crate::nn::{BatchParallelism, Loss, Mlp};

/// Where a dense layer's parameters sit ([`Mlp::dense_layers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenseInfo {
    /// `W`'s range (`fan_in × fan_out`, row-major).
    pub weight: Range<usize>,
    /// `b`'s range (`fan_out`), or `None` for a layer without bias.
    pub bias: Option<Range<usize>>,
    /// Input width.
    pub fan_in: usize,
    /// Output width.
    pub fan_out: usize,
}

impl Mlp {
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
    /// The parameter arena (see [`Mlp::layers`] for the layout).
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
    /// Positions dropout's noise: the next training pass draws its masks
    /// from `seed` and `step`, the one after from `step + 1`, and so on. A
    /// built network starts at its build seed and step 0; a
    /// [`Trainer`](crate::train::Trainer) sets its own seed and step count
    /// before every step, so a resumed run draws the masks an uninterrupted
    /// run draws. Networks without dropout ignore it.
    pub fn set_noise(&mut self, seed: u64, step: u64) {
        self.noise = (seed, step);
    }

    /// Whether the network is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }
    /// GEMM options (thread count, ISA) used by every layer.
    pub fn set_gemm_options(&mut self, options: GemmOptions) {
        self.exec.options = options;
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
        let mut exec = Exec::new(self.exec.options, parallelism);
        // The group and its gradient exchange carry over as they are (making
        // a new exchange would be a collective, which one rank's call here
        // cannot be).
        exec.take_group_from(&mut self.exec);
        self.exec = exec;
        self.ws = Workspace::default(); // resized with the shard buffers on the next step
    }
    /// Trains with `group` from now on (shard mode), or alone (`None`).
    pub(crate) fn set_group(&mut self, group: Option<crate::dist::Group>) {
        self.exec.set_group(group);
    }
    /// The group the network trains with, if any.
    pub(crate) fn group(&self) -> Option<&crate::dist::Group> {
        self.exec.group()
    }
    /// Whether a group's backward pass leaves the whole summed gradient on
    /// every rank (`true`) or only each rank's owned slice.
    pub(crate) fn set_full_grads(&mut self, full: bool) {
        self.exec.set_full_grads(full);
    }
    /// Marks the coming passes as over this rank's part of a group's
    /// minibatch of `batch` rows, or (`None`) over whole batches.
    pub(crate) fn set_part(&mut self, batch: Option<usize>) {
        self.exec.set_part(batch);
    }
    /// The rows of a minibatch of `batch` rows this rank computes in a group
    /// (all of them alone).
    pub(crate) fn rows_of(&self, batch: usize) -> Range<usize> {
        self.exec.rows_of(batch)
    }
    /// The current [`BatchParallelism`].
    pub fn parallelism(&self) -> BatchParallelism {
        self.exec.parallelism
    }

    /// Per dense layer, in order: where its `W` and `b` sit in
    /// [`Mlp::params`] (and [`Mlp::grads`]) and its widths.
    ///
    /// ```
    /// use backprop::nn::{Activation, MlpBuilder};
    /// let net = MlpBuilder::new(4).dense(8).act(Activation::Relu).dense_without_bias(3)
    ///     .build(0).unwrap();
    /// let d = net.dense_layers();
    /// assert_eq!((d[0].weight.clone(), d[0].bias.clone()), (0..32, Some(32..40)));
    /// assert_eq!((d[1].weight.clone(), d[1].bias.clone()), (40..64, None));
    /// assert_eq!((d[1].fan_in, d[1].fan_out), (8, 3));
    /// ```
    pub fn dense_layers(&self) -> Vec<DenseInfo> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, w)| match w.tensor.layout {
                Layout::Transposed { fan_in, fan_out } => {
                    let bias = (self.slots.get(i + 1))
                        .filter(|b| b.path == w.path && b.tensor.name == "bias")
                        .map(|b| b.range());
                    Some(DenseInfo {
                        weight: w.range(),
                        bias,
                        fan_in,
                        fan_out,
                    })
                }
                Layout::Plain => None,
            })
            .collect()
    }
}
