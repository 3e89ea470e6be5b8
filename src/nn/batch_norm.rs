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
//!
//! Declares `weight` (γ, ones) and `bias` (β, zeros) when affine, and the
//! buffers `running_mean` (zeros) and `running_var` (ones), each `[width]`, as
//! `nn.BatchNorm1d` names them. A file's `num_batches_tracked` is accepted and
//! ignored. Without affine (`affine=False`), γ = 1 and β = 0 are fixed and not
//! declared.

use crate::nn::layer::{
    affine_sums, contiguous, declare_affine, scale_shift, Backward, Buffers, Compiler, Fill,
    Forward, Layout, Op, Scratch, Store, Tensor,
};
use crate::nn::BuildError;

/// PyTorch's default ε.
pub const EPS: f32 = 1e-5;
/// PyTorch's default momentum for the running averages.
pub const MOMENTUM: f32 = 0.1;

/// Declares γ and β (if `affine`) and the running averages, and pushes the op.
pub(crate) fn compile(c: &mut Compiler, affine: bool) -> Result<(), BuildError> {
    let d = c.width;
    let affine = declare_affine(c, affine)?;
    let buffer = |name, fill| Tensor {
        name,
        shape: vec![d],
        store: Store::Buffer,
        layout: Layout::Plain,
        fill: Fill::Const(fill),
    };
    let mean = c.declare(buffer("running_mean", 0.0))?;
    let var = c.declare(buffer("running_var", 1.0))?;
    // PyTorch's step counter: nothing here uses it (momentum is fixed).
    c.ignore("num_batches_tracked");
    c.push(
        Box::new(BatchNorm {
            d,
            affine,
            mean,
            var,
        }),
        d,
    );
    Ok(())
}

/// A compiled BatchNorm layer: its width and where its tensors sit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchNorm {
    d: usize,
    /// Offsets of γ and β in the parameters, if learnt.
    affine: Option<(usize, usize)>,
    /// Offsets of the running mean and variance in the buffers.
    mean: usize,
    var: usize,
}

impl Op for BatchNorm {
    fn scratch(&self, width: usize) -> Scratch {
        // aux: x̂ (batch × d); stat: 1/√(σ² + ε), then the batch mean, then
        // (without affine) Σ g·x̂ and Σ g for backward, which has no ∂γ, ∂β
        // to hold them.
        let sums = if self.affine.is_some() { 0 } else { 2 * width };
        Scratch {
            aux: true,
            stat_fixed: 2 * width + sums,
            ..Scratch::default()
        }
    }

    fn needs_batch_statistics(&self) -> bool {
        true
    }

    fn forward(&self, cx: Forward<'_>) {
        let (b, d) = (cx.batch, self.d);
        let x = contiguous(&cx.input);
        let y = &mut cx.out[..b * d];
        let gb = scale_shift(self.affine, d, cx.params);
        let buffers = match cx.buffers {
            Buffers::Train(buffers) => buffers,
            Buffers::Eval(buffers) => {
                let rm = &buffers[self.mean..self.mean + d];
                let rv = &buffers[self.var..self.var + d];
                for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
                    for j in 0..d {
                        let (gamma, beta) = gb(j);
                        let s = gamma / (rv[j] + EPS).sqrt();
                        yr[j] = s * (xr[j] - rm[j]) + beta;
                    }
                }
                return;
            }
        };
        // The statistics are the whole minibatch's: over all its rows, or
        // per shard and then in shard order (across ranks for a part).
        let whole = cx.exec.cut(b).batch;
        assert!(
            whole >= 2,
            "batch_norm: training needs a batch of at least 2, got {whole}"
        );
        let xhat = &mut cx.aux[..b * d];
        let (inv_std, mean) = cx.stat[..2 * d].split_at_mut(d);
        let rows = |r: std::ops::Range<usize>| x[r.start * d..r.end * d].chunks_exact(d);
        cx.exec.run(b, [], Some(mean), |p| {
            let sum = p.partial.expect("batch_norm: Σx given");
            sum.fill(0.0);
            for row in rows(p.rows) {
                for (m, &v) in sum.iter_mut().zip(row) {
                    *m += v;
                }
            }
        });
        let inv_b = 1.0 / whole as f32;
        mean.iter_mut().for_each(|m| *m *= inv_b);
        let mean: &[f32] = mean;
        cx.exec.run(b, [], Some(inv_std), |p| {
            let sum = p.partial.expect("batch_norm: Σ(x − μ)² given");
            sum.fill(0.0);
            for row in rows(p.rows) {
                for ((s, &v), &m) in sum.iter_mut().zip(row).zip(mean) {
                    let c = v - m;
                    *s += c * c;
                }
            }
        });
        let unbias = whole as f32 / (whole as f32 - 1.0);
        let (rm, rv) = buffers.split_at_mut(self.var);
        let (rm, rv) = (&mut rm[self.mean..self.mean + d], &mut rv[..d]);
        for j in 0..d {
            let var = inv_std[j] * inv_b;
            rm[j] = (1.0 - MOMENTUM) * rm[j] + MOMENTUM * mean[j];
            rv[j] = (1.0 - MOMENTUM) * rv[j] + MOMENTUM * var * unbias;
            inv_std[j] = 1.0 / (var + EPS).sqrt();
        }
        for ((xr, yr), hr) in x
            .chunks_exact(d)
            .zip(y.chunks_exact_mut(d))
            .zip(xhat.chunks_exact_mut(d))
        {
            for j in 0..d {
                let (gamma, beta) = gb(j);
                let h = (xr[j] - mean[j]) * inv_std[j];
                hr[j] = h;
                yr[j] = gamma * h + beta;
            }
        }
    }

    /// From `g = ∂L/∂y`: `∂L/∂γ = Σ_i g·x̂`, `∂L/∂β = Σ_i g` (overwritten;
    /// formed in scratch without affine, where γ = 1) and,
    /// when the layer has an input to pass it to,
    /// `∂L/∂x = γ·inv_std/B · (B·g − Σ_i g − x̂·Σ_i g·x̂)`.
    fn backward(&self, cx: Backward<'_>) {
        let (b, d) = (cx.batch, self.d);
        let g = &cx.grad[..b * d];
        let xhat = &cx.aux[..b * d];
        let (inv_std, sums) = cx.stat.split_at_mut(2 * d);
        let inv_std = &inv_std[..d];
        let gb = scale_shift(self.affine, d, cx.params);
        // [∂γ | ∂β] (γ and β are declared one after the other), over the
        // whole minibatch as the statistics were.
        // Needed now (∂L/∂x uses them), so never deferred.
        let (dst, range) = match self.affine {
            Some((gamma, beta)) => {
                debug_assert_eq!(beta, gamma + d);
                (&mut cx.grads[..], gamma..gamma + 2 * d)
            }
            None => (&mut sums[..], 0..2 * d),
        };
        affine_sums(cx.exec, b, (g, xhat), dst, range, false);
        let (dgamma, dbeta) = match self.affine {
            Some((gamma, _)) => cx.grads[gamma..gamma + 2 * d].split_at(d),
            None => sums[..2 * d].split_at(d),
        };
        let Some(dx) = cx.grad_in else {
            return;
        };
        let bf = cx.exec.cut(b).batch as f32;
        for ((gr, hr), dr) in g
            .chunks_exact(d)
            .zip(xhat.chunks_exact(d))
            .zip(dx[..b * d].chunks_exact_mut(d))
        {
            for j in 0..d {
                let s = gb(j).0 * inv_std[j] / bf;
                dr[j] = s * (bf * gr[j] - dbeta[j] - hr[j] * dgamma[j]);
            }
        }
    }
}
