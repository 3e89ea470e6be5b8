//! Neural-network building blocks on top of the kernels: activations, losses,
//! initialization, normalization layers and the fully connected network.

pub mod batch_norm;
pub mod init;
pub mod layer_norm;
pub mod loss;
pub mod mlp;

pub use crate::kernel::activation::Activation;
pub use init::Init;
pub use loss::Loss;
pub use mlp::{
    BatchParallelism, BuildError, Evaluation, Layer, Mlp, MlpBuilder, StepError, Targets,
    MAX_ELEMENTS,
};
