//! Activation functions φ and their derivatives φ′: the scalar definitions and
//! the vectorised versions the GEMM epilogues run while a tile is in registers.
//!
//! The vector code is written once, generic over `Simd`, from a handful of
//! primitives (range-reduced `exp`, an `atanh` series for `log1p`). Accuracy
//! against `f64`: a few ulp for ReLU-family, ≤ 2·10⁻⁷ absolute for tanh, sigmoid,
//! softplus and GELU, which is below the rounding noise of the GEMM feeding them.
//!
//! # NaN policy
//! Every activation and every derivative maps a NaN input to NaN (the NaN is
//! propagated, never squashed to 0 or 1), so a diverging run shows up in the
//! loss instead of being hidden by a ReLU. ±∞ behave as the limits of the
//! formulas: `relu(+∞) = +∞`, `tanh(±∞) = ±1`, `sigmoid(−∞) = 0`, `softplus(+∞) = +∞`,
//! and every derivative is finite at ±∞ (0, 1 or the leaky slope).

use super::Simd;

/// An elementwise activation function φ.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Activation {
    /// φ(z) = z.
    #[default]
    Identity,
    /// φ(z) = max(z, 0); φ′(0) = 0.
    Relu,
    /// φ(z) = z for z > 0, `slope`·z otherwise; φ′(0) = `slope`.
    LeakyRelu {
        /// Slope for negative inputs (0.01 is common).
        slope: f32,
    },
    /// φ(z) = tanh z.
    Tanh,
    /// φ(z) = 1 / (1 + e^(−z)).
    Sigmoid,
    /// GELU in its **tanh form** (as PyTorch's `nn.GELU(approximate='tanh')`):
    /// φ(z) = ½·z·(1 + tanh(√(2/π)·(z + 0.044715·z³))).
    Gelu,
    /// GELU in its **exact form** (PyTorch's default `nn.GELU()`):
    /// φ(z) = z·Φ(z) = ½·z·(1 + erf(z/√2)), Φ the standard normal CDF;
    /// φ′(z) = Φ(z) + z·e^(−z²/2)/√(2π). It differs from [`Activation::Gelu`]
    /// by up to ~5·10⁻⁴, so a network trained with one should be run with it.
    GeluErf,
    /// φ(z) = ln(1 + e^z), computed as max(z, 0) + ln(1 + e^(−|z|)).
    Softplus,
}

const GELU_C: f32 = 0.797_884_6; // √(2/π)
const GELU_A: f32 = 0.044_715;

impl Activation {
    /// A short lowercase name (`relu`, `leaky_relu`, `tanh`, …).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Gelu => "gelu",
            Activation::GeluErf => "gelu_erf",
            Activation::Softplus => "softplus",
        }
    }

    /// φ(z), scalar.
    ///
    /// ```
    /// use backprop::nn::Activation;
    /// assert_eq!(Activation::Relu.f(-2.0), 0.0);
    /// assert!((Activation::Sigmoid.f(0.0) - 0.5).abs() < 1e-7);
    /// assert!(Activation::Tanh.f(f32::NAN).is_nan());
    /// ```
    pub fn f(self, z: f32) -> f32 {
        match self {
            Activation::Identity => z,
            Activation::Relu => {
                if z < 0.0 {
                    0.0
                } else {
                    z
                }
            }
            Activation::LeakyRelu { slope } => {
                if z < 0.0 {
                    slope * z
                } else {
                    z
                }
            }
            Activation::Tanh => z.tanh(),
            Activation::Sigmoid => sigmoid(z),
            // ½(1 + tanh u) = σ(2u): no cancellation where tanh u ≈ −1.
            Activation::Gelu => z * sigmoid(2.0 * GELU_C * (z + GELU_A * z * z * z)),
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

    /// φ′(z) from the pre-activation z, scalar.
    ///
    /// ```
    /// use backprop::nn::Activation;
    /// assert_eq!(Activation::Relu.df(3.0), 1.0);
    /// assert_eq!(Activation::Relu.df(0.0), 0.0);
    /// assert_eq!(Activation::LeakyRelu { slope: 0.1 }.df(-1.0), 0.1);
    /// ```
    pub fn df(self, z: f32) -> f32 {
        if z.is_nan() {
            return z;
        }
        match self {
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
                    slope
                }
            }
            Activation::Tanh => {
                let t = z.tanh();
                1.0 - t * t
            }
            Activation::Sigmoid => {
                let s = sigmoid(z);
                s * (1.0 - s)
            }
            Activation::Gelu => {
                // With s = σ(2u) = ½(1 + tanh u): φ′ = s + z·2s(1 − s)·u′.
                let s = sigmoid(2.0 * GELU_C * (z + GELU_A * z * z * z));
                // s(1 − s) is 0 beyond |z| = 20; clamping avoids ∞·0 there.
                let zc = z.clamp(-20.0, 20.0);
                s + zc * 2.0 * s * (1.0 - s) * GELU_C * (1.0 + 3.0 * GELU_A * zc * zc)
            }
            Activation::GeluErf => {
                // The density term is 0 beyond |z| = 20 (e^(−200) underflows).
                let zc = z.clamp(-20.0, 20.0);
                normal_cdf(z) + zc * (-0.5 * zc * zc).exp() * INV_SQRT_2PI
            }
            Activation::Softplus => sigmoid(z),
        }
    }

    /// Whether φ′ can be computed from the output a = φ(z) alone
    /// ([`Activation::df_from_output`]), so the pre-activation need not be kept:
    /// identity, ReLU, leaky ReLU with a positive slope, tanh, sigmoid.
    pub fn has_output_derivative(self) -> bool {
        match self {
            Activation::Identity | Activation::Relu | Activation::Tanh | Activation::Sigmoid => {
                true
            }
            Activation::LeakyRelu { slope } => slope > 0.0,
            Activation::Gelu | Activation::GeluErf | Activation::Softplus => false,
        }
    }

    /// φ′ expressed through the output a = φ(z): ReLU 1\[a > 0\], leaky ReLU
    /// 1 or slope by the sign of a, tanh 1 − a², sigmoid a(1 − a). `None` for the
    /// activations where [`Activation::has_output_derivative`] is false.
    pub fn df_from_output(self, a: f32) -> Option<f32> {
        if !self.has_output_derivative() {
            return None;
        }
        if a.is_nan() {
            return Some(a);
        }
        Some(match self {
            Activation::Identity => 1.0,
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu { slope } => {
                if a > 0.0 {
                    1.0
                } else {
                    slope
                }
            }
            Activation::Tanh => 1.0 - a * a,
            Activation::Sigmoid => a * (1.0 - a),
            Activation::Gelu | Activation::GeluErf | Activation::Softplus => {
                unreachable!("checked above")
            }
        })
    }
}

/// 1/√(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// The coefficients of erfc's rational-exponential form (below), highest
/// power of t first.
const ERFC_P: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_204,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_7,
    -1.265_512_2,
];

/// erfc(w) for w ≥ 0 as t·e^(−w² + P(t)), t = 1/(1 + w/2), P of degree 9
/// (the Chebyshev fit in Press et al., *Numerical Recipes*, §6.2): relative
/// error below 1.2·10⁻⁷ for every w ≥ 0, so Φ keeps its relative accuracy
/// in the far tail, where 1 + erf would cancel.
fn erfc_nonneg(w: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * w);
    let p = ERFC_P[1..].iter().fold(ERFC_P[0], |p, &c| p * t + c);
    t * (p - w * w).exp()
}

/// Φ(z), the standard normal CDF: ½·erfc(|z|/√2) for z < 0, 1 − that for
/// z ≥ 0. NaN stays NaN.
fn normal_cdf(z: f32) -> f32 {
    let e = 0.5 * erfc_nonneg(z.abs() * std::f32::consts::FRAC_1_SQRT_2);
    if z < 0.0 {
        e
    } else if z.is_nan() {
        z
    } else {
        1.0 - e
    }
}

/// 1 / (1 + e^(−z)) without overflow warnings for large |z|.
fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

// ---------------------------------------------------------------------------
// Vector math, generic over the ISA.

/// e^x for x clamped to [−87.3, 87.3] (so 2ⁿ stays a normal float), by
/// x = n·ln 2 + r with |r| ≤ ln2/2 and a degree-7 Taylor polynomial of e^r
/// (truncation error < 6·10⁻⁹ relative). NaN lanes give an unspecified value;
/// callers patch them.
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    let x = s.min(s.max(x, s.splat(-87.3)), s.splat(87.3));
    let n = s.round(s.mul(x, s.splat(std::f32::consts::LOG2_E)));
    // ln 2 split in two so n·ln2_hi is exact: r = x − n·ln 2 to ~1 ulp.
    let r = s.fmadd(n, s.splat(-0.693_359_4), x);
    let r = s.fmadd(n, s.splat(2.121_944_4e-4), r);
    let mut p = s.splat(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = s.fmadd(p, r, s.splat(c));
    }
    s.mul(p, s.pow2i(n))
}

/// ln(1 + y) for y in [0, 1], as 2·atanh(t) with t = y / (2 + y) ∈ [0, 1/3]:
/// the odd series 2t·Σ t²ᵏ/(2k + 1) to k = 7 (error < 2·10⁻⁹ relative), exact
/// in relative terms for tiny y (no 1 + y rounding).
#[inline(always)]
fn log1p_unit<S: Simd>(s: S, y: S::V) -> S::V {
    let t = s.div(y, s.add(s.splat(2.0), y));
    let t2 = s.mul(t, t);
    let mut p = s.splat(1.0 / 15.0);
    for c in [
        1.0 / 13.0,
        1.0 / 11.0,
        1.0 / 9.0,
        1.0 / 7.0,
        1.0 / 5.0,
        1.0 / 3.0,
        1.0,
    ] {
        p = s.fmadd(p, t2, s.splat(c));
    }
    s.mul(s.add(t, t), p)
}

/// tanh x: (1 − e)/(1 + e) with e = e^(−2|x|) and the sign restored; below
/// |x| = 1/16 the odd Taylor polynomial to x⁷ avoids the cancellation in 1 − e.
#[inline(always)]
fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let a = s.abs(x);
    let e = exp(s, s.mul(a, s.splat(-2.0)));
    let one = s.splat(1.0);
    let big = s.div(s.sub(one, e), s.add(one, e));
    let a2 = s.mul(a, a);
    let mut p = s.splat(-17.0 / 315.0);
    for c in [2.0 / 15.0, -1.0 / 3.0, 1.0] {
        p = s.fmadd(p, a2, s.splat(c));
    }
    let small = s.mul(a, p);
    let t = s.select(s.lt(a, s.splat(0.0625)), small, big);
    s.select(s.lt(x, s.splat(0.0)), s.sub(s.splat(0.0), t), t)
}

/// Φ(z) on one vector (see the scalar `normal_cdf`). NaN lanes give an
/// unspecified value; callers patch them.
#[inline(always)]
fn normal_cdf_v<S: Simd>(s: S, z: S::V) -> S::V {
    let one = s.splat(1.0);
    let w = s.mul(s.abs(z), s.splat(std::f32::consts::FRAC_1_SQRT_2));
    let t = s.div(one, s.fmadd(s.splat(0.5), w, one));
    let mut p = s.splat(ERFC_P[0]);
    for &c in &ERFC_P[1..] {
        p = s.fmadd(p, t, s.splat(c));
    }
    let e = s.mul(s.splat(0.5), s.mul(t, exp(s, s.sub(p, s.mul(w, w)))));
    s.select(s.lt(z, s.splat(0.0)), e, s.sub(one, e))
}

/// 1 / (1 + e^(−x)); saturates to ~1e−38 and 1 at the ends.
#[inline(always)]
fn sigmoid_v<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    s.div(one, s.add(one, exp(s, s.sub(s.splat(0.0), x))))
}

/// Patches NaN lanes of `x` into `y` (the NaN policy).
#[inline(always)]
fn keep_nan<S: Simd>(s: S, x: S::V, y: S::V) -> S::V {
    s.select(s.is_nan(x), x, y)
}

/// φ(z) on one vector.
#[inline(always)]
pub(crate) fn forward<S: Simd>(s: S, act: Activation, z: S::V) -> S::V {
    let zero = s.splat(0.0);
    match act {
        Activation::Identity => z,
        // `z < 0 ? 0 : z` keeps NaN (the comparison is false for NaN).
        Activation::Relu => s.select(s.lt(z, zero), zero, z),
        Activation::LeakyRelu { slope } => s.select(s.lt(z, zero), s.mul(s.splat(slope), z), z),
        Activation::Tanh => keep_nan(s, z, tanh(s, z)),
        Activation::Sigmoid => keep_nan(s, z, sigmoid_v(s, z)),
        Activation::Gelu => {
            // z·½(1 + tanh u) = z·σ(2u), without the cancellation of 1 + t.
            let z2 = s.mul(z, z);
            let inner = s.fmadd(s.mul(s.splat(GELU_A), z2), z, z);
            let sg = sigmoid_v(s, s.mul(s.splat(2.0 * GELU_C), inner));
            keep_nan(s, z, s.mul(z, sg))
        }
        Activation::GeluErf => keep_nan(s, z, s.mul(z, normal_cdf_v(s, z))),
        Activation::Softplus => {
            let pos = s.select(s.gt(z, zero), z, zero);
            let e = exp(s, s.sub(zero, s.abs(z)));
            keep_nan(s, z, s.add(pos, log1p_unit(s, e)))
        }
    }
}

/// φ′(z) on one vector, from the pre-activation.
#[inline(always)]
pub(crate) fn derivative<S: Simd>(s: S, act: Activation, z: S::V) -> S::V {
    let zero = s.splat(0.0);
    let one = s.splat(1.0);
    let d = match act {
        Activation::Identity => one,
        Activation::Relu => s.select(s.gt(z, zero), one, zero),
        Activation::LeakyRelu { slope } => s.select(s.gt(z, zero), one, s.splat(slope)),
        Activation::Tanh => {
            let t = tanh(s, z);
            s.sub(one, s.mul(t, t))
        }
        Activation::Sigmoid => {
            let sg = sigmoid_v(s, z);
            s.mul(sg, s.sub(one, sg))
        }
        Activation::Gelu => {
            // sg = σ(2u) = ½(1 + tanh u); φ′ = sg + z·2sg(1 − sg)·u′, u′ = c(1 + 3a·z²).
            let z2 = s.mul(z, z);
            let inner = s.fmadd(s.mul(s.splat(GELU_A), z2), z, z);
            let sg = sigmoid_v(s, s.mul(s.splat(2.0 * GELU_C), inner));
            // Beyond |z| = 20, sg(1 − sg) is 0 in f32; clamping keeps z·u′ finite
            // there so the second term is 0, not ∞·0.
            let zc = s.min(s.max(z, s.splat(-20.0)), s.splat(20.0));
            let zc2 = s.mul(zc, zc);
            let three_a = s.splat(3.0 * GELU_A);
            let du2 = s.mul(s.splat(2.0 * GELU_C), s.fmadd(three_a, zc2, one));
            s.fmadd(s.mul(s.mul(zc, sg), s.sub(one, sg)), du2, sg)
        }
        Activation::GeluErf => {
            // Φ(z) + z·e^(−z²/2)/√(2π), z clamped as in the scalar form.
            let zc = s.min(s.max(z, s.splat(-20.0)), s.splat(20.0));
            let density = exp(s, s.mul(s.splat(-0.5), s.mul(zc, zc)));
            s.fmadd(
                s.mul(zc, density),
                s.splat(INV_SQRT_2PI),
                normal_cdf_v(s, z),
            )
        }
        Activation::Softplus => sigmoid_v(s, z),
    };
    keep_nan(s, z, d)
}

/// φ′ on one vector, from the output a = φ(z); only for activations with
/// [`Activation::has_output_derivative`] (others fall back to the identity's 1,
/// which the safe API never lets happen).
#[inline(always)]
pub(crate) fn derivative_from_output<S: Simd>(s: S, act: Activation, a: S::V) -> S::V {
    let zero = s.splat(0.0);
    let one = s.splat(1.0);
    let d = match act {
        Activation::Relu => s.select(s.gt(a, zero), one, zero),
        Activation::LeakyRelu { slope } => s.select(s.gt(a, zero), one, s.splat(slope)),
        Activation::Tanh => s.sub(one, s.mul(a, a)),
        Activation::Sigmoid => s.mul(a, s.sub(one, a)),
        _ => one,
    };
    keep_nan(s, a, d)
}

/// Applies φ (or φ′) to a slice, one vector at a time.
struct Map<'a> {
    act: Activation,
    mode: Mode,
    input: &'a [f32],
    out: &'a mut [f32],
}

#[derive(Clone, Copy)]
enum Mode {
    Forward,
    Derivative,
    DerivativeFromOutput,
}

impl super::KernelOp for Map<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd, const MR: usize, const NV: usize>(self, s: S, _: &super::Blocking) {
        // No requirement (`run` is unsafe for the GEMM ops): the map holds
        // slices, and the lengths are checked here (`map` checked them already,
        // with a message). The tail buffer below holds one vector.
        const { assert!(S::LANES <= 16) };
        let n = self.input.len();
        assert_eq!(self.out.len(), n);
        let full = n - n % S::LANES;
        for i in (0..full).step_by(S::LANES) {
            // SAFETY: i + LANES ≤ full ≤ n = input.len().
            let x = unsafe { s.load(self.input.as_ptr().add(i)) };
            let y = apply(s, self.act, self.mode, x);
            // SAFETY: as above; `out` has the same length as `input`.
            unsafe { s.store(self.out.as_mut_ptr().add(i), y) };
        }
        if full < n {
            // The tail through a zero-padded local buffer.
            let mut buf = [0f32; 16];
            buf[..n - full].copy_from_slice(&self.input[full..]);
            // SAFETY: `buf` holds 16 ≥ LANES floats.
            let x = unsafe { s.load(buf.as_ptr()) };
            let y = apply(s, self.act, self.mode, x);
            // SAFETY: as above.
            unsafe { s.store(buf.as_mut_ptr(), y) };
            self.out[full..].copy_from_slice(&buf[..n - full]);
        }
    }
}

/// φ, φ′ or φ′ from the output of one vector, as `mode` says. A function, not
/// a closure: closures do not inherit the caller's `#[target_feature]`s, and
/// the vector code would be compiled as out-of-line calls.
#[inline(always)]
fn apply<S: Simd>(s: S, act: Activation, mode: Mode, x: S::V) -> S::V {
    match mode {
        Mode::Forward => forward(s, act, x),
        Mode::Derivative => derivative(s, act, x),
        Mode::DerivativeFromOutput => derivative_from_output(s, act, x),
    }
}

fn map(isa: super::Isa, act: Activation, mode: Mode, input: &[f32], out: &mut [f32]) {
    assert_eq!(
        input.len(),
        out.len(),
        "activation: input has {} elements but out has {}",
        input.len(),
        out.len()
    );
    super::dispatch::run(
        isa,
        Map {
            act,
            mode,
            input,
            out,
        },
    );
}

/// `out[i] = φ(z[i])` with the vector code of `isa` (the code the GEMM
/// epilogues run).
///
/// # Panics
/// If the lengths differ or the CPU lacks `isa`.
///
/// ```
/// use backprop::kernel::activation::forward_slice;
/// use backprop::nn::Activation;
/// let mut out = [0.0; 3];
/// forward_slice(backprop::active_isa(), Activation::Relu, &[-1.0, 0.5, f32::NAN], &mut out);
/// assert_eq!(&out[..2], &[0.0, 0.5]);
/// assert!(out[2].is_nan());
/// ```
#[track_caller]
pub fn forward_slice(isa: super::Isa, act: Activation, z: &[f32], out: &mut [f32]) {
    map(isa, act, Mode::Forward, z, out)
}

/// `out[i] = φ′(z[i])` from the pre-activation, vector code of `isa`.
///
/// # Panics
/// If the lengths differ or the CPU lacks `isa`.
#[track_caller]
pub fn derivative_slice(isa: super::Isa, act: Activation, z: &[f32], out: &mut [f32]) {
    map(isa, act, Mode::Derivative, z, out)
}

/// `out[i] = φ′` computed from the output `a[i] = φ(z[i])`, vector code of `isa`.
///
/// # Panics
/// If the lengths differ, the CPU lacks `isa`, or φ′ of `act` needs the
/// pre-activation ([`Activation::has_output_derivative`] is false).
#[track_caller]
pub fn derivative_from_output_slice(isa: super::Isa, act: Activation, a: &[f32], out: &mut [f32]) {
    assert!(
        act.has_output_derivative(),
        "activation: φ′ of {} cannot be computed from the output",
        act.name()
    );
    map(isa, act, Mode::DerivativeFromOutput, a, out)
}
