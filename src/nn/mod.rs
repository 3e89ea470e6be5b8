//! Neural-network building blocks on top of the kernels: the layer kinds (one
//! file each, behind the contract in `layer`), losses, initialization, the
//! executor that spreads a batch over threads, and the network.

mod activation;
pub mod batch_norm;
mod builder;
mod dense;
pub(crate) mod dropout;
mod error;
pub(crate) mod exec;
pub mod init;
pub(crate) mod layer;
pub mod layer_norm;
pub mod loss;
pub mod mlp;
mod residual;
mod workspace;

pub use crate::kernel::activation::Activation;
pub use builder::MlpBuilder;
pub use error::{BuildError, StepError};
pub use exec::BatchParallelism;
pub use init::Init;
pub use layer::Layer;
pub use loss::{Loss, Prediction, Targets};
pub use mlp::{DenseInfo, Evaluation, Inference, Mlp, TensorInfo};
pub use workspace::MAX_ELEMENTS;
