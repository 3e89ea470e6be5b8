//! Dropout, `nn.Dropout(p)`: in training each element is kept with
//! probability 1 − p and scaled by 1/(1 − p), else zeroed; in evaluation the
//! identity. No tensors.
//!
//! The mask is not drawn from a stream: element `(r, c)` of the batch is
//! kept or not by a hash of the pass's noise key, the op's position and the
//! element's index. So it does not depend on how rows are spread over
//! threads or shards (bitwise the same for any thread count), and a run
//! resumed from a checkpoint draws the masks an uninterrupted run would (the
//! trainer derives the key from its seed and step).
//!
//! ```text
//! forward   Y = X ⊙ M,  M[r, c] = 1/(1 − p) if kept, else 0   (training)
//!           Y = X                                            (evaluation)
//! backward  ∂L/∂X = ∂L/∂Y ⊙ M
//! ```

use crate::nn::layer::{contiguous, Backward, Buffers, Compiler, Forward, Op, Scratch};
use crate::nn::BuildError;

/// Pushes the op after checking `p`.
pub(crate) fn compile(c: &mut Compiler, p: f32) -> Result<(), BuildError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(BuildError::DropoutProbability { layer: c.at, p });
    }
    let width = c.width;
    let salt = salt(c.path());
    c.push(Box::new(Dropout { p, salt }), width);
    Ok(())
}

/// A compiled dropout op.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dropout {
    /// Probability of zeroing an element.
    p: f32,
    /// A hash of the layer's path, mixed into its masks so two dropout
    /// layers draw different ones.
    salt: u64,
}

/// The salt of the dropout layer at `path` (`"3."`, `"1.inner.2."`): its
/// 64-bit FNV-1a hash.
pub(crate) fn salt(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The noise key of a training pass: `seed` and the pass's `step`, mixed.
pub(crate) fn noise_key(seed: u64, step: u64) -> u64 {
    mix(mix(seed) ^ step)
}

/// SplitMix64's finaliser: a bijection of `u64` that mixes every bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The mask value of element `index` of a pass with noise key `key` in the
/// dropout op `salt` with drop probability `p`: 1/(1 − p) or 0. The
/// decision takes the top 24 bits of a hash as a uniform draw `u` in
/// [0, 1) and keeps the element when `u ≥ p`.
pub(crate) fn mask(key: u64, salt: u64, index: u64, p: f32) -> f32 {
    if p >= 1.0 {
        return 0.0;
    }
    let h = mix(mix(key ^ mix(salt)) ^ index);
    let u = (h >> 40) as f32 * (1.0 / 16_777_216.0);
    if u >= p {
        1.0 / (1.0 - p)
    } else {
        0.0
    }
}

impl Op for Dropout {
    fn scratch(&self, _width: usize) -> Scratch {
        Scratch {
            aux: true,
            ..Scratch::default()
        }
    }

    fn forward(&self, cx: Forward<'_>) {
        let x = contiguous(&cx.input);
        let y = &mut cx.out[..x.len()];
        if matches!(cx.buffers, Buffers::Eval(_)) || self.p == 0.0 {
            y.copy_from_slice(x);
            cx.aux[..x.len()].fill(1.0);
            return;
        }
        let m = &mut cx.aux[..x.len()];
        // Elements are numbered over the whole minibatch (this rank's rows
        // start at its first row), so a mask never depends on the ranks.
        let first = (cx.exec.cut(cx.batch).first_row() * cx.input.cols()) as u64;
        for (i, ((yi, &xi), mi)) in y.iter_mut().zip(x).zip(m.iter_mut()).enumerate() {
            *mi = mask(cx.noise, self.salt, first + i as u64, self.p);
            *yi = xi * *mi;
        }
    }

    fn backward(&self, cx: Backward<'_>) {
        let Some(grad_in) = cx.grad_in else {
            return;
        };
        let n = cx.batch * cx.input.cols();
        for ((gi, &g), &m) in grad_in[..n].iter_mut().zip(&cx.grad[..n]).zip(&cx.aux[..n]) {
            *gi = g * m;
        }
    }
}
