//! AVX2 + FMA kernels (x86-64): 256-bit registers, a 6 × 16 register tile.
//!
//! Sixteen ymm registers: 6 × 2 accumulators + 2 for the B row + 1 broadcast of
//! A = 15. Twelve independent FMA chains cover the 4-cycle FMA latency of two
//! FMA ports (8 chains needed).

use core::arch::x86_64::*;

use super::{Blocking, KernelOp, Simd};

/// Token for the AVX2 + FMA instruction set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2;

impl Simd for Avx2 {
    const LANES: usize = 8;
    type V = __m256;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: the caller guarantees AVX2+FMA and valid pointers (trait contract).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX2+FMA and valid pointers (trait contract).
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees AVX2+FMA and valid pointers (trait contract).
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2+FMA and valid pointers (trait contract).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2+FMA and valid pointers (trait contract).
        unsafe { _mm256_mul_ps(a, b) }
    }
}

const MR: usize = 6;
const NV: usize = 2;

/// Block sizes for 32 KiB L1d, ≥ 256 KiB L2 per core (Haswell … Zen 4).
pub(crate) const BLOCKING: Blocking = Blocking {
    mr: MR,
    nr: NV * 8,
    // kc × nr × 4 B = 16 KiB: the B micro-panel reused by every A micro-panel
    // of the ic loop stays in half of L1, leaving room for the streamed A panel.
    kc: 256,
    // mc × kc × 4 B = 120 KiB: the packed A block stays in L2.
    mc: 120,
    // kc × nc × 4 B = 4 MiB: the packed B panel stays in L3.
    nc: 4096,
};

/// Runs `op` with the AVX2 kernel set.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dispatch<Op: KernelOp>(op: Op) -> Op::Output {
    // SAFETY: the operations below are covered by this function's # Safety contract
    // (CPU features of the ISA, pointer validity), which the caller upholds.
    unsafe { op.run::<Avx2, MR, NV>(&BLOCKING) }
}
