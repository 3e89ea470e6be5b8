//! AVX-512F kernels (x86-64): 512-bit registers, a 12 × 32 register tile.
//!
//! Thirty-two zmm registers: 12 × 2 accumulators + 2 for the B row + broadcasts
//! of A. Twenty-four independent FMA chains cover the 4-cycle latency of two
//! 512-bit FMA ports (8 chains needed) with room to hide load latency.

use core::arch::x86_64::*;
use std::sync::OnceLock;

use super::{Blocking, KernelOp, Simd};

/// Token for the AVX-512F instruction set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512;

impl Simd for Avx512 {
    const LANES: usize = 16;
    type V = __m512;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and valid pointers (trait contract).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and valid pointers (trait contract).
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees AVX-512F and valid pointers (trait contract).
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and valid pointers (trait contract).
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and valid pointers (trait contract).
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn abs(a: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_abs_ps(a) }
    }
    #[inline(always)]
    unsafe fn round(a: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract); n + 127 is a
        // valid biased exponent for n in [-126, 127].
        unsafe {
            let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
        }
    }
    type M = __mmask16;
    #[inline(always)]
    unsafe fn lt(a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn gt(a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn is_nan(a: __m512) -> __mmask16 {
        // SAFETY: the caller guarantees AVX-512F (trait contract).
        unsafe { _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a) }
    }
    #[inline(always)]
    unsafe fn select(m: __mmask16, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (trait contract). mask_blend
        // takes the second vector where the mask is set.
        unsafe { _mm512_mask_blend_ps(m, b, a) }
    }
    #[inline(always)]
    unsafe fn transpose8x8(src: *const f32, src_rs: isize, dst: *mut f32, dst_rs: usize) {
        // SAFETY: AVX-512F implies AVX (the dispatch enables both); the caller
        // guarantees the 64 elements (trait contract).
        unsafe { super::avx2::transpose8x8_avx(src, src_rs, dst, dst_rs) }
    }
}

const MR: usize = 12;
const NV: usize = 2;

/// Depth of one pass over k: the `kc × 32` B micro-panel is 32 KiB, two thirds
/// of the 48 KiB L1d of Intel cores since Ice Lake and all of a 32 KiB one
/// (Zen 4, Skylake-SP), as the AVX2 path's 512 × 16 panel is on Zen 3. Fewer
/// passes over k mean fewer round trips of C through the caches: on a Sapphire
/// Rapids-class Xeon 256 measured ~3 % faster than 192 at 1024³ (one thread,
/// same `mc`/`nc`). Fixed, because it decides the rounding (see `kernel::cache`).
const KC: usize = 256;

// The blocking's promises, checked when the crate compiles: the C tile
// (MR × NV accumulators), the NV B vectors and the A broadcast fit the 32 zmm
// registers, and the kc × 16·NV B micro-panel fits 32 KiB of L1d.
const _: () = {
    let registers = MR * NV + NV + 1; // C tile, B vectors, A broadcast
    assert!(registers <= 32);
    assert!(KC * NV * 16 * std::mem::size_of::<f32>() <= 32 * 1024);
};

/// This path's blocking on the running CPU (`mc`, `nc` from its caches, with
/// the B panel kept in L2: see `kernel::cache` for the rule and measurements).
pub(crate) fn blocking() -> Blocking {
    static B: OnceLock<Blocking> = OnceLock::new();
    super::cache::cached(&B, MR, NV * 16, KC, super::cache::Residency::PanelInL2)
}

/// Runs `op` with the AVX-512 kernel set.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn dispatch<Op: KernelOp>(op: Op) -> Op::Output {
    // SAFETY: AVX-512F, AVX2 and FMA are enabled here and guaranteed by the caller (KernelOp::run's
    // requirement); each op's pointer requirements are established where the
    // crate builds it (GEMM problems from checked views or sgemm's contract).
    unsafe { op.run::<Avx512, MR, NV>(&blocking()) }
}
