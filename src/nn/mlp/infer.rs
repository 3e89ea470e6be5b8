//! Inference on a shared network: `&self`, the caller's workspace, and the
//! loss's inference rule.

use crate::matrix::MatRef;
use crate::nn::exec::Exec;
use crate::nn::layer::{Buffers, Scratch};
use crate::nn::mlp::run_forward;
use crate::nn::workspace::Workspace;
use crate::nn::{BatchParallelism, Loss, Mlp, Prediction, StepError};

/// The buffers one thread needs to run a shared network forward
/// ([`Mlp::infer`]). Start with `Inference::default()`; it grows to the
/// largest batch it has served and is rebuilt for a network of another
/// shape, so a thread can keep one for its lifetime. A call at a batch size
/// seen before allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct Inference {
    ws: Workspace,
    /// Each op's output width and scratch, as `ws` was built for.
    shape: Vec<(usize, Scratch)>,
}

impl Inference {
    /// Whether the buffers serve `net` at `batch` rows.
    fn fits(&self, net: &Mlp, batch: usize) -> bool {
        self.ws.batch >= batch
            && self.shape.len() == net.ops.len()
            && self
                .shape
                .iter()
                .zip(net.ops.iter().zip(&net.dims))
                .all(|(&(d, s), (op, &w))| d == w && s == op.scratch(w))
    }
}

impl Mlp {
    /// Runs the network on `x` (`batch × input`, any strides) in evaluation
    /// mode (BatchNorm with its running averages) and returns the output `h`
    /// (`batch × outputs`, row-major) in `ws`. Takes `&self`: any number of
    /// threads may run one network at once, each with its own
    /// [`Inference`], and each gets bitwise what [`Mlp::forward`] gives in
    /// evaluation mode. The network's training mode is neither used nor
    /// changed.
    ///
    /// # Errors
    /// [`StepError::InputWidth`], or [`StepError::TooLarge`] for a batch
    /// whose workspaces would exceed [`MAX_ELEMENTS`](crate::nn::MAX_ELEMENTS).
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::{Activation, Inference, MlpBuilder};
    /// let net = MlpBuilder::new(3).dense(8).act(Activation::Relu).batch_norm().dense(2)
    ///     .build(5).unwrap();
    /// let x = [0.5f32, -1.0, 2.0];
    /// std::thread::scope(|s| {
    ///     for _ in 0..4 {
    ///         s.spawn(|| {
    ///             let mut ws = Inference::default();
    ///             let h = net.infer(MatRef::from_slice(&x, 1, 3), &mut ws).unwrap();
    ///             assert_eq!((h.rows(), h.cols()), (1, 2));
    ///         });
    ///     }
    /// });
    /// ```
    pub fn infer<'w>(&self, x: MatRef<'_>, ws: &'w mut Inference) -> Result<MatRef<'w>, StepError> {
        self.check_input(x, false)?;
        let batch = x.rows();
        if !ws.fits(self, batch) {
            let cap = batch.max(ws.ws.batch);
            ws.ws = Workspace::new(&self.ops, &self.dims, cap, false)
                .ok_or(StepError::TooLarge { batch })?;
            ws.shape = (self.ops.iter().zip(&self.dims))
                .map(|(op, &d)| (d, op.scratch(d)))
                .collect();
        }
        // Forward rows are independent, so splitting the GEMMs gives the bits
        // of any other decomposition; no reduction scratch is needed.
        let mut exec = Exec::new(self.exec.options, BatchParallelism::SplitGemm);
        let buffers = Buffers::Eval(&self.buffers);
        run_forward(
            &self.ops,
            &self.dims,
            &self.params,
            buffers,
            x,
            &mut ws.ws,
            &mut exec,
            0,
        );
        let d = self.output_dim();
        let last = &ws.ws.out[self.ops.len() - 1];
        Ok(MatRef::from_slice(&last[..batch * d], batch, d))
    }

    /// The loss's prediction for each row of `x` (in evaluation mode, with
    /// `&self`; see [`Mlp::infer`]), by [`Loss::predict`]: values for MSE,
    /// signs for logistic, classes for softmax cross-entropy. Allocates a workspace per call;
    /// [`Mlp::predict_with`] reuses one.
    ///
    /// # Errors
    /// As [`Mlp::infer`].
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::{Loss, MlpBuilder, Prediction};
    /// let net = MlpBuilder::new(2).dense(3).loss(Loss::SoftmaxCrossEntropy).build(1).unwrap();
    /// let x = [1.0f32, 0.0, 0.0, 1.0];
    /// let Prediction::Classes(c) = net.predict(MatRef::from_slice(&x, 2, 2)).unwrap() else {
    ///     unreachable!()
    /// };
    /// assert!(c.len() == 2 && c.iter().all(|&k| k < 3));
    /// ```
    pub fn predict(&self, x: MatRef<'_>) -> Result<Prediction, StepError> {
        self.predict_with(x, &mut Inference::default())
    }

    /// [`Mlp::predict`] with the caller's workspace.
    ///
    /// # Errors
    /// As [`Mlp::infer`].
    pub fn predict_with(&self, x: MatRef<'_>, ws: &mut Inference) -> Result<Prediction, StepError> {
        let loss = self.loss;
        Ok(loss.predict(self.infer(x, ws)?))
    }

    /// The probabilities the loss models, for each row of `x` (evaluation
    /// mode, `&self`), as [`Loss::probabilities`] gives them: softmax rows for
    /// softmax cross-entropy, σ(h) = P(y = +1) for logistic.
    ///
    /// # Errors
    /// [`StepError::NoProbabilities`] for MSE, which models none; otherwise
    /// as [`Mlp::infer`].
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::{Loss, MlpBuilder};
    /// let net = MlpBuilder::new(2).dense(4).loss(Loss::SoftmaxCrossEntropy).build(3).unwrap();
    /// let p = net.predict_proba(MatRef::from_slice(&[0.3f32, -0.7], 1, 2)).unwrap();
    /// assert_eq!(p.len(), 4);
    /// assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    /// ```
    pub fn predict_proba(&self, x: MatRef<'_>) -> Result<Vec<f32>, StepError> {
        let loss = self.loss;
        if loss == Loss::Mse {
            // Refused before running the network.
            return Err(StepError::NoProbabilities { loss });
        }
        loss.probabilities(self.infer(x, &mut Inference::default())?)
    }
}
