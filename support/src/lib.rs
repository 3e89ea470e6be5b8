//! Support code shared by `backprop`'s examples and tests, kept out of the
//! library so that none of it (nor its dependencies) reaches a downstream
//! build:
//!
//! - [`plot`]: a small SVG line-chart writer;
//! - [`mnist`]: MNIST's IDX files from a directory, plain or gzipped;
//! - [`layout`]: the operand layouts of the timed GEMM products;
//! - [`lab`]: the experiments behind the report, run at full size by the
//!   `experiments` example and at small sizes by `tests/experiments.rs`.

pub mod lab;
pub mod layout;
pub mod mnist;
pub mod plot;
