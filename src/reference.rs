//! Naive scalar references that follow the textbook formulas literally: the
//! oracle every fast kernel is tested against. Clarity over speed; `f64`
//! accumulation so the reference error is negligible next to the kernels'.

use crate::matrix::{MatMut, MatRef};

/// `C ← α·A·B + β·C` by the triple loop, accumulating in `f64`.
/// `β = 0` never reads C, as in the fast GEMM.
///
/// # Panics
/// If the shapes do not agree.
#[track_caller]
pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, mut c: MatMut<'_>) {
    assert_eq!(a.cols(), b.rows(), "reference::gemm: A.cols ≠ B.rows");
    assert_eq!(
        (c.rows(), c.cols()),
        (a.rows(), b.cols()),
        "reference::gemm: C has the wrong shape"
    );
    for i in 0..a.rows() {
        for j in 0..b.cols() {
            let mut s = 0.0f64;
            for p in 0..a.cols() {
                s += a.get(i, p) as f64 * b.get(p, j) as f64;
            }
            let mut v = alpha as f64 * s;
            if beta != 0.0 {
                v += beta as f64 * c.get(i, j) as f64;
            }
            c.set(i, j, v as f32);
        }
    }
}
