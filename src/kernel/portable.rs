//! Portable kernels written with `wide::f32x8`, for any CPU.
//!
//! `wide` picks its implementation from the *compile-time* target features:
//! SSE2 pairs on a baseline x86-64 build, NEON on aarch64 (where NEON and FMA
//! are part of the baseline), plain arrays elsewhere. This is the path used when
//! no run-time-detected ISA is better, or when `BACKPROP_ISA=portable` forces it.

use std::sync::OnceLock;

use wide::f32x8;

use super::{Blocking, KernelOp, Simd};

/// Token for the portable instruction set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    type V = f32x8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32x8 {
        // SAFETY: the caller guarantees LANES valid floats at `p` (trait contract).
        unsafe { f32x8::from(core::ptr::read_unaligned(p as *const [f32; 8])) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32x8) {
        // SAFETY: the caller guarantees LANES valid floats at `p` (trait contract).
        unsafe { core::ptr::write_unaligned(p as *mut [f32; 8], v.to_array()) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn mul(a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    unsafe fn add(a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    unsafe fn div(a: f32x8, b: f32x8) -> f32x8 {
        a / b
    }
    #[inline(always)]
    unsafe fn min(a: f32x8, b: f32x8) -> f32x8 {
        a.fast_min(b)
    }
    #[inline(always)]
    unsafe fn max(a: f32x8, b: f32x8) -> f32x8 {
        a.fast_max(b)
    }
    #[inline(always)]
    unsafe fn abs(a: f32x8) -> f32x8 {
        a.abs()
    }
    #[inline(always)]
    unsafe fn round(a: f32x8) -> f32x8 {
        a.round()
    }
    #[inline(always)]
    unsafe fn pow2i(n: f32x8) -> f32x8 {
        // The bit pattern of 2ⁿ is (n + 127)·2²³ as an integer; computed in
        // float (exact: < 2³¹ and a multiple of 2²³) and converted.
        let bits = ((n + f32x8::splat(127.0)) * f32x8::splat(8_388_608.0)).round_int();
        wide::bytemuck::cast(bits)
    }
    type M = f32x8;
    #[inline(always)]
    unsafe fn lt(a: f32x8, b: f32x8) -> f32x8 {
        a.simd_lt(b)
    }
    #[inline(always)]
    unsafe fn gt(a: f32x8, b: f32x8) -> f32x8 {
        a.simd_gt(b)
    }
    #[inline(always)]
    unsafe fn is_nan(a: f32x8) -> f32x8 {
        a.is_nan()
    }
    #[inline(always)]
    unsafe fn select(m: f32x8, a: f32x8, b: f32x8) -> f32x8 {
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
    // SAFETY: the portable token needs no CPU feature (KernelOp::run's
    // requirement); each op's pointer requirements are established where the
    // crate builds it (GEMM problems from checked views or sgemm's contract).
    unsafe { op.run::<Portable, MR, NV>(&blocking()) }
}
