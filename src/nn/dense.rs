//! The dense layer `Z = X·W + b`, `A = φ(Z)` with the activation that follows
//! it fused into the GEMM epilogue.
//!
//! Declares `weight` (`nn.Linear`'s `[out, in]`, held as `W`, `fan_in ×
//! fan_out` row-major, drawn by the layer's [`Init`]) and, unless the layer
//! has none, `bias` (`[out]`, zeros).
//!
//! Without a bias, `b` is absent from every line below: the epilogue adds
//! nothing and no `∂b` is formed.
//!
//! ```text
//! forward   Z = X·W + b,  A = φ(Z)                       X: batch × fan_in, W: fan_in × fan_out
//! backward  δ = ∂L/∂A ⊙ φ′(Z)  (unless the layer above formed it),
//!           ∂W = Xᵀ·δ,  ∂b = Σ_rows δ,
//!           ∂L/∂X = δ·Wᵀ, or, when the layer below is dense too, its
//!           δ = (δ·Wᵀ) ⊙ φ′ and its ∂b in the same GEMM (the fused δ step).
//! ```

use crate::gemm::{
    backward_delta, dense_forward, gemm_with, weight_grad, Accum, ActInput, BiasGrad,
};
use crate::kernel::Activation;
use crate::matrix::{MatMut, MatRef};
use crate::nn::activation::apply_derivative;
use crate::nn::layer::{
    Backward, Compiler, DeltaTarget, Fill, Forward, Layout, Op, Scratch, Store, Tensor,
};
use crate::nn::{BuildError, Init};

/// Declares the tensors and pushes the op.
pub(crate) fn compile(
    c: &mut Compiler,
    units: usize,
    init: Init,
    bias: bool,
) -> Result<(), BuildError> {
    if units == 0 {
        return Err(BuildError::ZeroWidth { layer: c.at });
    }
    let (fan_in, fan_out) = (c.width, units);
    let w = c.declare(Tensor {
        name: "weight",
        shape: vec![fan_out, fan_in],
        store: Store::Param,
        layout: Layout::Transposed { fan_in, fan_out },
        fill: Fill::Draw(init, fan_in, fan_out),
    })?;
    let b = if bias {
        Some(c.declare(Tensor {
            name: "bias",
            shape: vec![fan_out],
            store: Store::Param,
            layout: Layout::Plain,
            fill: Fill::Const(0.0),
        })?)
    } else {
        None
    };
    let op = Dense {
        fan_in,
        fan_out,
        w,
        b,
        act: Activation::Identity,
    };
    c.push(Box::new(op), fan_out);
    Ok(())
}

/// A compiled dense layer.
#[derive(Clone, Debug)]
pub(crate) struct Dense {
    pub fan_in: usize,
    pub fan_out: usize,
    /// Offset of `W` (`fan_in × fan_out`).
    pub w: usize,
    /// Offset of `b` (`fan_out`), if the layer has a bias.
    pub b: Option<usize>,
    /// Activation in the epilogue (identity if none followed).
    pub act: Activation,
}

impl Dense {
    fn weights<'p>(&self, params: &'p [f32]) -> MatRef<'p> {
        MatRef::from_slice(
            &params[self.w..self.w + self.fan_in * self.fan_out],
            self.fan_in,
            self.fan_out,
        )
    }
    /// `b`'s range in the arena, if the layer has a bias.
    fn bias_range(&self) -> Option<std::ops::Range<usize>> {
        self.b.map(|b| b..b + self.fan_out)
    }
    /// Whether φ′ needs the pre-activation Z (kept in `aux`).
    fn keeps_z(&self) -> bool {
        !self.act.has_output_derivative()
    }
}

impl Op for Dense {
    fn reads_strided_input(&self) -> bool {
        true
    }
    fn scratch(&self, _width: usize) -> Scratch {
        Scratch {
            aux: self.keeps_z(),
            ..Scratch::default()
        }
    }

    fn absorb(&mut self, act: Activation) -> bool {
        if self.act != Activation::Identity {
            return false;
        }
        self.act = act;
        true
    }

    fn delta_target(&self) -> Option<DeltaTarget> {
        Some(DeltaTarget {
            act: self.act,
            bias: self.b.map(|b| (b, self.fan_out)),
        })
    }

    fn forms_input_delta(&self) -> bool {
        true
    }

    fn forward(&self, cx: Forward<'_>) {
        let (d, fan_in) = (self.fan_out, self.fan_in);
        let wv = self.weights(cx.params);
        let bias = self.bias_range().map(|r| &cx.params[r]);
        let pre = self.keeps_z().then_some((cx.aux, d));
        let (input, act) = (cx.input, self.act);
        cx.exec.run(cx.batch, [Some((cx.out, d)), pre], None, |p| {
            let rows = p.rows.len();
            let [out, z] = p.outs;
            let xin = input.submatrix(p.rows.start, 0, rows, fan_in);
            let out = MatMut::from_slice_mut(out.expect("dense: output given"), rows, d);
            let z = z.map(|z| MatMut::from_slice_mut(z, rows, d));
            dense_forward(&p.options, xin, wv, bias, act, out, z);
        });
    }

    fn backward(&self, cx: Backward<'_>) {
        let (batch, fan_in, fan_out) = (cx.batch, self.fan_in, self.fan_out);
        let g = &mut cx.grad[..batch * fan_out];
        let fused_from_above = cx.output_op.is_some_and(|o| o.forms_input_delta());
        if !fused_from_above {
            // δ = ∂L/∂A ⊙ φ′ and ∂b = Σ_rows δ, unfused.
            if self.act != Activation::Identity {
                let src = if self.keeps_z() { cx.aux } else { cx.out };
                apply_derivative(cx.isa, self.act, !self.keeps_z(), &src[..g.len()], g);
            }
        }
        let g: &[f32] = g;
        if let (false, Some(r)) = (fused_from_above, self.bias_range()) {
            // Per shard, then in shard order (one sum in split-GEMM mode).
            cx.exec.run_grad(batch, [], cx.grads, Some(r), |p| {
                let db = p.partial.expect("dense: ∂b given");
                db.fill(0.0);
                for row in g[p.rows.start * fan_out..p.rows.end * fan_out].chunks_exact(fan_out) {
                    for (s, v) in db.iter_mut().zip(row) {
                        *s += v;
                    }
                }
            });
        }
        let dz = MatRef::from_slice(g, batch, fan_out);
        let xin = cx.input;
        let dw = self.w..self.w + fan_in * fan_out;
        cx.exec.run_grad(batch, [], cx.grads, Some(dw), |p| {
            let rows = p.rows.len();
            let xs = xin.submatrix(p.rows.start, 0, rows, fan_in);
            let ds = dz.submatrix(p.rows.start, 0, rows, fan_out);
            let dwv = MatMut::from_slice_mut(p.partial.expect("dense: ∂W given"), fan_in, fan_out);
            weight_grad(&p.options, xs, ds, dwv, Accum::Replace);
        });
        let Some(grad_in) = cx.grad_in else {
            return;
        };
        let wv = self.weights(cx.params);
        let out = Some((grad_in, fan_in));
        match cx.input_op.and_then(|o| o.delta_target()) {
            Some(t) => {
                // The δ step: the layer below's δ and ∂b in one pass.
                let src = if t.act.has_output_derivative() {
                    ActInput::Output(xin)
                } else {
                    ActInput::PreActivation(MatRef::from_slice(
                        &cx.input_aux[..batch * fan_in],
                        batch,
                        fan_in,
                    ))
                };
                let db = t.bias.map(|(b, n)| b..b + n);
                cx.exec.run_grad(batch, [out], cx.grads, db, |p| {
                    let (r0, rows) = (p.rows.start, p.rows.len());
                    let [gin] = p.outs;
                    let src = match src {
                        ActInput::Output(a) => ActInput::Output(a.submatrix(r0, 0, rows, fan_in)),
                        ActInput::PreActivation(z) => {
                            ActInput::PreActivation(z.submatrix(r0, 0, rows, fan_in))
                        }
                    };
                    let bg = p.partial.map(|out| BiasGrad {
                        out,
                        accum: Accum::Replace,
                    });
                    let ds = dz.submatrix(r0, 0, rows, fan_out);
                    let gv = MatMut::from_slice_mut(gin.expect("dense: δ given"), rows, fan_in);
                    backward_delta(&p.options, ds, wv, t.act, src, gv, bg);
                });
            }
            None => cx.exec.run(batch, [out], None, |p| {
                let (r0, rows) = (p.rows.start, p.rows.len());
                let [gin] = p.outs;
                let ds = dz.submatrix(r0, 0, rows, fan_out);
                let gv = MatMut::from_slice_mut(gin.expect("dense: ∂L/∂X given"), rows, fan_in);
                gemm_with(&p.options, 1.0, ds, wv.t(), 0.0, gv);
            }),
        }
    }
}
