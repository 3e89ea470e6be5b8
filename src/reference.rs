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
        Activation::GeluErf => z * normal_cdf(z),
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
        Activation::GeluErf => {
            normal_cdf(z) + z * (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        Activation::Softplus => 1.0 / (1.0 + (-z).exp()),
    }
}

use crate::nn::layer::{Slot, Store};
use crate::nn::{Layer, Loss, Targets};

/// Φ(z) = ½·erfc(−z/√2), the standard normal CDF, in `f64`.
fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z * std::f64::consts::FRAC_1_SQRT_2)
}

/// erfc(x) in `f64`, to ~10⁻¹¹ relative (worst near 2.5): 1 − erf from erf's Maclaurin series
/// below 2.5, Laplace's continued fraction
/// `e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))` above, and
/// erfc(x) = 2 − erfc(−x) for negative x.
fn erfc(x: f64) -> f64 {
    use std::f64::consts::PI;
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        let x2 = x * x;
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        1.0 - 2.0 / PI.sqrt() * sum
    } else {
        let mut f = x;
        for k in (1..=80).rev() {
            f = x + (k as f64 / 2.0) / f;
        }
        (-x * x).exp() / PI.sqrt() / f
    }
}

/// What one layer of the reference network remembers for the backward pass.
enum Tape {
    Dense {
        x: Vec<Vec<f64>>,
        w: usize,
        b: Option<usize>,
        fan_in: usize,
        fan_out: usize,
    },
    Act {
        z: Vec<Vec<f64>>,
        act: Activation,
    },
    Norm {
        xhat: Vec<Vec<f64>>,
        inv_std: Vec<f64>,
        /// γ's and β's offsets, if learnt.
        affine: Option<(usize, usize)>,
        batch: bool,
    },
    Residual(Vec<Tape>),
    Mask(Vec<Vec<f64>>),
}

/// The naive reference network: forward and backward in `f64`, sample by
/// sample, following the course's formulas literally:
/// `z⁽ˡ⁾_j = Σ_i W_ij x⁽ˡ⁻¹⁾_i + b_j`, `x⁽ˡ⁾ = φ(z⁽ˡ⁾)`,
/// `δ⁽ˡ⁾_i = (Σ_j W⁽ˡ⁺¹⁾_ij δ⁽ˡ⁺¹⁾_j)·φ′(z⁽ˡ⁾_i)`, `∂w_ij = δ_j x_i`, `∂b_j = δ_j`,
/// averaged over the batch. BatchNorm (training mode, biased variance) and
/// LayerNorm use the textbook batch formulas; ε = 1e-5 for both.
///
/// `params` has the layout of [`crate::nn::Mlp::params`] for the same layers.
/// Returns the mean loss and its gradient with respect to `params`.
///
/// Dropout layers apply the masks of a training pass with noise `(0, 0)`
/// (see [`mlp_loss_and_grads_with_noise`]).
///
/// # Panics
/// If the targets do not suit the loss or the sizes disagree.
pub fn mlp_loss_and_grads(
    input: usize,
    layers: &[Layer],
    loss: Loss,
    params: &[f64],
    x: &[Vec<f64>],
    targets: Targets<'_>,
) -> (f64, Vec<f64>) {
    mlp_loss_and_grads_with_noise(input, layers, loss, params, x, targets, (0, 0))
}

/// [`mlp_loss_and_grads`] with dropout's masks those of the network's
/// training pass with noise `(seed, step)` ([`Mlp::set_noise`]): element `j`
/// of sample `s` is multiplied by 1/(1 − p) or 0 as that pass decides.
///
/// [`Mlp::set_noise`]: crate::nn::Mlp::set_noise
///
/// # Panics
/// As [`mlp_loss_and_grads`].
pub fn mlp_loss_and_grads_with_noise(
    input: usize,
    layers: &[Layer],
    loss: Loss,
    params: &[f64],
    x: &[Vec<f64>],
    targets: Targets<'_>,
    noise: (u64, u64),
) -> (f64, Vec<f64>) {
    let noise = crate::nn::dropout::noise_key(noise.0, noise.1);
    // The offsets come from the layers' own declarations (the arena layout).
    let compiled = crate::nn::layer::compile(input, layers).expect("reference: the layers build");
    assert_eq!(
        compiled.params,
        params.len(),
        "reference: parameter count differs from the arena"
    );
    let mut slots = compiled
        .slots
        .iter()
        .filter(|s| s.tensor.store == Store::Param);
    let mut tapes = Vec::new();
    let (h, width) = ref_forward(
        layers,
        input,
        params,
        &mut slots,
        x.to_vec(),
        &mut tapes,
        ("", noise),
    );
    assert!(
        slots.next().is_none(),
        "reference: a declared parameter was not used"
    );
    let batch = x.len() as f64;
    let mut value = 0.0;
    let mut g: Vec<Vec<f64>> = vec![vec![0.0; width]; x.len()];
    for (i, hi) in h.iter().enumerate() {
        match (loss, targets) {
            (Loss::Mse, Targets::Values(y)) => {
                for j in 0..width {
                    let d = hi[j] - f64::from(y.get(i, j));
                    value += 0.5 * d * d;
                    g[i][j] = d / batch;
                }
            }
            (Loss::Logistic, Targets::Signs(y)) => {
                let yi = f64::from(y[i]);
                let t = -yi * hi[0];
                value += t.max(0.0) + (-t.abs()).exp().ln_1p();
                g[i][0] = -yi / (1.0 + (-t).exp()) / batch;
            }
            (Loss::SoftmaxCrossEntropy, Targets::Classes(c)) => {
                let m = hi.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = hi.iter().map(|v| (v - m).exp()).sum();
                value += m + s.ln() - hi[c[i]];
                for j in 0..width {
                    let p = (hi[j] - m).exp() / s;
                    g[i][j] = (p - if j == c[i] { 1.0 } else { 0.0 }) / batch;
                }
            }
            _ => panic!("reference: targets do not suit {loss:?}"),
        }
    }
    let mut grads = vec![0.0; params.len()];
    ref_backward(&tapes, params, &mut grads, g);
    (value / batch, grads)
}

/// The offset of the next declared parameter, which must be named `name`.
fn offset<'s>(slots: &mut impl Iterator<Item = &'s Slot>, name: &str) -> usize {
    let s = slots
        .next()
        .expect("reference: fewer parameters declared than used");
    assert_eq!(s.tensor.name, name, "reference: declarations out of order");
    s.offset
}

/// `at` is the path prefix of `layers` (`""`, `"2.inner."`) and the pass's
/// noise key.
fn ref_forward<'s>(
    layers: &[Layer],
    mut width: usize,
    params: &[f64],
    slots: &mut impl Iterator<Item = &'s Slot>,
    mut x: Vec<Vec<f64>>,
    tapes: &mut Vec<Tape>,
    at: (&str, u64),
) -> (Vec<Vec<f64>>, usize) {
    let (base, noise) = at;
    for (index, layer) in layers.iter().enumerate() {
        let path = format!("{base}{index}.");
        match layer {
            Layer::Dropout { p } => {
                let salt = crate::nn::dropout::salt(&path);
                let m: Vec<Vec<f64>> = (0..x.len())
                    .map(|s| {
                        (0..width)
                            .map(|j| {
                                let k = (s * width + j) as u64;
                                f64::from(crate::nn::dropout::mask(noise, salt, k, *p))
                            })
                            .collect()
                    })
                    .collect();
                for (xs, ms) in x.iter_mut().zip(&m) {
                    for (v, &mj) in xs.iter_mut().zip(ms) {
                        *v *= mj;
                    }
                }
                tapes.push(Tape::Mask(m));
            }
            Layer::Dense { units, bias, .. } => {
                let (fan_in, fan_out) = (width, *units);
                let w = offset(slots, "weight");
                let b = bias.then(|| offset(slots, "bias"));
                let z: Vec<Vec<f64>> = x
                    .iter()
                    .map(|xs| {
                        (0..fan_out)
                            .map(|j| {
                                b.map_or(0.0, |b| params[b + j])
                                    + (0..fan_in)
                                        .map(|i| params[w + i * fan_out + j] * xs[i])
                                        .sum::<f64>()
                            })
                            .collect()
                    })
                    .collect();
                tapes.push(Tape::Dense {
                    x,
                    w,
                    b,
                    fan_in,
                    fan_out,
                });
                x = z;
                width = fan_out;
            }
            Layer::Act(act) => {
                let a = x
                    .iter()
                    .map(|r| r.iter().map(|&v| activation(*act, v)).collect())
                    .collect();
                tapes.push(Tape::Act { z: x, act: *act });
                x = a;
            }
            Layer::BatchNorm { affine } | Layer::LayerNorm { affine } => {
                let batch = matches!(layer, Layer::BatchNorm { .. });
                let affine = affine.then(|| (offset(slots, "weight"), offset(slots, "bias")));
                let eps = 1e-5;
                let (n, d) = (x.len(), width);
                let mut xhat = vec![vec![0.0; d]; n];
                let inv_std: Vec<f64>;
                if batch {
                    let mu: Vec<f64> = (0..d)
                        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64)
                        .collect();
                    let var: Vec<f64> = (0..d)
                        .map(|j| x.iter().map(|r| (r[j] - mu[j]).powi(2)).sum::<f64>() / n as f64)
                        .collect();
                    inv_std = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
                    for i in 0..n {
                        for j in 0..d {
                            xhat[i][j] = (x[i][j] - mu[j]) * inv_std[j];
                        }
                    }
                } else {
                    let mut s = Vec::new();
                    for i in 0..n {
                        let mu = x[i].iter().sum::<f64>() / d as f64;
                        let var = x[i].iter().map(|v| (v - mu).powi(2)).sum::<f64>() / d as f64;
                        s.push(1.0 / (var + eps).sqrt());
                        for j in 0..d {
                            xhat[i][j] = (x[i][j] - mu) * s[i];
                        }
                    }
                    inv_std = s;
                }
                let y = xhat
                    .iter()
                    .map(|r| {
                        (0..d)
                            .map(|j| match affine {
                                Some((g, b)) => params[g + j] * r[j] + params[b + j],
                                None => r[j],
                            })
                            .collect()
                    })
                    .collect();
                tapes.push(Tape::Norm {
                    xhat,
                    inv_std,
                    affine,
                    batch,
                });
                x = y;
            }
            Layer::Residual(inner) => {
                let mut inner_tapes = Vec::new();
                let inner_base = format!("{path}inner.");
                let (f, w) = ref_forward(
                    inner,
                    width,
                    params,
                    slots,
                    x.clone(),
                    &mut inner_tapes,
                    (&inner_base, noise),
                );
                assert_eq!(w, width, "reference: residual changes the width");
                for (xi, fi) in x.iter_mut().zip(f) {
                    for (a, b) in xi.iter_mut().zip(fi) {
                        *a += b;
                    }
                }
                tapes.push(Tape::Residual(inner_tapes));
            }
        }
    }
    (x, width)
}

/// Backward through `tapes` from `g = ∂L/∂output`; returns ∂L/∂input.
fn ref_backward(
    tapes: &[Tape],
    params: &[f64],
    grads: &mut [f64],
    mut g: Vec<Vec<f64>>,
) -> Vec<Vec<f64>> {
    for tape in tapes.iter().rev() {
        match tape {
            Tape::Dense {
                x,
                w,
                b,
                fan_in,
                fan_out,
            } => {
                // Per sample: ∂w_ij += δ_j·x_i, ∂b_j += δ_j, and the δ passed
                // down is Σ_j W_ij δ_j (φ′ is applied by the activation's tape).
                let mut down = vec![vec![0.0; *fan_in]; g.len()];
                for (s, delta) in g.iter().enumerate() {
                    for j in 0..*fan_out {
                        if let Some(b) = b {
                            grads[b + j] += delta[j];
                        }
                        for i in 0..*fan_in {
                            grads[w + i * fan_out + j] += delta[j] * x[s][i];
                            down[s][i] += params[w + i * fan_out + j] * delta[j];
                        }
                    }
                }
                g = down;
            }
            Tape::Act { z, act } => {
                for (gs, zs) in g.iter_mut().zip(z) {
                    for (v, &zz) in gs.iter_mut().zip(zs) {
                        *v *= activation_derivative(*act, zz);
                    }
                }
            }
            Tape::Norm {
                xhat,
                inv_std,
                affine,
                batch,
            } => {
                let (n, d) = (g.len(), xhat[0].len());
                let mut down = vec![vec![0.0; d]; n];
                if let Some((gamma, beta)) = *affine {
                    for i in 0..n {
                        for j in 0..d {
                            grads[gamma + j] += g[i][j] * xhat[i][j];
                            grads[beta + j] += g[i][j];
                        }
                    }
                }
                let gamma = |j: usize| affine.map_or(1.0, |(g, _)| params[g + j]);
                if *batch {
                    // dx = γ/(B·σ)·(B·g − Σg − x̂·Σ g·x̂), per feature over the batch.
                    for j in 0..d {
                        let sg: f64 = (0..n).map(|i| g[i][j]).sum();
                        let sgh: f64 = (0..n).map(|i| g[i][j] * xhat[i][j]).sum();
                        for i in 0..n {
                            down[i][j] = gamma(j) * inv_std[j] / n as f64
                                * (n as f64 * g[i][j] - sg - xhat[i][j] * sgh);
                        }
                    }
                } else {
                    // Per sample over features, with u = γ ⊙ g.
                    for i in 0..n {
                        let u: Vec<f64> = (0..d).map(|j| gamma(j) * g[i][j]).collect();
                        let su: f64 = u.iter().sum();
                        let suh: f64 = (0..d).map(|j| u[j] * xhat[i][j]).sum();
                        for j in 0..d {
                            down[i][j] =
                                inv_std[i] / d as f64 * (d as f64 * u[j] - su - xhat[i][j] * suh);
                        }
                    }
                }
                g = down;
            }
            Tape::Mask(m) => {
                for (gs, ms) in g.iter_mut().zip(m) {
                    for (v, &mj) in gs.iter_mut().zip(ms) {
                        *v *= mj;
                    }
                }
            }
            Tape::Residual(inner) => {
                let through = ref_backward(inner, params, grads, g.clone());
                for (a, b) in g.iter_mut().zip(through) {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                }
            }
        }
    }
    g
}
