//! Parameters by name: every tensor of a network as PyTorch names it.

use std::ops::Range;

use crate::nn::layer::{Layout, Store};
use crate::nn::Mlp;

/// One tensor of a network: its name and shape as PyTorch gives them, and
/// where its values live ([`Mlp::tensors`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The `state_dict()` key of the equivalent `nn.Sequential`: `0.weight`,
    /// `2.running_mean`, or `1.inner.0.bias` inside the residual block at
    /// index 1. Model files (feature `model-files`) prefix it with `layers.`.
    pub name: String,
    /// PyTorch's shape: `[out, in]` for a dense weight, `[width]` for the rest.
    pub shape: Vec<usize>,
    /// A trainable parameter (in [`Mlp::params`] and [`Mlp::grads`]), or a
    /// buffer (BatchNorm's running statistics, in [`Mlp::buffers`]).
    pub trainable: bool,
    /// Its elements' range in that arena.
    pub range: Range<usize>,
    /// Whether the arena holds the transpose of PyTorch's layout: a dense
    /// weight is `W`, `fan_in × fan_out` row-major, so element `[j][i]` of
    /// the PyTorch tensor is `arena[range.start + i·fan_out + j]`.
    pub transposed: bool,
}

impl Mlp {
    /// Every tensor, in arena order, with its PyTorch name and shape.
    ///
    /// ```
    /// use backprop::nn::{Activation, MlpBuilder};
    /// let net = MlpBuilder::new(4).dense(8).act(Activation::Relu).batch_norm().dense(3)
    ///     .build(0).unwrap();
    /// let names: Vec<String> = net.tensors().into_iter().map(|t| t.name).collect();
    /// assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias", "2.running_mean",
    ///                    "2.running_var", "3.weight", "3.bias"]);
    /// let w = net.tensor("3.weight").unwrap();
    /// assert_eq!((w.shape.as_slice(), w.range.clone(), w.transposed), (&[3, 8][..], 56..80, true));
    /// assert_eq!(net.param("0.bias").unwrap(), &[0.0; 8]);
    /// ```
    pub fn tensors(&self) -> Vec<TensorInfo> {
        self.slots
            .iter()
            .map(|s| TensorInfo {
                name: format!("{}{}", s.path, s.tensor.name),
                shape: s.tensor.shape.clone(),
                trainable: s.tensor.store == Store::Param,
                range: s.range(),
                transposed: matches!(s.tensor.layout, Layout::Transposed { .. }),
            })
            .collect()
    }

    /// The tensor called `name` ([`Mlp::tensors`]' names), if there is one.
    pub fn tensor(&self, name: &str) -> Option<TensorInfo> {
        self.tensors().into_iter().find(|t| t.name == name)
    }

    /// The values of the tensor called `name`, in the arena's layout (see
    /// [`TensorInfo::transposed`]): a parameter's from [`Mlp::params`], a
    /// buffer's from [`Mlp::buffers`].
    pub fn param(&self, name: &str) -> Option<&[f32]> {
        let t = self.tensor(name)?;
        let arena = if t.trainable {
            &self.params
        } else {
            &self.buffers
        };
        Some(&arena[t.range])
    }

    /// The parameter ranges of the dense layers' weights, in arena order:
    /// what weight decay is usually restricted to (biases and norm
    /// parameters are not decayed), e.g. with
    /// [`DecayMask::only`](crate::optim::DecayMask::only).
    pub fn weight_ranges(&self) -> Vec<Range<usize>> {
        self.dense_layers().into_iter().map(|d| d.weight).collect()
    }
}
