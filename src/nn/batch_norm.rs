//! Batch normalization over the features of a `(batch, features)` row-major
//! batch, with PyTorch's semantics: training normalises with the batch mean and
//! the **biased** batch variance; the running averages (momentum 0.1) store the
//! mean and the **unbiased** variance; evaluation normalises with the running
//! averages. ε = 1e-5. The statistics are always over the whole minibatch.
//!
//! ```text
//! μ_j = (1/B) Σ_i x_ij      σ²_j = (1/B) Σ_i (x_ij − μ_j)²     x̂_ij = (x_ij − μ_j)/√(σ²_j + ε)
//! y_ij = γ_j·x̂_ij + β_j
//! running_mean ← (1 − m)·running_mean + m·μ,   running_var ← (1 − m)·running_var + m·σ²·B/(B − 1)
//! ```

/// PyTorch's default ε.
pub const EPS: f32 = 1e-5;
/// PyTorch's default momentum for the running averages.
pub const MOMENTUM: f32 = 0.1;

/// Training-mode forward. `x`, `y`, `xhat` are `b × d` row-major; `gamma`,
/// `beta`, `inv_std`, `mean`, the running averages are `d`. Writes `y`, keeps
/// `x̂` and 1/√(σ² + ε) for the backward pass, and updates the running averages.
///
/// # Panics
/// If `b < 2` (the unbiased variance needs two samples: the trainer reports it
/// as an error before calling) or a length disagrees.
#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    x: &[f32],
    b: usize,
    d: usize,
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    xhat: &mut [f32],
    inv_std: &mut [f32],
    mean: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
) {
    assert!(
        b >= 2,
        "batch_norm: training needs a batch of at least 2, got {b}"
    );
    check(x.len(), y.len(), xhat.len(), b * d);
    mean.fill(0.0);
    for row in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    let inv_b = 1.0 / b as f32;
    mean.iter_mut().for_each(|m| *m *= inv_b);
    // Two-pass variance: Σ (x − μ)², no cancellation.
    inv_std.fill(0.0);
    for row in x.chunks_exact(d) {
        for ((s, &v), &m) in inv_std.iter_mut().zip(row).zip(mean.iter()) {
            let c = v - m;
            *s += c * c;
        }
    }
    let unbias = b as f32 / (b as f32 - 1.0);
    for j in 0..d {
        let var = inv_std[j] * inv_b;
        running_mean[j] = (1.0 - MOMENTUM) * running_mean[j] + MOMENTUM * mean[j];
        running_var[j] = (1.0 - MOMENTUM) * running_var[j] + MOMENTUM * var * unbias;
        inv_std[j] = 1.0 / (var + EPS).sqrt();
    }
    for ((xr, yr), hr) in x
        .chunks_exact(d)
        .zip(y.chunks_exact_mut(d))
        .zip(xhat.chunks_exact_mut(d))
    {
        for j in 0..d {
            let h = (xr[j] - mean[j]) * inv_std[j];
            hr[j] = h;
            yr[j] = gamma[j] * h + beta[j];
        }
    }
}

/// Evaluation-mode forward: `y = γ·(x − running_mean)/√(running_var + ε) + β`.
#[allow(clippy::too_many_arguments)]
pub fn forward_eval(
    x: &[f32],
    d: usize,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    y: &mut [f32],
) {
    assert_eq!(x.len(), y.len(), "batch_norm: x and y lengths differ");
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        for j in 0..d {
            let s = gamma[j] / (running_var[j] + EPS).sqrt();
            yr[j] = s * (xr[j] - running_mean[j]) + beta[j];
        }
    }
}

/// Training-mode backward: from `g = ∂L/∂y` computes `∂L/∂x` into `dx`,
/// `∂L/∂γ = Σ_i g·x̂` and `∂L/∂β = Σ_i g` (overwritten):
/// `dx = γ·inv_std/B · (B·g − Σ_i g − x̂·Σ_i g·x̂)`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &[f32],
    b: usize,
    d: usize,
    gamma: &[f32],
    xhat: &[f32],
    inv_std: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    check(g.len(), dx.len(), xhat.len(), b * d);
    dgamma.fill(0.0);
    dbeta.fill(0.0);
    for (gr, hr) in g.chunks_exact(d).zip(xhat.chunks_exact(d)) {
        for j in 0..d {
            dbeta[j] += gr[j];
            dgamma[j] += gr[j] * hr[j];
        }
    }
    let bf = b as f32;
    for ((gr, hr), dr) in g
        .chunks_exact(d)
        .zip(xhat.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        for j in 0..d {
            let s = gamma[j] * inv_std[j] / bf;
            dr[j] = s * (bf * gr[j] - dbeta[j] - hr[j] * dgamma[j]);
        }
    }
}

#[track_caller]
fn check(a: usize, b: usize, c: usize, want: usize) {
    assert!(
        a == want && b == want && c == want,
        "batch_norm: buffers of {a}, {b}, {c} elements for a batch of {want}"
    );
}
