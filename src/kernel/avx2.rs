//! AVX2 + FMA kernels (x86-64): 256-bit registers, a 6 × 16 register tile.
//!
//! Sixteen ymm registers: 6 × 2 accumulators + 2 for the B row + 1 broadcast of
//! A = 15. Twelve independent FMA chains cover the 4-cycle FMA latency of two
//! FMA ports (8 chains needed).

use core::arch::x86_64::*;
use std::sync::OnceLock;

use super::{Blocking, KernelOp, MaskedLoad, Simd};

/// Token for the AVX2 + FMA instruction set: a value exists only where the
/// running CPU has both (the field is private; see [`Avx2::new`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2 {
    _private: (),
}

impl Avx2 {
    /// The token, if the running CPU has AVX2 and FMA.
    #[inline]
    pub(crate) fn new() -> Option<Self> {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: both features were just detected.
            Some(unsafe { Self::new_unchecked() })
        } else {
            None
        }
    }

    /// The token, without checking.
    ///
    /// # Safety
    /// The running CPU supports AVX2 and FMA.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx2 { _private: () }
    }
}

// SAFETY: `Avx2` values exist only where the CPU has AVX2 and FMA (private
// field, checked or unsafe constructors), the only features the methods use
// (AVX2 implies AVX); __m256 is eight f32 lanes in order.
unsafe impl Simd for Avx2 {
    const LANES: usize = 8;
    type V = __m256;
    type M = __m256;
    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: `self` proves AVX2+FMA (type invariant); the caller
        // guarantees LANES readable floats at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }
    const MASKED_LOAD: MaskedLoad = MaskedLoad::VectorMask;
    #[inline(always)]
    unsafe fn load_first(self, p: *const f32, n: usize) -> __m256 {
        // SAFETY: `self` proves AVX2 (type invariant); lanes whose mask is
        // clear (index ≥ n) are zeroed and not accessed, so only the first n
        // floats at `p`, which the caller guarantees, are read.
        unsafe {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lane);
            _mm256_maskload_ps(p, mask)
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: `self` proves AVX2+FMA (type invariant); the caller
        // guarantees LANES writable floats at `p`.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    fn fmadd(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        // n + 127 is a valid biased exponent for n in [-126, 127].
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe {
            let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    fn lt(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn gt(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    fn is_nan(self, a: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a) }
    }
    #[inline(always)]
    fn select(self, m: __m256, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` exists only where the CPU has AVX2+FMA (type invariant).
        unsafe { _mm256_blendv_ps(b, a, m) }
    }
    #[inline(always)]
    unsafe fn transpose8x8(self, src: *const f32, src_rs: isize, dst: *mut f32, dst_rs: usize) {
        // SAFETY: the caller guarantees the 64 elements.
        unsafe { transpose8x8_avx(self, src, src_rs, dst, dst_rs) }
    }
}

/// 8 × 8 transpose in registers: unpack pairs of rows, shuffle quads, swap
/// 128-bit halves (24 shuffles for 64 elements instead of 64 scalar moves).
///
/// Takes the AVX2 token (AVX would do) as proof of the instructions.
///
/// # Safety
/// As `Simd::transpose8x8`: the 64 source elements are readable and the 64
/// destination elements writable; they do not overlap.
#[inline(always)]
pub(crate) unsafe fn transpose8x8_avx(
    _: Avx2,
    src: *const f32,
    src_rs: isize,
    dst: *mut f32,
    dst_rs: usize,
) {
    // SAFETY: the token proves AVX2, hence AVX; all loads and stores address
    // the caller's 8 × 8 blocks.
    unsafe {
        let r = |i: isize| _mm256_loadu_ps(src.offset(i * src_rs));
        let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
        let (r4, r5, r6, r7) = (r(4), r(5), r(6), r(7));
        let t0 = _mm256_unpacklo_ps(r0, r1);
        let t1 = _mm256_unpackhi_ps(r0, r1);
        let t2 = _mm256_unpacklo_ps(r2, r3);
        let t3 = _mm256_unpackhi_ps(r2, r3);
        let t4 = _mm256_unpacklo_ps(r4, r5);
        let t5 = _mm256_unpackhi_ps(r4, r5);
        let t6 = _mm256_unpacklo_ps(r6, r7);
        let t7 = _mm256_unpackhi_ps(r6, r7);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let w = |c: usize, v: __m256| _mm256_storeu_ps(dst.add(c * dst_rs), v);
        w(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
        w(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
        w(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
        w(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
        w(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
        w(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
        w(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
        w(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
    }
}

const MR: usize = 6;
const NV: usize = 2;

/// Depth of one pass over k: the `kc × 16` B micro-panel is 32 KiB, a whole
/// 32 KiB L1d; a deeper kc halves the passes over C, and 512 measured faster
/// than 256 on Zen 3 at 1024³ with the C tile prefetched. Fixed, because it
/// decides the rounding (see `kernel::cache`).
const KC: usize = 512;

// The blocking's promises, checked when the crate compiles: the C tile
// (MR × NV accumulators), the NV B vectors and the A broadcast fit the 16 ymm
// registers, and the kc × 8·NV B micro-panel fits a 32 KiB L1d.
const _: () = {
    let registers = MR * NV + NV + 1; // C tile, B vectors, A broadcast
    assert!(registers <= 16);
    assert!(KC * NV * 8 * std::mem::size_of::<f32>() <= 32 * 1024);
};

/// This path's blocking on the running CPU (`mc`, `nc` from its caches).
pub(crate) fn blocking() -> Blocking {
    static B: OnceLock<Blocking> = OnceLock::new();
    super::cache::cached(&B, MR, NV * 8, KC, super::cache::Residency::PanelInL3)
}

/// Runs `op` with the AVX2 kernel set.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dispatch<Op: KernelOp>(op: Op) -> Op::Output {
    // SAFETY: this function's target features (AVX2, FMA) are guaranteed by
    // its caller.
    let s = unsafe { Avx2::new_unchecked() };
    // SAFETY: each op's data requirements are established where the crate
    // builds it (GEMM problems from checked views or sgemm's contract).
    unsafe { op.run::<Avx2, MR, NV>(s, &blocking()) }
}
