//! [`MlpBuilder`]: a network description, layer by layer.

use crate::kernel::Activation;
use crate::nn::{BuildError, Init, Layer, Loss, Mlp};

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
    /// Appends a dense layer with `units` outputs, a bias, and the builder's
    /// default init (`nn.Linear`).
    pub fn dense(mut self, units: usize) -> Self {
        let init = self.init;
        self.layers.push(Layer::Dense {
            units,
            init,
            bias: true,
        });
        self
    }
    /// Appends a dense layer without bias, `Z = X·W` (`nn.Linear(bias=False)`),
    /// with the builder's default init.
    ///
    /// ```
    /// use backprop::nn::MlpBuilder;
    /// let net = MlpBuilder::new(4).dense_without_bias(3).build(0).unwrap();
    /// assert_eq!(net.num_params(), 4 * 3);
    /// assert!(net.tensor("0.bias").is_none());
    /// ```
    pub fn dense_without_bias(mut self, units: usize) -> Self {
        let init = self.init;
        self.layers.push(Layer::Dense {
            units,
            init,
            bias: false,
        });
        self
    }
    /// Appends a dense layer (with bias) with an explicit initialization.
    pub fn dense_init(mut self, units: usize, init: Init) -> Self {
        self.layers.push(Layer::Dense {
            units,
            init,
            bias: true,
        });
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
    /// Appends batch normalization with learnt γ and β (`nn.BatchNorm1d`).
    pub fn batch_norm(mut self) -> Self {
        self.layers.push(Layer::BatchNorm { affine: true });
        self
    }
    /// Appends batch normalization without γ and β
    /// (`nn.BatchNorm1d(affine=False)`): it keeps its running averages only.
    pub fn batch_norm_without_affine(mut self) -> Self {
        self.layers.push(Layer::BatchNorm { affine: false });
        self
    }
    /// Appends layer normalization with learnt γ and β (`nn.LayerNorm`).
    pub fn layer_norm(mut self) -> Self {
        self.layers.push(Layer::LayerNorm { affine: true });
        self
    }
    /// Appends layer normalization without γ and β
    /// (`nn.LayerNorm(elementwise_affine=False)`): it has no tensors.
    pub fn layer_norm_without_affine(mut self) -> Self {
        self.layers.push(Layer::LayerNorm { affine: false });
        self
    }
    /// Appends dropout with drop probability `p` ([`Layer::Dropout`]).
    pub fn dropout(mut self, p: f32) -> Self {
        self.layers.push(Layer::Dropout { p });
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
    /// parameters past [`MAX_ELEMENTS`](crate::nn::MAX_ELEMENTS) ([`BuildError::TooLarge`]).
    ///
    /// ```
    /// use backprop::nn::{Activation, BuildError, Loss, MlpBuilder};
    /// let net = MlpBuilder::new(784).dense(128).act(Activation::Relu).dense(10)
    ///     .loss(Loss::SoftmaxCrossEntropy).build(0).unwrap();
    /// assert_eq!(net.num_params(), 784 * 128 + 128 + 128 * 10 + 10);
    /// // Logistic regression needs one output.
    /// let e = MlpBuilder::new(4).dense(2).loss(Loss::Logistic).build(0).unwrap_err();
    /// assert!(matches!(e, BuildError::OutputForLoss { width: 2, .. }));
    /// ```
    pub fn build(self, seed: u64) -> Result<Mlp, BuildError> {
        Mlp::new(self.input, &self.layers, self.loss, Some(seed))
    }
}
