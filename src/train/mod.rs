//! Training: datasets, the minibatch loop, optimizer steps and schedules.

pub mod csv;
pub mod data;
pub mod idx;
pub mod trainer;

pub use data::{Batch, DataError, Dataset, Labels};
pub use trainer::{EpochStats, TrainError, Trainer};
