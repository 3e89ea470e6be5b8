//! Losses: the mean loss over a minibatch and its gradient with respect to the
//! network output `h`, computed in one pass, plus the matching inference rules.
//!
//! | loss | per-sample ℓ(h, y) | ∂ℓ/∂h | inference rule |
//! |---|---|---|---|
//! | [`Loss::Mse`] | ½·Σⱼ (hⱼ − yⱼ)² | h − y | h itself |
//! | [`Loss::Logistic`] | log(1 + e^{−y·h}), y ∈ {−1, +1} | −y·σ(−y·h) | [`predict_sign`] |
//! | [`Loss::SoftmaxCrossEntropy`] | logsumexp(h) − h_c | softmax(h) − onehot(c) | [`argmax_rows`] |
//!
//! Conventions shared by every function here:
//!
//! * `h` is a `(batch, outputs)` view with any strides; row `i` is sample `i`.
//! * The value returned is the **mean over the B samples (rows)** of the
//!   per-sample loss, and the gradient written is ∂(mean loss)/∂h, i.e. the
//!   per-sample gradient divided by B. That gradient is δ⁽ᴸ⁺¹⁾ in the design's
//!   backward pass.
//! * A batch of 0 rows has loss `0.0` (and there is no gradient to write).
//! * `grad`, when given, must have the shape of `h`; it is **overwritten**, never
//!   read or accumulated into, and may have any strides.
//! * Everything is computed in `f64` and rounded to `f32` once at the end, so
//!   both the loss and each gradient entry are within about one `f32` rounding
//!   (relative 2⁻²⁴) of the exact value for finite inputs.
//! * Bad *targets* (they come from data) are reported as a [`LossError`]; the
//!   targets are validated before anything is written, so on `Err` the gradient
//!   buffer is untouched. Shape mismatches between views are programmer errors
//!   and panic with a message naming the function, the view and both shapes.
//! * NaN in `h` is never hidden: the loss becomes NaN, and so does the gradient
//!   row of that sample (the other rows' gradients are unaffected).

use std::fmt;

use crate::matrix::{MatMut, MatRef};
use crate::nn::StepError;

/// The losses the crate trains with, and the rule each one uses at inference.
///
/// The loss functions themselves take different target types (a matrix, ±1
/// labels, class indices), so they are free functions: [`mse`], [`logistic`]
/// and [`softmax_cross_entropy`]. Every one reports the mean over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Regression: ℓ(h, y) = ½·Σⱼ (hⱼ − yⱼ)² per sample, averaged over the
    /// samples (not over the elements). Gradient h − y.
    ///
    /// Inference rule: the prediction is h itself.
    Mse,
    /// Binary logistic loss with labels y ∈ {−1, +1} and one output:
    /// ℓ(h, y) = log(1 + e^{−y·h}) = softplus(−y·h). Gradient −y·σ(−y·h),
    /// σ(t) = 1/(1 + e^{−t}).
    ///
    /// Inference rule: sign h, with h = 0 mapped to +1 ([`predict_sign`]).
    Logistic,
    /// Multi-class softmax cross-entropy with K outputs (logits) and a class
    /// index c ∈ 0..K: ℓ(h, c) = log Σⱼ e^{hⱼ} − h_c. Gradient softmax(h) − onehot(c).
    ///
    /// Inference rule: argmax h, ties to the lowest index ([`argmax_rows`]).
    SoftmaxCrossEntropy,
}

/// A target that the data supplied is not valid for the loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossError {
    /// The number of targets is not the number of rows (samples) of `h`.
    TargetLen {
        /// Rows of `h` (the batch size).
        expected: usize,
        /// Number of targets given.
        got: usize,
    },
    /// A logistic label is not exactly −1 or +1.
    InvalidLabel {
        /// The sample (row) holding the label.
        row: usize,
        /// The label found there.
        value: f32,
    },
    /// A class index is not below the number of classes (the columns of `h`).
    ClassOutOfRange {
        /// The sample (row) holding the index.
        row: usize,
        /// The class index found there.
        class: usize,
        /// Number of classes (columns of `h`).
        num_classes: usize,
    },
}

impl fmt::Display for LossError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LossError::TargetLen { expected, got } => write!(
                f,
                "got {got} targets for a batch of {expected} samples (one target per row of h)"
            ),
            LossError::InvalidLabel { row, value } => write!(
                f,
                "logistic label at row {row} is {value}; labels must be exactly -1 or +1"
            ),
            LossError::ClassOutOfRange {
                row,
                class,
                num_classes,
            } => write!(
                f,
                "class index {class} at row {row} is out of range for {num_classes} classes \
                 (valid indices are 0..{num_classes})"
            ),
        }
    }
}

impl std::error::Error for LossError {}

/// Targets, one kind per loss: what the losses, the network, the reference
/// network and the trainer take, and what a [`Dataset`](crate::train::Dataset)
/// is built from and lends out. It borrows; a dataset keeps its own copy.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// Regression targets, `batch × outputs` ([`Loss::Mse`]).
    Values(MatRef<'a>),
    /// Labels ±1 ([`Loss::Logistic`]).
    Signs(&'a [f32]),
    /// Class indices ([`Loss::SoftmaxCrossEntropy`]).
    Classes(&'a [usize]),
}

impl Targets<'_> {
    /// The number of samples (rows of `Values`).
    pub fn len(&self) -> usize {
        match self {
            Targets::Values(y) => y.rows(),
            Targets::Signs(s) => s.len(),
            Targets::Classes(c) => c.len(),
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The targets of samples `rows` (a part of a minibatch).
    ///
    /// # Panics
    /// If `rows` reaches past [`Targets::len`].
    pub(crate) fn rows(self, rows: std::ops::Range<usize>) -> Self {
        match self {
            Targets::Values(y) => Targets::Values(y.submatrix(rows.start, 0, rows.len(), y.cols())),
            Targets::Signs(s) => Targets::Signs(&s[rows]),
            Targets::Classes(c) => Targets::Classes(&c[rows]),
        }
    }
}

/// What a network predicts for each sample, by its loss's inference rule
/// ([`Loss::predict`], [`Mlp::predict`](crate::nn::Mlp::predict)).
#[derive(Clone, Debug, PartialEq)]
pub enum Prediction {
    /// [`Loss::Mse`]: the outputs `h` themselves, `samples × width`
    /// row-major.
    Values {
        /// The outputs.
        data: Vec<f32>,
        /// Outputs per sample.
        width: usize,
    },
    /// [`Loss::Logistic`]: `sign h`, ±1 (`h = 0` gives +1; NaN stays NaN), as
    /// [`predict_sign`].
    Signs(Vec<f32>),
    /// [`Loss::SoftmaxCrossEntropy`]: the class with the largest logit (ties
    /// to the lowest index, NaN wins), as [`argmax_rows`].
    Classes(Vec<usize>),
}

impl Prediction {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.as_targets().len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The predictions as targets of the same kind (e.g. to score them with
    /// [`Loss::correct`], or to train another network on them).
    pub fn as_targets(&self) -> Targets<'_> {
        match self {
            Prediction::Values { data, width } => Targets::Values(MatRef::from_slice(
                data,
                data.len() / (*width).max(1),
                *width,
            )),
            Prediction::Signs(s) => Targets::Signs(s),
            Prediction::Classes(c) => Targets::Classes(c),
        }
    }
}

impl Loss {
    /// The mean loss of outputs `h` (`batch × outputs`) against `targets`,
    /// writing ∂(mean loss)/∂h into `grad` when given: the dispatch from the
    /// loss to its function ([`mse`], [`logistic`], [`softmax_cross_entropy`]).
    ///
    /// # Errors
    /// [`StepError::TargetKind`] if the targets are not the loss's kind,
    /// [`StepError::Loss`] if they are invalid (as the functions say).
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::{Loss, Targets};
    /// let h = [0.0f32, 0.0];
    /// let v = Loss::SoftmaxCrossEntropy
    ///     .value(MatRef::from_slice(&h, 1, 2), Targets::Classes(&[1]), None)
    ///     .unwrap();
    /// assert!((v - 2f32.ln()).abs() < 1e-6);
    /// assert!(Loss::Mse.value(MatRef::from_slice(&h, 1, 2), Targets::Classes(&[1]), None).is_err());
    /// ```
    pub fn value(
        self,
        h: MatRef<'_>,
        targets: Targets<'_>,
        grad: Option<MatMut<'_>>,
    ) -> Result<f32, StepError> {
        Ok(match (self, targets) {
            (Loss::Mse, Targets::Values(y)) => mse(h, y, grad),
            (Loss::Logistic, Targets::Signs(y)) => logistic(h, y, grad)?,
            (Loss::SoftmaxCrossEntropy, Targets::Classes(c)) => softmax_cross_entropy(h, c, grad)?,
            (loss, _) => return Err(StepError::TargetKind { loss }),
        })
    }

    /// [`Loss::value`]'s sum over the rows of `h` (not divided by their
    /// number), with the gradient scaled by `inv_b`: the loss of a part of a
    /// minibatch whose whole has `1/inv_b` rows.
    pub(crate) fn sum(
        self,
        h: MatRef<'_>,
        targets: Targets<'_>,
        grad: Option<MatMut<'_>>,
        inv_b: f64,
    ) -> Result<f64, StepError> {
        Ok(match (self, targets) {
            (Loss::Mse, Targets::Values(y)) => mse_sum(h, y, grad, inv_b),
            (Loss::Logistic, Targets::Signs(y)) => logistic_sum(h, y, grad, inv_b)?,
            (Loss::SoftmaxCrossEntropy, Targets::Classes(c)) => {
                softmax_cross_entropy_sum(h, c, grad, inv_b)?
            }
            (loss, _) => return Err(StepError::TargetKind { loss }),
        })
    }

    /// How many rows of `h` the loss's inference rule gets right: `None` for
    /// [`Loss::Mse`] (a regression has no "correct"); for the logistic loss the
    /// rows where [`predict_sign`] equals the label; for softmax the rows where
    /// [`argmax_rows`] is the class (so a row with NaN predicts its first NaN,
    /// the same rule everywhere).
    ///
    /// # Errors
    /// [`StepError::TargetKind`] as [`Loss::value`]; [`StepError::Loss`] with
    /// [`LossError::TargetLen`] if there is not one target per row.
    pub fn correct(self, h: MatRef<'_>, targets: Targets<'_>) -> Result<Option<usize>, StepError> {
        let given = match targets {
            Targets::Values(y) => y.rows(),
            Targets::Signs(y) => y.len(),
            Targets::Classes(c) => c.len(),
        };
        if given != h.rows() {
            return Err(StepError::Loss(LossError::TargetLen {
                expected: h.rows(),
                got: given,
            }));
        }
        Ok(match (self, targets) {
            (Loss::Mse, Targets::Values(_)) => None,
            (Loss::Logistic, Targets::Signs(y)) => {
                check_one_column("Loss::correct", &h);
                Some(
                    (0..h.rows())
                        .filter(|&i| sign_rule(h.get(i, 0)) == y[i])
                        .count(),
                )
            }
            (Loss::SoftmaxCrossEntropy, Targets::Classes(c)) => {
                if h.rows() > 0 && h.cols() == 0 {
                    no_columns_fail(h.rows());
                }
                Some((0..h.rows()).filter(|&i| argmax_row(&h, i) == c[i]).count())
            }
            (loss, _) => return Err(StepError::TargetKind { loss }),
        })
    }

    /// The loss's inference rule on outputs `h` (`batch × outputs`): the
    /// values themselves for MSE, [`predict_sign`] for logistic,
    /// [`argmax_rows`] for softmax cross-entropy.
    ///
    /// # Panics
    /// As [`predict_sign`] (logistic, `h` not one column) and [`argmax_rows`]
    /// (softmax, rows but no columns).
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::{Loss, Prediction};
    /// let h = [0.1f32, 2.0, -1.0, 5.0, 0.0, 1.0];
    /// let p = Loss::SoftmaxCrossEntropy.predict(MatRef::from_slice(&h, 2, 3));
    /// assert_eq!(p, Prediction::Classes(vec![1, 0]));
    /// ```
    pub fn predict(self, h: MatRef<'_>) -> Prediction {
        match self {
            Loss::Mse => Prediction::Values {
                data: h.to_vec(),
                width: h.cols(),
            },
            Loss::Logistic => {
                let mut s = vec![0.0; h.rows()];
                predict_sign(h, &mut s);
                Prediction::Signs(s)
            }
            Loss::SoftmaxCrossEntropy => {
                let mut c = vec![0; h.rows()];
                argmax_rows(h, &mut c);
                Prediction::Classes(c)
            }
        }
    }

    /// The probabilities the loss models for outputs `h`: for softmax
    /// cross-entropy the softmax of each row (`batch × classes`, row-major,
    /// each row summing to 1); for logistic σ(h) = P(y = +1), one per row.
    /// Computed in `f64` from the `f32` logits and rounded once.
    ///
    /// # Errors
    /// [`StepError::NoProbabilities`] for MSE, which models none.
    pub fn probabilities(self, h: MatRef<'_>) -> Result<Vec<f32>, StepError> {
        if self == Loss::Mse {
            return Err(StepError::NoProbabilities { loss: self });
        }
        let mut p = Vec::with_capacity(h.rows() * h.cols());
        for i in 0..h.rows() {
            if self == Loss::Logistic {
                p.push(sigmoid(f64::from(h.get(i, 0))) as f32);
                continue;
            }
            let row = (0..h.cols()).map(|j| f64::from(h.get(i, j)));
            let max = row.clone().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.clone().map(|v| (v - max).exp()).sum();
            p.extend(row.map(|v| ((v - max).exp() / sum) as f32));
        }
        Ok(p)
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn shape_fail(func: &str, view: &str, got: (usize, usize), want: (usize, usize)) -> ! {
    panic!(
        "{func}: {view} is {}×{} but h is {}×{}",
        got.0, got.1, want.0, want.1
    )
}

/// Panics unless `view` has the shape `h` has.
#[track_caller]
#[inline]
fn check_same_shape(func: &str, view: &str, got: (usize, usize), h: (usize, usize)) {
    if got != h {
        shape_fail(func, view, got, h);
    }
}

/// Panics unless `h` has exactly one column.
#[track_caller]
#[inline]
fn check_one_column(func: &str, h: &MatRef<'_>) {
    if h.cols() != 1 {
        column_fail(func, h.rows(), h.cols());
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn column_fail(func: &str, rows: usize, cols: usize) -> ! {
    panic!("{func}: h must be B×1 (one output per sample) but h is {rows}×{cols}")
}

/// Panics unless `out` has one slot per row of `h`.
#[track_caller]
#[inline]
fn check_out_len(func: &str, len: usize, h: &MatRef<'_>) {
    if len != h.rows() {
        out_fail(func, len, h.rows(), h.cols());
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn out_fail(func: &str, len: usize, rows: usize, cols: usize) -> ! {
    panic!("{func}: out has length {len} but h is {rows}×{cols} (one output per row)")
}

/// softplus(t) = log(1 + eᵗ), stable for every finite t.
///
/// The literal formula overflows e^t for t ≳ 709 (in f64) and, for t ≪ 0,
/// loses all digits in `1 + eᵗ`. Splitting off the positive part,
///
///   log(1 + eᵗ) = max(t, 0) + log(1 + e^{−|t|}),
///
/// only ever exponentiates a non-positive number (so e^{−|t|} ∈ (0, 1], no
/// overflow), and `ln_1p` keeps full relative precision when e^{−|t|} is tiny,
/// i.e. when the loss itself is tiny (t ≪ 0). The two terms are both ≥ 0, so
/// the sum has no cancellation.
///
/// NaN in gives NaN out: the positive part is 0 for NaN (the comparison is
/// false), but e^{−|NaN|} is NaN, so the sum is NaN.
#[inline]
fn softplus(t: f64) -> f64 {
    let pos = if t > 0.0 { t } else { 0.0 };
    pos + (-t.abs()).exp().ln_1p()
}

/// σ(t) = 1/(1 + e^{−t}), stable for every finite t.
///
/// For t ≥ 0, e^{−t} ≤ 1 cannot overflow. For t < 0 the equivalent form
/// eᵗ/(1 + eᵗ) is used, so again only a non-positive number is exponentiated,
/// and a tiny σ keeps its relative precision instead of being computed as
/// 1 − (something close to 1). NaN takes the second branch and stays NaN.
#[inline]
fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// Mean squared-error loss over the batch, with the gradient in the same pass.
///
/// With B = `h.rows()` samples and n = `h.cols()` outputs, computes
///
///   L = (1/B) · Σᵢ ½ · Σⱼ (h_ij − y_ij)²
///
/// i.e. the per-sample loss ½‖hᵢ − yᵢ‖² **averaged over the samples (rows), not
/// over the B·n elements**. If `grad` is `Some`, writes
/// ∂L/∂h_ij = (h_ij − y_ij)/B into it (overwriting it).
///
/// * Shapes: `h`, `y` and `grad` are all `B × n`, any strides.
/// * B = 0 gives `0.0`.
/// * NaN: a NaN in `h` (or `y`) makes the loss NaN and the gradient entry of
///   that element NaN; nothing is skipped.
///
/// # Panics
/// If `y` or `grad` does not have the shape of `h` (message names the view and
/// both shapes).
///
/// # Example
/// ```
/// use backprop::matrix::{MatMut, MatRef};
/// use backprop::nn::loss::mse;
/// // Two samples with two outputs each.
/// let h = [1.0, 2.0, 3.0, 4.0];
/// let y = [1.0, 0.0, 0.0, 4.0];
/// let mut g = [0.0f32; 4];
/// let l = mse(MatRef::from_slice(&h, 2, 2), MatRef::from_slice(&y, 2, 2),
///             Some(MatMut::from_slice_mut(&mut g, 2, 2)));
/// // (½·(0 + 4) + ½·(9 + 0)) / 2 samples
/// assert_eq!(l, 3.25);
/// assert_eq!(g, [0.0, 1.0, 1.5, 0.0]); // (h − y) / 2
/// ```
#[track_caller]
pub fn mse(h: MatRef<'_>, y: MatRef<'_>, grad: Option<MatMut<'_>>) -> f32 {
    let inv_b = 1.0 / h.rows().max(1) as f64;
    (mse_sum(h, y, grad, inv_b) * inv_b) as f32
}

/// [`mse`]'s sum over the rows (not divided by B), with the gradient scaled
/// by `inv_b` (1/B of the whole minibatch when `h` is part of it).
#[track_caller]
pub(crate) fn mse_sum(
    h: MatRef<'_>,
    y: MatRef<'_>,
    mut grad: Option<MatMut<'_>>,
    inv_b: f64,
) -> f64 {
    let shape = (h.rows(), h.cols());
    check_same_shape("mse", "y", (y.rows(), y.cols()), shape);
    if let Some(g) = &grad {
        check_same_shape("mse", "grad", (g.rows(), g.cols()), shape);
    }
    let (b, n) = shape;
    let mut total = 0.0f64;
    for i in 0..b {
        for j in 0..n {
            // f32 → f64 is exact, so d is the exact difference of the inputs.
            let d = h.get(i, j) as f64 - y.get(i, j) as f64;
            total += 0.5 * d * d;
            if let Some(g) = grad.as_mut() {
                g.set(i, j, (d * inv_b) as f32);
            }
        }
    }
    total
}

/// Binary logistic loss over the batch, with the gradient in the same pass.
///
/// `h` is `B × 1` (one score per sample) and `y[i] ∈ {−1, +1}`. Computes
///
///   L = (1/B) · Σᵢ log(1 + e^{−yᵢ·hᵢ})
///
/// evaluated as softplus(t) = max(t, 0) + ln_1p(e^{−|t|}) with t = −yᵢ·hᵢ, which
/// never overflows and keeps full relative precision both when the loss is
/// tiny (yᵢ·hᵢ ≫ 0) and when it is huge (yᵢ·hᵢ ≪ 0, loss ≈ |hᵢ|): it is accurate
/// to about one `f32` rounding for |h| up to `f32::MAX`. If `grad` is `Some`
/// (shape `B × 1`), writes ∂L/∂hᵢ = −yᵢ·σ(−yᵢ·hᵢ)/B with a stable sigmoid.
///
/// * B = 0 gives `Ok(0.0)`.
/// * NaN: a NaN score gives a NaN loss and a NaN gradient entry for that sample;
///   a NaN *label* is an [`LossError::InvalidLabel`].
/// * ±∞ scores follow the limits: a correct infinite score costs 0 with
///   gradient 0, a wrong one costs +∞ with gradient −y/B.
///
/// # Errors
/// * [`LossError::TargetLen`] if `y.len() != h.rows()`;
/// * [`LossError::InvalidLabel`] for the first label that is not exactly −1.0
///   or +1.0 (0/1 labels are rejected, not converted).
///
/// Targets are checked before anything is computed: on `Err`, `grad` is untouched.
///
/// # Panics
/// If `h` does not have exactly one column, or `grad` does not have the shape of `h`.
///
/// # Example
/// ```
/// use backprop::matrix::{MatMut, MatRef};
/// use backprop::nn::loss::logistic;
/// let h = [0.0, 2.0];
/// let y = [1.0, -1.0];
/// let mut g = [0.0f32; 2];
/// let l = logistic(MatRef::from_slice(&h, 2, 1), &y,
///                  Some(MatMut::from_slice_mut(&mut g, 2, 1))).unwrap();
/// let want = ((2.0f64).ln() + (1.0 + 2.0f64.exp()).ln()) / 2.0;
/// assert!((l as f64 - want).abs() <= 1e-6 * want);
/// assert_eq!(g[0], -0.25); // −1·σ(0)/2
/// assert!(g[1] > 0.0);     // pushes the wrong positive score down
///
/// // Labels must be ±1:
/// assert!(logistic(MatRef::from_slice(&h, 2, 1), &[1.0, 0.0], None).is_err());
/// ```
#[track_caller]
pub fn logistic(h: MatRef<'_>, y: &[f32], grad: Option<MatMut<'_>>) -> Result<f32, LossError> {
    let inv_b = 1.0 / h.rows().max(1) as f64;
    Ok((logistic_sum(h, y, grad, inv_b)? * inv_b) as f32)
}

/// [`logistic`]'s sum over the rows, gradient scaled by `inv_b` (as
/// [`mse_sum`]).
#[track_caller]
pub(crate) fn logistic_sum(
    h: MatRef<'_>,
    y: &[f32],
    mut grad: Option<MatMut<'_>>,
    inv_b: f64,
) -> Result<f64, LossError> {
    check_one_column("logistic", &h);
    let b = h.rows();
    if let Some(g) = &grad {
        check_same_shape("logistic", "grad", (g.rows(), g.cols()), (b, 1));
    }
    if y.len() != b {
        return Err(LossError::TargetLen {
            expected: b,
            got: y.len(),
        });
    }
    if let Some((row, &value)) = y.iter().enumerate().find(|&(_, &v)| v != 1.0 && v != -1.0) {
        return Err(LossError::InvalidLabel { row, value });
    }
    let mut total = 0.0f64;
    for (i, &yi) in y.iter().enumerate() {
        // y = ±1, so t = −y·h is exact in f64.
        let yi = yi as f64;
        let t = -yi * h.get(i, 0) as f64;
        total += softplus(t);
        if let Some(g) = grad.as_mut() {
            // d/dh softplus(−y·h) = −y·σ(−y·h).
            g.set(i, 0, (-yi * sigmoid(t) * inv_b) as f32);
        }
    }
    Ok(total)
}

/// Softmax cross-entropy over the batch, with the gradient in the same pass.
///
/// `h` is `B × K` (one logit per class) and `classes[i] ∈ 0..K` is the true
/// class of sample `i`. Computes
///
///   L = (1/B) · Σᵢ [ log Σⱼ e^{h_ij} − h_{i,cᵢ} ]
///
/// and, if `grad` is `Some` (shape `B × K`), writes
/// ∂L/∂h_ij = (softmax(hᵢ)ⱼ − [j = cᵢ])/B.
///
/// Stability: with m = maxⱼ h_ij attained first at j*, every exponent is
/// h_ij − m ≤ 0 (no overflow, no ∞ − ∞), and the max term contributes exactly
/// e⁰ = 1, so with r = Σ_{j≠j*} e^{h_ij − m} the per-sample loss is
/// (m − h_{i,c}) + ln_1p(r): two non-negative terms, accurate even when the loss
/// is tiny. The target entry of the gradient, p_c − 1, is computed as
/// −(Σ_{j≠c} e^{h_ij − m})/Σⱼ e^{h_ij − m} so it too keeps its relative precision
/// when p_c ≈ 1. Logits up to ±1e8 (indeed up to ±`f32::MAX`/2) never overflow:
/// the result is finite whenever the exact mean loss fits in an `f32` (a single
/// row `[f32::MAX, −f32::MAX]` with the wrong class costs 2·`f32::MAX`, which does
/// not, and gives +∞).
///
/// * B = 0 gives `Ok(0.0)`. K = 1 gives loss 0 and gradient 0.
/// * All logits of a row equal: the loss of that row is ln K and its gradient
///   (1/K − onehot(c))/B.
/// * NaN: a NaN logit makes the loss NaN and the whole gradient row of that
///   sample NaN (other rows are unaffected). ±∞ logits are outside the
///   finite-input guarantee: their rows follow IEEE arithmetic (+∞ or NaN).
///
/// # Errors
/// * [`LossError::TargetLen`] if `classes.len() != h.rows()`;
/// * [`LossError::ClassOutOfRange`] for the first index ≥ K (with K = 0 every
///   index is out of range).
///
/// Targets are checked before anything is computed: on `Err`, `grad` is untouched.
///
/// # Panics
/// If `grad` does not have the shape of `h`.
///
/// # Example
/// ```
/// use backprop::matrix::{MatMut, MatRef};
/// use backprop::nn::loss::softmax_cross_entropy;
/// // One sample, three equal logits: loss ln 3, gradient 1/3 − onehot.
/// let h = [5.0, 5.0, 5.0];
/// let mut g = [0.0f32; 3];
/// let l = softmax_cross_entropy(MatRef::from_slice(&h, 1, 3), &[2],
///                               Some(MatMut::from_slice_mut(&mut g, 1, 3))).unwrap();
/// assert!((l - 3.0f32.ln()).abs() <= 1e-6);
/// assert!((g[0] - 1.0 / 3.0).abs() <= 1e-7 && (g[2] + 2.0 / 3.0).abs() <= 1e-7);
///
/// // Huge logits do not overflow: the loss is the margin, 2e8.
/// let h = [1e8, -1e8];
/// let l = softmax_cross_entropy(MatRef::from_slice(&h, 1, 2), &[1], None).unwrap();
/// assert_eq!(l, 2e8);
/// ```
#[track_caller]
pub fn softmax_cross_entropy(
    h: MatRef<'_>,
    classes: &[usize],
    grad: Option<MatMut<'_>>,
) -> Result<f32, LossError> {
    let inv_b = 1.0 / h.rows().max(1) as f64;
    Ok((softmax_cross_entropy_sum(h, classes, grad, inv_b)? * inv_b) as f32)
}

/// [`softmax_cross_entropy`]'s sum over the rows, gradient scaled by
/// `inv_b` (as [`mse_sum`]).
#[track_caller]
pub(crate) fn softmax_cross_entropy_sum(
    h: MatRef<'_>,
    classes: &[usize],
    mut grad: Option<MatMut<'_>>,
    inv_b: f64,
) -> Result<f64, LossError> {
    let (b, k) = (h.rows(), h.cols());
    if let Some(g) = &grad {
        check_same_shape(
            "softmax_cross_entropy",
            "grad",
            (g.rows(), g.cols()),
            (b, k),
        );
    }
    if classes.len() != b {
        return Err(LossError::TargetLen {
            expected: b,
            got: classes.len(),
        });
    }
    if let Some((row, &class)) = classes.iter().enumerate().find(|&(_, &c)| c >= k) {
        return Err(LossError::ClassOutOfRange {
            row,
            class,
            num_classes: k,
        });
    }
    let mut total = 0.0f64;
    for (i, &c) in classes.iter().enumerate() {
        // Pass 1: the row maximum m and the first index j* attaining it. A NaN
        // is taken as the "maximum" so it propagates into every later quantity
        // (f64::max would silently skip it).
        let mut m = h.get(i, 0) as f64;
        let mut jmax = 0;
        for j in 1..k {
            if m.is_nan() {
                break;
            }
            let x = h.get(i, j) as f64;
            if x > m || x.is_nan() {
                m = x;
                jmax = j;
            }
        }
        if m.is_nan() {
            // Poisoned row: report it, never drop it. (Written explicitly
            // because with K = 1 no exponential would carry the NaN into the
            // gradient.)
            total += f64::NAN;
            if let Some(g) = grad.as_mut() {
                for j in 0..k {
                    g.set(i, j, f32::NAN);
                }
            }
            continue;
        }
        // e^{h_ij − m}, computed once per element: kept for the gradient
        // when the row fits the buffer (the values, and so the bits, are
        // the same either way; e^0 = 1 exactly at j*).
        let mut kept = [0.0f64; EXP_ROW];
        let keep = k <= EXP_ROW;
        let e = |j: usize| (h.get(i, j) as f64 - m).exp();
        // Pass 2: r = Σ_{j≠j*} e^{h_ij − m}. Every exponent is ≤ 0, so each term
        // is in [0, 1] and r ∈ [0, K − 1]; the full sum is s = 1 + r.
        let mut r = 0.0f64;
        let mut slots = kept.iter_mut();
        for j in 0..k {
            let v = e(j);
            if let Some(slot) = slots.next().filter(|_| keep) {
                *slot = v;
            }
            if j != jmax {
                r += v;
            }
        }
        let s = 1.0 + r;
        let hc = h.get(i, c) as f64;
        // logsumexp − h_c = m + ln s − h_c = (m − h_c) + ln_1p(r).
        total += (m - hc) + r.ln_1p();

        if let Some(g) = grad.as_mut() {
            let e = |j: usize| if keep { kept[j] } else { e(j) };
            let inv_s = 1.0 / s;
            // p_c − 1 = −(Σ_{j≠c} e^{h_ij − m})/s, never formed as a difference
            // with 1. The sum is r itself when c = j*; otherwise it is
            // s − e_c = 1 + (r − e_c), which is ≥ 1, so rounding in r − e_c is
            // harmless relative to it.
            let e_c = e(c);
            let rest = if c == jmax { r } else { 1.0 + (r - e_c) };
            for j in 0..k {
                let gj = if j == c { -rest * inv_s } else { e(j) * inv_s };
                g.set(i, j, (gj * inv_b) as f32);
            }
        }
    }
    Ok(total)
}

/// Rows of up to this many classes keep their exponentials for the
/// gradient (a stack buffer); wider ones compute them again.
const EXP_ROW: usize = 64;

/// The logistic inference rule: `out[i] = sign(h[i, 0]) ∈ {−1.0, +1.0}`.
///
/// * h = 0 (either +0.0 or −0.0) is mapped to **+1.0**, so every finite score
///   gets a valid label.
/// * NaN is mapped to NaN (the prediction is as undefined as the score).
/// * ±∞ give ±1.0.
///
/// # Panics
/// If `h` is not `B × 1`, or `out.len() != h.rows()`.
///
/// ```
/// use backprop::matrix::MatRef;
/// use backprop::nn::loss::predict_sign;
/// let h = [2.5, -0.1, 0.0, -0.0];
/// let mut out = [0.0f32; 4];
/// predict_sign(MatRef::from_slice(&h, 4, 1), &mut out);
/// assert_eq!(out, [1.0, -1.0, 1.0, 1.0]);
/// ```
#[track_caller]
pub fn predict_sign(h: MatRef<'_>, out: &mut [f32]) {
    check_one_column("predict_sign", &h);
    check_out_len("predict_sign", out.len(), &h);
    for (i, o) in out.iter_mut().enumerate() {
        *o = sign_rule(h.get(i, 0));
    }
}

/// The sign rule of one score: NaN stays NaN, x < 0 gives −1, anything else
/// (−0.0 included) +1.
fn sign_rule(x: f32) -> f32 {
    if x.is_nan() {
        f32::NAN
    } else if x < 0.0 {
        -1.0
    } else {
        // x ≥ 0, including −0.0 (which compares equal to 0).
        1.0
    }
}

/// The softmax inference rule: `out[i]` = the column index of the largest
/// entry of row `i` of `h` (`B × K`).
///
/// * Ties go to the **lowest** index (e.g. an all-equal row gives 0; −0.0 and
///   +0.0 are equal).
/// * A row containing NaN gives the index of its **first NaN**: NaN is treated
///   as larger than every number, matching how the loss lets NaN dominate (and
///   what `torch.argmax` does), so a corrupt score is never silently ignored.
///
/// # Panics
/// If `out.len() != h.rows()`, or if `h` has rows but no columns (an argmax over
/// nothing is undefined).
///
/// ```
/// use backprop::matrix::MatRef;
/// use backprop::nn::loss::argmax_rows;
/// let h = [0.1, 3.0, 3.0,
///          7.0, f32::NAN, 9.0];
/// let mut out = [99usize; 2];
/// argmax_rows(MatRef::from_slice(&h, 2, 3), &mut out);
/// assert_eq!(out, [1, 1]);
/// ```
#[track_caller]
pub fn argmax_rows(h: MatRef<'_>, out: &mut [usize]) {
    check_out_len("argmax_rows", out.len(), &h);
    if h.rows() > 0 && h.cols() == 0 {
        no_columns_fail(h.rows());
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = argmax_row(&h, i);
    }
}

/// The argmax rule on row `i` (at least one column): the first NaN, else the
/// first of the largest entries.
fn argmax_row(h: &MatRef<'_>, i: usize) -> usize {
    let mut best = 0;
    let mut best_v = h.get(i, 0);
    if best_v.is_nan() {
        return 0;
    }
    for j in 1..h.cols() {
        let x = h.get(i, j);
        if x.is_nan() {
            return j;
        }
        // Strictly greater: an equal later entry does not win.
        if x > best_v {
            best = j;
            best_v = x;
        }
    }
    best
}

#[cold]
#[inline(never)]
#[track_caller]
fn no_columns_fail(rows: usize) -> ! {
    panic!("argmax_rows: h is {rows}×0; a row's argmax needs at least one column")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_matches_the_literal_formula_where_that_is_safe() {
        for &t in &[-5.0f64, -1.0, -1e-3, 0.0, 1e-3, 1.0, 5.0, 30.0] {
            let lit = (1.0 + t.exp()).ln();
            assert!((softplus(t) - lit).abs() <= 1e-15 * lit.max(1.0), "t = {t}");
        }
        // Where the literal formula fails: overflow and total cancellation.
        assert_eq!(softplus(1e8), 1e8);
        assert_eq!(softplus(-1e8), 0.0);
        let t = -40.0f64;
        assert!((softplus(t) / t.exp() - 1.0).abs() <= 1e-15);
        assert!(softplus(f64::NAN).is_nan());
    }

    #[test]
    fn sigmoid_is_stable_and_symmetric() {
        for &t in &[0.0f64, 0.5, 3.0, 40.0, 800.0, 1e8] {
            assert!((sigmoid(t) + sigmoid(-t) - 1.0).abs() <= 1e-15);
            assert!(sigmoid(-t) >= 0.0 && sigmoid(t) <= 1.0);
        }
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(-40.0) / (-40.0f64).exp() - 1.0).abs() <= 1e-15);
        assert!(sigmoid(f64::NAN).is_nan());
    }

    #[test]
    fn error_messages_name_row_value_and_count() {
        let e = LossError::InvalidLabel { row: 3, value: 0.0 };
        assert!(e.to_string().contains("row 3 is 0"));
        let e = LossError::ClassOutOfRange {
            row: 1,
            class: 7,
            num_classes: 5,
        };
        let s = e.to_string();
        assert!(s.contains("index 7") && s.contains("row 1") && s.contains("5 classes"));
        let e = LossError::TargetLen {
            expected: 4,
            got: 3,
        };
        assert!(e.to_string().contains("3 targets for a batch of 4"));
    }
}
