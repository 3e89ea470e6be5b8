//! AVX-512F kernels (x86-64): 512-bit registers, a 12 × 32 register tile.
//!
//! Thirty-two zmm registers: 12 × 2 accumulators + 2 for the B row + broadcasts
//! of A. Twenty-four independent FMA chains cover the 4-cycle latency of two
//! 512-bit FMA ports (8 chains needed) with room to hide load latency.

use core::arch::x86_64::*;
use std::sync::OnceLock;

use super::avx2::{transpose8x8_avx, Avx2};
use super::{Blocking, KernelOp, MaskedLoad, Simd};

/// Token for the AVX-512F instruction set (with AVX2 and FMA, which every
/// AVX-512F CPU has and the kernels' entry point enables too): a value exists
/// only where the running CPU has all three (the field is private; see
/// [`Avx512::new`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512 {
    _private: (),
}

impl Avx512 {
    /// The token, if the running CPU has AVX-512F, AVX2 and FMA.
    #[inline]
    pub(crate) fn new() -> Option<Self> {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            // SAFETY: the three features were just detected.
            Some(unsafe { Self::new_unchecked() })
        } else {
            None
        }
    }

    /// The token, without checking.
    ///
    /// # Safety
    /// The running CPU supports AVX-512F, AVX2 and FMA.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx512 { _private: () }
    }

    /// The AVX2 token this one implies.
    #[inline(always)]
    pub(crate) fn avx2(self) -> Avx2 {
        // SAFETY: an `Avx512` exists only where the CPU has AVX2 and FMA too
        // (type invariant).
        unsafe { Avx2::new_unchecked() }
    }
}

// SAFETY: `Avx512` values exist only where the CPU has AVX-512F, AVX2 and FMA
// (private field, checked or unsafe constructors), which cover every
// instruction the methods use; __m512 is sixteen f32 lanes in order.
unsafe impl Simd for Avx512 {
    const LANES: usize = 16;
    type V = __m512;
    type M = __mmask16;
    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: `self` proves AVX-512F (type invariant); the caller
        // guarantees LANES readable floats at `p`.
        unsafe { _mm512_loadu_ps(p) }
    }
    const MASKED_LOAD: MaskedLoad = MaskedLoad::MaskRegister;
    #[inline(always)]
    unsafe fn load_first(self, p: *const f32, n: usize) -> __m512 {
        // Lanes at and past n are masked off: zeroed, and their memory is not
        // accessed (so cannot fault).
        let mask = ((1u32 << n.min(16)) - 1) as __mmask16;
        // SAFETY: `self` proves AVX-512F (type invariant); the caller
        // guarantees the first n floats at `p`, the only ones read.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: `self` proves AVX-512F (type invariant); the caller
        // guarantees LANES writable floats at `p`.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    fn fmadd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_abs_ps(a) }
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        // n + 127 is a valid biased exponent for n in [-126, 127].
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe {
            let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    fn lt(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn gt(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    fn is_nan(self, a: __m512) -> __mmask16 {
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a) }
    }
    #[inline(always)]
    fn select(self, m: __mmask16, a: __m512, b: __m512) -> __m512 {
        // mask_blend takes the second vector where the mask is set.
        // SAFETY: `self` exists only where the CPU has AVX-512F (type invariant).
        unsafe { _mm512_mask_blend_ps(m, b, a) }
    }
    #[inline(always)]
    unsafe fn transpose8x8(self, src: *const f32, src_rs: isize, dst: *mut f32, dst_rs: usize) {
        // SAFETY: the caller guarantees the 64 elements.
        unsafe { transpose8x8_avx(self.avx2(), src, src_rs, dst, dst_rs) }
    }
}

const MR: usize = 12;
const NV: usize = 2;

/// Depth of one pass over k. The `kc × 32` B micro-panel is 64 KiB: more than
/// an L1d, so each of the `mc / 12` A micro-panels of an `ic` block reads it
/// from L2 (two lines per 24 FMAs, a fraction of what L2 delivers), and half as
/// many passes over k as at 256 mean half the round trips of C through the
/// caches (C is re-read and re-written after every pass). Measured on a
/// Sapphire Rapids-class Xeon (48 KiB L1d, 2 MiB L2), one thread, against the
/// `gemm` crate and matrixmultiply in the same runs: 1024³ 0.88 → 0.93 of the
/// gemm crate's rate, the other large shapes +2–5 %, the small ones unchanged
/// (the README's benchmark section has the table); 384 lay in between and 1024
/// was no better than 512. `mc`, `nc` follow from the caches as before
/// (`kernel::cache`); fixed, because it decides the rounding.
const KC: usize = 512;

// The blocking's promises, checked when the crate compiles: the C tile
// (MR × NV accumulators), the NV B vectors and the A broadcast fit the 32 zmm
// registers, and the kc × 16·NV B micro-panel is at most a sixteenth of a
// 1 MiB L2 (Zen 4, and the fallback cache sizes). On an Intel CPU with those
// caches the rule gives mc = 24, nc = 256, and with a 512 KiB L2 (Ice Lake
// client) mc = 12, nc = 128: not measured. Zen 4 keeps the panel in L3
// (mc = 120, nc = 4096: see `kernel::cache`).
const _: () = {
    let registers = MR * NV + NV + 1; // C tile, B vectors, A broadcast
    assert!(registers <= 32);
    assert!(KC * NV * 16 * std::mem::size_of::<f32>() <= 64 * 1024);
};

/// This path's blocking on the running CPU (`mc`, `nc` from its caches, with
/// the B panel kept in L2 on Intel and in L3 on AMD: see `kernel::cache` for
/// the rule and measurements).
pub(crate) fn blocking() -> Blocking {
    use super::cache::{self, Residency};
    static B: OnceLock<Blocking> = OnceLock::new();
    cache::cached(&B, MR, NV * 16, KC, Residency::wide(cache::vendor()))
}

/// Runs `op` with the AVX-512 kernel set.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn dispatch<Op: KernelOp>(op: Op) -> Op::Output {
    // SAFETY: this function's target features (AVX-512F, AVX2, FMA) are
    // guaranteed by its caller.
    let s = unsafe { Avx512::new_unchecked() };
    // SAFETY: each op's data requirements are established where the crate
    // builds it (GEMM problems from checked views or sgemm's contract).
    unsafe { op.run::<Avx512, MR, NV>(s, &blocking()) }
}
