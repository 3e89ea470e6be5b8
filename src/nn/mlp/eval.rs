//! Evaluation: the loss and the inference rule's hits on a batch.

use crate::matrix::MatRef;
use crate::nn::{Mlp, StepError, Targets};

impl Mlp {
    /// The loss's inference on `x` in evaluation mode: the mean loss over the
    /// batch and, for classification, the number of correct predictions by
    /// the loss's rule ([`Loss::correct`](crate::nn::Loss::correct)). The training mode is restored
    /// afterwards.
    ///
    /// # Errors
    /// As [`Mlp::forward_backward`].
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::{Loss, MlpBuilder, Targets};
    /// let mut net = MlpBuilder::new(2).dense(3).loss(Loss::SoftmaxCrossEntropy).build(4).unwrap();
    /// let x = [1.0f32, 0.0, 0.0, 1.0];
    /// let e = net.evaluate(MatRef::from_slice(&x, 2, 2), Targets::Classes(&[0, 2])).unwrap();
    /// assert_eq!(e.samples, 2);
    /// assert!(e.accuracy().unwrap() <= 1.0 && e.loss > 0.0);
    /// ```
    pub fn evaluate(
        &mut self,
        x: MatRef<'_>,
        targets: Targets<'_>,
    ) -> Result<Evaluation, StepError> {
        let was = self.training;
        self.training = false;
        let loss = self.loss;
        let result = self.forward(x).and_then(|h| {
            Ok(Evaluation {
                loss: loss.value(h, targets, None)?,
                correct: loss.correct(h, targets)?,
                samples: h.rows(),
            })
        });
        self.training = was;
        result
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
