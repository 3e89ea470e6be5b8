//! The BLIS loop nest (jc → pc → ic → jr → ir) and the no-packing path.
//!
//! Loop by loop, with what each keeps in which cache (sizes in `Blocking`):
//!
//! ```text
//! jc: n in steps of NC            B panel kc × NC packed once per (jc, pc)  → L3 (L2 on Intel avx512)
//!  pc: k in steps of KC           the only loop over k; β applies on its first pass
//!   ic: m in steps of MC          A block MC × kc packed once per (ic, pc)  → L2
//!    jr: NC in steps of NR        B micro-panel kc × NR reused by all of ir → L1 (L2 on avx512)
//!     ir: MC in steps of MR       A micro-panel MR × kc streamed from L2
//!      microkernel: MR × NR tile of C in registers
//! ```
//!
//! A product computed by one piece (the whole product on one thread, or one
//! thread's columns under a column split) of at most `Blocking::mc_whole` rows
//! runs the same nest with one jc block and one ic block, and packs each B
//! micro-panel in the jr loop, just before the ir loop reads it, instead of
//! the whole panel ahead (`Block::b_per_panel`).
//!
//! Threads (the split is chosen in `gemm::choose_split`): a column split runs
//! this loop nest whole on each thread's columns of C, each thread packing its
//! own part of B and all of A; a row split packs the B panel once,
//! cooperatively, and shares it, each thread then owning a range of rows of C
//! (the ic loop is split) and packing its own A blocks. k is never split. The
//! no-packing path runs whole on each thread's rectangle of C.

use std::cell::RefCell;

use crate::kernel::{
    accumulate, dispatch, prefetch_tile, store_tile, Blocking, Epilogue, Isa, KernelOp, MaskedLoad,
    Simd,
};
use crate::matrix::{MatMut, MatRef};
use crate::parallel;

use super::pack::{pack_a, pack_a_panel, pack_b_panel};

/// One `C ← α·A·B + β·C` problem as raw parts (matrixmultiply's argument order).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub alpha: f32,
    pub a: *const f32,
    pub rsa: isize,
    pub csa: isize,
    pub b: *const f32,
    pub rsb: isize,
    pub csb: isize,
    pub beta: f32,
    pub c: *mut f32,
    pub rsc: isize,
    pub csc: isize,
    /// Applied to each tile of C on the last pass over k.
    pub epi: Epilogue,
}

// SAFETY: a Problem is only built from views (or raw pointers whose validity
// the `sgemm` caller guarantees) that outlive the call; pieces given to
// different threads write disjoint parts of C.
unsafe impl Send for Problem {}
// SAFETY: as above.
unsafe impl Sync for Problem {}

impl Problem {
    /// The problem `C ← epi(α·A·B + β·C)` over checked views (shapes agree).
    pub(crate) fn from_views(
        alpha: f32,
        a: &MatRef<'_>,
        b: &MatRef<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
        epi: Epilogue,
    ) -> Problem {
        Problem {
            m: a.rows(),
            k: a.cols(),
            n: b.cols(),
            alpha,
            a: a.as_ptr(),
            rsa: a.row_stride(),
            csa: a.col_stride(),
            b: b.as_ptr(),
            rsb: b.row_stride(),
            csb: b.col_stride(),
            beta,
            c: c.as_mut_ptr(),
            rsc: c.row_stride(),
            csc: c.col_stride(),
            epi,
        }
    }

    /// The same product as `Cᵀ = Bᵀ·Aᵀ` (only without an epilogue, whose
    /// operands are laid out for C).
    pub(crate) fn transposed(self) -> Problem {
        debug_assert!(matches!(self.epi, Epilogue::None));
        Problem {
            m: self.n,
            n: self.m,
            a: self.b,
            rsa: self.csb,
            csa: self.rsb,
            b: self.a,
            rsb: self.csa,
            csb: self.rsa,
            rsc: self.csc,
            csc: self.rsc,
            ..self
        }
    }

    /// Rows `r0 .. r0 + rows` of the product (A, C and the epilogue
    /// restricted); `r0` is a multiple of the strip height `mr`.
    pub(crate) fn rows(self, r0: usize, rows: usize, mr: usize) -> Problem {
        Problem {
            m: rows,
            a: self.a.wrapping_offset(r0 as isize * self.rsa),
            c: self.c.wrapping_offset(r0 as isize * self.rsc),
            epi: self.epi.at(r0, 0, mr),
            ..self
        }
    }

    /// Columns `c0 .. c0 + cols` of the product (B, C and the epilogue restricted).
    pub(crate) fn cols(self, c0: usize, cols: usize) -> Problem {
        Problem {
            n: cols,
            b: self.b.wrapping_offset(c0 as isize * self.csb),
            c: self.c.wrapping_offset(c0 as isize * self.csc),
            epi: self.epi.at(0, c0, 1),
            ..self
        }
    }
}

/// A 64-byte-aligned scratch buffer that only grows.
#[derive(Default)]
struct Scratch(Vec<f32>);

impl Scratch {
    /// A pointer to at least `len` floats, aligned to 64 bytes.
    fn get(&mut self, len: usize) -> *mut f32 {
        const PAD: usize = 16;
        if self.0.len() < len + PAD {
            self.0 = vec![0.0; len + PAD];
        }
        let p = self.0.as_mut_ptr();
        // align_offset on *mut f32 counts elements; at most 15 for 64 bytes.
        p.wrapping_add(p.align_offset(64))
    }
}

thread_local! {
    /// Per-thread scratch, reused across calls so the steady state allocates
    /// nothing: `.0` packed A blocks (and the direct path's edge strips), `.1`
    /// the packed B panel a thread shares with the others while it orchestrates
    /// (or the one micro-panel of a `b_per_panel` block).
    static SCRATCH: RefCell<(Scratch, Scratch)> = RefCell::new(Default::default());
}

/// This thread's A scratch (at least `len` floats, 64-byte aligned). The
/// pointer stays valid until the next `scratch_a` call on this thread; a GEMM
/// piece makes one call and never runs code that could make another.
///
/// Kernel loops must not run inside the `with` closure: closures do not inherit
/// the `#[target_feature]`s of the function around them, and the kernels would
/// be compiled for the baseline ISA.
fn scratch_a(len: usize) -> *mut f32 {
    SCRATCH.with(|s| s.borrow_mut().0.get(len))
}

/// This thread's B scratch; as [`scratch_a`].
fn scratch_b(len: usize) -> *mut f32 {
    SCRATCH.with(|s| s.borrow_mut().1.get(len))
}

/// Most floats of packed B shared by the threads at once (8 MiB): B is packed
/// for as many KC blocks as fit, so one fork-join packs it all for most shapes.
/// A product on one piece has no fork-join to save and packs one KC block at
/// a time: a group of several is larger than the cache its `kc × nc` panel is
/// sized for, so the first block is read back from further out than planned.
/// (Measured on one thread, avx512, alternating in one process: 1024³ and
/// 2048×1024×1024 at 0.99× the time, 0.95× once under a loaded L3; small
/// next to the host's noise.)
const B_GROUP_FLOATS: usize = 2 * 1024 * 1024;

/// One pass over k of every tile: steps `pc .. pc + kcb` summed into C,
/// which holds `β·C` before the first pass and is rounded to `f32` after each;
/// the epilogue runs on the last pass alone. Both paths sum every element in
/// these passes (of `Blocking::kc` steps), so the path never changes a bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pass {
    pc: usize,
    kcb: usize,
    first: bool,
    last: bool,
}

impl Pass {
    /// The passes of `kc` steps over steps `from .. to` of a `k`-step product
    /// (`from` a multiple of `kc`); one empty pass when `k = 0`, which makes C
    /// `β·C` and runs the epilogue.
    fn over(from: usize, to: usize, kc: usize, k: usize) -> impl Iterator<Item = Pass> {
        debug_assert!(from <= to && to <= k && kc > 0 && from.is_multiple_of(kc));
        let passes = (to - from).div_ceil(kc).max(1);
        (0..passes).map(move |i| {
            let pc = from + i * kc;
            let kcb = kc.min(to - pc);
            Pass {
                pc,
                kcb,
                first: pc == 0,
                last: pc + kcb == k,
            }
        })
    }

    /// The β of this pass: the caller's on the first, 1 after.
    fn beta(self, beta: f32) -> f32 {
        if self.first {
            beta
        } else {
            1.0
        }
    }

    /// The epilogue of the tile at `(i0, j0)` on this pass: the problem's on
    /// the last pass, none before.
    fn epilogue(self, epi: &Epilogue, i0: usize, j0: usize, mr: usize) -> Epilogue {
        if self.last {
            epi.at(i0, j0, mr)
        } else {
            Epilogue::None
        }
    }
}

/// The packed BLIS path: `C ← α·A·B + β·C` with B packed once per (jc, k-group)
/// and shared by `pieces` threads that each own `row_chunk` rows of C (a
/// multiple of MR) and pack their own A blocks. `pieces = 1` runs inline.
///
/// Two fork-joins per group: pack B (each piece its share of micro-panels),
/// then compute (each piece its rows). Packing is a copy and the compute order
/// of every element is fixed, so the split does not change any result bit.
/// One piece of at most `Blocking::mc_whole` rows skips the first: it packs
/// each micro-panel of B itself as it goes (`Block::b_per_panel`), which changes
/// no bit either.
///
/// # Safety
/// As `gemm::sgemm` for `p`, with `m, n, k ≥ 1`; `isa` is available.
pub(crate) unsafe fn packed(
    p: &Problem,
    isa: Isa,
    threads: usize,
    pieces: usize,
    row_chunk: usize,
) {
    let bl = isa.blocking();
    let nr = bl.nr;
    // A piece of few rows packs A whole and B one micro-panel at a time (see
    // `Block::b_per_panel`); there is one block of columns and one group of k.
    let b_per_panel = pieces == 1 && p.m <= bl.mc_whole;
    let (nc, group, bbuf) = if b_per_panel {
        (p.n, p.k, scratch_b(nr * bl.kc.min(p.k)))
    } else {
        let nc_max = bl.nc.min(p.n.next_multiple_of(nr));
        // k rows of B packed per group: one KC block when one piece computes
        // it, so the panel is still in its cache when read (see
        // B_GROUP_FLOATS); whole KC blocks, at least one, when it is shared.
        let group = if pieces == 1 {
            bl.kc
        } else {
            (B_GROUP_FLOATS / nc_max).max(bl.kc) / bl.kc * bl.kc
        };
        (bl.nc, group, scratch_b(nc_max * group.min(p.k)))
    };
    for jc in (0..p.n).step_by(nc) {
        let ncb = nc.min(p.n - jc);
        let panels = ncb.div_ceil(nr);
        let panel_chunk = panels.div_ceil(pieces);
        for k0 in (0..p.k).step_by(group) {
            let kg = group.min(p.k - k0);
            let block = Block {
                p,
                jc,
                ncb,
                k0,
                kg,
                bbuf,
                b_per_panel,
            };
            if !b_per_panel {
                parallel::for_each_piece(threads, pieces, |t| {
                    let lo = (t * panel_chunk).min(panels);
                    let hi = ((t + 1) * panel_chunk).min(panels);
                    dispatch::run(
                        isa,
                        PackB {
                            block,
                            panels: lo..hi,
                        },
                    );
                });
            }
            parallel::for_each_piece(threads, pieces, |t| {
                let lo = (t * row_chunk).min(p.m);
                let hi = ((t + 1) * row_chunk).min(p.m);
                dispatch::run(
                    isa,
                    Compute {
                        block,
                        rows: lo..hi,
                    },
                );
            });
        }
    }
}

/// One (jc, k-group) block of the packed path, shared by its pieces.
#[derive(Clone, Copy)]
struct Block<'a> {
    p: &'a Problem,
    /// First column of the block and its width.
    jc: usize,
    ncb: usize,
    /// First k of the group and its depth.
    k0: usize,
    kg: usize,
    /// The packed group: for each KC block in turn, `ceil(ncb/nr)` micro-panels
    /// of `nr × kcb`. With `b_per_panel`, room for one micro-panel, which the
    /// computing piece packs itself.
    bbuf: *mut f32,
    /// The block has one piece, of at most `Blocking::mc_whole` rows: it packs
    /// its A rows as one block per pass over k and each micro-panel of B just
    /// before the tiles that read it, where it is still in L1 or L2. A panel
    /// packed whole ahead is written to (and read back from) memory past L2
    /// when its few rows of A cannot repay that.
    b_per_panel: bool,
}

// SAFETY: pieces write disjoint micro-panels of `bbuf` (PackB) or only read it
// (Compute), between fork-joins; with `b_per_panel` there is one piece, run
// inline on the thread that owns `bbuf`, and its Compute packs into it. The
// Problem's own guarantees cover the rest.
unsafe impl Send for Block<'_> {}
// SAFETY: as above.
unsafe impl Sync for Block<'_> {}

impl Block<'_> {
    /// Offset in `bbuf` of the KC block starting at k = `pc`: the blocks of a
    /// group follow one another and every earlier one is a full KC deep, so
    /// they hold `(pc − k0) · ceil(ncb/nr) · nr` floats.
    fn b_offset(&self, pc: usize, nr: usize) -> usize {
        (pc - self.k0) * self.ncb.div_ceil(nr) * nr
    }
}

/// Packs micro-panels `panels` of every KC block of a group.
struct PackB<'a> {
    block: Block<'a>,
    panels: std::ops::Range<usize>,
}

impl KernelOp for PackB<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd, const MR: usize, const NV: usize>(self, s: S, bl: &Blocking) {
        let b = self.block;
        let p = b.p;
        let nr = NV * S::LANES;
        for pc in (b.k0..b.k0 + b.kg).step_by(bl.kc) {
            let kcb = bl.kc.min(b.k0 + b.kg - pc);
            // Row-major B (a row of k contiguous): a chunk of PACK_ROWS rows at
            // a time across all of this piece's panels, so the source rows are
            // read nearly sequentially and their pages stay in the TLB, where
            // one panel at a time would walk `kcb` rows (each on its own page
            // for a wide B) to copy 128 bytes of each. Any other layout (Wᵀ in
            // δ·Wᵀ is contiguous along k) packs whole panels, reading each of
            // its lines front to back. (A `b_per_panel` block does walk one
            // panel at a time, but reads it once for tiles that follow at
            // once, and measured faster; see the `kernel::cache` docs.)
            let chunk = if p.csb == 1 { PACK_ROWS } else { kcb };
            for p0 in (0..kcb).step_by(chunk) {
                let rows = chunk.min(kcb - p0);
                for t in self.panels.clone() {
                    let j0 = t * nr;
                    let cols = nr.min(b.ncb - j0);
                    // SAFETY: rows pc+p0..pc+p0+rows and columns jc+j0..jc+j0+cols
                    // are inside B; the destination rows lie inside panel t of
                    // the group buffer (nc_max × group floats), which belongs
                    // to this piece alone.
                    unsafe {
                        let src =
                            p.b.offset((pc + p0) as isize * p.rsb + (b.jc + j0) as isize * p.csb);
                        let dst = b.bbuf.add(b.b_offset(pc, nr) + t * nr * kcb + p0 * nr);
                        pack_b_panel(s, nr, cols, rows, src, p.rsb, p.csb, dst);
                    }
                }
            }
        }
    }
}

/// Vector multiply-adds a tile's pass over k must hold before its C tile is
/// prefetched when β = 0 (with β ≠ 0 it always is: C is then read). Unread,
/// C's lines are fetched by the stores anyway; a prefetch issued before the k
/// loop has them cached by its end when the loop is long enough to hide it,
/// and only adds its instructions to a short one. Measured on a Zen 4, one
/// thread, with and without the prefetch at β = 0, alternating: AVX-512 path
/// (24 vector FMAs per k step) 1024×256×1024 with A column-major 1.03× as
/// fast with it, 1024³ and 256×1024×1024 1.01×, 1024×32×1024 (Aᵀ) 0.96×; AVX2
/// path (12 per step) 1024×256×1024 (Aᵀ) 1.01×, 784×128×512 (Aᵀ) 0.98×,
/// 784×32×512 (Aᵀ) 0.94×. The portable path's tile (6 per step, `kc` 256)
/// never reaches the threshold: it prefetches C only when β ≠ 0.
const PREFETCH_C_MIN_FMAS: usize = 2048;

/// Rows of k that B packing copies across all panels before moving on (a
/// multiple of 8, the register-transpose block).
const PACK_ROWS: usize = 16;

/// Computes rows `rows` of C for one (jc, k-group) block from the shared
/// packed B, packing its own A blocks (with `Block::b_per_panel`, its one A block
/// per pass and each B micro-panel in turn).
struct Compute<'a> {
    block: Block<'a>,
    rows: std::ops::Range<usize>,
}

impl KernelOp for Compute<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd, const MR: usize, const NV: usize>(self, s: S, bl: &Blocking) {
        let b = self.block;
        let p = b.p;
        let nr = NV * S::LANES;
        let m = self.rows.len();
        if m == 0 {
            return;
        }
        let kc_max = bl.kc.min(b.kg);
        // A product without an epilogue runs tiles compiled without one (see
        // `store_tile`).
        let plain = matches!(p.epi, Epilogue::None);
        // Rows per packed A block: all of them with `b_per_panel`.
        let mc = if b.b_per_panel {
            m.next_multiple_of(MR)
        } else {
            bl.mc
        };
        let abuf = scratch_a(mc.min(m.next_multiple_of(MR)) * kc_max);
        // SAFETY: A is read at rows of `self.rows` and k inside the group, C is
        // written at those rows and the block's columns (this piece's alone);
        // abuf holds one packed A block (≤ mc rounded to MR, × kc_max); B panels
        // are read where PackB wrote them or, with `b_per_panel`, from `bbuf`, which
        // holds one `nr × kc_max` micro-panel and belongs to this (only) piece.
        unsafe {
            for pass in Pass::over(b.k0, b.k0 + b.kg, bl.kc, p.k) {
                let (pc, kcb, beta) = (pass.pc, pass.kcb, pass.beta(p.beta));
                // Where this KC block's panels start in a shared group (an
                // offset only: a `b_per_panel` block's buffer holds one panel).
                let block_offset = b.b_offset(pc, nr);
                for ic in (self.rows.start..self.rows.end).step_by(mc) {
                    let mcb = mc.min(self.rows.end - ic);
                    let a_src = p.a.offset(ic as isize * p.rsa + pc as isize * p.csa);
                    pack_a(s, MR, mcb, kcb, a_src, p.rsa, p.csa, abuf);
                    for jr in (0..b.ncb).step_by(nr) {
                        let b_panel = if b.b_per_panel {
                            let cols = nr.min(b.ncb - jr);
                            let col = (b.jc + jr) as isize;
                            let src = p.b.offset(pc as isize * p.rsb + col * p.csb);
                            pack_b_panel(s, nr, cols, kcb, src, p.rsb, p.csb, b.bbuf);
                            b.bbuf
                        } else {
                            b.bbuf.add(block_offset + jr * kcb)
                        };
                        for ir in (0..mcb).step_by(MR) {
                            let a_panel = abuf.add(ir * kcb);
                            let c_tile = p
                                .c
                                .offset((ic + ir) as isize * p.rsc + (b.jc + jr) as isize * p.csc);
                            let (m_eff, n_eff) = (MR.min(mcb - ir), nr.min(b.ncb - jr));
                            if beta != 0.0 || MR * NV * kcb >= PREFETCH_C_MIN_FMAS {
                                prefetch_tile(s, c_tile, p.rsc, p.csc, m_eff, n_eff);
                            }
                            let epi = pass.epilogue(&p.epi, ic + ir, b.jc + jr, MR);
                            let tile = PackedTile {
                                kc: kcb,
                                a: a_panel,
                                b: b_panel,
                                c: c_tile,
                                beta,
                                m_eff,
                                n_eff,
                                epi: &epi,
                            };
                            if plain {
                                tile.run_any_height::<S, MR, NV, false>(s, p);
                            } else {
                                tile.run_any_height::<S, MR, NV, true>(s, p);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One register tile of the packed loop nest: `kc` steps over a packed A
/// micro-panel of height `mr` (its first `R` rows are read) and a packed B
/// micro-panel, then the store of its `m_eff × n_eff` corner.
struct PackedTile<'e> {
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    beta: f32,
    m_eff: usize,
    n_eff: usize,
    epi: &'e Epilogue,
}

impl PackedTile<'_> {
    /// Runs the tile of an `MR`-row panel: a bottom edge of a few rows on a
    /// shorter register tile (the panel's first rows) instead of FMAs on zero
    /// padding. `EPILOGUE` as in [`store_tile`].
    ///
    /// # Safety
    /// As [`PackedTile::run`] with `mr = MR`.
    #[inline(always)]
    unsafe fn run_any_height<S: Simd, const MR: usize, const NV: usize, const EPILOGUE: bool>(
        self,
        s: S,
        p: &Problem,
    ) {
        // SAFETY: forwarded; every height is at most MR.
        unsafe {
            match edge_height(MR, self.m_eff % MR) {
                4 if MR > 4 => self.run::<S, 4, NV, EPILOGUE>(s, p, MR),
                8 if MR > 8 => self.run::<S, 8, NV, EPILOGUE>(s, p, MR),
                _ => self.run::<S, MR, NV, EPILOGUE>(s, p, MR),
            }
        }
    }

    /// Runs the tile on an `R × NV·LANES` register tile (`m_eff ≤ R ≤ mr`).
    /// Each element is one FMA chain over k whatever `R` is, so the tile
    /// height never changes a bit.
    ///
    /// # Safety
    /// The panels hold `kc` steps of `mr` rows (A, column stride `mr`) and
    /// `NV·LANES` columns (B); the corner is inside C (`p`'s strides).
    #[inline(always)]
    unsafe fn run<S: Simd, const R: usize, const NV: usize, const EPILOGUE: bool>(
        self,
        s: S,
        p: &Problem,
        mr: usize,
    ) {
        debug_assert!(self.m_eff <= R && R <= mr);
        // SAFETY: as the caller guarantees; R ≤ mr rows of the A panel.
        unsafe {
            let acc = accumulate::<S, R, NV, false>(
                s,
                self.kc,
                self.a,
                1,
                mr as isize,
                self.b,
                (NV * S::LANES) as isize,
                S::LANES,
            );
            store_tile::<S, R, NV, EPILOGUE>(
                s, &acc, p.alpha, self.beta, self.c, p.rsc, p.csc, self.m_eff, self.n_eff, self.epi,
            );
        }
    }
}

/// The no-packing path: full tiles read A and B where they are; only the edge
/// strips (and B strips without unit column stride) are copied into
/// zero-padded panels. k runs in [`Pass`]es of `kc` steps over each column
/// strip's tiles, as the packed path runs them, so both give the same bits.
/// Meant for problems whose operands sit in L2, that have a single column
/// strip (A would be used only once), or whose B strips stream fast enough in
/// place (see `gemm`).
///
/// Small products are mostly edges (a 32-row batch is 12 + 12 + 8 rows on a
/// 12-row tile, a 10-wide output layer a third of a 32-wide one), so the edges
/// run on narrower register tiles instead of zero padding: the last rows on a
/// tile of [`edge_height`] rows, a last column strip no wider than one vector
/// on a one-vector tile. Every element is still one FMA chain over k in order
/// followed by the same epilogue, so the tile shape never changes a result bit.
pub(crate) struct Direct<'a> {
    /// The (sub-)problem, `m, n, k ≥ 1`.
    pub problem: &'a Problem,
}

impl KernelOp for Direct<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd, const MR: usize, const NV: usize>(self, s: S, bl: &Blocking) {
        let p = self.problem;
        let nr = NV * S::LANES;
        let k = p.k;
        let m_full = p.m - p.m % MR;
        let edge_h = edge_height(MR, p.m - m_full);
        // The partial bottom strip of A (packed once), then the current B strip.
        let scratch = scratch_a(MR * k + nr * k);
        let (a_edge, b_strip) = (scratch, scratch.wrapping_add(MR * k));
        // SAFETY: the edge rows m_full..m are inside A and the edge panel
        // (edge_h ≤ MR rows × k) inside the scratch; the strips' requirements
        // are this problem's (see `direct_strip`).
        unsafe {
            if m_full < p.m {
                let a_src = p.a.offset(m_full as isize * p.rsa);
                pack_a_panel(s, edge_h, p.m - m_full, k, a_src, p.rsa, p.csa, a_edge);
            }
            let strip = Strip {
                p,
                kc: bl.kc,
                m_full,
                edge_h,
                a_edge,
                b_strip,
            };
            for jr in (0..p.n).step_by(nr) {
                let n_eff = nr.min(p.n - jr);
                if NV > 1 && n_eff <= S::LANES {
                    direct_strip::<S, MR, 1>(s, &strip, jr, n_eff);
                } else {
                    direct_strip::<S, MR, NV>(s, &strip, jr, n_eff);
                }
            }
        }
    }
}

/// Rows of the register tile that computes a bottom edge of `rem` rows
/// (`0 < rem < mr`): the smallest of 4, 8 and `mr` that holds them (0 when
/// there is no edge).
fn edge_height(mr: usize, rem: usize) -> usize {
    match rem {
        0 => 0,
        1..=4 if mr > 4 => 4,
        5..=8 if mr > 8 => 8,
        _ => mr,
    }
}

/// What the column strips of one no-packing product share.
struct Strip<'a> {
    p: &'a Problem,
    /// Steps of k per pass (see [`Pass`]), as on the packed path.
    kc: usize,
    /// Rows computed from A in place (a multiple of MR).
    m_full: usize,
    /// Height of the packed edge panel `a_edge` (0 when `m_full = m`).
    edge_h: usize,
    a_edge: *const f32,
    /// Scratch for one packed B strip (`NR × k` floats).
    b_strip: *mut f32,
}

/// Columns `jr .. jr + n_eff` of a no-packing product on `MR × NV·LANES`
/// tiles, the bottom edge on an `edge_h`-row tile (`(NV − 1)·LANES < n_eff ≤
/// NV·LANES`). B is read in place when its columns are contiguous (a partial
/// strip with a masked last vector, where [`Simd::MASKED_LOAD`] allows it),
/// else packed: the same products either way.
///
/// Everything below `Direct::run` is inlined into one function per ISA, so
/// each call site of a tile adds a microkernel and a store with every epilogue
/// to the crate's compile time: there are two of [`strip_tiles`] and three
/// tile heights in each (12 tile bodies per ISA with the one-vector strips).
///
/// # Safety
/// `strip` describes a valid problem with its edge rows packed; `jr < n` and
/// `n_eff = min(NV·LANES, n − jr)`.
#[inline(always)]
unsafe fn direct_strip<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    strip: &Strip<'_>,
    jr: usize,
    n_eff: usize,
) {
    let p = strip.p;
    let nr = NV * S::LANES;
    debug_assert!((NV - 1) * S::LANES < n_eff && n_eff <= nr);
    let masked = n_eff < nr
        && p.csb == 1
        && match S::MASKED_LOAD {
            MaskedLoad::MaskRegister => true,
            MaskedLoad::VectorMask => NV == 1,
            MaskedLoad::Copy => false,
        };
    // SAFETY: a full strip of B with unit column stride is read in place
    // (columns jr..jr+nr ≤ n); a partial one in place only up to its n_eff
    // columns (masked), or packed into the nr·k scratch.
    unsafe {
        let b_src = p.b.offset(jr as isize * p.csb);
        if masked {
            // A partial strip read in place, its last vector with a masked load.
            strip_tiles::<S, MR, NV, true>(s, strip, jr, n_eff, (b_src, p.rsb));
        } else {
            let b = if n_eff == nr && p.csb == 1 {
                (b_src, p.rsb)
            } else {
                pack_b_panel(s, nr, n_eff, p.k, b_src, p.rsb, p.csb, strip.b_strip);
                (strip.b_strip as *const f32, nr as isize)
            };
            strip_tiles::<S, MR, NV, false>(s, strip, jr, n_eff, b);
        }
    }
}

/// The tiles of one column strip of a no-packing product, B's rows at
/// `b.0 + p·b.1`: in place or packed with `NV·LANES` readable columns, or
/// with `MASKED` only the strip's `n_eff` (see [`accumulate`]). k runs in
/// [`Pass`]es over the whole strip, as the packed path runs them over a block.
///
/// # Safety
/// As [`direct_strip`], with B readable as just said.
#[inline(always)]
unsafe fn strip_tiles<S: Simd, const MR: usize, const NV: usize, const MASKED: bool>(
    s: S,
    strip: &Strip<'_>,
    jr: usize,
    n_eff: usize,
    b: (*const f32, isize),
) {
    let p = strip.p;
    // Full-height tiles: A in place up to m_full, then the packed edge panel
    // when its height is MR (A[i, p] at a_edge + p·h + i for an h-row panel).
    let mr_end = if strip.edge_h == MR {
        p.m
    } else {
        strip.m_full
    };
    // SAFETY: full tiles read A rows ir..ir+MR ≤ m_full in place; edge tiles
    // read the packed edge panel; B as the caller guarantees; C is written
    // only inside its shape.
    unsafe {
        for pass in Pass::over(0, p.k, strip.kc, p.k) {
            for ir in (0..mr_end).step_by(MR) {
                let a = if ir < strip.m_full {
                    (p.a.offset(ir as isize * p.rsa), p.rsa, p.csa)
                } else {
                    (strip.a_edge, 1, MR as isize)
                };
                direct_tile::<S, MR, NV, MASKED>(s, p, pass, MR, ir, jr, n_eff, a, b);
            }
            let (ir, ae) = (strip.m_full, strip.a_edge);
            match strip.edge_h {
                4 if MR > 4 => {
                    direct_tile::<S, 4, NV, MASKED>(s, p, pass, MR, ir, jr, n_eff, (ae, 1, 4), b)
                }
                8 if MR > 8 => {
                    direct_tile::<S, 8, NV, MASKED>(s, p, pass, MR, ir, jr, n_eff, (ae, 1, 8), b)
                }
                _ => {}
            }
        }
    }
}

/// One pass over k of the `R × NV·LANES` tile at `(ir, jr)` of a no-packing
/// product: an FMA chain over the pass's steps, then the store with the
/// pass's β and epilogue, as the packed path sums an element (so both paths
/// give the same bits). `mr` is the problem's strip height, which indexes the
/// epilogue's per-strip sums.
///
/// # Safety
/// `a = (ptr, a_rs, a_cs)` holds R rows and `b = (ptr, b_rs)` NV·LANES columns
/// readable for k steps (module contract of the kernels; with `MASKED`, only
/// `n_eff` columns, `(NV − 1)·LANES < n_eff ≤ NV·LANES`); the tile's
/// `min(R, m − ir) × n_eff` corner is inside C.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn direct_tile<S: Simd, const R: usize, const NV: usize, const MASKED: bool>(
    s: S,
    p: &Problem,
    pass: Pass,
    mr: usize,
    ir: usize,
    jr: usize,
    n_eff: usize,
    a: (*const f32, isize, isize),
    b: (*const f32, isize),
) {
    // SAFETY: as the caller guarantees; the pass reads steps pc..pc + kcb ≤ k.
    unsafe {
        // The last vector's columns (read masked): 1 ..= LANES.
        let tail = if MASKED {
            n_eff - (NV - 1) * S::LANES
        } else {
            S::LANES
        };
        debug_assert!((1..=S::LANES).contains(&tail));
        let (a_pc, b_pc) = (
            a.0.offset(pass.pc as isize * a.2),
            b.0.offset(pass.pc as isize * b.1),
        );
        let acc = accumulate::<S, R, NV, MASKED>(s, pass.kcb, a_pc, a.1, a.2, b_pc, b.1, tail);
        let c_tile = p.c.offset(ir as isize * p.rsc + jr as isize * p.csc);
        let epi = pass.epilogue(&p.epi, ir, jr, mr);
        let (m_eff, beta) = (R.min(p.m - ir), pass.beta(p.beta));
        store_tile::<S, R, NV, true>(
            s, &acc, p.alpha, beta, c_tile, p.rsc, p.csc, m_eff, n_eff, &epi,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Pass;

    fn passes(from: usize, to: usize, kc: usize, k: usize) -> Vec<(usize, usize, bool, bool)> {
        Pass::over(from, to, kc, k)
            .map(|p| (p.pc, p.kcb, p.first, p.last))
            .collect()
    }

    #[test]
    fn passes_cover_k_in_order_with_beta_first_and_the_epilogue_last() {
        // k = 0: one empty pass, both first and last (C = β·C, then the epilogue).
        assert_eq!(passes(0, 0, 4, 0), [(0, 0, true, true)]);
        assert_eq!(passes(0, 3, 4, 3), [(0, 3, true, true)]);
        assert_eq!(passes(0, 4, 4, 4), [(0, 4, true, true)]);
        assert_eq!(
            passes(0, 10, 4, 10),
            [
                (0, 4, true, false),
                (4, 4, false, false),
                (8, 2, false, true)
            ]
        );
        // A group inside a longer k (the packed path's shared B groups).
        assert_eq!(
            passes(8, 16, 4, 20),
            [(8, 4, false, false), (12, 4, false, false)]
        );
        assert_eq!(passes(16, 20, 4, 20), [(16, 4, false, true)]);
        let p = Pass::over(0, 10, 4, 10).nth(1).unwrap();
        assert_eq!(
            (
                p.beta(0.5),
                Pass::over(0, 1, 4, 1).next().unwrap().beta(0.5)
            ),
            (1.0, 0.5)
        );
    }
}
