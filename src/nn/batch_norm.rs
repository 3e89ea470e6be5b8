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
//! Declares `weight` (γ, ones), `bias` (β, zeros), and the buffers
//! `running_mean` (zeros) and `running_var` (ones), each `[width]`, as
//! `nn.BatchNorm1d` names them. A file's `num_batches_tracked` is accepted and
//! ignored.

use crate::nn::layer::contiguous;
use crate::nn::layer::{
    Backward, Buffers, Compiler, Fill, Forward, Layout, Op, Scratch, Store, Tensor,
};
use crate::nn::BuildError;

/// PyTorch's default ε.
pub const EPS: f32 = 1e-5;
/// PyTorch's default momentum for the running averages.
pub const MOMENTUM: f32 = 0.1;

/// Declares γ, β and the running averages, and pushes the op.
pub(crate) fn compile(c: &mut Compiler) -> Result<(), BuildError> {
    let d = c.width;
    let vector = |name, store, fill| Tensor {
        name,
        shape: vec![d],
        store,
        layout: Layout::Plain,
        fill: Fill::Const(fill),
    };
    let gamma = c.declare(vector("weight", Store::Param, 1.0))?;
    let beta = c.declare(vector("bias", Store::Param, 0.0))?;
    let mean = c.declare(vector("running_mean", Store::Buffer, 0.0))?;
    let var = c.declare(vector("running_var", Store::Buffer, 1.0))?;
    // PyTorch's step counter: nothing here uses it (momentum is fixed).
    c.ignore("num_batches_tracked");
    c.push(
        Box::new(BatchNorm {
            d,
            gamma,
            beta,
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
    /// Offsets of γ and β in the parameters.
    gamma: usize,
    beta: usize,
    /// Offsets of the running mean and variance in the buffers.
    mean: usize,
    var: usize,
}

impl Op for BatchNorm {
    fn scratch(&self, width: usize) -> Scratch {
        // aux: x̂ (batch × d); stat: 1/√(σ² + ε), then the batch mean.
        Scratch {
            aux: true,
            stat_fixed: 2 * width,
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
        let gamma = &cx.params[self.gamma..self.gamma + d];
        let beta = &cx.params[self.beta..self.beta + d];
        let buffers = match cx.buffers {
            Buffers::Train(buffers) => buffers,
            Buffers::Eval(buffers) => {
                let rm = &buffers[self.mean..self.mean + d];
                let rv = &buffers[self.var..self.var + d];
                for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
                    for j in 0..d {
                        let s = gamma[j] / (rv[j] + EPS).sqrt();
                        yr[j] = s * (xr[j] - rm[j]) + beta[j];
                    }
                }
                return;
            }
        };
        assert!(
            b >= 2,
            "batch_norm: training needs a batch of at least 2, got {b}"
        );
        let xhat = &mut cx.aux[..b * d];
        let (inv_std, mean) = cx.stat[..2 * d].split_at_mut(d);
        mean.fill(0.0);
        for row in x.chunks_exact(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        let inv_b = 1.0 / b as f32;
        mean.iter_mut().for_each(|m| *m *= inv_b);
        inv_std.fill(0.0);
        for row in x.chunks_exact(d) {
            for ((s, &v), &m) in inv_std.iter_mut().zip(row).zip(mean.iter()) {
                let c = v - m;
                *s += c * c;
            }
        }
        let unbias = b as f32 / (b as f32 - 1.0);
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
                let h = (xr[j] - mean[j]) * inv_std[j];
                hr[j] = h;
                yr[j] = gamma[j] * h + beta[j];
            }
        }
    }

    /// From `g = ∂L/∂y`: `∂L/∂γ = Σ_i g·x̂`, `∂L/∂β = Σ_i g` (overwritten) and,
    /// when the layer has an input to pass it to,
    /// `∂L/∂x = γ·inv_std/B · (B·g − Σ_i g − x̂·Σ_i g·x̂)`.
    fn backward(&self, cx: Backward<'_>) {
        let (b, d) = (cx.batch, self.d);
        let g = &cx.grad[..b * d];
        let xhat = &cx.aux[..b * d];
        let inv_std = &cx.stat[..d];
        let gamma = &cx.params[self.gamma..self.gamma + d];
        let (dgamma, dbeta) = cx.grads[self.gamma..].split_at_mut(self.beta - self.gamma);
        let (dgamma, dbeta) = (&mut dgamma[..d], &mut dbeta[..d]);
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        for (gr, hr) in g.chunks_exact(d).zip(xhat.chunks_exact(d)) {
            for j in 0..d {
                dbeta[j] += gr[j];
                dgamma[j] += gr[j] * hr[j];
            }
        }
        let Some(dx) = cx.grad_in else {
            return;
        };
        let bf = b as f32;
        for ((gr, hr), dr) in g
            .chunks_exact(d)
            .zip(xhat.chunks_exact(d))
            .zip(dx[..b * d].chunks_exact_mut(d))
        {
            for j in 0..d {
                let s = gamma[j] * inv_std[j] / bf;
                dr[j] = s * (bf * gr[j] - dbeta[j] - hr[j] * dgamma[j]);
            }
        }
    }
}
