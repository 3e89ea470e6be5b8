//! Layer normalization over the features of each sample (row) of a
//! `(batch, features)` row-major batch, with learnable per-feature γ, β and
//! ε = 1e-5. The same computation in training and evaluation: a sample's
//! output never depends on the rest of the batch.
//!
//! ```text
//! μ_i = (1/D) Σ_j x_ij    σ²_i = (1/D) Σ_j (x_ij − μ_i)²    x̂_ij = (x_ij − μ_i)/√(σ²_i + ε)    y_ij = γ_j·x̂_ij + β_j
//! ```

/// PyTorch's default ε.
pub const EPS: f32 = 1e-5;

/// Forward. `x`, `y`, `xhat` are `b × d` row-major, `inv_std` is `b`, `gamma`
/// and `beta` are `d`. Keeps x̂ and 1/√(σ² + ε) for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f32],
    d: usize,
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    xhat: &mut [f32],
    inv_std: &mut [f32],
) {
    assert!(
        x.len() == y.len() && x.len() == xhat.len() && x.len() == inv_std.len() * d,
        "layer_norm: buffer lengths disagree"
    );
    let inv_d = 1.0 / d as f32;
    for (((xr, yr), hr), s) in x
        .chunks_exact(d)
        .zip(y.chunks_exact_mut(d))
        .zip(xhat.chunks_exact_mut(d))
        .zip(inv_std.iter_mut())
    {
        let mu = xr.iter().sum::<f32>() * inv_d;
        let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<f32>() * inv_d;
        *s = 1.0 / (var + EPS).sqrt();
        for j in 0..d {
            let h = (xr[j] - mu) * *s;
            hr[j] = h;
            yr[j] = gamma[j] * h + beta[j];
        }
    }
}

/// Backward: from `g = ∂L/∂y` computes `∂L/∂x` into `dx` and accumulates
/// nothing: `∂L/∂γ = Σ_i g·x̂`, `∂L/∂β = Σ_i g` are overwritten. Per row, with
/// `u = g ⊙ γ`: `dx = inv_std/D · (D·u − Σ_j u − x̂·Σ_j u·x̂)`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &[f32],
    d: usize,
    gamma: &[f32],
    xhat: &[f32],
    inv_std: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    dgamma.fill(0.0);
    dbeta.fill(0.0);
    let df = d as f32;
    for (((gr, hr), dr), &s) in g
        .chunks_exact(d)
        .zip(xhat.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(inv_std.iter())
    {
        let mut su = 0.0f32;
        let mut suh = 0.0f32;
        for j in 0..d {
            dbeta[j] += gr[j];
            dgamma[j] += gr[j] * hr[j];
            let u = gr[j] * gamma[j];
            su += u;
            suh += u * hr[j];
        }
        for j in 0..d {
            let u = gr[j] * gamma[j];
            dr[j] = s / df * (df * u - su - hr[j] * suh);
        }
    }
}
