//! Four-lane (128-bit) helpers shared by every kernel set: the building block
//! of the packing transposes.
//!
//! On x86-64 these are SSE instructions, part of the baseline, so every path
//! (portable, AVX2, AVX-512) can use them; inlined into an AVX entry point they
//! are VEX-encoded. Elsewhere they are plain scalar code kept out of the
//! auto-vectoriser's hands (see [`no_vectorize`]).
//!
//! Packing is written with these explicit shuffles rather than left to the
//! auto-vectoriser: for a strided store loop the vectoriser is free to emit
//! AVX-512 scatter instructions, which are slow on every AVX-512 core and
//! which an AVX2 build never shows.

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

/// An optimisation barrier for one loop body: a loop that calls this is never
/// vectorised (the compiler cannot widen an inline-assembly statement), so a
/// strided element loop stays a scalar loop instead of becoming a gather or a
/// scatter. It emits no instruction and touches no memory, register or flag.
#[inline(always)]
pub(crate) fn no_vectorize() {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: an empty assembly template executes nothing; the options promise
    // (truthfully) that it reads and writes no memory, no stack and no flags.
    unsafe {
        core::arch::asm!("", options(nomem, nostack, preserves_flags))
    };
}

/// Transposes the 4 × 4 block whose row `r` is the four floats at `rows[r]`:
/// writes column `c` of the block (`rows[0][c], …, rows[3][c]`) to
/// `dst + c·dst_rs`, for `c < cols`, keeping only its first `width` lanes.
///
/// Rows that should read as zeros can point at a `[0.0; 4]`.
///
/// # Safety
/// Each `rows[r]` is readable for 4 floats; `dst + c·dst_rs` is writable for
/// `width` floats for `c < cols`; `cols ≤ 4`, `1 ≤ width ≤ 4`; source and
/// destination do not overlap.
#[inline(always)]
pub(crate) unsafe fn transpose4x4(
    rows: [*const f32; 4],
    dst: *mut f32,
    dst_rs: usize,
    cols: usize,
    width: usize,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE and SSE2 are part of the x86-64 baseline; every load and
    // store addresses memory the caller guarantees.
    unsafe {
        let r0 = _mm_loadu_ps(rows[0]);
        let r1 = _mm_loadu_ps(rows[1]);
        let r2 = _mm_loadu_ps(rows[2]);
        let r3 = _mm_loadu_ps(rows[3]);
        let lo01 = _mm_unpacklo_ps(r0, r1); // a0 b0 a1 b1
        let lo23 = _mm_unpacklo_ps(r2, r3); // c0 d0 c1 d1
        let hi01 = _mm_unpackhi_ps(r0, r1); // a2 b2 a3 b3
        let hi23 = _mm_unpackhi_ps(r2, r3); // c2 d2 c3 d3
        let columns = [
            _mm_movelh_ps(lo01, lo23), // a0 b0 c0 d0
            _mm_movehl_ps(lo23, lo01), // a1 b1 c1 d1
            _mm_movelh_ps(hi01, hi23), // a2 b2 c2 d2
            _mm_movehl_ps(hi23, hi01), // a3 b3 c3 d3
        ];
        for (c, &v) in columns.iter().enumerate().take(cols) {
            store_lanes(dst.add(c * dst_rs), v, width);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as the caller guarantees; the loops stay inside the 4 × 4 block.
    unsafe {
        for c in 0..cols {
            for r in 0..width {
                no_vectorize();
                *dst.add(c * dst_rs + r) = *rows[r].add(c);
            }
        }
    }
}

/// Stores the first `width` (1 to 4) lanes of `v` at `p`.
///
/// # Safety
/// `p` is writable for `width` floats.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_lanes(p: *mut f32, v: __m128, width: usize) {
    // SAFETY: each store writes only lanes below `width`, inside the caller's
    // range; SSE2 is baseline.
    unsafe {
        match width {
            4 => _mm_storeu_ps(p, v),
            2 => _mm_store_sd(p as *mut f64, _mm_castps_pd(v)),
            1 => _mm_store_ss(p, v),
            _ => {
                _mm_store_sd(p as *mut f64, _mm_castps_pd(v));
                _mm_store_ss(p.add(2), _mm_movehl_ps(v, v));
            }
        }
    }
}

/// Copies `len` contiguous floats from `src` to `dst` with vector moves of
/// four, then a pair and a single float as needed.
///
/// # Safety
/// `src` readable and `dst` writable for `len` floats; they do not overlap.
#[inline(always)]
pub(crate) unsafe fn copy(src: *const f32, dst: *mut f32, len: usize) {
    // SAFETY: every access is below `len`, inside the caller's ranges.
    unsafe {
        let mut j = 0;
        while j + 4 <= len {
            #[cfg(target_arch = "x86_64")]
            _mm_storeu_ps(dst.add(j), _mm_loadu_ps(src.add(j)));
            #[cfg(not(target_arch = "x86_64"))]
            core::ptr::write_unaligned(
                dst.add(j) as *mut [f32; 4],
                core::ptr::read_unaligned(src.add(j) as *const [f32; 4]),
            );
            j += 4;
        }
        if j + 2 <= len {
            // A pair as one 8-byte move (a bit copy, as the floats are).
            let pair = core::ptr::read_unaligned(src.add(j) as *const u64);
            core::ptr::write_unaligned(dst.add(j) as *mut u64, pair);
            j += 2;
        }
        if j < len {
            *dst.add(j) = *src.add(j);
        }
    }
}

/// Writes `len` zeros at `dst`, four at a time.
///
/// # Safety
/// `dst` is writable for `len` floats.
#[inline(always)]
pub(crate) unsafe fn zero(dst: *mut f32, len: usize) {
    // SAFETY: every store is below `len`, inside the caller's range.
    unsafe {
        let mut j = 0;
        while j + 4 <= len {
            #[cfg(target_arch = "x86_64")]
            _mm_storeu_ps(dst.add(j), _mm_setzero_ps());
            #[cfg(not(target_arch = "x86_64"))]
            core::ptr::write_unaligned(dst.add(j) as *mut [f32; 4], [0.0; 4]);
            j += 4;
        }
        while j < len {
            no_vectorize();
            *dst.add(j) = 0.0;
            j += 1;
        }
    }
}
