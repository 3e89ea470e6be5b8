//! Why building a network or running a step failed.

use std::fmt;

use crate::nn::loss::{Loss, LossError};
use crate::nn::MAX_ELEMENTS;

/// Why a network description cannot be built.
#[derive(Clone, Debug, PartialEq)]
pub enum BuildError {
    /// The input or a dense layer has width 0 (`layer` is the index in the flat
    /// layer list, residual blocks expanded).
    ZeroWidth {
        /// Position of the offending layer.
        layer: usize,
    },
    /// A residual block's inner layers map `width` features to `got`.
    ResidualWidth {
        /// Position of the block.
        layer: usize,
        /// Width entering the block.
        width: usize,
        /// Width its inner layers produce.
        got: usize,
    },
    /// The network has no layer.
    Empty,
    /// Loaded parameters or buffers do not fit the description
    /// (`(parameters, buffers)` counts).
    ParamCount {
        /// What the description needs.
        expected: (usize, usize),
        /// What was given.
        got: (usize, usize),
    },
    /// The output width does not suit the loss.
    OutputForLoss {
        /// The loss.
        loss: Loss,
        /// The network's output width.
        width: usize,
    },
    /// A dropout layer's probability is not in [0, 1].
    DropoutProbability {
        /// Position of the layer.
        layer: usize,
        /// The probability given.
        p: f32,
    },
    /// Layer `layer` (index in the flat list, residual blocks expanded) takes
    /// the parameter or buffer arena past [`MAX_ELEMENTS`] values (its size
    /// product overflows, or exceeds the cap), or the system refused the
    /// memory for it.
    TooLarge {
        /// Position of the offending layer.
        layer: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroWidth { layer } => write!(f, "layer {layer} has zero width"),
            BuildError::ResidualWidth { layer, width, got } => write!(
                f,
                "residual block at layer {layer} maps {width} features to {got}; x + f(x) needs equal widths"
            ),
            BuildError::Empty => write!(f, "the network has no layer"),
            BuildError::ParamCount { expected, got } => write!(
                f,
                "{} parameters and {} buffer values given, the description needs {} and {}",
                got.0, got.1, expected.0, expected.1
            ),
            BuildError::OutputForLoss { loss, width } => write!(
                f,
                "a {loss:?} loss needs {} outputs, the network has {width}",
                if *loss == Loss::Logistic { "exactly 1" } else { "at least 1" }
            ),
            BuildError::DropoutProbability { layer, p } => write!(
                f,
                "dropout at layer {layer} has probability {p}; it must be in [0, 1]"
            ),
            BuildError::TooLarge { layer } => write!(
                f,
                "layer {layer} makes the network larger than {MAX_ELEMENTS} parameters \
                 (or than the memory available)"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Why a training or evaluation step failed.
#[derive(Clone, Debug, PartialEq)]
pub enum StepError {
    /// The targets do not suit the loss (from the data).
    Loss(LossError),
    /// The targets are of the wrong kind for the loss (e.g. class indices for MSE).
    TargetKind {
        /// The network's loss.
        loss: Loss,
    },
    /// BatchNorm in training mode got a batch of one sample.
    BatchOfOne,
    /// The input has the wrong number of features.
    InputWidth {
        /// Features the network expects.
        expected: usize,
        /// Features given.
        got: usize,
    },
    /// A workspace for this batch (`batch × width` for the widest layer)
    /// would exceed [`MAX_ELEMENTS`] values, or the system refused the memory.
    TooLarge {
        /// The batch size asked for.
        batch: usize,
    },
    /// Probabilities were asked of a loss that models none (MSE).
    NoProbabilities {
        /// The network's loss.
        loss: Loss,
    },
    /// Another rank of the group failed this step's loss (its own error is
    /// reported there); every rank stops at the same step.
    Peer {
        /// The first rank that failed.
        rank: usize,
    },
}

impl StepError {
    /// The error with a loss's row numbers counted from `first` (a part of
    /// a minibatch that starts at row `first`).
    pub(crate) fn rows_from(self, first: usize) -> StepError {
        match self {
            StepError::Loss(LossError::InvalidLabel { row, value }) => {
                StepError::Loss(LossError::InvalidLabel {
                    row: row + first,
                    value,
                })
            }
            StepError::Loss(LossError::ClassOutOfRange {
                row,
                class,
                num_classes,
            }) => StepError::Loss(LossError::ClassOutOfRange {
                row: row + first,
                class,
                num_classes,
            }),
            e => e,
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Loss(e) => write!(f, "{e}"),
            StepError::Peer { rank } => write!(
                f,
                "rank {rank} of the group could not compute its part of the loss (its own \
                 message says why)"
            ),
            StepError::TargetKind { loss } => {
                write!(f, "targets of the wrong kind for a {loss:?} loss")
            }
            StepError::BatchOfOne => write!(
                f,
                "BatchNorm in training mode needs at least 2 samples per batch (got 1); \
                 use a larger batch or evaluation mode"
            ),
            StepError::InputWidth { expected, got } => {
                write!(
                    f,
                    "the network expects {expected} input features, got {got}"
                )
            }
            StepError::TooLarge { batch } => write!(
                f,
                "a batch of {batch} samples needs activation workspaces larger than \
                 {MAX_ELEMENTS} values (or than the memory available); use a smaller batch"
            ),
            StepError::NoProbabilities { loss } => write!(
                f,
                "a {loss:?} loss models no probabilities (softmax cross-entropy and logistic do)"
            ),
        }
    }
}

impl std::error::Error for StepError {}

impl From<LossError> for StepError {
    fn from(e: LossError) -> Self {
        StepError::Loss(e)
    }
}
