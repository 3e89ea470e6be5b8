//! Portable kernels written with `wide::f32x8`, for any CPU.
//!
//! `wide` picks its implementation from the *compile-time* target features:
//! SSE2 pairs on a baseline x86-64 build, NEON on aarch64 (where NEON and FMA
//! are part of the baseline), plain arrays elsewhere. This is the path used when
//! no run-time-detected ISA is better, or when `BACKPROP_ISA=portable` forces it.

use std::sync::OnceLock;

use wide::f32x8;

use super::{Blocking, KernelOp, Simd};

/// Token for the portable instruction set: `wide` code compiled for the
/// build's baseline, so every CPU that runs the crate supports it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable {
    _private: (),
}

impl Portable {
    /// The token; always available.
    #[inline]
    pub(crate) fn new() -> Option<Self> {
        Some(Portable { _private: () })
    }

    /// The token, for symmetry with the ISA tokens.
    ///
    /// # Safety
    /// None: the portable code needs no CPU feature beyond the build's baseline.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Portable { _private: () }
    }
}

// SAFETY: the methods use only `wide` operations, which are compiled for the
// build's own target features and so run on any CPU that runs the crate; f32x8
// is eight f32 lanes in order, with no padding.
unsafe impl Simd for Portable {
    const LANES: usize = 8;
    type V = f32x8;
    type M = f32x8;
    #[inline(always)]
    fn splat(self, x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32x8 {
        // SAFETY: the caller guarantees LANES readable floats at `p`.
        unsafe { f32x8::from(core::ptr::read_unaligned(p as *const [f32; 8])) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32x8) {
        // SAFETY: the caller guarantees LANES writable floats at `p`.
        unsafe { core::ptr::write_unaligned(p as *mut [f32; 8], v.to_array()) }
    }
    #[inline(always)]
    fn fmadd(self, a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn mul(self, a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    fn add(self, a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    fn div(self, a: f32x8, b: f32x8) -> f32x8 {
        a / b
    }
    #[inline(always)]
    fn min(self, a: f32x8, b: f32x8) -> f32x8 {
        a.fast_min(b)
    }
    #[inline(always)]
    fn max(self, a: f32x8, b: f32x8) -> f32x8 {
        a.fast_max(b)
    }
    #[inline(always)]
    fn abs(self, a: f32x8) -> f32x8 {
        a.abs()
    }
    #[inline(always)]
    fn round(self, a: f32x8) -> f32x8 {
        a.round()
    }
    #[inline(always)]
    fn pow2i(self, n: f32x8) -> f32x8 {
        // The bit pattern of 2ⁿ is (n + 127)·2²³ as an integer; computed in
        // float (exact: < 2³¹ and a multiple of 2²³) and converted.
        let bits = ((n + f32x8::splat(127.0)) * f32x8::splat(8_388_608.0)).round_int();
        wide::bytemuck::cast(bits)
    }
    #[inline(always)]
    fn lt(self, a: f32x8, b: f32x8) -> f32x8 {
        a.simd_lt(b)
    }
    #[inline(always)]
    fn gt(self, a: f32x8, b: f32x8) -> f32x8 {
        a.simd_gt(b)
    }
    #[inline(always)]
    fn is_nan(self, a: f32x8) -> f32x8 {
        a.is_nan()
    }
    #[inline(always)]
    fn select(self, m: f32x8, a: f32x8, b: f32x8) -> f32x8 {
        m.select(a, b)
    }
}

const MR: usize = 6;
const NV: usize = 1;

/// Depth of one pass over k: the `kc × 8` B micro-panel is 8 KiB of L1d.
/// Fixed, because it decides the rounding (see `kernel::cache`).
const KC: usize = 256;

// The blocking's promises, checked when the crate compiles: the C tile, the B
// vector and the A broadcast fit 16 f32x8 registers (16 ymm where `wide`
// has AVX), and the kc × 8 B micro-panel takes 8 KiB of L1d.
const _: () = {
    let registers = MR * NV + NV + 1; // C tile, B vectors, A broadcast
    assert!(registers <= 16);
    assert!(KC * NV * 8 * std::mem::size_of::<f32>() <= 8 * 1024);
};

/// This path's blocking on the running CPU (`mc`, `nc` from its caches).
pub(crate) fn blocking() -> Blocking {
    static B: OnceLock<Blocking> = OnceLock::new();
    super::cache::cached(&B, MR, NV * 8, KC, super::cache::Residency::PanelInL3)
}

/// Runs `op` with the portable kernel set.
///
/// # Safety
/// Always sound to call; `unsafe` only to share the signature of the ISA entry points.
pub(crate) unsafe fn dispatch<Op: KernelOp>(op: Op) -> Op::Output {
    // SAFETY: the portable token needs no CPU feature.
    let s = unsafe { Portable::new_unchecked() };
    // SAFETY: each op's data requirements are established where the crate
    // builds it (GEMM problems from checked views or sgemm's contract).
    unsafe { op.run::<Portable, MR, NV>(s, &blocking()) }
}
