//! The activation layer `A = φ(Z)`, elementwise; no tensors.
//!
//! Right after a dense layer it is not an op of its own: the dense layer
//! absorbs it into its GEMM epilogue. Elsewhere (after a norm, at the start of
//! a residual block, after another activation) it runs as below, with the
//! vector code of the active ISA both ways.
//!
//! ```text
//! forward   A = φ(Z)
//! backward  ∂L/∂Z = ∂L/∂A ⊙ φ′, φ′ from A where the activation allows it, else from Z
//! ```

use crate::kernel::activation::{derivative_from_output_slice, derivative_slice, forward_slice};
use crate::kernel::{Activation, Isa};
use crate::nn::layer::contiguous;
use crate::nn::layer::{Backward, Compiler, Forward, Op};
use crate::nn::BuildError;

/// Pushes the op, unless the op before takes the activation into its own
/// epilogue (a dense layer without one).
pub(crate) fn compile(c: &mut Compiler, act: Activation) -> Result<(), BuildError> {
    if c.last_op().is_some_and(|op| op.absorb(act)) {
        return Ok(());
    }
    let width = c.width;
    c.push(Box::new(ActOp { act }), width);
    Ok(())
}

/// `g ⊙= φ′`, with φ′ computed from `src`: the outputs `A` when `from_output`
/// (only for activations with [`Activation::has_output_derivative`]), else
/// the pre-activations `Z`. Vector code of `isa`, in stack-sized chunks (no
/// allocation).
///
/// # Panics
/// If the lengths differ.
pub(crate) fn apply_derivative(
    isa: Isa,
    act: Activation,
    from_output: bool,
    src: &[f32],
    g: &mut [f32],
) {
    assert_eq!(
        src.len(),
        g.len(),
        "activation: φ′ source and gradient lengths differ"
    );
    const CHUNK: usize = 256;
    let mut d = [0.0f32; CHUNK];
    for (s, gc) in src.chunks(CHUNK).zip(g.chunks_mut(CHUNK)) {
        let d = &mut d[..s.len()];
        if from_output {
            derivative_from_output_slice(isa, act, s, d);
        } else {
            derivative_slice(isa, act, s, d);
        }
        for (x, y) in gc.iter_mut().zip(d.iter()) {
            *x *= y;
        }
    }
}

/// A compiled activation op.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActOp {
    act: Activation,
}

impl Op for ActOp {
    fn forward(&self, cx: Forward<'_>) {
        let src = contiguous(&cx.input);
        forward_slice(cx.isa, self.act, src, &mut cx.out[..src.len()]);
    }

    fn backward(&self, cx: Backward<'_>) {
        let Some(grad_in) = cx.grad_in else {
            return;
        };
        let n = cx.batch * cx.input.cols();
        let gin = &mut grad_in[..n];
        gin.copy_from_slice(&cx.grad[..n]);
        let from_output = self.act.has_output_derivative();
        let src = if from_output {
            &cx.out[..n]
        } else {
            contiguous(&cx.input)
        };
        apply_derivative(cx.isa, self.act, from_output, src, gin);
    }
}
