//! Register-blocked microkernels and the SIMD vocabulary they are written in.
//!
//! # The microkernel contract
//!
//! A microkernel computes one `MR × NR` tile of C from a slice of the k dimension:
//!
//! ```text
//! C[i, j] ← α · Σ_{p < kc} A[i, p] · B[p, j]  +  β · C[i, j]     i < m_eff ≤ MR, j < n_eff ≤ NR
//! ```
//!
//! * `A[i, p]` is read at `a + i·a_rs + p·a_cs`. For a packed micro-panel
//!   `a_rs = 1, a_cs = MR`; the no-packing path passes the caller's strides.
//! * Row `p` of B is `NR` contiguous floats at `b + p·b_rs`. For a packed
//!   micro-panel `b_rs = NR`; the no-packing path passes B's row stride (its
//!   column stride must be 1).
//! * All `MR` rows of A and `NR` columns of B are read, even past `m_eff`/`n_eff`
//!   (packing pads edges with zeros); only the `m_eff × n_eff` corner of C is
//!   touched. β = 0 means C is never read, so it may hold NaN.
//! * Edge tiles and tiles of C with a non-unit column stride go through a
//!   register-sized buffer, using the **same** vector arithmetic as full tiles:
//!   a C element gets bitwise the same value whichever path wrote it. This is
//!   what lets the threaded GEMM give identical bits for every thread count.
//!
//! The kernels are generic over `Simd` and `#[inline(always)]`; each ISA file
//! instantiates them inside a `#[target_feature]` function, so the intrinsics
//! inline into code compiled for that ISA while the rest of the crate stays
//! baseline (run-time dispatch, no RUSTFLAGS needed).

pub mod activation;
pub mod cache;
pub(crate) mod dispatch;
mod peak;
pub(crate) mod portable;
pub(crate) mod quad;
pub(crate) mod subnormal;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

pub use activation::Activation;
pub use cache::{cache_sizes, CacheSizes};
pub use dispatch::{active_isa, available_isas, Isa};
pub use peak::fma_peak_probe;

/// One SIMD register of `f32` lanes, as the generic kernels see it.
///
/// Implementors are zero-sized tokens; every method is `unsafe` because it
/// requires the CPU features of its ISA, which the caller's `#[target_feature]`
/// context guarantees.
pub(crate) trait Simd: Copy + 'static {
    /// Lanes per vector.
    const LANES: usize;
    /// The register type.
    type V: Copy;
    /// All lanes set to `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// Unaligned load of `LANES` floats.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Unaligned store of `LANES` floats.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a · b + c`, fused where the ISA has FMA.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a · b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a − b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum; which operand a NaN lane yields is unspecified
    /// (callers that care patch NaN lanes with [`Simd::is_nan`]).
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum; NaN lanes as for [`Simd::min`].
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// `|a|`.
    unsafe fn abs(a: Self::V) -> Self::V;
    /// Round to the nearest integer (ties either way; only used for range reduction).
    unsafe fn round(a: Self::V) -> Self::V;
    /// `2ⁿ` for integral `n` in `[-126, 127]`.
    unsafe fn pow2i(n: Self::V) -> Self::V;

    /// A lane mask.
    type M: Copy;
    /// `a < b` (false for NaN lanes).
    unsafe fn lt(a: Self::V, b: Self::V) -> Self::M;
    /// `a > b` (false for NaN lanes).
    unsafe fn gt(a: Self::V, b: Self::V) -> Self::M;
    /// Lanes that are NaN.
    unsafe fn is_nan(a: Self::V) -> Self::M;
    /// `m ? a : b` lane-wise.
    unsafe fn select(m: Self::M, a: Self::V, b: Self::V) -> Self::V;
    /// Copies an 8 × 8 block transposed: `dst[c·dst_rs + r] = src[r·src_rs + c]`
    /// for `r, c < 8` (rows of `src` become columns of `dst`). Used to pack an
    /// operand that is contiguous along the "wrong" dimension. The default is
    /// four 4 × 4 register transposes ([`quad::transpose4x4`]); AVX paths
    /// override it with a 256-bit one.
    ///
    /// # Safety
    /// The 64 source and destination elements are valid; they do not overlap.
    #[inline(always)]
    unsafe fn transpose8x8(src: *const f32, src_rs: isize, dst: *mut f32, dst_rs: usize) {
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
    /// Hints that the cache line holding `p` will be read soon. Never faults.
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
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
/// each row), so the β·C read at the end of a long k loop does not stall.
///
/// # Safety
/// The CPU supports `S` (prefetches never fault; addresses need not be valid).
#[inline(always)]
pub(crate) unsafe fn prefetch_tile<S: Simd>(
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
        // SAFETY: prefetching is a hint and never faults.
        unsafe {
            S::prefetch(row);
            S::prefetch(row.wrapping_offset((n_eff - 1) as isize * csc));
        }
    }
}

/// An operation that is instantiated once per kernel set and run inside that
/// ISA's `#[target_feature]` context (see `dispatch::run`).
///
/// Implementations of `run` must be `#[inline(always)]`: that is what makes the
/// intrinsics inline into the feature-enabled entry point.
pub(crate) trait KernelOp {
    /// What the operation returns.
    type Output;
    /// Runs the operation with SIMD token `S`, register tile `MR × NV·S::LANES`
    /// and cache blocking `blocking`.
    ///
    /// # Safety
    /// The CPU supports `S`; further requirements are the implementor's.
    unsafe fn run<S: Simd, const MR: usize, const NV: usize>(
        self,
        blocking: &Blocking,
    ) -> Self::Output;
}

/// Cache blocking of one kernel set: each ISA file gives its register tile and
/// `kc`; `mc` and `nc` follow the running CPU's caches (see [`cache`] for the
/// rule, and for why `kc` alone is fixed: it decides the rounding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of the register tile (micro-panel height of packed A).
    pub mr: usize,
    /// Columns of the register tile (micro-panel width of packed B).
    pub nr: usize,
    /// Depth of one pass over k; a `kc × nr` micro-panel of B stays in L1.
    pub kc: usize,
    /// Rows of a packed A block; the `mc × kc` block stays in L2 (a quarter or
    /// a sixteenth of it, by the path's residency rule in [`cache`]).
    pub mc: usize,
    /// Columns of a packed B panel; the `kc × nc` panel stays in L3 or, on the
    /// AVX-512 path, in L2 (see [`cache`]).
    pub nc: usize,
}

/// Accumulates one register tile: `acc[i][v] = Σ_p A[i, p] · B[p, v·LANES ..]`.
///
/// # Safety
/// The CPU supports `S`; `a` and `b` are readable as described in the module
/// contract for `kc` steps, all `MR` rows and all `NV·LANES` columns.
#[inline(always)]
pub(crate) unsafe fn accumulate<S: Simd, const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
) -> [[S::V; NV]; MR] {
    // SAFETY: every pointer formed below addresses an element the caller
    // guarantees readable (module contract); S's features are present.
    unsafe {
        let zero = S::splat(0.0);
        let mut acc = [[zero; NV]; MR];
        let mut ap = a;
        let mut bp = b;
        // Unrolled by four: fewer loop branches and pointer bumps per FMA.
        for _ in 0..kc / 4 {
            for u in 0..4 {
                rank1::<S, MR, NV>(
                    &mut acc,
                    a_rs,
                    ap.wrapping_offset(u * a_cs),
                    bp.wrapping_offset(u * b_rs),
                );
            }
            ap = ap.wrapping_offset(4 * a_cs);
            bp = bp.wrapping_offset(4 * b_rs);
        }
        for _ in 0..kc % 4 {
            rank1::<S, MR, NV>(&mut acc, a_rs, ap, bp);
            ap = ap.wrapping_offset(a_cs);
            bp = bp.wrapping_offset(b_rs);
        }
        acc
    }
}

/// One rank-1 update of a register tile: `acc += A[:, p] · B[p, :]`, with
/// `A[i, p]` at `ap + i·a_rs` and `B[p, :]` at `bp`. A function, not a closure:
/// closures do not inherit the caller's `#[target_feature]`s.
///
/// # Safety
/// As [`accumulate`], for one step.
#[inline(always)]
unsafe fn rank1<S: Simd, const MR: usize, const NV: usize>(
    acc: &mut [[S::V; NV]; MR],
    a_rs: isize,
    ap: *const f32,
    bp: *const f32,
) {
    // SAFETY: the caller guarantees MR elements of A at ap + i·a_rs and
    // NV·LANES contiguous elements of B at bp; S's features are present.
    unsafe {
        let mut bv = [S::splat(0.0); NV];
        for (v, slot) in bv.iter_mut().enumerate() {
            *slot = S::load(bp.add(v * S::LANES));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = S::splat(*ap.offset(i as isize * a_rs));
            for (v, x) in row.iter_mut().enumerate() {
                *x = S::fmadd(ai, bv[v], *x);
            }
        }
    }
}

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

/// One row of a tile through the epilogue: `y = α·acc + β·c` then the
/// epilogue, all with unit-stride pointers (`c`, `pre`, `src` rows of `NV·LANES`
/// floats, into C itself or into a staging buffer). Returns the final row.
///
/// # Safety
/// The CPU supports `S`; every pointer that the epilogue kind uses is valid for
/// `NV·LANES` floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_row<S: Simd, const NV: usize>(
    acc: &[S::V; NV],
    alpha: S::V,
    beta: f32,
    c: *mut f32,
    epi: &Epilogue,
    bias: &[S::V; NV],
    pre: *mut f32,
    src: *const f32,
) -> [S::V; NV] {
    // SAFETY: the caller guarantees the pointers; S's features are present.
    unsafe {
        let mut out = *acc;
        for (v, y) in out.iter_mut().enumerate() {
            let p = c.add(v * S::LANES);
            *y = S::mul(alpha, *y);
            if beta != 0.0 {
                *y = S::fmadd(S::splat(beta), S::load(p), *y);
            }
            match *epi {
                Epilogue::None => {}
                Epilogue::Forward { act, .. } => {
                    *y = S::add(*y, bias[v]);
                    if !pre.is_null() {
                        S::store(pre.add(v * S::LANES), *y);
                    }
                    *y = activation::forward::<S>(act, *y);
                }
                Epilogue::Backward {
                    act, from_output, ..
                } => {
                    let s = S::load(src.add(v * S::LANES));
                    let d = if from_output {
                        activation::derivative_from_output::<S>(act, s)
                    } else {
                        activation::derivative::<S>(act, s)
                    };
                    *y = S::mul(*y, d);
                }
            }
            S::store(p, *y);
        }
        out
    }
}

/// Writes `α·acc + β·C`, passed through `epi`, into the `m_eff × n_eff` corner
/// of the tile at `c`.
///
/// # Safety
/// The CPU supports `S`; the `m_eff × n_eff` elements at `c + i·rsc + j·csc`
/// are valid for writes (and reads when `beta != 0`), and nothing else aliases
/// them; the epilogue's pointers are valid for the same corner (bias: `n_eff`
/// floats; colsum: `n_eff` floats).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn store_tile<S: Simd, const MR: usize, const NV: usize>(
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
    let nr = NV * S::LANES;
    // SAFETY: direct accesses stay inside the m_eff × n_eff corner the caller
    // guarantees (the direct path is taken only for full tiles); staged
    // accesses stay inside the MR × nr buffers below.
    unsafe {
        let va = S::splat(alpha);
        let zero = S::splat(0.0);
        if matches!(epi, Epilogue::None) && m_eff == MR && n_eff == nr && csc == 1 {
            // The plain GEMM's full tile: nothing but α·acc + β·C (the same
            // arithmetic as finish_row without an epilogue).
            for (i, row) in acc.iter().enumerate() {
                let cr = c.offset(i as isize * rsc);
                for (v, x) in row.iter().enumerate() {
                    let p = cr.add(v * S::LANES);
                    let mut y = S::mul(va, *x);
                    if beta != 0.0 {
                        y = S::fmadd(S::splat(beta), S::load(p), y);
                    }
                    S::store(p, y);
                }
            }
            return;
        }
        let mut bias = [zero; NV];
        let mut colsum = [zero; NV];
        let colsum_ptr = match *epi {
            Epilogue::Backward { colsum, .. } => colsum,
            _ => core::ptr::null_mut(),
        };
        if m_eff == MR && n_eff == nr && csc == 1 && epi.unit_cols() {
            let (pre, pre_rs) = match *epi {
                Epilogue::Forward {
                    bias: b,
                    pre,
                    pre_rs,
                    ..
                } => {
                    if !b.is_null() {
                        for (v, x) in bias.iter_mut().enumerate() {
                            *x = S::load(b.add(v * S::LANES));
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
                let y = finish_row::<S, NV>(
                    row,
                    va,
                    beta,
                    c.offset(ii * rsc),
                    epi,
                    &bias,
                    offset_or_null(pre, ii * pre_rs),
                    offset_or_null(src as *mut f32, ii * src_rs),
                );
                for (s, y) in colsum.iter_mut().zip(y) {
                    *s = S::add(*s, y);
                }
            }
            if !colsum_ptr.is_null() {
                for (v, s) in colsum.iter().enumerate() {
                    S::store(colsum_ptr.add(v * S::LANES), *s);
                }
            }
            return;
        }
        // Edge or strided tile: stage C (and the epilogue's operands) through
        // zero-padded buffers so the arithmetic is the same vector code.
        let mut cbuf = [[zero; NV]; MR];
        let cb = cbuf.as_mut_ptr() as *mut f32;
        if beta != 0.0 {
            for i in 0..m_eff {
                for j in 0..n_eff {
                    *cb.add(i * nr + j) = *c.offset(i as isize * rsc + j as isize * csc);
                }
            }
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
                        *t.add(j) = *b.add(j);
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
                for i in 0..m_eff {
                    for j in 0..n_eff {
                        *ab.add(i * nr + j) =
                            *src.offset(i as isize * src_rs + j as isize * src_cs);
                    }
                }
                src_stage = ab;
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let y = finish_row::<S, NV>(
                row,
                va,
                beta,
                cb.add(i * nr),
                epi,
                &bias,
                offset_or_null(pre_stage, (i * nr) as isize),
                offset_or_null(src_stage as *mut f32, (i * nr) as isize),
            );
            if i < m_eff {
                for (s, y) in colsum.iter_mut().zip(y) {
                    *s = S::add(*s, y);
                }
            }
        }
        for i in 0..m_eff {
            for j in 0..n_eff {
                *c.offset(i as isize * rsc + j as isize * csc) = *cb.add(i * nr + j);
            }
        }
        if let Epilogue::Forward {
            pre,
            pre_rs,
            pre_cs,
            ..
        } = *epi
        {
            if !pre.is_null() {
                for i in 0..m_eff {
                    for j in 0..n_eff {
                        *pre.offset(i as isize * pre_rs + j as isize * pre_cs) =
                            *ab.add(i * nr + j);
                    }
                }
            }
        }
        if !colsum_ptr.is_null() {
            let t = colsum.as_ptr() as *const f32;
            for j in 0..n_eff {
                *colsum_ptr.add(j) = *t.add(j);
            }
        }
    }
}
