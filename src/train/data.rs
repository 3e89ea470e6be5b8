//! In-memory datasets: a row-major `samples × features` matrix and one label
//! per sample, checked once when built. Features are kept as `f32`, or as
//! bytes with a divisor (image pixels), converted row by row as minibatches
//! are gathered, which keeps a dataset like MNIST at a quarter of the memory.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use crate::matrix::MatRef;
use crate::nn::Targets;

/// How a dataset keeps its features.
#[derive(Clone, Debug, PartialEq)]
enum Features {
    /// As given.
    F32(Vec<f32>),
    /// Feature = `byte as f32 / divisor`, converted when read.
    Bytes { data: Vec<u8>, divisor: f32 },
}

impl Features {
    /// Elements stored.
    fn len(&self) -> usize {
        match self {
            Features::F32(x) => x.len(),
            Features::Bytes { data, .. } => data.len(),
        }
    }

    /// Appends elements `range` to `out` as `f32`: the one place bytes
    /// become features.
    fn append(&self, range: Range<usize>, out: &mut Vec<f32>) {
        match self {
            Features::F32(x) => out.extend_from_slice(&x[range]),
            Features::Bytes { data, divisor } => {
                out.extend(data[range].iter().map(|&b| b as f32 / divisor))
            }
        }
    }
}

/// A dataset's own copy of its targets (what [`Dataset::new`] was given as
/// [`Targets`], made contiguous), lent out as [`Targets`] again.
#[derive(Clone, Debug, PartialEq)]
enum Stored {
    Values { data: Vec<f32>, width: usize },
    Signs(Vec<f32>),
    Classes(Vec<usize>),
}

impl Stored {
    fn copy(t: Targets<'_>) -> Stored {
        match t {
            Targets::Values(y) => Stored::Values {
                data: y.to_vec(),
                width: y.cols(),
            },
            Targets::Signs(s) => Stored::Signs(s.to_vec()),
            Targets::Classes(c) => Stored::Classes(c.to_vec()),
        }
    }
}

/// Why a dataset was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum DataError {
    /// The feature buffer is not `samples × features`.
    Shape {
        /// Elements expected.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// The number of labels is not the number of samples.
    LabelCount {
        /// Samples.
        samples: usize,
        /// Labels.
        labels: usize,
    },
    /// A feature or regression target is NaN or infinite.
    NonFinite {
        /// The sample (row) holding it.
        row: usize,
        /// Its column (feature or target index).
        col: usize,
        /// `"feature"` or `"target"`.
        what: &'static str,
    },
    /// A binary label is not ±1.
    BadSign {
        /// The sample.
        row: usize,
        /// The label.
        value: f32,
    },
    /// [`Dataset::from_bytes`] got a divisor that is not finite and positive.
    Divisor {
        /// The divisor given.
        value: f32,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Shape { expected, got } => {
                write!(
                    f,
                    "feature buffer has {got} values but samples × features is {expected}"
                )
            }
            DataError::LabelCount { samples, labels } => {
                write!(f, "{labels} labels for {samples} samples")
            }
            DataError::NonFinite { row, col, what } => {
                write!(f, "row {row}: {what} {col} is NaN or infinite")
            }
            DataError::BadSign { row, value } => {
                write!(f, "row {row}: binary label {value} is not -1 or +1")
            }
            DataError::Divisor { value } => {
                write!(
                    f,
                    "byte features need a finite, positive divisor, got {value}"
                )
            }
        }
    }
}

impl std::error::Error for DataError {}

/// A checked, in-memory dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    x: Features,
    rows: usize,
    cols: usize,
    labels: Stored,
}

impl Dataset {
    /// A dataset of `rows` samples of `cols` features (`x` row-major) and
    /// their targets, one per sample (copied: the dataset owns its data).
    ///
    /// # Errors
    /// [`DataError`] naming the row for a NaN/∞ feature or target, a label that
    /// is not ±1 for binary labels, or counts that disagree.
    ///
    /// ```
    /// use backprop::nn::Targets;
    /// use backprop::train::Dataset;
    /// let d = Dataset::new(vec![0.0, 1.0, 2.0, 3.0], 2, 2, Targets::Classes(&[0, 1])).unwrap();
    /// assert_eq!(d.len(), 2);
    /// assert!(Dataset::new(vec![0.0, f32::NAN], 1, 2, Targets::Classes(&[0])).is_err());
    /// ```
    pub fn new(
        x: Vec<f32>,
        rows: usize,
        cols: usize,
        targets: Targets<'_>,
    ) -> Result<Dataset, DataError> {
        Dataset::build(Features::F32(x), rows, cols, targets)
    }

    /// The checks of [`Dataset::new`] and [`Dataset::from_bytes`], in order:
    /// the shape, the label count, finite features (bytes always are), the
    /// targets.
    fn build(
        x: Features,
        rows: usize,
        cols: usize,
        targets: Targets<'_>,
    ) -> Result<Dataset, DataError> {
        let expected = rows.saturating_mul(cols);
        if x.len() != expected {
            return Err(DataError::Shape {
                expected,
                got: x.len(),
            });
        }
        if targets.len() != rows {
            return Err(DataError::LabelCount {
                samples: rows,
                labels: targets.len(),
            });
        }
        if let Features::F32(v) = &x {
            if let Some(k) = v.iter().position(|v| !v.is_finite()) {
                return Err(DataError::NonFinite {
                    row: k / cols,
                    col: k % cols,
                    what: "feature",
                });
            }
        }
        match targets {
            Targets::Values(y) => {
                for row in 0..y.rows() {
                    if let Some(col) = (0..y.cols()).find(|&c| !y.get(row, c).is_finite()) {
                        return Err(DataError::NonFinite {
                            row,
                            col,
                            what: "target",
                        });
                    }
                }
            }
            Targets::Signs(s) => {
                if let Some((row, &value)) =
                    s.iter().enumerate().find(|(_, &v)| v != 1.0 && v != -1.0)
                {
                    return Err(DataError::BadSign { row, value });
                }
            }
            Targets::Classes(_) => {}
        }
        Ok(Dataset {
            x,
            rows,
            cols,
            labels: Stored::copy(targets),
        })
    }

    /// A dataset whose features are bytes, each standing for
    /// `byte as f32 / divisor` (e.g. pixels with `divisor` 255 for values in
    /// [0, 1]). Stored as bytes and converted as rows are read
    /// ([`Dataset::gather`], [`Dataset::slice`]): a quarter of the memory of
    /// `f32` features, with the bits [`Dataset::new`] would hold for the
    /// converted values.
    ///
    /// # Errors
    /// [`DataError::Divisor`] for a divisor that is 0, negative, NaN or
    /// infinite, [`DataError::Shape`] if `data` is not `rows × cols`, and the
    /// target checks of [`Dataset::new`].
    ///
    /// ```
    /// use backprop::nn::Targets;
    /// use backprop::train::{Batch, Dataset};
    /// let d = Dataset::from_bytes(vec![0, 51, 255, 102], 255.0, 2, 2, Targets::Classes(&[3, 1])).unwrap();
    /// let mut buf = Batch::default();
    /// let (x, _) = d.slice(1, 2, &mut buf);
    /// assert_eq!(x.as_row_major_slice().unwrap(), &[1.0, 0.4]);
    /// ```
    pub fn from_bytes(
        data: Vec<u8>,
        divisor: f32,
        rows: usize,
        cols: usize,
        targets: Targets<'_>,
    ) -> Result<Dataset, DataError> {
        if !(divisor.is_finite() && divisor > 0.0) {
            return Err(DataError::Divisor { value: divisor });
        }
        Dataset::build(Features::Bytes { data, divisor }, rows, cols, targets)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.rows
    }
    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
    /// Features per sample.
    pub fn features(&self) -> usize {
        self.cols
    }
    /// The targets of every sample.
    pub fn labels(&self) -> Targets<'_> {
        self.targets(0, self.rows)
    }

    /// The targets of samples `lo..hi`.
    fn targets(&self, lo: usize, hi: usize) -> Targets<'_> {
        match &self.labels {
            Stored::Values { data, width } => Targets::Values(MatRef::from_slice(
                &data[lo * width..hi * width],
                hi - lo,
                *width,
            )),
            Stored::Signs(s) => Targets::Signs(&s[lo..hi]),
            Stored::Classes(c) => Targets::Classes(&c[lo..hi]),
        }
    }

    /// Samples `lo..hi` as a `(hi − lo) × features` view and their targets:
    /// `f32` features are borrowed, byte features converted into `buf`.
    ///
    /// # Panics
    /// If `lo > hi` or `hi > len()`.
    pub fn slice<'a>(
        &'a self,
        lo: usize,
        hi: usize,
        buf: &'a mut Batch,
    ) -> (MatRef<'a>, Targets<'a>) {
        assert!(
            lo <= hi && hi <= self.rows,
            "slice {lo}..{hi} of {} samples",
            self.rows
        );
        let d = self.cols;
        let x = match &self.x {
            Features::F32(x) => &x[lo * d..hi * d],
            bytes => {
                buf.x.clear();
                bytes.append(lo * d..hi * d, &mut buf.x);
                &buf.x[..]
            }
        };
        (MatRef::from_slice(x, hi - lo, d), self.targets(lo, hi))
    }

    /// Every feature value, row-major: borrowed when stored as `f32`,
    /// converted when stored as bytes.
    pub fn x_values(&self) -> Cow<'_, [f32]> {
        match &self.x {
            Features::F32(x) => Cow::Borrowed(x),
            bytes => {
                let mut v = Vec::with_capacity(bytes.len());
                bytes.append(0..bytes.len(), &mut v);
                Cow::Owned(v)
            }
        }
    }

    /// Samples `lo..hi` as a dataset of their own, stored as this one is.
    ///
    /// # Panics
    /// If `lo > hi` or `hi > len()`.
    pub fn subset(&self, lo: usize, hi: usize) -> Dataset {
        assert!(
            lo <= hi && hi <= self.rows,
            "subset {lo}..{hi} of {} samples",
            self.rows
        );
        let d = self.cols;
        let x = match &self.x {
            Features::F32(x) => Features::F32(x[lo * d..hi * d].to_vec()),
            Features::Bytes { data, divisor } => Features::Bytes {
                data: data[lo * d..hi * d].to_vec(),
                divisor: *divisor,
            },
        };
        Dataset {
            x,
            rows: hi - lo,
            cols: d,
            labels: Stored::copy(self.targets(lo, hi)),
        }
    }

    /// Copies the samples `idx` (in that order) into `buf` and returns them
    /// as a `idx.len() × features` view and their targets. `buf` only grows:
    /// once it has held a minibatch of this size, gathering allocates nothing.
    ///
    /// # Panics
    /// If an index is out of range.
    ///
    /// ```
    /// use backprop::nn::Targets;
    /// use backprop::train::{Batch, Dataset};
    /// let data = Dataset::new(vec![0., 1., 2., 3., 4., 5.], 3, 2, Targets::Classes(&[7, 8, 9])).unwrap();
    /// let mut buf = Batch::default();
    /// let (x, t) = data.gather(&[2, 0], &mut buf);
    /// assert_eq!(x.as_row_major_slice().unwrap(), &[4., 5., 0., 1.]);
    /// assert!(matches!(t, Targets::Classes(&[9, 7])));
    /// ```
    pub fn gather<'b>(&self, idx: &[usize], buf: &'b mut Batch) -> (MatRef<'b>, Targets<'b>) {
        let (b, d) = (idx.len(), self.cols);
        buf.x.clear();
        for &i in idx {
            self.x.append(i * d..(i + 1) * d, &mut buf.x);
        }
        let targets = match &self.labels {
            Stored::Values { data, width } => {
                buf.values.clear();
                for &i in idx {
                    buf.values
                        .extend_from_slice(&data[i * width..(i + 1) * width]);
                }
                Targets::Values(MatRef::from_slice(&buf.values, b, *width))
            }
            Stored::Signs(s) => {
                buf.signs.clear();
                buf.signs.extend(idx.iter().map(|&i| s[i]));
                Targets::Signs(&buf.signs)
            }
            Stored::Classes(c) => {
                buf.classes.clear();
                buf.classes.extend(idx.iter().map(|&i| c[i]));
                Targets::Classes(&buf.classes)
            }
        };
        (MatRef::from_slice(&buf.x, b, d), targets)
    }
}

/// Reusable buffers for a gathered minibatch ([`Dataset::gather`]).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    x: Vec<f32>,
    values: Vec<f32>,
    signs: Vec<f32>,
    classes: Vec<usize>,
}
