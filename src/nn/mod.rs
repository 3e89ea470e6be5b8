//! Neural-network building blocks on top of the kernels: activations and losses.

pub mod loss;

pub use crate::kernel::activation::Activation;
