//! The network's accessors: sizes, the arenas, the mode and the execution
//! settings.

use std::ops::Range;

use crate::gemm::GemmOptions;
use crate::nn::exec::Exec;
use crate::nn::layer::Layout;
use crate::nn::workspace::Workspace;
use crate::nn::{BatchParallelism, Loss, Mlp};

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
        self.exec = Exec::new(self.exec.options, parallelism);
        self.ws = Workspace::default(); // resized with the shard buffers on the next step
    }
    /// The current [`BatchParallelism`].
    pub fn parallelism(&self) -> BatchParallelism {
        self.exec.parallelism
    }

    /// Per dense layer: the parameter ranges of `W` (`fan_in × fan_out`,
    /// row-major) and `b`, with the fan-in and fan-out.
    pub fn dense_layers(&self) -> Vec<(Range<usize>, Range<usize>, usize, usize)> {
        self.slots
            .iter()
            .zip(self.slots.iter().skip(1))
            .filter_map(|(w, b)| match w.tensor.layout {
                Layout::Transposed { fan_in, fan_out } => {
                    Some((w.range(), b.range(), fan_in, fan_out))
                }
                Layout::Plain => None,
            })
            .collect()
    }
}
