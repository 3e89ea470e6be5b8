//! Packing: copying a block of A or B into the micro-panel order the
//! microkernel streams through, zero-padding partial panels.
//!
//! Packed A (an `mc × kc` block) is a sequence of `MR`-row micro-panels; in each,
//! column `p` is `MR` consecutive floats: element `(i, p)` of panel `t` sits at
//! `t·MR·kc + p·MR + i`. Packed B (a `kc × nc` panel) is a sequence of `NR`-column
//! micro-panels; element `(p, j)` of panel `t` sits at `t·NR·kc + p·NR + j`.
//!
//! Both are the same operation on `w`-wide panels (`w` = MR or NR): the panel's
//! "lines" (rows of A, columns of B) are interleaved so that step `p` of every
//! line is contiguous. What the source's layout decides is how:
//!
//! | source layout                       | A example              | B example        | code |
//! |-------------------------------------|------------------------|------------------|------|
//! | step `p` of all lines contiguous    | column-major (Xᵀ in Xᵀ·δ) | row-major (W, δ) | vector copies |
//! | each line contiguous along `p`      | row-major (X, δ)       | column-major (Wᵀ in δ·Wᵀ) | register transposes |
//! | neither                             | any other strides      | any other strides | scalar loop |
//!
//! Every loop is explicit vector code or a scalar loop fenced with
//! [`no_vectorize`]: left to itself the auto-vectoriser turns the strided store
//! loop of a transposing pack into AVX-512 scatter stores, which are slow.

use crate::kernel::quad::{self, no_vectorize};
use crate::kernel::Simd;

/// Packs `rows × kc` (`rows ≤ mr`) of A starting at `a` into one `mr`-row
/// micro-panel at `dst`, zero-filling rows `rows..mr`.
///
/// # Safety
/// `a + i·rsa + p·csa` is readable for `i < rows, p < kc`; `dst` is writable
/// for `mr·kc` floats and does not overlap A.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_a_panel<S: Simd>(
    s: S,
    mr: usize,
    rows: usize,
    kc: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    dst: *mut f32,
) {
    // SAFETY: forwarded; the lines of the panel are the rows of A.
    unsafe { pack_panel(s, mr, rows, kc, a, rsa, csa, dst) }
}

/// Packs an `mc × kc` block of A into `ceil(mc / mr)` micro-panels at `dst`.
///
/// # Safety
/// As [`pack_a_panel`] for every panel; `dst` holds `ceil(mc/mr)·mr·kc` floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_a<S: Simd>(
    s: S,
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
            pack_a_panel(
                s,
                mr,
                mr.min(mc - i0),
                kc,
                src,
                rsa,
                csa,
                dst.add(t * mr * kc),
            );
        }
    }
}

/// Packs `kc × cols` (`cols ≤ nr`) of B starting at `b` into one `nr`-column
/// micro-panel at `dst`, zero-filling columns `cols..nr`.
///
/// # Safety
/// `b + p·rsb + j·csb` is readable for `p < kc, j < cols`; `dst` is writable
/// for `nr·kc` floats and does not overlap B.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_b_panel<S: Simd>(
    s: S,
    nr: usize,
    cols: usize,
    kc: usize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    dst: *mut f32,
) {
    // SAFETY: forwarded; the lines of the panel are the columns of B.
    unsafe { pack_panel(s, nr, cols, kc, b, csb, rsb, dst) }
}

/// Packs a `w`-wide panel: line `l < lines` of the source has its step `p` at
/// `src + l·line_stride + p·step_stride`; the panel gets it at `dst[p·w + l]`,
/// and zeros at `dst[p·w + l]` for `lines ≤ l < w`.
///
/// # Safety
/// The `lines × kc` source elements are readable; `dst` is writable for `w·kc`
/// floats and does not overlap the source.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_panel<S: Simd>(
    s: S,
    w: usize,
    lines: usize,
    kc: usize,
    src: *const f32,
    line_stride: isize,
    step_stride: isize,
    dst: *mut f32,
) {
    // SAFETY: each branch reads only the lines × kc source elements and writes
    // only the w × kc panel, as the caller guarantees.
    unsafe {
        if line_stride == 1 {
            // A full panel (a column-major A's MR-row panels, a row-major B's
            // NR-column ones) copies the caller's constant width:
            // straight-line code per step (a 6-row panel: a quad and a pair)
            // instead of a loop over a run-time length. With the pair move of
            // `quad::copy`, a 784×32×128 product ran 8 % faster (AVX2 path, A
            // column-major).
            let full = lines == w;
            for p in 0..kc {
                let (from, to) = (src.offset(p as isize * step_stride), dst.add(p * w));
                if full {
                    copy_step(s, from, w, to, w);
                } else {
                    copy_step(s, from, lines, to, w);
                }
            }
        } else if step_stride == 1 {
            transpose_lines(s, w, lines, kc, src, line_stride, dst);
        } else {
            for p in 0..kc {
                let d = dst.add(p * w);
                for l in 0..lines {
                    no_vectorize();
                    *d.add(l) = *src.offset(l as isize * line_stride + p as isize * step_stride);
                }
                quad::zero(d.add(lines), w - lines);
            }
        }
    }
}

/// One panel step from a contiguous source: `len` floats copied with full
/// vectors of `S`, then quads, a pair and a single float (`quad::copy`);
/// zeros up to `w`.
///
/// # Safety
/// `src` readable for `len` floats, `dst` writable for `w ≥ len` floats; no
/// overlap.
#[inline(always)]
unsafe fn copy_step<S: Simd>(s: S, src: *const f32, len: usize, dst: *mut f32, w: usize) {
    // SAFETY: every access is below `len` (reads) or `w` (writes).
    unsafe {
        let mut j = 0;
        while j + S::LANES <= len {
            s.store(dst.add(j), s.load(src.add(j)));
            j += S::LANES;
        }
        quad::copy(src.add(j), dst.add(j), len - j);
        quad::zero(dst.add(len), w - len);
    }
}

/// Packs `lines` lines that are each contiguous along `p` (`src + l·line_stride
/// + p`) into a `w`-wide panel: whole groups of eight lines through 8 × 8
/// register transposes, the rest (and the zero lines up to `w`) through 4 × 4
/// ones, with the `kc` tail staged through a zero-padded block.
///
/// # Safety
/// As [`pack_panel`] with a unit step stride.
#[inline(always)]
unsafe fn transpose_lines<S: Simd>(
    s: S,
    w: usize,
    lines: usize,
    kc: usize,
    src: *const f32,
    line_stride: isize,
    dst: *mut f32,
) {
    let kc8 = kc - kc % 8;
    let mut l0 = 0;
    // SAFETY: 8 × 8 blocks cover lines l0..l0+8 ≤ lines and steps p0..p0+8 ≤
    // kc; the quads stay inside their lines and the panel (see `quads`).
    unsafe {
        while l0 + 8 <= lines && l0 + 8 <= w {
            let sl = src.offset(l0 as isize * line_stride);
            for p0 in (0..kc8).step_by(8) {
                s.transpose8x8(sl.add(p0), line_stride, dst.add(p0 * w + l0), w);
            }
            for half in [0, 4] {
                let sl = src.offset((l0 + half) as isize * line_stride);
                quads(sl, line_stride, 4, kc8, kc, dst.add(l0 + half), w, 4);
            }
            l0 += 8;
        }
        while l0 < w {
            let n = lines.saturating_sub(l0).min(4);
            // Past the last line (n = 0, nothing is read) this address may lie
            // beyond the source, so it is formed with wrapping arithmetic.
            let sl = src.wrapping_offset(l0.min(lines) as isize * line_stride);
            quads(sl, line_stride, n, 0, kc, dst.add(l0), w, (w - l0).min(4));
            l0 += 4;
        }
    }
}

/// Steps `from..kc` of `n ≤ 4` lines (line `r` at `src + r·line_stride`; lines
/// `n..4` read as zeros) into `width` consecutive panel columns at
/// `dst[p·w + 0..width]`, four steps per 4 × 4 transpose.
///
/// # Safety
/// The `n` lines are readable for steps `from..kc` (with `n = 0`, `src` is
/// not read and may point anywhere); `dst + p·w` is writable for `width ≤ 4`
/// floats for `p < kc`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn quads(
    src: *const f32,
    line_stride: isize,
    n: usize,
    from: usize,
    kc: usize,
    dst: *mut f32,
    w: usize,
    width: usize,
) {
    let zeros = [0.0f32; 4];
    // SAFETY: row pointers of lines < n advance inside their lines (p + 4 ≤ kc
    // in the loop); the others stay on `zeros`. The tail is staged in `tail`.
    unsafe {
        let mut rows = [zeros.as_ptr(); 4];
        for (r, row) in rows.iter_mut().enumerate().take(n) {
            *row = src.offset(r as isize * line_stride).add(from);
        }
        let step = |r: usize| if r < n { 4 } else { 0 };
        let mut p = from;
        while p + 4 <= kc {
            quad::transpose4x4(rows, dst.add(p * w), w, 4, width);
            for (r, row) in rows.iter_mut().enumerate() {
                *row = row.add(step(r));
            }
            p += 4;
        }
        if p < kc {
            let t = kc - p;
            let mut tail = [[0.0f32; 4]; 4];
            for (r, line) in tail.iter_mut().enumerate().take(n) {
                for (c, x) in line.iter_mut().enumerate().take(t) {
                    no_vectorize();
                    *x = *rows[r].add(c);
                }
            }
            let staged = [
                tail[0].as_ptr(),
                tail[1].as_ptr(),
                tail[2].as_ptr(),
                tail[3].as_ptr(),
            ];
            quad::transpose4x4(staged, dst.add(p * w), w, t, width);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{available_isas, dispatch, Blocking, KernelOp};

    /// Packs one panel with the kernel set the dispatcher picks.
    struct PackPanel<'a> {
        w: usize,
        lines: usize,
        kc: usize,
        src: &'a [f32],
        origin: usize,
        line_stride: isize,
        step_stride: isize,
        dst: &'a mut [f32],
    }

    impl KernelOp for PackPanel<'_> {
        type Output = ();
        #[inline(always)]
        unsafe fn run<S: Simd, const MR: usize, const NV: usize>(self, s: S, _: &Blocking) {
            // SAFETY: the test sizes `src` to hold every element the strides
            // reach from `origin` and `dst` to hold w·kc floats.
            unsafe {
                pack_panel(
                    s,
                    self.w,
                    self.lines,
                    self.kc,
                    self.src.as_ptr().add(self.origin),
                    self.line_stride,
                    self.step_stride,
                    self.dst.as_mut_ptr(),
                )
            }
        }
    }

    /// Every panel width the kernel sets use (MR and NR), every line count up
    /// to it, depths across the 4- and 8-step transposes' tails, and the three
    /// source layouts (plus negative strides): the panel holds exactly the
    /// source element or zero, and nothing past `w·kc` is written.
    #[test]
    fn panels_match_the_definition_on_every_path() {
        for isa in available_isas() {
            for w in [6usize, 8, 12, 16, 32] {
                for lines in 1..=w {
                    for kc in [0usize, 1, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 23] {
                        let layouts: [(isize, isize); 5] = [
                            (1, lines as isize),         // steps contiguous
                            (kc.max(1) as isize, 1),     // lines contiguous
                            (kc as isize + 3, 1),        // lines contiguous, padded
                            (2, 2 * lines as isize + 1), // neither
                            (-(kc.max(1) as isize), 1),  // lines contiguous, reversed
                        ];
                        for (ls, ss) in layouts {
                            let span = |s: isize, n: usize| s.unsigned_abs() * n.saturating_sub(1);
                            let len = span(ls, lines) + span(ss, kc) + 1;
                            let src: Vec<f32> = (0..len).map(|i| i as f32 + 0.5).collect();
                            let origin = if ls < 0 { span(ls, lines) } else { 0 };
                            let mut dst = vec![f32::NAN; w * kc + 5];
                            dispatch::run(
                                isa,
                                PackPanel {
                                    w,
                                    lines,
                                    kc,
                                    src: &src,
                                    origin,
                                    line_stride: ls,
                                    step_stride: ss,
                                    dst: &mut dst,
                                },
                            );
                            for p in 0..kc {
                                for l in 0..w {
                                    let want = if l < lines {
                                        src[(origin as isize + l as isize * ls + p as isize * ss)
                                            as usize]
                                    } else {
                                        0.0
                                    };
                                    let got = dst[p * w + l];
                                    assert!(
                                        got.to_bits() == want.to_bits(),
                                        "{isa}: w {w}, lines {lines}, kc {kc}, strides ({ls}, {ss}): \
                                         panel[{p}][{l}] = {got}, want {want}"
                                    );
                                }
                            }
                            assert!(
                                dst[w * kc..].iter().all(|x| x.is_nan()),
                                "{isa}: w {w}, lines {lines}, kc {kc}: wrote past the panel"
                            );
                        }
                    }
                }
            }
        }
    }
}
