//! The training entry points: one forward and backward pass with the
//! network's loss or with the caller's.

use crate::matrix::{MatMut, MatRef};
use crate::nn::{Mlp, StepError, Targets};

impl Mlp {
    /// One forward and backward pass on a batch: returns the mean loss and
    /// leaves ∂(mean loss)/∂params in [`Mlp::grads`] (overwritten).
    ///
    /// The pass runs with subnormal numbers flushed to zero (x86-64: FTZ and
    /// DAZ, on every thread that works on it), as the optimizers' updates do:
    /// a network that fits its data drives δ towards zero, and every
    /// operation on a subnormal value would cost a microcode assist. Inputs,
    /// intermediate results and partial sums below `f32::MIN_POSITIVE` in
    /// magnitude (≈ 1.18e-38) become ±0, so a sum or product built from them
    /// can differ by about that much per term (times the other factor of a
    /// product) from the unflushed one, and a comparison or nonlinear step
    /// that sees a flushed value (a ReLU's derivative at a subnormal input, a
    /// logarithm) can differ by more; the bits are still the same for any
    /// number of threads, shards and ranks. [`Mlp::forward`] and the other
    /// inference entry points do not flush.
    ///
    /// # Errors
    /// As [`Mlp::forward`], plus [`StepError::Loss`] / [`StepError::TargetKind`]
    /// for targets that do not suit the loss.
    ///
    /// A training loop of one's own, with any [`Optimizer`](crate::optim::Optimizer):
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::{Loss, MlpBuilder, Targets};
    /// use backprop::optim::{Optimizer, Sgd, SgdConfig};
    /// let mut net = MlpBuilder::new(2).dense(1).loss(Loss::Mse).build(0).unwrap();
    /// let mut opt = Sgd::new(net.num_params(), SgdConfig::default());
    /// let (x, y) = ([1.0f32, 0.0, 0.0, 1.0], [2.0f32, -1.0]);
    /// let mut first = None;
    /// for _ in 0..50 {
    ///     let y = Targets::Values(MatRef::from_slice(&y, 2, 1));
    ///     let loss = net.forward_backward(MatRef::from_slice(&x, 2, 2), y).unwrap();
    ///     first.get_or_insert(loss);
    ///     let (params, grads) = net.params_and_grads();
    ///     opt.step(params, grads, 0.5);
    /// }
    /// let y = Targets::Values(MatRef::from_slice(&y, 2, 1));
    /// assert!(net.forward_backward(MatRef::from_slice(&x, 2, 2), y).unwrap() < 1e-3 * first.unwrap());
    /// ```
    pub fn forward_backward(
        &mut self,
        x: MatRef<'_>,
        targets: Targets<'_>,
    ) -> Result<f32, StepError> {
        let loss = self.loss;
        self.backprop(x, |h, mut g, exec| {
            let cut = exec.cut(h.rows());
            if cut.total_shards == 1 || targets.len() != h.rows() {
                // One sum over the batch (or the loss's own length error).
                return loss.value(h, targets, Some(g));
            }
            // Shard mode: per-shard sums, added in shard order (across the
            // group for a part of its minibatch), each row's ∂L/∂h divided
            // by the whole minibatch's size.
            let inv_b = 1.0 / cut.batch.max(1) as f64;
            let cols = h.cols();
            let total = exec.shard_sum(cut, |r| {
                let hs = h.submatrix(r.start, 0, r.len(), cols);
                let gs = g.rb_mut().submatrix_mut(r.start, 0, r.len(), cols);
                // A failing row is named by its place in the whole minibatch.
                let first = cut.first_row() + r.start;
                loss.sum(hs, targets.rows(r), Some(gs), inv_b)
                    .map_err(|e| e.rows_from(first))
            })?;
            Ok((total * inv_b) as f32)
        })
    }

    /// [`Mlp::forward_backward`] with a loss of the caller's (run, like the
    /// whole pass, with subnormals flushed to zero: an `f32` probability that
    /// would be subnormal is 0 there, and its logarithm −∞): `loss(h, dh)`
    /// gets the outputs `h` (`batch × outputs`, the network's loss kind
    /// plays no part) and the buffer `dh` of the same shape, zeroed; it
    /// writes ∂L/∂h into `dh` and returns L. The network then runs the same
    /// backward pass as for a built-in loss, fused δ steps included, and
    /// leaves ∂L/∂params in [`Mlp::grads`]. For a mean over the batch, divide
    /// by the batch size in both. ([`Trainer::step_with`](crate::train::Trainer::step_with)
    /// says how this goes in a group.)
    ///
    /// # Errors
    /// As [`Mlp::forward`].
    ///
    /// A Huber loss, trained with a hand-written loop:
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::MlpBuilder;
    /// use backprop::optim::{Optimizer, Sgd, SgdConfig};
    /// let mut net = MlpBuilder::new(1).dense(1).build(0).unwrap();
    /// let mut opt = Sgd::new(net.num_params(), SgdConfig::default());
    /// let (x, y) = ([0.0f32, 1.0, 2.0, 3.0], [1.0f32, 3.0, 5.0, 7.0]); // y = 2x + 1
    /// let huber = |h: MatRef<'_>, mut dh: backprop::matrix::MatMut<'_>| {
    ///     let b = h.rows() as f32;
    ///     let mut total = 0.0;
    ///     for i in 0..h.rows() {
    ///         let r = h.get(i, 0) - y[i];
    ///         total += if r.abs() <= 1.0 { 0.5 * r * r } else { r.abs() - 0.5 };
    ///         dh.set(i, 0, r.clamp(-1.0, 1.0) / b);
    ///     }
    ///     total / b
    /// };
    /// for _ in 0..2000 {
    ///     net.forward_backward_with(MatRef::from_slice(&x, 4, 1), huber).unwrap();
    ///     let (p, g) = net.params_and_grads();
    ///     opt.step(p, g, 0.05);
    /// }
    /// let loss = net.forward_backward_with(MatRef::from_slice(&x, 4, 1), huber).unwrap();
    /// assert!(loss < 1e-4, "{loss}");
    /// ```
    pub fn forward_backward_with(
        &mut self,
        x: MatRef<'_>,
        loss: impl FnOnce(MatRef<'_>, MatMut<'_>) -> f32,
    ) -> Result<f32, StepError> {
        self.backprop(x, |h, mut g, _| {
            g.fill(0.0);
            Ok(loss(h, g))
        })
    }
}
