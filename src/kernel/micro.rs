//! The microkernel proper: the k loop that accumulates one register tile
//! (see the contract in the [module docs](super)).

use super::Simd;

/// Accumulates one register tile: `acc[i][v] = Σ_p A[i, p] · B[p, v·LANES ..]`.
///
/// With `MASKED`, B's last vector is read with [`Simd::load_first`] of
/// `b_tail` lanes (`1 ≤ b_tail ≤ LANES`): the no-packing path reads a partial
/// strip of B in place that way, with zeros in the other lanes as a packed
/// panel would hold. Without it `b_tail` is ignored.
///
/// # Safety
/// `a` and `b` are readable as described in the module contract for `kc`
/// steps, all `MR` rows and all `NV·LANES` columns (with `MASKED`, the first
/// `(NV − 1)·LANES + b_tail`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn accumulate<S: Simd, const MR: usize, const NV: usize, const MASKED: bool>(
    s: S,
    kc: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_tail: usize,
) -> [[S::V; NV]; MR] {
    let b_row = BRow::<MASKED> { tail: b_tail };
    let zero = s.splat(0.0);
    let mut acc = [[zero; NV]; MR];
    let mut ap = a;
    let mut bp = b;
    // Unrolled by four: fewer loop branches and pointer bumps per FMA.
    for _ in 0..kc / 4 {
        for u in 0..4 {
            // SAFETY: step 4·t + u < kc of the operands the caller guarantees.
            unsafe {
                rank1::<S, MR, NV, MASKED>(
                    s,
                    &mut acc,
                    a_rs,
                    ap.wrapping_offset(u * a_cs),
                    bp.wrapping_offset(u * b_rs),
                    b_row,
                )
            };
        }
        ap = ap.wrapping_offset(4 * a_cs);
        bp = bp.wrapping_offset(4 * b_rs);
    }
    for _ in 0..kc % 4 {
        // SAFETY: one of the last kc % 4 steps of the caller's operands.
        unsafe { rank1::<S, MR, NV, MASKED>(s, &mut acc, a_rs, ap, bp, b_row) };
        ap = ap.wrapping_offset(a_cs);
        bp = bp.wrapping_offset(b_rs);
    }
    acc
}

/// One rank-1 update of a register tile: `acc += A[:, p] · B[p, :]`, with
/// `A[i, p]` at `ap + i·a_rs` and `B[p, :]` at `bp`. A function, not a closure:
/// closures do not inherit the caller's `#[target_feature]`s.
///
/// # Safety
/// `MR` elements of A are readable at `ap + i·a_rs`, and the elements of B at
/// `bp` that `b_row` reads.
#[inline(always)]
unsafe fn rank1<S: Simd, const MR: usize, const NV: usize, const MASKED: bool>(
    s: S,
    acc: &mut [[S::V; NV]; MR],
    a_rs: isize,
    ap: *const f32,
    bp: *const f32,
    b_row: BRow<MASKED>,
) {
    let mut bv = [s.splat(0.0); NV];
    for (v, slot) in bv.iter_mut().enumerate() {
        // SAFETY: vector v of B's row at bp (caller).
        *slot = unsafe { b_row.load::<S>(s, bp.add(v * S::LANES), v + 1 == NV) };
    }
    for (i, row) in acc.iter_mut().enumerate() {
        // SAFETY: element i < MR of A's column at ap (caller).
        let ai = s.splat(unsafe { *ap.offset(i as isize * a_rs) });
        for (v, x) in row.iter_mut().enumerate() {
            *x = s.fmadd(ai, bv[v], *x);
        }
    }
}

/// How a row of B is read: `NV` full vectors, or with `MASKED` the last one
/// only `tail` lanes deep.
#[derive(Clone, Copy)]
struct BRow<const MASKED: bool> {
    tail: usize,
}

impl<const MASKED: bool> BRow<MASKED> {
    /// The vector at `p`, the last of the row when `last`.
    ///
    /// # Safety
    /// `LANES` floats at `p` are readable, or `tail` when `MASKED && last`.
    #[inline(always)]
    unsafe fn load<S: Simd>(self, s: S, p: *const f32, last: bool) -> S::V {
        // SAFETY: as the caller guarantees.
        unsafe {
            if MASKED && last {
                s.load_first(p, self.tail)
            } else {
                s.load(p)
            }
        }
    }
}
