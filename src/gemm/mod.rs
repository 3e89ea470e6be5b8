//! Cache-blocked, multithreaded `f32` matrix multiply: `C ← α·A·B + β·C`.
//!
//! Two entry points:
//! * [`gemm`] / [`gemm_with`]: safe, over [`MatRef`]/[`MatMut`] views, with
//!   shape checks that panic with the dimensions involved.
//! * [`sgemm`]: the raw-pointer entry point with exactly the signature and
//!   meaning of `matrixmultiply::sgemm`, so one can replace the other.
//!
//! Conventions (BLAS): transposes are stride swaps; `β = 0` means C is never
//! read (it may hold NaN or be uninitialised memory's worth of garbage); `α = 0`
//! or `k = 0` means A and B are not read and C becomes `β·C`.
//!
//! # How it runs
//! * **Kernels**: register-blocked microkernels per ISA (AVX-512F 12×32,
//!   AVX2+FMA 6×16, portable 6×8), chosen once at run time
//!   ([`crate::active_isa`]). Block sizes and the cache level each targets are in
//!   [`Blocking`] ([`Isa::blocking`]).
//! * **Orientation**: the kernels store rows of C with vector stores; when C is
//!   column-major the product is computed as `Cᵀ = Bᵀ·Aᵀ` instead.
//! * **Path**: small problems (operands fit in L2) and single-column-strip
//!   problems skip packing A, as do batch-sized products on the AVX-512 path
//!   of a Zen 4 core (at most 512 rows of A that fit in L2, whose tile rows do
//!   not crowd one L1d set: A and B read in place while the multiply-adds
//!   run, 1.05–1.24× faster there on one thread for 32–256 rows; a
//!   column-major A, as in the weight gradient Xᵀ·δ, up to 1024 rows in half
//!   of L2 when C's tile rows do not crowd a set either); everything
//!   else runs the BLIS loop nest. Both paths sum each
//!   element the same way (k in passes of `kc` steps, C rounded to `f32`
//!   after each), so the path never changes a result bit.
//! * **Threads**: C is cut into as many row or column ranges as threads, at
//!   multiples of the register tile, and each thread runs the whole algorithm on
//!   its range; k is never split. Every element of C is therefore computed by
//!   the same instructions in the same order whatever the thread count: results
//!   are bitwise identical for 1, 2 or N threads. Problems under 0.5 Mi
//!   multiply-adds (about 80³) stay on the calling thread, as do calls from inside a rayon worker.

mod epilogue;
pub(crate) mod loops;
mod pack;

pub use epilogue::{
    backward_delta, dense_forward, gemm_epilogue, weight_grad, Accum, ActInput, BiasGrad, Epilogue,
};

use crate::kernel::{active_isa, dispatch, Blocking, Epilogue as TileEpilogue, Isa};
use crate::matrix::{MatMut, MatRef};
use crate::parallel::{self, Threads};

use loops::Problem;

/// Products with fewer multiply-adds than this stay on the calling thread:
/// handing half of a product to a spinning worker costs a few microseconds
/// (a lock taken by each thread, the epoch seen, the last piece waited for).
/// Measured on a Zen 4 with two threads: products of 0.5–4 M multiply-adds
/// (64×128×64, 100³, 128³, the MNIST net's 128×512×10) ran 1.5–1.9× faster
/// split than on one thread, on every ISA path, while the 32×64×64 products
/// of a small net (0.13 M) made its step slower (38 → 50 µs). It was 4 M
/// while the caller parked for the last piece (then 128³ ran slower on two
/// threads than on one).
const PARALLEL_MIN_FMAS: usize = 1 << 19;

/// Operand footprint (floats of A, B and C) under which packing A is skipped:
/// about 192 KiB, so everything stays in L2 while the tiles are computed.
const DIRECT_MAX_FLOATS: usize = 48 * 1024;

/// Most rows of A for which [`reads_in_place`] keeps A in place: a batch of
/// samples, not a large matrix (1000-row products measured alike either way).
const IN_PLACE_MAX_ROWS: usize = 512;

/// Most rows of a column-major A (the Xᵀ of a weight gradient Xᵀ·δ, whose
/// tile rows are adjacent floats) for which [`reads_in_place`] keeps A in
/// place, when A fills at most half of L2 and C's tile rows spread over the
/// L1d sets. Measured on a 2-core Zen 4, in place against packed, medians of
/// three alternating 1-s runs: 784×128×512 1.01× as fast on one thread and
/// 1.03–1.05× on two (each thread's column piece no longer packs all of A
/// again), 1024×128×512 0.98–1.00× and 1.03×; with C's rows 4 KiB apart
/// (n = 1024: 1024×128×1024, 784×128×1024) 0.88–0.94×, and with A larger
/// than half of L2 (1024×256×1024) 0.94–0.98×.
const IN_PLACE_MAX_ROWS_COLUMN_MAJOR_A: usize = 1024;

/// Most rows of one register tile whose A rows may map to the same L1d set
/// (the set repeats every 4 KiB on the x86-64 cores of the last decade: 64
/// sets of 64-byte lines) for [`reads_in_place`]. A row stride of 4 KiB
/// (k = 1024) puts all 12 rows in one 8-way set, and the product ran at
/// 0.56–0.9× the packed path's speed; 2 KiB (6 rows per set) ran 6 % faster.
const IN_PLACE_MAX_ROWS_PER_SET: usize = 6;

/// Column strips of the register tile each thread must get before the packed
/// path splits C by columns: every column piece packs all of A again, which
/// pays for itself only when a piece is wide enough to reuse it (see
/// `choose_split`).
const COLS_MIN_TILES: usize = 4;

/// Whether operand A is copied into packed micro-panels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Packing {
    /// Decide from the shape and the CPU (see the module docs). The choice
    /// changes speed only: both paths give the same bits.
    #[default]
    Auto,
    /// Always run the packed (BLIS) loop nest.
    Always,
    /// Never pack A; B is copied only where a strip is partial or not
    /// contiguous along its rows. k still runs in passes of `kc` steps, so the
    /// bits are those of [`Packing::Always`].
    Never,
}

/// Options of a [`gemm_with`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GemmOptions {
    /// How many threads to use.
    pub threads: Threads,
    /// Force a kernel path; `None` uses [`crate::active_isa`].
    pub isa: Option<Isa>,
    /// Packing policy; the result is the same up to rounding either way.
    pub packing: Packing,
}

/// `C ← α·A·B + β·C` with the crate's thread setting and active ISA.
///
/// Shapes: A is `m × k`, B is `k × n`, C is `m × n`; any strides.
///
/// # Panics
/// If the shapes do not agree; the message names the dimension and both sizes.
///
/// ```
/// use backprop::gemm::gemm;
/// use backprop::matrix::{MatMut, MatRef};
/// let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 × 3
/// let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // 3 × 2
/// let mut c = [f32::NAN; 4]; // β = 0: never read
/// gemm(
///     1.0,
///     MatRef::from_slice(&a, 2, 3),
///     MatRef::from_slice(&b, 3, 2),
///     0.0,
///     MatMut::from_slice_mut(&mut c, 2, 2),
/// );
/// assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
/// // Aᵀ·A through strides, no copy:
/// let mut g = [0.0f32; 9];
/// let a = MatRef::from_slice(&a, 2, 3);
/// gemm(1.0, a.t(), a, 0.0, MatMut::from_slice_mut(&mut g, 3, 3));
/// assert_eq!(g[0], 17.0);
/// ```
#[track_caller]
pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) {
    gemm_with(&GemmOptions::default(), alpha, a, b, beta, c)
}

/// [`gemm`] with explicit [`GemmOptions`] (thread count, forced ISA).
///
/// # Panics
/// If the shapes do not agree, or `options.isa` names a path this CPU lacks.
#[track_caller]
pub fn gemm_with(
    options: &GemmOptions,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
) {
    check_shapes(&a, &b, &c);
    let isa = options.isa.unwrap_or_else(active_isa);
    dispatch::require(isa);
    let p = Problem::from_views(alpha, &a, &b, beta, &mut c, TileEpilogue::None);
    // SAFETY: the views guarantee every element of A, B and C is in bounds, C's
    // elements are distinct, and the borrows keep C exclusive of A and B.
    unsafe { execute(p, isa, options.threads.count(), options.packing) }
}

#[track_caller]
pub(super) fn check_shapes(a: &MatRef<'_>, b: &MatRef<'_>, c: &MatMut<'_>) {
    if a.cols() != b.rows() {
        shape_panic(format!(
            "inner dimensions differ: A is {}×{} but B is {}×{} (A.cols = {} ≠ B.rows = {})",
            a.rows(),
            a.cols(),
            b.rows(),
            b.cols(),
            a.cols(),
            b.rows()
        ));
    }
    if c.rows() != a.rows() || c.cols() != b.cols() {
        shape_panic(format!(
            "C is {}×{} but A·B is {}×{} (A is {}×{}, B is {}×{})",
            c.rows(),
            c.cols(),
            a.rows(),
            b.cols(),
            a.rows(),
            a.cols(),
            b.rows(),
            b.cols()
        ));
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn shape_panic(msg: String) -> ! {
    panic!("gemm: {msg}")
}

/// `C ← α·A·B + β·C` through raw pointers, a drop-in for `matrixmultiply::sgemm`.
///
/// A is `m × k` with element `(i, p)` at `a + i·rsa + p·csa`, B is `k × n`
/// (`b + p·rsb + j·csb`), C is `m × n` (`c + i·rsc + j·csc`); strides are in
/// elements and may be negative. Uses the crate's thread setting and active ISA.
///
/// # Safety
/// * Every element of A and B addressed by the shapes and strides must be
///   readable, and every element of C readable (unless β = 0) and writable.
/// * The strides of C must map distinct `(i, j)` to distinct elements.
/// * C must not overlap A or B.
///
/// ```
/// let a = [1.0f32, 2.0, 3.0, 4.0];
/// let mut c = [0.0f32; 4];
/// // C = A·Aᵀ, A row-major 2 × 2; Aᵀ is A with its strides swapped.
/// unsafe {
///     backprop::gemm::sgemm(
///         2, 2, 2, 1.0, a.as_ptr(), 2, 1, a.as_ptr(), 1, 2, 0.0, c.as_mut_ptr(), 2, 1,
///     )
/// };
/// assert_eq!(c, [5.0, 11.0, 11.0, 25.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    let p = Problem {
        m,
        k,
        n,
        alpha,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        beta,
        c,
        rsc,
        csc,
        epi: TileEpilogue::None,
    };
    // SAFETY: the caller's contract above is exactly `execute`'s.
    unsafe { execute(p, active_isa(), parallel::num_threads(), Packing::Auto) }
}

/// Which loop nest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Pack A and B (BLIS).
    Packed,
    /// Read operands in place.
    Direct,
}

/// How a problem is cut across threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    Rows { chunk: usize },
    Cols { chunk: usize },
}

/// Decides orientation, path and split, then runs the pieces.
///
/// # Safety
/// As [`sgemm`]; `isa` is available.
pub(crate) unsafe fn execute(p: Problem, isa: Isa, threads: usize, packing: Packing) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    let has_epilogue = !matches!(p.epi, TileEpilogue::None);
    if p.k == 0 || p.alpha == 0.0 {
        if has_epilogue {
            // A and B are not read, but the epilogue still runs on β·C: a
            // k = 0 product through the no-packing path does exactly that.
            let q = Problem { k: 0, ..p };
            dispatch::run(isa, loops::Direct { problem: &q });
        } else {
            // SAFETY: forwarded caller contract on C.
            unsafe { scale_c(&p) };
        }
        return;
    }
    // Vector stores run along rows of C: prefer the orientation where C's
    // columns are contiguous (or the smaller stride when neither is). An
    // epilogue's operands are laid out like C, so it keeps the orientation.
    let transpose = p.csc != 1 && (p.rsc == 1 || p.rsc.unsigned_abs() < p.csc.unsigned_abs());
    let p = if transpose && !has_epilogue {
        p.transposed()
    } else {
        p
    };
    let bl = isa.blocking();
    let path = match packing {
        Packing::Auto => choose_path(&p, &bl, isa),
        Packing::Always => Path::Packed,
        Packing::Never => Path::Direct,
    };
    let (split, pieces) = choose_split(&p, &bl, path, threads);
    match (path, split) {
        // SAFETY: forwarded caller contract; m, n, k ≥ 1.
        (Path::Packed, Split::Rows { chunk }) => unsafe {
            loops::packed(&p, isa, threads, pieces, chunk)
        },
        (Path::Packed, Split::Cols { chunk }) => {
            parallel::for_each_piece(threads, pieces, |t| {
                let q = p.cols(t * chunk, chunk.min(p.n - t * chunk));
                // SAFETY: a column range of a valid problem; pieces write
                // disjoint columns of C.
                unsafe { loops::packed(&q, isa, 1, 1, q.m) }
            })
        }
        (Path::Direct, split) => parallel::for_each_piece(threads, pieces, |t| {
            let q = match split {
                Split::Rows { chunk } => p.rows(t * chunk, chunk.min(p.m - t * chunk), bl.mr),
                Split::Cols { chunk } => p.cols(t * chunk, chunk.min(p.n - t * chunk)),
            };
            dispatch::run(isa, loops::Direct { problem: &q });
        }),
    }
}

/// Skip packing A when everything fits in L2, or when there is a single
/// strip of columns (A would be read once, so packing it only adds a copy) and
/// that strip of B is small enough to stay cached while all of A streams by,
/// or, on the AVX-512 path of a core with half-rate 512-bit FMAs (Zen 4),
/// when [`reads_in_place`] says A and B can be read where they are.
fn choose_path(p: &Problem, bl: &Blocking, isa: Isa) -> Path {
    let footprint = p.m * p.k + p.k * p.n + p.m * p.n;
    let single_strip = p.n <= bl.nr && p.k * bl.nr <= 32 * 1024;
    // The cheap tests first: the smallest products, which take this path
    // most often, never reach the CPU queries.
    if footprint <= DIRECT_MAX_FLOATS
        || single_strip
        || isa == Isa::Avx512
            && crate::kernel::cache::fma512_half_rate()
            && reads_in_place(p, bl.mr, crate::kernel::cache_sizes().l2)
    {
        Path::Direct
    } else {
        Path::Packed
    }
}

/// Whether a batch-sized product (at most [`IN_PLACE_MAX_ROWS`] rows) runs
/// faster without packing on a core that takes 24 cycles per k step of a
/// 12 × 32 tile (the AVX-512 path on Zen 4): A stays in L2 (`m·k` floats at
/// most `l2` bytes) while B's column strips stream by, read in place, during
/// the multiply-adds (packing B first costs a pass over it that nothing
/// overlaps), and a tile's `mr` rows of A do not crowd into one L1d set
/// ([`IN_PLACE_MAX_ROWS_PER_SET`]; column-major A, whose tile rows are
/// adjacent, never does). Measured on a 2-core Zen 4 against the packed path,
/// one thread: 32×784×512 1.24×, 64×784×512 1.13×, 128×784×512 1.08×,
/// 128×512×512 1.06×, 256³ 1.05×, 256×784×512 1.04× faster, 512³ and the
/// large shapes alike; two threads 1.07–1.35×. The AVX2 path (6 × 16 tile,
/// 6 cycles per k step) lost 8–44 % the same way, and a full-rate 512-bit
/// core (Intel, Zen 5) takes 12 cycles per k step, where B's lines would
/// arrive from L2 as often as on that AVX2 path, so neither uses this rule.
///
/// A column-major A may have up to [`IN_PLACE_MAX_ROWS_COLUMN_MAJOR_A`] rows
/// when it fills at most half of L2 and C's tile rows do not crowd one L1d
/// set either.
fn reads_in_place(p: &Problem, mr: usize, l2: usize) -> bool {
    let a_bytes = p.m * p.k * 4;
    if p.rsa == 1 {
        return (p.m <= IN_PLACE_MAX_ROWS && a_bytes <= l2)
            || (p.m <= IN_PLACE_MAX_ROWS_COLUMN_MAJOR_A
                && a_bytes <= l2 / 2
                && rows_spread_over_sets(p.rsc, mr));
    }
    p.m <= IN_PLACE_MAX_ROWS && a_bytes <= l2 && p.csa == 1 && rows_spread_over_sets(p.rsa, mr)
}

/// Whether `rows` rows `stride` floats apart put at most
/// [`IN_PLACE_MAX_ROWS_PER_SET`] of them in any one L1d set.
fn rows_spread_over_sets(stride: isize, rows: usize) -> bool {
    let mut rows_per_set = [0usize; 64];
    for r in 0..rows {
        rows_per_set[(r * stride.unsigned_abs() * 4 / 64) % 64] += 1;
    }
    rows_per_set.iter().all(|&n| n <= IN_PLACE_MAX_ROWS_PER_SET)
}

/// Cuts C into at most `threads` ranges at multiples of the register tile, so
/// the tile grid (and with it every element's arithmetic) is the same as with
/// one thread. The direct path prefers columns (A is not packed, so column
/// pieces duplicate nothing). The packed path prefers columns too once each
/// piece gets [`COLS_MIN_TILES`] column strips: each piece then packs its own
/// part of B and all of A and runs without a barrier, where a row split packs
/// B cooperatively, waits for all of it, and has every core read the panels
/// the other cores packed out of their caches. Measured on a 2-core Sapphire
/// Rapids-class Xeon (avx512, two threads), columns beat rows by 4–15 % on
/// the MLP shapes (128×784×512, 128×512×512, 256×1024×1024) and tie at 1024³.
/// Narrower products keep the row split, which never packs A twice.
fn choose_split(p: &Problem, bl: &Blocking, path: Path, threads: usize) -> (Split, usize) {
    let whole = (Split::Rows { chunk: p.m }, 1);
    if threads <= 1 || p.m * p.n * p.k < PARALLEL_MIN_FMAS {
        return whole;
    }
    let tiles_m = p.m.div_ceil(bl.mr);
    let tiles_n = p.n.div_ceil(bl.nr);
    let by_rows = |t: usize| {
        let chunk = tiles_m.div_ceil(t) * bl.mr;
        (Split::Rows { chunk }, p.m.div_ceil(chunk))
    };
    let by_cols = |t: usize| {
        let chunk = tiles_n.div_ceil(t) * bl.nr;
        (Split::Cols { chunk }, p.n.div_ceil(chunk))
    };
    let prefer_rows = match path {
        Path::Direct => tiles_n < threads,
        Path::Packed => tiles_n < threads * COLS_MIN_TILES,
    };
    let (first, second) = if prefer_rows {
        (by_rows(threads), by_cols(threads))
    } else {
        (by_cols(threads), by_rows(threads))
    };
    if first.1 >= threads || first.1 >= second.1 {
        first
    } else {
        second
    }
}

/// `C ← β·C` (`β = 0` writes zeros without reading C).
///
/// # Safety
/// As [`sgemm`] for C.
unsafe fn scale_c(p: &Problem) {
    for i in 0..p.m {
        for j in 0..p.n {
            // SAFETY: (i, j) is inside C by the caller's contract.
            unsafe {
                let x = p.c.offset(i as isize * p.rsc + j as isize * p.csc);
                *x = if p.beta == 0.0 { 0.0 } else { p.beta * *x };
            }
        }
    }
}

/// The register tile and blocking of the active ISA's GEMM kernels.
///
/// ```
/// let b = backprop::gemm::blocking();
/// assert!(b.mr >= 1 && b.nr % 8 == 0 && b.kc >= 64);
/// ```
pub fn blocking() -> Blocking {
    active_isa().blocking()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape and A's strides of a product; no operand is ever read.
    fn problem(m: usize, k: usize, n: usize, rsa: isize, csa: isize) -> Problem {
        Problem {
            m,
            k,
            n,
            alpha: 1.0,
            a: std::ptr::null(),
            rsa,
            csa,
            b: std::ptr::null(),
            rsb: n as isize,
            csb: 1,
            beta: 0.0,
            c: std::ptr::null_mut(),
            rsc: n as isize,
            csc: 1,
            epi: TileEpilogue::None,
        }
    }

    #[test]
    fn batch_products_read_in_place_unless_a_tiles_rows_share_an_l1_set() {
        const L2: usize = 1 << 20;
        let row_major = |m: usize, k: usize| problem(m, k, 512, k as isize, 1);
        // The MNIST net's layers, and rows 2 KiB apart (6 of 12 per set).
        assert!(reads_in_place(&row_major(128, 784), 12, L2));
        assert!(reads_in_place(&row_major(32, 784), 12, L2));
        assert!(reads_in_place(&row_major(128, 512), 12, L2));
        assert!(reads_in_place(&row_major(128, 1536), 12, L2));
        // Rows 4 KiB or 8 KiB apart: all 12 in one set.
        assert!(!reads_in_place(&row_major(128, 1024), 12, L2));
        assert!(!reads_in_place(&row_major(64, 2048), 12, L2));
        // A 6-row tile never crowds a set past 6.
        assert!(reads_in_place(&row_major(128, 1024), 6, L2));
        // A larger than L2, or more rows than a batch.
        assert!(!reads_in_place(&row_major(512, 784), 12, L2));
        assert!(reads_in_place(&row_major(512, 784), 12, 2 * L2));
        assert!(!reads_in_place(&row_major(1024, 64), 12, L2));
        // Column-major A: a tile's rows are adjacent floats.
        assert!(reads_in_place(&problem(512, 128, 512, 1, 512), 12, L2));
        // Past 512 rows, column-major A in half of L2 with C's rows 2 KiB
        // apart (the MNIST net's first weight gradient)...
        let col_major = |m: usize, k: usize, n: usize| problem(m, k, n, 1, m as isize);
        assert!(reads_in_place(&col_major(784, 128, 512), 12, L2));
        assert!(reads_in_place(&col_major(1024, 128, 512), 12, L2));
        // ...but not with C's rows 4 KiB apart, A past half of L2, or more
        // than 1024 rows.
        assert!(!reads_in_place(&col_major(784, 128, 1024), 12, L2));
        assert!(!reads_in_place(&col_major(784, 256, 512), 12, L2));
        assert!(!reads_in_place(&col_major(1024, 256, 1024), 12, L2));
        assert!(!reads_in_place(&col_major(2048, 32, 512), 12, L2));
        // Neither stride 1: always packed.
        assert!(!reads_in_place(&problem(64, 64, 64, 2, 128), 12, L2));
    }

    #[test]
    fn only_the_half_rate_avx512_path_reads_large_batches_in_place() {
        let bl = Isa::Avx2.blocking();
        let p = problem(128, 784, 512, 784, 1);
        assert_eq!(choose_path(&p, &bl, Isa::Avx2), Path::Packed);
        assert_eq!(choose_path(&p, &bl, Isa::Portable), Path::Packed);
        let bl = Isa::Avx512.blocking();
        let expected = if crate::kernel::cache::fma512_half_rate()
            && reads_in_place(&p, bl.mr, crate::kernel::cache_sizes().l2)
        {
            Path::Direct
        } else {
            Path::Packed
        };
        assert_eq!(choose_path(&p, &bl, Isa::Avx512), expected);
    }
}
