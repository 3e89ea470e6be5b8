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
    if a_rs != 1 && MR > 1 {
        // A read in place, rows a_rs apart. SAFETY: forwarded caller contract.
        return unsafe {
            accumulate_rows::<S, MR, NV, MASKED>(s, kc, a, a_rs, a_cs, b, b_rs, b_row)
        };
    }
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
                    |i| ap.wrapping_offset(u * a_cs + i as isize * a_rs),
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
        unsafe {
            rank1::<S, MR, NV, MASKED>(
                s,
                &mut acc,
                |i| ap.wrapping_offset(i as isize * a_rs),
                bp,
                b_row,
            )
        };
        ap = ap.wrapping_offset(a_cs);
        bp = bp.wrapping_offset(b_rs);
    }
    acc
}

/// Rows of A that share one base pointer in [`accumulate_rows`].
const GROUP: usize = 4;

/// Most base pointers [`accumulate_rows`] keeps (so `MR ≤ 16`).
const MAX_GROUPS: usize = 4;

/// [`accumulate`] for A read in place with rows `a_rs` apart (a row-major
/// operand of the no-packing path).
///
/// Written as `ap + i·a_rs`, the compiler walks the rows of the tile with one
/// register, adding `a_rs` once per row: a serial chain of `MR` additions per
/// k step, which bounds a one-vector 12-row tile at 12 cycles per k step where
/// its 12 FMAs need 6 (and left the two-vector tile no slack). Here each group
/// of four rows has its own base pointer, bumped by `a_cs` once per k step,
/// and row `4g + r` is `base[g]`, `base[g] + a_rs`, `base[g] + 2·a_rs` or
/// `base[g] + 3·a_rs`, each one addressing mode. The bases pass through
/// [`opaque`] every step: otherwise the compiler rewrites them into twelve
/// row pointers sharing one offset, more than the general registers hold
/// (the loop then reloads pointers from the stack).
///
/// The arithmetic, and so every bit, is [`accumulate`]'s: each element is one
/// FMA chain over k in order. Measured on an AVX-512 Xeon (one thread, the
/// fused forward product at batch 32, alternating in one process): 32×512×10
/// 0.73× the time, 32×64×10 0.94×, 32×64×64 0.96×; AVX2 path 0.95–0.98×.
///
/// # Safety
/// As [`accumulate`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_rows<S: Simd, const MR: usize, const NV: usize, const MASKED: bool>(
    s: S,
    kc: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_row: BRow<MASKED>,
) -> [[S::V; NV]; MR] {
    const { assert!(MR <= GROUP * MAX_GROUPS) };
    let groups = MR.div_ceil(GROUP);
    let zero = s.splat(0.0);
    let mut acc = [[zero; NV]; MR];
    let (rs, rs3) = (opaque(a_rs), opaque(3 * a_rs));
    let mut base = [a; MAX_GROUPS];
    for (g, p) in base.iter_mut().enumerate().take(groups) {
        *p = a.wrapping_offset((g * GROUP) as isize * a_rs);
    }
    let mut bp = b;
    for _ in 0..kc {
        for p in base.iter_mut().take(groups) {
            *p = opaque_ptr(*p);
        }
        // Row i is a + i·a_rs + step·a_cs, from its group's base.
        let row = |i: usize| {
            let p = base[i / GROUP];
            match i % GROUP {
                0 => p,
                1 => p.wrapping_offset(rs),
                2 => p.wrapping_offset(2 * rs),
                _ => p.wrapping_offset(rs3),
            }
        };
        // SAFETY: one of the kc steps of the caller's operands.
        unsafe { rank1::<S, MR, NV, MASKED>(s, &mut acc, row, bp, b_row) };
        for p in base.iter_mut().take(groups) {
            *p = p.wrapping_offset(a_cs);
        }
        bp = bp.wrapping_offset(b_rs);
    }
    acc
}

/// `x`, through an empty assembly statement: the compiler no longer knows how
/// the value was computed, so it cannot re-derive other addresses from it.
#[inline(always)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_mut)
)]
fn opaque(x: isize) -> isize {
    let mut y = x;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: the template is a comment: nothing executes, the value stays in
    // its register, and no memory, stack or flag is touched.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) y, options(pure, nomem, nostack, preserves_flags))
    };
    y
}

/// [`opaque`] for a pointer (its provenance kept). The assembly neither reads
/// nor writes through it: `nomem` is the truth here.
#[inline(always)]
#[allow(clippy::pointers_in_nomem_asm_block)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_mut)
)]
fn opaque_ptr(p: *const f32) -> *const f32 {
    let mut q = p;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: as in `opaque`: nothing executes and the pointer is unchanged.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) q, options(pure, nomem, nostack, preserves_flags))
    };
    q
}

/// One rank-1 update of a register tile: `acc += A[:, p] · B[p, :]`, with
/// `A[i, p]` at `row(i)` and `B[p, :]` at `bp`. A function, not a closure:
/// closures do not inherit the caller's `#[target_feature]`s (`row` only
/// computes an address, and is inlined).
///
/// # Safety
/// `row(i)` is readable for `i < MR`, and the elements of B at `bp` that
/// `b_row` reads.
#[inline(always)]
unsafe fn rank1<S: Simd, const MR: usize, const NV: usize, const MASKED: bool>(
    s: S,
    acc: &mut [[S::V; NV]; MR],
    row: impl Fn(usize) -> *const f32,
    bp: *const f32,
    b_row: BRow<MASKED>,
) {
    let mut bv = [s.splat(0.0); NV];
    for (v, slot) in bv.iter_mut().enumerate() {
        // SAFETY: vector v of B's row at bp (caller).
        *slot = unsafe { b_row.load::<S>(s, bp.add(v * S::LANES), v + 1 == NV) };
    }
    for (i, acc_row) in acc.iter_mut().enumerate() {
        // SAFETY: element i < MR of A's column (caller).
        let ai = s.splat(unsafe { *row(i) });
        for (v, x) in acc_row.iter_mut().enumerate() {
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
