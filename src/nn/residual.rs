//! The residual block `y = x + f(x)`, `f` an inner list of layers that keeps
//! the width; no tensors of its own (the inner layers' are named
//! `{i}.inner.{j}.…`).
//!
//! It compiles to two ops around the inner ones: `Begin` passes `x` on (and
//! on the way back adds the skip's share), `End` adds `x` to `f(x)`.
//!
//! ```text
//! forward   y = x + f(x)
//! backward  ∂L/∂f(x) = ∂L/∂y,  ∂L/∂x = ∂L/∂(f's input) + ∂L/∂y
//! ```

use crate::nn::layer::contiguous;
use crate::nn::layer::{Backward, Compiler, Forward, Layer, Op};
use crate::nn::BuildError;

/// Pushes `Begin`, the inner layers, `End`.
///
/// # Errors
/// [`BuildError::ResidualWidth`] if the inner layers change the width, and
/// any error of an inner layer.
pub(crate) fn compile(c: &mut Compiler, inner: &[Layer]) -> Result<(), BuildError> {
    let (at, width) = (c.at, c.width);
    let begin = c.ops();
    c.push(Box::new(Begin { span: 0 }), width);
    c.nested("inner.", inner)?;
    if c.width != width {
        return Err(BuildError::ResidualWidth {
            layer: at,
            width,
            got: c.width,
        });
    }
    let end = c.ops();
    c.push(Box::new(End { begin }), width);
    c.set_op(begin, Box::new(Begin { span: end - begin }));
    Ok(())
}

/// The block's entry: `out = x`.
#[derive(Clone, Copy, Debug)]
struct Begin {
    /// Ops from here to the matching `End`.
    span: usize,
}

impl Op for Begin {
    fn forward(&self, cx: Forward<'_>) {
        let x = contiguous(&cx.input);
        cx.out[..x.len()].copy_from_slice(x);
    }

    fn backward(&self, cx: Backward<'_>) {
        let Some(gin) = cx.grad_in else {
            return;
        };
        // ∂L/∂x = ∂L/∂(f's input) + ∂L/∂y of the block (the skip), where
        // ∂L/∂y is the gradient of End's output.
        let n = cx.batch * cx.input.cols();
        let skip = &cx.later[self.span - 1][..n];
        for ((p, a), s) in gin[..n].iter_mut().zip(&cx.grad[..n]).zip(skip) {
            *p = a + s;
        }
    }
}

/// The block's exit: `out = f(x) + x`.
#[derive(Clone, Copy, Debug)]
struct End {
    /// Index of the matching `Begin` op (its input is `x`).
    begin: usize,
}

impl Op for End {
    fn forward(&self, cx: Forward<'_>) {
        let d = cx.input.cols();
        let n = cx.batch * d;
        let (earlier, x) = (cx.earlier, cx.x);
        let skip: &[f32] = match self.begin.checked_sub(1) {
            Some(j) => &earlier[j][..n],
            None => contiguous(&x),
        };
        let fx = contiguous(&cx.input);
        for ((o, f), s) in cx.out[..n].iter_mut().zip(fx).zip(skip) {
            *o = f + s;
        }
    }

    fn backward(&self, cx: Backward<'_>) {
        // ∂L/∂f(x) = ∂L/∂y; the skip's share is added at Begin.
        if let Some(gin) = cx.grad_in {
            let n = cx.batch * cx.input.cols();
            gin[..n].copy_from_slice(&cx.grad[..n]);
        }
    }
}
