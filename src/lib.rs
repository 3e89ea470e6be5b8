//! `backprop`: SIMD-optimized, multithreaded `f32` kernels for training fully
//! connected networks on the CPU, and a small trainer built on them.
//!
//! The crate reads bottom-up, in four layers; each has a short example below
//! and a longer one on its module page.
//!
//! | layer | modules | what it gives |
//! |---|---|---|
//! | kernels | [`gemm`], [`matrix`], [`kernel`], [`parallel`] | a cache-blocked GEMM with run-time-selected microkernels (AVX-512F, AVX2+FMA, portable; no `RUSTFLAGS` needed), fused bias + activation epilogues and the fused backprop δ step, over strided views |
//! | layers | [`nn`] | dense layers, activations, BatchNorm, LayerNorm, residual blocks; forward and backward passes; the three losses and their inference rules; inference on a shared network |
//! | training | [`optim`], [`train`] | SGD (momentum, Nesterov), Adam/AdamW, step-size schedules, weight decay (optionally on the weights only), datasets, the training loop with divergence checks |
//! | files | `io` (feature `model-files`, on by default) | model files and checkpoints in the safetensors format with PyTorch's `nn.Sequential` names; bitwise-exact resume |
//!
//! [`reference`](mod@reference) holds the naive scalar implementations the
//! tests compare everything against; [`rng`] the crate's own generator, so a
//! seed fixes weights and shuffles across versions of the dependencies.
//!
//! # Kernels
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
//!
//! # Layers
//!
//! A network is built from a description; its parameters live in one arena,
//! named as PyTorch names them.
//!
//! ```
//! use backprop::matrix::MatRef;
//! use backprop::nn::{Activation, Loss, MlpBuilder, Targets};
//! let mut net = MlpBuilder::new(4).dense(16).act(Activation::Relu).batch_norm().dense(3)
//!     .loss(Loss::SoftmaxCrossEntropy).build(7).unwrap();
//! assert_eq!(net.tensors()[0].name, "0.weight");
//! let x = [0.1f32, -0.4, 2.0, 0.3, 1.0, 0.0, -1.0, 0.5];
//! // One forward and backward pass: the mean loss, and ∂loss/∂params in net.grads().
//! let loss = net.forward_backward(MatRef::from_slice(&x, 2, 4), Targets::Classes(&[2, 0])).unwrap();
//! assert!(loss.is_finite() && net.grads().iter().any(|&g| g != 0.0));
//! ```
//!
//! # Training
//!
//! ```
//! use backprop::nn::{Activation, Loss, MlpBuilder, Targets};
//! use backprop::optim::{Adam, AdamConfig, DecayMask, Schedule};
//! use backprop::train::{Dataset, Trainer};
//! // XOR-like signs from two features.
//! let x: Vec<f32> = (0..64).flat_map(|i| [(i % 8) as f32 - 3.5, (i / 8) as f32 - 3.5]).collect();
//! let y: Vec<f32> = x.chunks(2).map(|p| if p[0] * p[1] > 0.0 { 1.0 } else { -1.0 }).collect();
//! let data = Dataset::new(x, 64, 2, Targets::Signs(&y)).unwrap();
//! let net = MlpBuilder::new(2).dense(16).act(Activation::Tanh).dense(1)
//!     .loss(Loss::Logistic).build(1).unwrap();
//! // AdamW, decaying the dense weights only.
//! let mask = DecayMask::only(net.weight_ranges(), net.num_params()).unwrap();
//! let opt = Adam::new(net.num_params(), AdamConfig::adamw(1e-4)).with_decay_mask(mask);
//! let mut trainer = Trainer::new(net, Box::new(opt), Schedule::constant(0.05), 42);
//! for _ in 0..100 {
//!     trainer.train_epoch(&data, 16).unwrap();
//! }
//! assert!(trainer.evaluate(&data, 64).unwrap().accuracy().unwrap() > 0.9);
//! ```
//!
//! # Files and inference
//!
//! A saved network loads in evaluation mode; `&self` inference lets many
//! threads share it.
//!
//! ```
//! # #[cfg(feature = "model-files")] {
//! use backprop::io::{load_mlp, save_mlp};
//! use backprop::matrix::MatRef;
//! use backprop::nn::{Activation, Loss, MlpBuilder, Prediction};
//! let net = MlpBuilder::new(3).dense(8).act(Activation::Relu).batch_norm().dense(4)
//!     .loss(Loss::SoftmaxCrossEntropy).build(2).unwrap();
//! let path = std::env::temp_dir().join(format!("backprop-front-{}.safetensors", std::process::id()));
//! save_mlp(&net, &path).unwrap();
//! let model = load_mlp(&path).unwrap();
//! std::fs::remove_file(&path).unwrap();
//! let x = [0.5f32, -1.0, 2.0];
//! std::thread::scope(|s| {
//!     for _ in 0..2 {
//!         s.spawn(|| {
//!             let Prediction::Classes(c) = model.predict(MatRef::from_slice(&x, 1, 3)).unwrap()
//!                 else { unreachable!() };
//!             assert!(c[0] < 4);
//!         });
//!     }
//! });
//! # }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod dist;
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
