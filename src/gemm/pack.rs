//! Packing: copying a block of A or B into the micro-panel order the
//! microkernel streams through, zero-padding partial panels.
//!
//! Packed A (an `mc × kc` block) is a sequence of `MR`-row micro-panels; in each,
//! column `p` is `MR` consecutive floats: element `(i, p)` of panel `t` sits at
//! `t·MR·kc + p·MR + i`. Packed B (a `kc × nc` panel) is a sequence of `NR`-column
//! micro-panels; element `(p, j)` of panel `t` sits at `t·NR·kc + p·NR + j`.
//! Each loop reads its source along the unit-stride direction when there is one.

use crate::kernel::Simd;

/// Packs `rows × kc` (`rows ≤ mr`) of A starting at `a` into one `mr`-row
/// micro-panel at `dst`, zero-filling rows `rows..mr`.
///
/// # Safety
/// `a + i·rsa + p·csa` is readable for `i < rows, p < kc`; `dst` is writable
/// for `mr·kc` floats and does not overlap A.
#[inline(always)]
pub(crate) unsafe fn pack_a_panel(
    mr: usize,
    rows: usize,
    kc: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    dst: *mut f32,
) {
    // SAFETY: reads stay at i < rows, p < kc and writes at p·mr + i < mr·kc,
    // as the caller guarantees.
    unsafe {
        if rows == mr && rsa == 1 {
            // Column-major A (e.g. Xᵀ read through strides): each column is contiguous.
            for p in 0..kc {
                core::ptr::copy_nonoverlapping(a.offset(p as isize * csa), dst.add(p * mr), mr);
            }
            return;
        }
        if csa == 1 {
            // Row-major A: read each row contiguously, scatter into the panel.
            for i in 0..rows {
                let src = a.offset(i as isize * rsa);
                for p in 0..kc {
                    *dst.add(p * mr + i) = *src.add(p);
                }
            }
        } else {
            for p in 0..kc {
                for i in 0..rows {
                    *dst.add(p * mr + i) = *a.offset(i as isize * rsa + p as isize * csa);
                }
            }
        }
        for p in 0..kc {
            for i in rows..mr {
                *dst.add(p * mr + i) = 0.0;
            }
        }
    }
}

/// Packs an `mc × kc` block of A into `ceil(mc / mr)` micro-panels at `dst`.
///
/// # Safety
/// As [`pack_a_panel`] for every panel; `dst` holds `ceil(mc/mr)·mr·kc` floats.
#[inline(always)]
pub(crate) unsafe fn pack_a(
    mr: usize,
    mc: usize,
    kc: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    dst: *mut f32,
) {
    for (t, i0) in (0..mc).step_by(mr).enumerate() {
        // SAFETY: panel t covers rows i0..i0+min(mr, mc−i0) of the caller's
        // block and the t-th mr·kc slice of `dst`.
        unsafe {
            let src = a.offset(i0 as isize * rsa);
            pack_a_panel(mr, mr.min(mc - i0), kc, src, rsa, csa, dst.add(t * mr * kc));
        }
    }
}

/// Packs `kc × cols` (`cols ≤ nr`) of B starting at `b` into one `nr`-column
/// micro-panel at `dst`, zero-filling columns `cols..nr`.
///
/// # Safety
/// The CPU supports `S`; `b + p·rsb + j·csb` is readable for `p < kc, j < cols`;
/// `dst` is writable for `nr·kc` floats and does not overlap B.
#[inline(always)]
pub(crate) unsafe fn pack_b_panel<S: Simd>(
    nr: usize,
    cols: usize,
    kc: usize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    dst: *mut f32,
) {
    // SAFETY: reads stay at p < kc, j < cols (the 8 × 8 blocks lie inside
    // cols8 × kc8), writes at p·nr + j < nr·kc, as the caller guarantees.
    unsafe {
        if csb == 1 {
            // Row-major B: each panel row is a contiguous run.
            for p in 0..kc {
                let d = dst.add(p * nr);
                core::ptr::copy_nonoverlapping(b.offset(p as isize * rsb), d, cols);
                for j in cols..nr {
                    *d.add(j) = 0.0;
                }
            }
            return;
        }
        if rsb == 1 {
            // Column-major B (e.g. Wᵀ read through strides): every column is
            // contiguous along k. Whole 8 × 8 blocks go through a register
            // transpose; the remainder is copied element by element.
            let (cols8, kc8) = (cols - cols % 8, kc - kc % 8);
            for j0 in (0..cols8).step_by(8) {
                for p0 in (0..kc8).step_by(8) {
                    let src = b.offset(j0 as isize * csb + p0 as isize);
                    S::transpose8x8(src, csb, dst.add(p0 * nr + j0), nr);
                }
            }
            for j in 0..cols {
                let src = b.offset(j as isize * csb);
                let done = if j < cols8 { kc8 } else { 0 };
                for p in done..kc {
                    *dst.add(p * nr + j) = *src.add(p);
                }
            }
        } else {
            for p in 0..kc {
                for j in 0..cols {
                    *dst.add(p * nr + j) = *b.offset(p as isize * rsb + j as isize * csb);
                }
            }
        }
        for p in 0..kc {
            for j in cols..nr {
                *dst.add(p * nr + j) = 0.0;
            }
        }
    }
}
