//! Model files and training checkpoints in the [safetensors] format, with the
//! tensor names a PyTorch `nn.Sequential` would use.
//!
//! * The container: [`from_bytes`] reads a safetensors file through the
//!   `safetensors` crate (the format's own implementation, strict and
//!   bounds-checked), [`to_bytes`] writes one with equal bytes for equal
//!   contents, and [`write_atomic`] never leaves a half-written file behind.
//! * [`save_mlp`] / [`load_mlp`]: a network's parameters and BatchNorm running
//!   statistics as `layers.{i}.weight`, `layers.{i}.bias`, … (see
//!   [`mlp_to_safetensors`] for the names and shapes), plus its architecture
//!   in the file's metadata, so loading needs nothing else.
//! * A plain PyTorch state dict (`safetensors.torch.save_file(seq.state_dict(),
//!   f)`, no metadata): [`load_weights_into`] a network built with the same
//!   layers, or [`mlp_from_state_dict`], which reads the layers from the
//!   tensor names and shapes where they determine them ([`infer_layers`]).
//! * [`save_checkpoint`] / [`load_checkpoint`] / [`restore`]: the network, the
//!   optimizer's buffers and the trainer's position, so that a resumed run
//!   gives bitwise the same weights as one that never stopped.
//!
//! Every failure is an [`IoError`] naming the file, tensor or metadata key at
//! fault. Malformed input never panics, and no size read from a file is
//! trusted: allocations stay within a small multiple of the input's length.
//!
//! Integrity: every file this module writes carries a [`checksum`] of its
//! metadata and tensors under [`KEY_CHECKSUM`], verified on load
//! ([`IoError::Checksum`]); files of format version 1, written before the
//! checksum existed, still load without it. NaN or infinite values are
//! refused both when saving and when loading ([`IoError::NonFinite`]), so a
//! checkpoint always holds a state training can continue from.
//!
//! ```
//! use backprop::io::{load_mlp, save_mlp};
//! use backprop::nn::{Activation, Loss, MlpBuilder};
//!
//! let net = MlpBuilder::new(4).dense(8).act(Activation::Relu).batch_norm().dense(3)
//!     .loss(Loss::SoftmaxCrossEntropy).build(1).unwrap();
//! let path = std::env::temp_dir().join(format!("backprop-io-doc-{}.safetensors", std::process::id()));
//! save_mlp(&net, &path).unwrap();
//! let back = load_mlp(&path).unwrap();
//! assert_eq!(back.params(), net.params());
//! assert_eq!(back.layers(), net.layers());
//! std::fs::remove_file(&path).unwrap();
//! ```
//!
//! # The container
//!
//! ## Format
//! ```text
//! [8 bytes]  N, little-endian u64: the header's length
//! [N bytes]  UTF-8 JSON header (may end in spaces, used as padding)
//! [rest]     the data section: raw little-endian tensor bytes
//! ```
//! The header is one JSON object. The optional key `__metadata__` maps to an
//! object of string keys to string values; every other key is a tensor name
//! mapping to `{"dtype": "F32", "shape": [d0, d1, …], "data_offsets": [begin,
//! end]}`, offsets in bytes relative to the data section's start. Tensors are
//! row-major (C order), contiguous, do not overlap, and together cover the
//! data section exactly.
//!
//! ## Reading
//! [`from_bytes`] hands the bytes to `safetensors::SafeTensors::read_metadata`,
//! which checks, before anything is allocated from a header field: the header
//! length (≤ [`MAX_HEADER_LEN`], within the input), UTF-8 and JSON, every
//! entry's fields and dtype, shape products and byte lengths with checked
//! arithmetic, and that the tensors cover the data section in order without
//! gaps or overlaps. A malformed file is [`IoError::Format`] with that
//! crate's reason. Tensor data is then converted to `f32`, one allocation per
//! tensor of at most the data section's size: F32 as is; F64, F16 and BF16
//! rounded to the nearest `f32` (exact for F16 and BF16); I64 converted
//! (exact up to 2²⁴), so that files PyTorch writes in those dtypes (a
//! half-precision model, BatchNorm's `num_batches_tracked`) load. Other
//! dtypes give [`IoError::UnsupportedDtype`].
//!
//! ## Writing
//! [`to_bytes`] writes F32 only: the metadata first (omitted when empty),
//! then the tensors in name order, their data in the same order. The header
//! is serialised by `serde_json` and padded with spaces so the data section
//! starts at a multiple of 8 bytes, as the reference implementation does.
//! The writer is ours, not the `safetensors` crate's `serialize`, for one
//! reason: that function takes the metadata as a `HashMap`, whose iteration
//! order changes from run to run, so the same network would give files that
//! differ in their bytes. Here equal contents give equal files, which is what
//! a user comparing checkpoints with `cmp` or a hash expects. The reader is
//! the crate's, and tests check that it reads back every file written here.
//!
//! [safetensors]: https://github.com/huggingface/safetensors

mod arch;
mod checkpoint;
mod container;
mod infer;
mod network;

use std::fmt;
use std::path::PathBuf;

use crate::nn::BuildError;
use crate::optim::OptimError;

pub use checkpoint::{
    checkpoint_from_safetensors, checkpoint_to_safetensors, load_checkpoint, restore,
    save_checkpoint, Checkpoint, OptimizerSnapshot, CHECKPOINT_VERSION,
};
pub use container::{
    check_writable, from_bytes, read_file, to_bytes, write_atomic, write_file, SafeTensors, Tensor,
    MAX_HEADER_LEN, MAX_STREAM_LEN,
};
pub use infer::{infer_layers, mlp_from_state_dict};
pub use network::{
    checksum, load_mlp, load_weights_into, mlp_from_safetensors, mlp_to_safetensors, save_mlp,
    FORMAT_VERSION, KEY_CHECKSUM,
};

/// Why a file could not be read, written or turned into a network or a
/// checkpoint. Every variant names what was at fault; none is ever a panic.
#[derive(Debug)]
#[non_exhaustive]
pub enum IoError {
    /// The operating system refused a read, write, rename, …
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not a safetensors file: the `safetensors` crate refused
    /// them (a truncated input, a header that is not UTF-8 JSON or not a
    /// valid header, offsets that overlap, leave a gap or disagree with a
    /// shape, …).
    Format {
        /// The reason the `safetensors` crate gives.
        message: String,
    },
    /// The header-length prefix exceeds [`MAX_HEADER_LEN`] (10⁸ bytes).
    HeaderTooLarge {
        /// The length the prefix states (or a writer would need).
        len: u64,
    },
    /// A checkpoint lists an optimizer buffer name twice.
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A tensor's dtype is not F32, F64, F16, BF16 or I64.
    UnsupportedDtype {
        /// The tensor.
        tensor: String,
        /// The dtype it declares.
        dtype: String,
    },
    /// [`to_bytes`] was given a tensor whose data length is not the product
    /// of its shape.
    DataLength {
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Its number of elements.
        len: usize,
    },
    /// A tensor may not be called `__metadata__` (it is the metadata's key).
    ReservedName,
    /// A metadata key this crate needs is absent.
    MissingMetadata {
        /// The key.
        key: &'static str,
    },
    /// A metadata value cannot be understood.
    Metadata {
        /// The key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// A tensor the architecture needs is absent.
    MissingTensor {
        /// Its name.
        name: String,
    },
    /// A tensor has a different shape than the architecture needs.
    WrongShape {
        /// Its name.
        name: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A tensor under `layers.` or `optimizer.` that the architecture does not
    /// have (loading is strict, as PyTorch's `load_state_dict` by default).
    UnexpectedTensor {
        /// Its name.
        name: String,
    },
    /// A state dict's names and shapes do not determine the architecture
    /// ([`infer_layers`]).
    Inference {
        /// What could not be inferred, and where.
        message: String,
    },
    /// The architecture in the file does not build.
    Build(BuildError),
    /// The optimizer rejected the saved state.
    Optimizer(OptimError),
    /// The stored checksum ([`KEY_CHECKSUM`]) does not match the contents:
    /// the file was corrupted (or edited) after it was written.
    Checksum {
        /// The checksum in the metadata.
        stored: String,
        /// The checksum of the contents read.
        computed: String,
    },
    /// A tensor holds a NaN or infinite value (refused on save and on load:
    /// a network or checkpoint is always finite).
    NonFinite {
        /// The tensor.
        tensor: String,
        /// Position of the first such value in the tensor's data.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A checkpoint does not fit the trainer it is restored into.
    Mismatch {
        /// What differs (`"network"`, `"seed"`, `"schedule"`, …).
        what: &'static str,
        /// The trainer's value.
        expected: String,
        /// The checkpoint's value.
        found: String,
    },
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            IoError::Format { message } => write!(f, "not a safetensors file: {message}"),
            IoError::HeaderTooLarge { len } => write!(
                f,
                "safetensors header length {len} exceeds the limit of {MAX_HEADER_LEN} bytes"
            ),
            IoError::DuplicateName { name } => write!(f, "duplicate name {name:?}"),
            IoError::UnsupportedDtype { tensor, dtype } => write!(
                f,
                "tensor {tensor:?} has dtype {dtype:?}; only F32, F64, F16, BF16 and I64 are supported"
            ),
            IoError::DataLength { tensor, shape, len } => write!(
                f,
                "tensor {tensor:?} has shape {shape:?} but {len} elements"
            ),
            IoError::ReservedName => {
                write!(f, "a tensor cannot be named \"__metadata__\"")
            }
            IoError::MissingMetadata { key } => write!(f, "metadata key {key:?} is missing"),
            IoError::Metadata { key, message } => write!(f, "metadata {key:?}: {message}"),
            IoError::MissingTensor { name } => write!(f, "tensor {name:?} is missing"),
            IoError::WrongShape {
                name,
                expected,
                got,
            } => write!(
                f,
                "tensor {name:?} has shape {got:?}; the architecture needs {expected:?}"
            ),
            IoError::UnexpectedTensor { name } => {
                write!(f, "tensor {name:?} does not belong to the architecture")
            }
            IoError::Build(e) => write!(f, "the saved architecture does not build: {e}"),
            IoError::Optimizer(e) => write!(f, "the saved optimizer state does not fit: {e}"),
            IoError::Inference { message } => {
                write!(f, "cannot infer the architecture: {message}")
            }
            IoError::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: the file's metadata says {stored}, its contents hash to \
                 {computed}; the file is corrupted"
            ),
            IoError::NonFinite {
                tensor,
                index,
                value,
            } => write!(
                f,
                "tensor {tensor:?} holds {value} at element {index}; networks and checkpoints \
                 must be finite"
            ),
            IoError::Mismatch {
                what,
                expected,
                found,
            } => write!(
                f,
                "checkpoint {what} differs from the trainer's: trainer has {expected}, \
                 checkpoint has {found}"
            ),
        }
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IoError::Io { source, .. } => Some(source),
            IoError::Build(e) => Some(e),
            IoError::Optimizer(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BuildError> for IoError {
    fn from(e: BuildError) -> Self {
        IoError::Build(e)
    }
}

impl From<OptimError> for IoError {
    fn from(e: OptimError) -> Self {
        IoError::Optimizer(e)
    }
}
