//! `backprop`: SIMD-optimized, multithreaded `f32` kernels for training fully
//! connected networks on the CPU.
//!
//! * [`gemm`]: a cache-blocked GEMM (`C ← α·A·B + β·C`) with run-time-selected
//!   microkernels (AVX-512F, AVX2+FMA, portable), a safe API over strided
//!   [`matrix`] views and a raw [`gemm::sgemm`] that is a drop-in for
//!   `matrixmultiply::sgemm`.
//! * [`kernel`]: the ISA paths, their detection and the `BACKPROP_ISA` override.
//! * [`parallel`]: the crate-wide thread setting.
//! * [`reference`](mod@reference): naive scalar implementations used as the test oracle.
//!
//! ```
//! use backprop::{gemm::gemm, matrix::{MatMut, MatRef}};
//! let (m, k, n) = (64, 32, 48);
//! let a = vec![1.0f32; m * k];
//! let b = vec![0.5f32; k * n];
//! let mut c = vec![0.0f32; m * n];
//! gemm(1.0, MatRef::from_slice(&a, m, k), MatRef::from_slice(&b, k, n), 0.0,
//!      MatMut::from_slice_mut(&mut c, m, n));
//! assert!(c.iter().all(|&x| x == 16.0));
//! println!("{} kernels on {} threads", backprop::active_isa(), backprop::num_threads());
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod gemm;
#[cfg(feature = "model-files")]
pub mod io;
pub mod kernel;
pub mod matrix;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod reference;
pub mod rng;
pub mod train;

pub use kernel::{active_isa, Isa};
pub use parallel::{num_threads, set_num_threads, Threads};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
