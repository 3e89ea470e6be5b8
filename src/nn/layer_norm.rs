//! Layer normalization over the features of each sample (row) of a
//! `(batch, features)` row-major batch, with learnable per-feature γ, β and
//! ε = 1e-5. The same computation in training and evaluation: a sample's
//! output never depends on the rest of the batch.
//!
//! ```text
//! μ_i = (1/D) Σ_j x_ij    σ²_i = (1/D) Σ_j (x_ij − μ_i)²    x̂_ij = (x_ij − μ_i)/√(σ²_i + ε)    y_ij = γ_j·x̂_ij + β_j
//! ```
//!
//! Declares `weight` (γ, ones) and `bias` (β, zeros), each `[width]`, as
//! `nn.LayerNorm` names them, when affine; without (`elementwise_affine=False`)
//! γ = 1 and β = 0 are fixed and not declared.

use crate::nn::layer::{
    affine_sums, contiguous, declare_affine, scale_shift, Backward, Compiler, Forward, Op, Scratch,
};
use crate::nn::BuildError;

/// PyTorch's default ε.
pub const EPS: f32 = 1e-5;

/// Declares γ and β (if `affine`), and pushes the op.
pub(crate) fn compile(c: &mut Compiler, affine: bool) -> Result<(), BuildError> {
    let d = c.width;
    let affine = declare_affine(c, affine)?;
    c.push(Box::new(LayerNorm { d, affine }), d);
    Ok(())
}

/// A compiled LayerNorm layer: its width and where γ and β sit, if learnt.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayerNorm {
    d: usize,
    affine: Option<(usize, usize)>,
}

impl Op for LayerNorm {
    fn scratch(&self, _width: usize) -> Scratch {
        // aux: x̂ (batch × d); stat: 1/√(σ² + ε) per sample.
        Scratch {
            aux: true,
            stat_per_row: 1,
            ..Scratch::default()
        }
    }

    fn forward(&self, cx: Forward<'_>) {
        let (b, d) = (cx.batch, self.d);
        let x = contiguous(&cx.input);
        let gb = scale_shift(self.affine, d, cx.params);
        let inv_d = 1.0 / d as f32;
        for (((xr, yr), hr), s) in x
            .chunks_exact(d)
            .zip(cx.out[..b * d].chunks_exact_mut(d))
            .zip(cx.aux[..b * d].chunks_exact_mut(d))
            .zip(cx.stat[..b].iter_mut())
        {
            let mu = xr.iter().sum::<f32>() * inv_d;
            let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<f32>() * inv_d;
            *s = 1.0 / (var + EPS).sqrt();
            for j in 0..d {
                let h = (xr[j] - mu) * *s;
                hr[j] = h;
                let (gamma, beta) = gb(j);
                yr[j] = gamma * h + beta;
            }
        }
    }

    /// From `g = ∂L/∂y`, per sample with `u = γ ⊙ g`:
    /// `∂L/∂x = inv_std/D · (D·u − Σ_j u − x̂·Σ_j u·x̂)`; `∂L/∂γ = Σ_i g·x̂`,
    /// `∂L/∂β = Σ_i g` (overwritten; not formed without affine, where γ = 1).
    fn backward(&self, cx: Backward<'_>) {
        let (b, d) = (cx.batch, self.d);
        let gb = scale_shift(self.affine, d, cx.params);
        if let Some((gamma, beta)) = self.affine {
            // [∂γ | ∂β] over the minibatch: per shard, then in shard order.
            debug_assert_eq!(beta, gamma + d);
            let (g, xhat) = (&cx.grad[..b * d], &cx.aux[..b * d]);
            let range = gamma..gamma + 2 * d;
            affine_sums(cx.exec, b, (g, xhat), cx.grads, range, true);
        }
        let rows = cx.grad[..b * d]
            .chunks_exact(d)
            .zip(cx.aux[..b * d].chunks_exact(d))
            .zip(cx.stat[..b].iter());
        let mut dx = cx.grad_in.map(|dx| dx[..b * d].chunks_exact_mut(d));
        let df = d as f32;
        for ((gr, hr), &s) in rows {
            let mut su = 0.0f32;
            let mut suh = 0.0f32;
            for j in 0..d {
                let u = gr[j] * gb(j).0;
                su += u;
                suh += u * hr[j];
            }
            if let Some(dr) = dx.as_mut().and_then(|it| it.next()) {
                for j in 0..d {
                    let u = gr[j] * gb(j).0;
                    dr[j] = s / df * (df * u - su - hr[j] * suh);
                }
            }
        }
    }
}
