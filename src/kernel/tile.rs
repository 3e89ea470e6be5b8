//! Storing a finished register tile: `α·AB + β·C`, the fused epilogue, and the
//! write into C.
//!
//! Three paths, one arithmetic. A full tile of a unit-column-stride C goes
//! straight to memory, without an epilogue ([`store_full`]) or with one whose
//! operands are unit-stride too ([`store_full_epilogue`]); anything else (an
//! edge tile, a strided C or epilogue operand) is staged through zero-padded
//! register-sized buffers ([`store_staged`]). All three run the same vector
//! operations in the same order on each element, so a C element gets bitwise
//! the same value whichever path wrote it (see the [module contract](super)).

use super::{activation, Activation, Simd};

/// What happens to a finished tile between `α·AB + β·C` and the store, on the
/// last pass over k only. Pointers are already advanced to the tile's origin
/// (see [`Epilogue::at`]); null means "absent".
#[derive(Clone, Copy, Debug)]
pub(crate) enum Epilogue {
    /// Store `α·AB + β·C`.
    None,
    /// `z = α·AB + β·C + bias[j]`; store `pre[i, j] = z` if `pre` is set; `C = φ(z)`.
    Forward {
        bias: *const f32,
        act: Activation,
        pre: *mut f32,
        pre_rs: isize,
        pre_cs: isize,
    },
    /// `C = (α·AB + β·C) ⊙ φ′(src)`, `src` being the pre-activation (or the
    /// output when `from_output`); the column sums of the tile's rows are
    /// stored at `colsum[j]` if `colsum` is set (one row of partial sums per
    /// MR-row strip: the caller reduces the strips in order).
    Backward {
        act: Activation,
        src: *const f32,
        src_rs: isize,
        src_cs: isize,
        from_output: bool,
        colsum: *mut f32,
        colsum_rs: isize,
    },
}

// SAFETY: the pointers describe caller-owned buffers that outlive the GEMM;
// pieces on different threads touch disjoint tiles of them.
unsafe impl Send for Epilogue {}
// SAFETY: as above.
unsafe impl Sync for Epilogue {}

impl Epilogue {
    /// The epilogue of the tile whose origin is `(i0, j0)` of the current
    /// problem; `mr` is the strip height (`i0` must be a multiple of it).
    pub(crate) fn at(&self, i0: usize, j0: usize, mr: usize) -> Epilogue {
        let (i, j) = (i0 as isize, j0 as isize);
        match *self {
            Epilogue::None => Epilogue::None,
            Epilogue::Forward {
                bias,
                act,
                pre,
                pre_rs,
                pre_cs,
            } => Epilogue::Forward {
                bias: if bias.is_null() {
                    bias
                } else {
                    bias.wrapping_offset(j)
                },
                act,
                pre: if pre.is_null() {
                    pre
                } else {
                    pre.wrapping_offset(i * pre_rs + j * pre_cs)
                },
                pre_rs,
                pre_cs,
            },
            Epilogue::Backward {
                act,
                src,
                src_rs,
                src_cs,
                from_output,
                colsum,
                colsum_rs,
            } => Epilogue::Backward {
                act,
                src: src.wrapping_offset(i * src_rs + j * src_cs),
                src_rs,
                src_cs,
                from_output,
                colsum: if colsum.is_null() {
                    colsum
                } else {
                    colsum.wrapping_offset((i0 / mr) as isize * colsum_rs + j)
                },
                colsum_rs,
            },
        }
    }

    /// Whether the auxiliary matrices have unit column stride (vector access).
    fn unit_cols(&self) -> bool {
        match *self {
            Epilogue::None => true,
            Epilogue::Forward { pre, pre_cs, .. } => pre.is_null() || pre_cs == 1,
            Epilogue::Backward { src_cs, .. } => src_cs == 1,
        }
    }
}

/// `p + off`, or null when `p` is null (absent operands stay absent).
#[inline(always)]
fn offset_or_null(p: *mut f32, off: isize) -> *mut f32 {
    if p.is_null() {
        p
    } else {
        p.wrapping_offset(off)
    }
}

/// Writes `α·acc + β·C`, passed through `epi`, into the `m_eff × n_eff` corner
/// of the tile at `c`.
///
/// `EPILOGUE = false` compiles the tile for [`Epilogue::None`] alone (`epi`
/// must be it). The epilogue paths loop over the tile's rows with a body too
/// large for the compiler to unroll (the activation and its derivative), so
/// they index the rows at run time, and where they are compiled in the
/// compiler keeps every tile's accumulators in a stack array, written after
/// each k loop whichever path then runs. A plain product's tiles thus cost
/// their k loop and the store alone: on the AVX2 path (12 stack stores per
/// 6 × 16 tile saved) a 784×32×128 product with A column-major ran 6 % faster.
///
/// # Safety
/// `m_eff ≤ MR` and `n_eff ≤ NV·LANES`; the `m_eff × n_eff` elements at
/// `c + i·rsc + j·csc` are valid for writes (and reads when `beta != 0`), and
/// nothing else aliases them; the epilogue's pointers are valid for the same
/// corner (bias: `n_eff` floats; colsum: `n_eff` floats).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn store_tile<S: Simd, const MR: usize, const NV: usize, const EPILOGUE: bool>(
    s: S,
    acc: &[[S::V; NV]; MR],
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    m_eff: usize,
    n_eff: usize,
    epi: &Epilogue,
) {
    debug_assert!(EPILOGUE || matches!(epi, Epilogue::None));
    // Without EPILOGUE the kind is a constant and the branches below that
    // read an epilogue fold away.
    let epi = if EPILOGUE { epi } else { &Epilogue::None };
    let full = m_eff == MR && n_eff == NV * S::LANES && csc == 1;
    if full && matches!(epi, Epilogue::None) {
        // SAFETY: a full tile with unit column stride: the caller's corner is
        // all MR rows of NV·LANES contiguous floats.
        unsafe { store_full::<S, MR, NV>(s, acc, alpha, beta, c, rsc) }
    } else if full && epi.unit_cols() {
        // SAFETY: as above, and the epilogue's operands cover the same full
        // tile with unit column stride (caller; checked by `unit_cols`).
        unsafe { store_full_epilogue::<S, MR, NV>(s, acc, alpha, beta, c, rsc, epi) }
    } else {
        // SAFETY: the caller's guarantees, forwarded unchanged.
        unsafe { store_staged::<S, MR, NV>(s, acc, alpha, beta, c, rsc, csc, m_eff, n_eff, epi) }
    }
}

/// The plain GEMM's full tile: nothing but `α·acc + β·C`, straight into C (the
/// same arithmetic as [`finish_row`] without an epilogue).
///
/// # Safety
/// Row `i < MR` of C is `NV·LANES` contiguous floats at `c + i·rsc`, valid for
/// writes (and reads when `beta != 0`).
#[inline(always)]
unsafe fn store_full<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    acc: &[[S::V; NV]; MR],
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
) {
    let va = s.splat(alpha);
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: row i < MR of the tile (caller).
        let cr = unsafe { c.offset(i as isize * rsc) };
        for (v, x) in row.iter().enumerate() {
            // SAFETY: vector v < NV of that row (caller).
            let p = unsafe { cr.add(v * S::LANES) };
            let mut y = s.mul(va, *x);
            if beta != 0.0 {
                // SAFETY: `p` is readable when β ≠ 0 (caller).
                let cv = unsafe { s.load(p) };
                y = s.fmadd(s.splat(beta), cv, y);
            }
            // SAFETY: `p` is writable (caller).
            unsafe { s.store(p, y) };
        }
    }
}

/// A full tile through the epilogue, every operand accessed in place with
/// vector loads and stores.
///
/// # Safety
/// As [`store_full`] for C; the epilogue's operands cover the same `MR ×
/// NV·LANES` tile with unit column stride (bias and colsum: `NV·LANES` floats).
#[inline(always)]
unsafe fn store_full_epilogue<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    acc: &[[S::V; NV]; MR],
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    epi: &Epilogue,
) {
    let va = s.splat(alpha);
    let zero = s.splat(0.0);
    let mut bias = [zero; NV];
    let mut colsum = [zero; NV];
    let (pre, pre_rs) = match *epi {
        Epilogue::Forward {
            bias: b,
            pre,
            pre_rs,
            ..
        } => {
            if !b.is_null() {
                for (v, x) in bias.iter_mut().enumerate() {
                    // SAFETY: the bias holds the tile's NV·LANES columns (caller).
                    *x = unsafe { s.load(b.add(v * S::LANES)) };
                }
            }
            (pre, pre_rs)
        }
        _ => (core::ptr::null_mut(), 0),
    };
    let (src, src_rs) = match *epi {
        Epilogue::Backward { src, src_rs, .. } => (src, src_rs),
        _ => (core::ptr::null(), 0),
    };
    for (i, row) in acc.iter().enumerate() {
        let ii = i as isize;
        // SAFETY: row i < MR of C, and of `pre`/`src` where the epilogue uses
        // them, is NV·LANES contiguous floats (caller).
        let y = unsafe {
            finish_row::<S, NV>(
                s,
                row,
                va,
                beta,
                c.offset(ii * rsc),
                epi,
                &bias,
                offset_or_null(pre, ii * pre_rs),
                offset_or_null(src as *mut f32, ii * src_rs),
            )
        };
        for (sum, y) in colsum.iter_mut().zip(y) {
            *sum = s.add(*sum, y);
        }
    }
    if let Epilogue::Backward { colsum: dst, .. } = *epi {
        if !dst.is_null() {
            for (v, sum) in colsum.iter().enumerate() {
                // SAFETY: colsum holds the tile's NV·LANES columns (caller).
                unsafe { s.store(dst.add(v * S::LANES), *sum) };
            }
        }
    }
}

/// An edge or strided tile: C (and the epilogue's operands) are staged
/// through zero-padded `MR × NV·LANES` buffers so the arithmetic is the same
/// vector code as a full tile's; only the `m_eff × n_eff` corner is read from
/// and written back to memory, element by element.
///
/// # Safety
/// As [`store_tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store_staged<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    acc: &[[S::V; NV]; MR],
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    m_eff: usize,
    n_eff: usize,
    epi: &Epilogue,
) {
    // The buffers below are indexed as floats, `nr` to a row (the `Simd`
    // layout promise, checked here per instantiation).
    const { assert!(core::mem::size_of::<S::V>() == 4 * S::LANES) };
    let nr = NV * S::LANES;
    let va = s.splat(alpha);
    let zero = s.splat(0.0);
    let mut bias = [zero; NV];
    let mut colsum = [zero; NV];
    let mut cbuf = [[zero; NV]; MR];
    let cb = cbuf.as_mut_ptr() as *mut f32;
    if beta != 0.0 {
        // SAFETY: the corner of C, readable when β ≠ 0 (caller), into the
        // MR × nr buffer.
        unsafe { copy_corner(c, rsc, csc, cb, nr as isize, 1, m_eff, n_eff) };
    }
    let mut auxbuf = [[zero; NV]; MR];
    let ab = auxbuf.as_mut_ptr() as *mut f32;
    let mut pre_stage: *mut f32 = core::ptr::null_mut();
    let mut src_stage: *const f32 = core::ptr::null();
    match *epi {
        Epilogue::None => {}
        Epilogue::Forward { bias: b, pre, .. } => {
            if !b.is_null() {
                let mut tmp = [zero; NV];
                let t = tmp.as_mut_ptr() as *mut f32;
                for j in 0..n_eff {
                    // SAFETY: the bias holds n_eff floats (caller); `tmp`
                    // holds nr ≥ n_eff.
                    unsafe { *t.add(j) = *b.add(j) };
                }
                bias = tmp;
            }
            if !pre.is_null() {
                pre_stage = ab;
            }
        }
        Epilogue::Backward {
            src,
            src_rs,
            src_cs,
            ..
        } => {
            // SAFETY: the corner of `src` (caller) into the MR × nr buffer.
            unsafe { copy_corner(src, src_rs, src_cs, ab, nr as isize, 1, m_eff, n_eff) };
            src_stage = ab;
        }
    }
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: row i < MR of the buffers: nr floats each at offset i·nr.
        let y = unsafe {
            finish_row::<S, NV>(
                s,
                row,
                va,
                beta,
                cb.add(i * nr),
                epi,
                &bias,
                offset_or_null(pre_stage, (i * nr) as isize),
                offset_or_null(src_stage as *mut f32, (i * nr) as isize),
            )
        };
        if i < m_eff {
            for (sum, y) in colsum.iter_mut().zip(y) {
                *sum = s.add(*sum, y);
            }
        }
    }
    // SAFETY: the buffer into the corner of C, writable (caller).
    unsafe { copy_corner(cb, nr as isize, 1, c, rsc, csc, m_eff, n_eff) };
    if let Epilogue::Forward {
        pre,
        pre_rs,
        pre_cs,
        ..
    } = *epi
    {
        if !pre.is_null() {
            // SAFETY: the buffer into the corner of `pre`, writable (caller).
            unsafe { copy_corner(ab, nr as isize, 1, pre, pre_rs, pre_cs, m_eff, n_eff) };
        }
    }
    if let Epilogue::Backward { colsum: dst, .. } = *epi {
        if !dst.is_null() {
            let t = colsum.as_ptr() as *const f32;
            for j in 0..n_eff {
                // SAFETY: colsum holds n_eff floats (caller); the sums nr ≥ n_eff.
                unsafe { *dst.add(j) = *t.add(j) };
            }
        }
    }
}

/// Copies the `m × n` corner at `src` (strides `src_rs`, `src_cs`) to `dst`
/// (strides `dst_rs`, `dst_cs`): rows four floats at a time when both column
/// strides are 1, element by element otherwise. A copy: no value changes.
///
/// # Safety
/// The `m × n` elements are readable at `src` and writable at `dst`, and the
/// two do not overlap.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn copy_corner(
    src: *const f32,
    src_rs: isize,
    src_cs: isize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    m: usize,
    n: usize,
) {
    // SAFETY: every access is inside the corners (caller).
    unsafe {
        for i in 0..m as isize {
            let (s, d) = (src.offset(i * src_rs), dst.offset(i * dst_rs));
            if src_cs == 1 && dst_cs == 1 {
                super::quad::copy(s, d, n);
            } else {
                for j in 0..n as isize {
                    // A strided copy, one element at a time: a volatile read
                    // is never merged with its neighbours. (With
                    // `quad::no_vectorize` the loop was still unrolled and
                    // its loads merged into an AVX-512 gather.)
                    *d.offset(j * dst_cs) = s.offset(j * src_cs).read_volatile();
                }
            }
        }
    }
}

/// One row of a tile through the epilogue: `y = α·acc + β·c` then the
/// epilogue, all with unit-stride pointers (`c`, `pre`, `src` rows of `NV·LANES`
/// floats, into C itself or into a staging buffer). Returns the final row.
///
/// # Safety
/// `c` is valid for writes of `NV·LANES` floats (and reads when `beta != 0`);
/// for [`Epilogue::Forward`], `pre` is null or valid for writes of as many; for
/// [`Epilogue::Backward`], `src` is valid for reads of as many.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_row<S: Simd, const NV: usize>(
    s: S,
    acc: &[S::V; NV],
    alpha: S::V,
    beta: f32,
    c: *mut f32,
    epi: &Epilogue,
    bias: &[S::V; NV],
    pre: *mut f32,
    src: *const f32,
) -> [S::V; NV] {
    let mut out = *acc;
    for (v, y) in out.iter_mut().enumerate() {
        // SAFETY: vector v < NV of the row (caller).
        let p = unsafe { c.add(v * S::LANES) };
        *y = s.mul(alpha, *y);
        if beta != 0.0 {
            // SAFETY: `p` is readable when β ≠ 0 (caller).
            let cv = unsafe { s.load(p) };
            *y = s.fmadd(s.splat(beta), cv, *y);
        }
        match *epi {
            Epilogue::None => {}
            Epilogue::Forward { act, .. } => {
                *y = s.add(*y, bias[v]);
                if !pre.is_null() {
                    // SAFETY: a non-null `pre` holds the row (caller).
                    unsafe { s.store(pre.add(v * S::LANES), *y) };
                }
                *y = activation::forward(s, act, *y);
            }
            Epilogue::Backward {
                act, from_output, ..
            } => {
                // SAFETY: `src` holds the row (caller).
                let x = unsafe { s.load(src.add(v * S::LANES)) };
                let d = if from_output {
                    activation::derivative_from_output(s, act, x)
                } else {
                    activation::derivative(s, act, x)
                };
                *y = s.mul(*y, d);
            }
        }
        // SAFETY: `p` is writable (caller).
        unsafe { s.store(p, *y) };
    }
    out
}
