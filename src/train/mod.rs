//! Training: datasets, the minibatch loop, optimizer steps and schedules.
//!
//! The file readers [`csv`] and [`idx`] need the `data-files` feature (on by
//! default); gzipped IDX files need `gzip` too.

#[cfg(feature = "data-files")]
pub mod csv;
pub mod data;
#[cfg(feature = "data-files")]
pub mod idx;
pub mod trainer;

pub use data::{Batch, DataError, Dataset};
pub use trainer::{EpochStats, TrainError, Trainer};
