//! Model files and training checkpoints in the [safetensors] format, with the
//! tensor names a PyTorch `nn.Sequential` would use.
//!
//! * [`safetensors`](mod@safetensors): the container format itself — a strict,
//!   bounds-checked reader ([`from_bytes`]), a writer ([`to_bytes`]) and
//!   [`write_atomic`], which never leaves a half-written file behind.
//! * [`save_mlp`] / [`load_mlp`]: a network's parameters and BatchNorm running
//!   statistics as `layers.{i}.weight`, `layers.{i}.bias`, … (see
//!   [`mlp_to_safetensors`] for the names and shapes), plus its architecture
//!   in the file's metadata, so loading needs nothing else.
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
//! [safetensors]: https://github.com/huggingface/safetensors

mod checkpoint;
mod json;
mod network;
pub mod safetensors;

use std::fmt;
use std::path::PathBuf;

use crate::nn::BuildError;
use crate::optim::OptimError;

pub use checkpoint::{
    checkpoint_from_safetensors, checkpoint_to_safetensors, load_checkpoint, restore,
    save_checkpoint, Checkpoint, OptimizerSnapshot, CHECKPOINT_VERSION,
};
pub use network::{
    checksum, load_mlp, load_weights_into, mlp_from_safetensors, mlp_to_safetensors, save_mlp,
    FORMAT_VERSION, KEY_CHECKSUM,
};
pub use safetensors::{
    check_writable, from_bytes, read_file, to_bytes, write_atomic, write_file, SafeTensors, Tensor,
    MAX_HEADER_LEN, MAX_STREAM_LEN,
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
    /// The input is shorter than the 8-byte header-length prefix.
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// The header-length prefix exceeds [`MAX_HEADER_LEN`] (100 MiB).
    HeaderTooLarge {
        /// The length the prefix states (or a writer would need).
        len: u64,
    },
    /// The header-length prefix points past the end of the input.
    HeaderOutOfBounds {
        /// The length the prefix states.
        len: u64,
        /// Bytes available after the prefix.
        available: u64,
    },
    /// The header is not valid UTF-8.
    HeaderUtf8 {
        /// Offset of the first invalid byte, counted from the header's start.
        offset: usize,
    },
    /// The header is not JSON of the supported subset (objects, arrays,
    /// strings, non-negative integers).
    HeaderJson {
        /// Byte offset of the problem, counted from the header's start.
        offset: usize,
        /// What was wrong.
        message: &'static str,
    },
    /// The header is valid JSON but not a valid safetensors header (a
    /// missing or mistyped field, an unknown field, …).
    HeaderField {
        /// The tensor name, `__metadata__`, or `(header)` for the top level.
        name: String,
        /// What was wrong.
        message: String,
    },
    /// Two tensors (or two metadata keys) have the same name.
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A tensor's dtype is not F32, F64 or I64.
    UnsupportedDtype {
        /// The tensor.
        tensor: String,
        /// The dtype it declares.
        dtype: String,
    },
    /// A tensor's `data_offsets` are reversed or end past the data section.
    OffsetsOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Its begin offset.
        begin: u64,
        /// Its end offset.
        end: u64,
        /// Length of the data section.
        data_len: u64,
    },
    /// Two tensors' byte ranges overlap.
    Overlap {
        /// One tensor.
        tensor: String,
        /// The tensor it overlaps.
        other: String,
    },
    /// Bytes of the data section belong to no tensor.
    Gap {
        /// The tensor the uncovered bytes follow (`None`: the section's start).
        after: Option<String>,
        /// First uncovered byte.
        start: u64,
        /// One past the last uncovered byte.
        end: u64,
    },
    /// A tensor's byte length is not its element count times the dtype's
    /// size (or the element count overflows).
    ByteCount {
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Its byte length (`end − begin`).
        bytes: u64,
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
            IoError::Truncated { len } => write!(
                f,
                "safetensors input is {len} bytes long, shorter than its 8-byte header length"
            ),
            IoError::HeaderTooLarge { len } => write!(
                f,
                "safetensors header length {len} exceeds the limit of {MAX_HEADER_LEN} bytes"
            ),
            IoError::HeaderOutOfBounds { len, available } => write!(
                f,
                "safetensors header length {len} exceeds the {available} bytes that follow it"
            ),
            IoError::HeaderUtf8 { offset } => {
                write!(f, "safetensors header is not UTF-8 (byte {offset})")
            }
            IoError::HeaderJson { offset, message } => {
                write!(
                    f,
                    "safetensors header is not valid JSON at byte {offset}: {message}"
                )
            }
            IoError::HeaderField { name, message } => {
                write!(f, "safetensors header entry {name:?}: {message}")
            }
            IoError::DuplicateName { name } => write!(f, "duplicate name {name:?}"),
            IoError::UnsupportedDtype { tensor, dtype } => write!(
                f,
                "tensor {tensor:?} has dtype {dtype:?}; only F32, F64 and I64 are supported"
            ),
            IoError::OffsetsOutOfBounds {
                tensor,
                begin,
                end,
                data_len,
            } => write!(
                f,
                "tensor {tensor:?} has data_offsets [{begin}, {end}], not an ordered range \
                 within the {data_len}-byte data section"
            ),
            IoError::Overlap { tensor, other } => {
                write!(
                    f,
                    "tensors {other:?} and {tensor:?} overlap in the data section"
                )
            }
            IoError::Gap { after, start, end } => match after {
                Some(t) => write!(
                    f,
                    "data bytes {start}..{end} after tensor {t:?} belong to no tensor"
                ),
                None => write!(f, "data bytes {start}..{end} belong to no tensor"),
            },
            IoError::ByteCount {
                tensor,
                shape,
                bytes,
            } => write!(
                f,
                "tensor {tensor:?} has shape {shape:?}, which does not match its {bytes} bytes"
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
