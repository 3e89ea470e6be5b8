//! How a timed product's operands are stored: the layouts a training step
//! reads them in, shared by `benches/gemm.rs` and the `gemm_demo` example.

/// Which operand of `C = A·B` (A `m × k`, B `k × n`) is read through
/// transposed strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A and B row-major (the forward pass, X·W).
    Plain,
    /// A = Xᵀ for a row-major `k × m` X (the weight gradient Xᵀ·δ).
    ATransposed,
    /// B = Wᵀ for a row-major `n × k` W (the δ step δ·Wᵀ).
    BTransposed,
}

impl Layout {
    /// A's and B's `(row, column)` strides in elements for an `m × k × n`
    /// product stored in contiguous `m·k` and `k·n` buffers.
    ///
    /// ```
    /// use backprop_support::layout::Layout;
    /// assert_eq!(Layout::Plain.strides(2, 3, 4), ((3, 1), (4, 1)));
    /// assert_eq!(Layout::ATransposed.strides(2, 3, 4), ((1, 2), (4, 1)));
    /// assert_eq!(Layout::BTransposed.strides(2, 3, 4), ((3, 1), (1, 3)));
    /// ```
    pub fn strides(self, m: usize, k: usize, n: usize) -> ((isize, isize), (isize, isize)) {
        let a = match self {
            Layout::ATransposed => (1, m as isize),
            _ => (k as isize, 1),
        };
        let b = match self {
            Layout::BTransposed => (1, k as isize),
            _ => (n as isize, 1),
        };
        (a, b)
    }

    /// The label suffix of a table row: `""`, `" (Aᵀ)"` or `" (Bᵀ)"`.
    pub fn suffix(self) -> &'static str {
        match self {
            Layout::Plain => "",
            Layout::ATransposed => " (Aᵀ)",
            Layout::BTransposed => " (Bᵀ)",
        }
    }
}
