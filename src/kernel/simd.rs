//! The SIMD vocabulary the generic kernels are written in: a token type per
//! ISA whose *values* prove that the running CPU supports it.
//!
//! A token is a zero-sized `Copy` value. Each ISA file gives its token a checked
//! constructor (`new`, run-time detection) and an unchecked one (`new_unchecked`,
//! used by the ISA's `#[target_feature]` entry point, whose caller has already
//! checked). Generic code receives the token as its first parameter `s` and
//! calls `s.fmadd(a, b, c)`: register arithmetic is safe code, because holding
//! `s` is the proof the instructions exist; only the operations that go
//! through raw pointers (`load`, `store`, `transpose8x8`) stay `unsafe`.
//!
//! Every method is `#[inline(always)]`: inlined into the entry point, the
//! intrinsics are compiled for the ISA that function enables. Called from
//! anywhere else they would still be correct (the token guarantees the CPU),
//! only slow: `scripts/check_codegen.sh` fails on such out-of-line intrinsics.

use super::quad;

/// How an ISA loads the first `n ≤ LANES` floats of a vector
/// ([`Simd::load_first`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Only the x86-64 kernel sets use the masked variants.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum MaskedLoad {
    /// No masked load: the floats are copied through a buffer, so a partial
    /// strip of B is packed once rather than copied at every k step.
    Copy,
    /// One masked load whose mask takes a vector register (AVX2): spare only
    /// beside a one-vector register tile (a 6 × 2 tile's accumulators, B
    /// vectors and broadcast take fifteen of the sixteen, and the compiler
    /// spilled accumulators when the mask was added).
    VectorMask,
    /// One masked load with the mask in a mask register (AVX-512): every tile
    /// can read a partial strip of B in place.
    MaskRegister,
}

/// One SIMD register of `f32` lanes, as the generic kernels see it.
///
/// # Safety
/// An implementor promises:
/// * A value of the type exists only while the running CPU supports every
///   instruction its methods use (its constructors check this, or are `unsafe`
///   and leave it to the caller); the safe methods rely on it.
/// * `V` is exactly `LANES` `f32`s, lane `i` at byte `4·i`, with no padding:
///   the tile store stages vectors through buffers it indexes as floats.
pub(crate) unsafe trait Simd: Copy + 'static {
    /// Lanes per vector.
    const LANES: usize;
    /// The register type.
    type V: Copy;
    /// A lane mask.
    type M: Copy;

    /// All lanes set to `x`.
    fn splat(self, x: f32) -> Self::V;
    /// Unaligned load of `LANES` floats.
    ///
    /// # Safety
    /// `p` is valid for reads of `LANES` floats.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// What [`load_first`](Simd::load_first) costs, which decides whether the
    /// no-packing path reads a partial strip of B in place or packs it.
    const MASKED_LOAD: MaskedLoad = MaskedLoad::Copy;

    /// The first `n` floats at `p` in the first `n` lanes, zeros in the
    /// others (`1 ≤ n ≤ LANES`); nothing past `p + n` is read. The no-packing
    /// path reads a partial strip of B in place with it where
    /// [`MASKED_LOAD`](Simd::MASKED_LOAD) allows. The default copies the floats
    /// into a zeroed buffer; the AVX paths use masked loads.
    ///
    /// # Safety
    /// `p` is valid for reads of `n` floats; `1 ≤ n ≤ LANES ≤ 16`.
    #[inline(always)]
    unsafe fn load_first(self, p: *const f32, n: usize) -> Self::V {
        let mut buf = [0.0f32; 16];
        for (i, x) in buf.iter_mut().enumerate().take(n.min(Self::LANES)) {
            quad::no_vectorize();
            // SAFETY: i < n, inside the caller's range.
            *x = unsafe { *p.add(i) };
        }
        // SAFETY: buf holds 16 ≥ LANES floats.
        unsafe { self.load(buf.as_ptr()) }
    }
    /// Unaligned store of `LANES` floats.
    ///
    /// # Safety
    /// `p` is valid for writes of `LANES` floats.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// `a · b + c`, fused where the ISA has FMA.
    fn fmadd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a · b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a − b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum; which operand a NaN lane yields is unspecified
    /// (callers that care patch NaN lanes with [`Simd::is_nan`]).
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum; NaN lanes as for [`Simd::min`].
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `|a|`.
    fn abs(self, a: Self::V) -> Self::V;
    /// Round to the nearest integer (ties either way; only used for range reduction).
    fn round(self, a: Self::V) -> Self::V;
    /// `2ⁿ` for integral `n` in `[-126, 127]`.
    fn pow2i(self, n: Self::V) -> Self::V;

    /// `a < b` (false for NaN lanes).
    fn lt(self, a: Self::V, b: Self::V) -> Self::M;
    /// `a > b` (false for NaN lanes).
    fn gt(self, a: Self::V, b: Self::V) -> Self::M;
    /// Lanes that are NaN.
    fn is_nan(self, a: Self::V) -> Self::M;
    /// `m ? a : b` lane-wise.
    fn select(self, m: Self::M, a: Self::V, b: Self::V) -> Self::V;

    /// Copies an 8 × 8 block transposed: `dst[c·dst_rs + r] = src[r·src_rs + c]`
    /// for `r, c < 8` (rows of `src` become columns of `dst`). Used to pack an
    /// operand that is contiguous along the "wrong" dimension. The default is
    /// four 4 × 4 register transposes ([`quad::transpose4x4`]); AVX paths
    /// override it with a 256-bit one.
    ///
    /// # Safety
    /// The 64 source elements are readable and the 64 destination elements
    /// writable; they do not overlap.
    #[inline(always)]
    unsafe fn transpose8x8(self, src: *const f32, src_rs: isize, dst: *mut f32, dst_rs: usize) {
        for (r0, c0) in [(0, 0), (0, 4), (4, 0), (4, 4)] {
            // SAFETY: the quadrant (r0.., c0..) lies inside the caller's blocks.
            unsafe {
                let row = |r: isize| src.offset((r0 + r) * src_rs + c0 as isize);
                quad::transpose4x4(
                    [row(0), row(1), row(2), row(3)],
                    dst.add(c0 * dst_rs + r0 as usize),
                    dst_rs,
                    4,
                    4,
                )
            };
        }
    }

    /// Hints that the cache line holding `p` will be read soon. Never faults,
    /// whatever `p` is.
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetch is part of x86-64's baseline (SSE) and never faults,
        // whatever the address.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }
}

/// Prefetches the `m_eff × n_eff` tile of C at `c` (first and last element of
/// each row), so the β·C read, or with β = 0 the stores into lines not yet
/// cached, at the end of the k loop do not stall. (The packed path issues it
/// at β = 0 only ahead of a long enough pass: `PREFETCH_C_MIN_FMAS`.)
/// Prefetches never fault, so the addresses need not be valid.
#[inline(always)]
pub(crate) fn prefetch_tile<S: Simd>(
    s: S,
    c: *const f32,
    rsc: isize,
    csc: isize,
    m_eff: usize,
    n_eff: usize,
) {
    if n_eff == 0 {
        return;
    }
    for i in 0..m_eff {
        let row = c.wrapping_offset(i as isize * rsc);
        s.prefetch(row);
        s.prefetch(row.wrapping_offset((n_eff - 1) as isize * csc));
    }
}
