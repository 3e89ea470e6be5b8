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

use crate::kernel::Activation;

/// φ(z) in `f64`, straight from the definitions (the oracle for the vector code).
pub fn activation(act: Activation, z: f64) -> f64 {
    match act {
        Activation::Identity => z,
        Activation::Relu => {
            if z.is_nan() {
                z
            } else {
                z.max(0.0)
            }
        }
        Activation::LeakyRelu { slope } => {
            if z < 0.0 {
                slope as f64 * z
            } else {
                z
            }
        }
        Activation::Tanh => z.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
        Activation::Gelu => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * z * (1.0 + (c * (z + 0.044715 * z * z * z)).tanh())
        }
        Activation::Softplus => {
            if z.is_nan() {
                z
            } else {
                z.max(0.0) + (-z.abs()).exp().ln_1p()
            }
        }
    }
}

/// φ′(z) in `f64`, from the textbook derivatives (φ′(0) = 0 for ReLU, the
/// slope for leaky ReLU).
pub fn activation_derivative(act: Activation, z: f64) -> f64 {
    if z.is_nan() {
        return z;
    }
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => {
            if z > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::LeakyRelu { slope } => {
            if z > 0.0 {
                1.0
            } else {
                slope as f64
            }
        }
        Activation::Tanh => 1.0 - z.tanh().powi(2),
        Activation::Sigmoid => {
            let s = 1.0 / (1.0 + (-z).exp());
            s * (1.0 - s)
        }
        Activation::Gelu => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let a = 0.044715;
            let t = (c * (z + a * z * z * z)).tanh();
            0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3.0 * a * z * z)
        }
        Activation::Softplus => 1.0 / (1.0 + (-z).exp()),
    }
}
