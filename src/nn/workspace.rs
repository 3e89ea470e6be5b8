//! The per-batch buffers of a network's ops, and the size cap every network
//! array obeys.

use crate::matrix::MatRef;
use crate::nn::layer::Op;

/// The most `f32` values one array of a network may hold: the parameter
/// arena, the BatchNorm buffer arena, or one activation workspace of
/// `batch × width` (2³¹ values, 8 GiB). Sizes come from input (a data file's
/// label range, an IDX header, a saved architecture, a batch size), so every
/// size product is computed with checked arithmetic and compared against this
/// cap before anything is allocated; [`BuildError::TooLarge`](crate::nn::BuildError::TooLarge) and
/// [`StepError::TooLarge`](crate::nn::StepError::TooLarge) report a network or a batch beyond it, and an
/// allocation the system refuses below it is reported the same way instead of
/// aborting.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// A vector of `n` copies of `fill`, or `None` if `n` exceeds
/// [`MAX_ELEMENTS`] or the allocator refuses the memory.
pub(crate) fn try_filled(n: usize, fill: f32) -> Option<Vec<f32>> {
    if n > MAX_ELEMENTS {
        return None;
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, fill);
    Some(v)
}

/// Per-op buffers for batches of up to `batch` rows; only ever grows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Workspace {
    /// Rows the buffers hold.
    pub batch: usize,
    /// Output of each op, `batch × dims[i]`.
    pub out: Vec<Vec<f32>>,
    /// What an op keeps for backward (Z of a dense layer whose φ′ needs it, x̂ of a norm).
    pub aux: Vec<Vec<f32>>,
    /// An op's statistics (a norm's 1/σ).
    pub stat: Vec<Vec<f32>>,
    /// ∂L/∂(output of op i); a dense op turns it into ∂L/∂Z in place.
    pub grad: Vec<Vec<f32>>,
    /// A row-major copy of a strided input, for a first op that cannot read
    /// strides (see [`stage_input`]); grows once to `batch × input`.
    pub input: Vec<f32>,
}

/// The network input as the ops see it: `x` itself, or — when `x` is not
/// contiguous row-major and the first op cannot read strides — a row-major
/// copy of it in `input`. Forward and backward stage the same way, so they
/// see the same values.
pub(crate) fn stage_input<'a>(
    first: &dyn Op,
    x: MatRef<'a>,
    input: &'a mut Vec<f32>,
) -> MatRef<'a> {
    if needs_staging(first, x) {
        input.clear();
        for i in 0..x.rows() {
            input.extend((0..x.cols()).map(|j| x.get(i, j)));
        }
    }
    staged(first, x, input)
}

/// Whether the ops see a copy of `x` rather than `x` itself.
fn needs_staging(first: &dyn Op, x: MatRef<'_>) -> bool {
    x.as_row_major_slice().is_none() && !first.reads_strided_input()
}

/// The view [`stage_input`] gave for `x`, without copying again (for the
/// backward pass after a forward that staged it).
pub(crate) fn staged<'a>(first: &dyn Op, x: MatRef<'a>, input: &'a [f32]) -> MatRef<'a> {
    if !needs_staging(first, x) {
        return x;
    }
    MatRef::from_slice(&input[..x.rows() * x.cols()], x.rows(), x.cols())
}

impl Workspace {
    /// Whether the buffers serve `ops` ops at `batch` rows.
    pub(crate) fn fits(&self, ops: usize, batch: usize) -> bool {
        self.out.len() == ops && self.batch >= batch
    }

    /// Buffers for `ops` (output widths `dims`) at `batch` rows, each as its
    /// op's [`Op::scratch`] asks, with the gradient buffers when `grads` (a
    /// forward-only workspace has none). `None` if a size passes
    /// [`MAX_ELEMENTS`] (checked before anything is allocated) or the memory
    /// is refused.
    pub(crate) fn new(
        ops: &[Box<dyn Op>],
        dims: &[usize],
        batch: usize,
        grads: bool,
    ) -> Option<Workspace> {
        let zeros = |len: Option<usize>| try_filled(len?, 0.0);
        let mut ws = Workspace {
            batch,
            ..Default::default()
        };
        for (op, &d) in ops.iter().zip(dims) {
            let s = op.scratch(d);
            let rows = batch.checked_mul(d);
            ws.out.push(zeros(rows)?);
            if grads {
                ws.grad.push(zeros(rows)?);
            }
            ws.aux.push(zeros(if s.aux { rows } else { Some(0) })?);
            let stat = batch
                .checked_mul(s.stat_per_row)
                .and_then(|n| n.checked_add(s.stat_fixed));
            ws.stat.push(zeros(stat)?);
        }
        Some(ws)
    }
}
