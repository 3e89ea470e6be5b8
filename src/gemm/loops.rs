//! The BLIS loop nest (jc → pc → ic → jr → ir) and the no-packing path.
//!
//! Loop by loop, with what each keeps in which cache (sizes in `Blocking`):
//!
//! ```text
//! jc: n in steps of NC            B panel kc × NC packed once per (jc, pc)  → L3
//!  pc: k in steps of KC           the only loop over k; β applies on its first pass
//!   ic: m in steps of MC          A block MC × kc packed once per (ic, pc)  → L2
//!    jr: NC in steps of NR        B micro-panel kc × NR reused by all of ir → L1
//!     ir: MC in steps of MR       A micro-panel MR × kc streamed from L2
//!      microkernel: MR × NR tile of C in registers
//! ```
//!
//! Threads never enter here: each thread runs this whole nest on its own
//! rectangle of C (see `gemm::plan`), with its own packing buffers.

use std::cell::RefCell;

use crate::kernel::{accumulate, store_tile, Blocking, KernelOp, Simd};

use super::pack::{pack_a, pack_a_panel, pack_b, pack_b_panel};

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
}

// SAFETY: a Problem is only built from views (or raw pointers whose validity
// the `sgemm` caller guarantees) that outlive the call; pieces given to
// different threads write disjoint parts of C.
unsafe impl Send for Problem {}
// SAFETY: as above.
unsafe impl Sync for Problem {}

impl Problem {
    /// The same product as `Cᵀ = Bᵀ·Aᵀ`.
    pub(crate) fn transposed(self) -> Problem {
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

    /// Rows `r0 .. r0 + rows` of the product (A and C restricted).
    pub(crate) fn rows(self, r0: usize, rows: usize) -> Problem {
        Problem {
            m: rows,
            a: self.a.wrapping_offset(r0 as isize * self.rsa),
            c: self.c.wrapping_offset(r0 as isize * self.rsc),
            ..self
        }
    }

    /// Columns `c0 .. c0 + cols` of the product (B and C restricted).
    pub(crate) fn cols(self, c0: usize, cols: usize) -> Problem {
        Problem {
            n: cols,
            b: self.b.wrapping_offset(c0 as isize * self.csb),
            c: self.c.wrapping_offset(c0 as isize * self.csc),
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
    /// Per-thread packing buffers for A and B, reused across calls so the
    /// steady state allocates nothing.
    static SCRATCH: RefCell<(Scratch, Scratch)> = RefCell::new(Default::default());
}

/// This thread's packing buffers, at least `a_len` and `b_len` floats, 64-byte
/// aligned. The pointers stay valid until the next call on this thread; a GEMM
/// never calls out to code that could make one, so they live through the call.
///
/// The loops must not run inside the `with` closure: closures do not inherit
/// the `#[target_feature]`s of the function around them, and the kernels would
/// be compiled for the baseline ISA.
fn scratch(a_len: usize, b_len: usize) -> (*mut f32, *mut f32) {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        (s.0.get(a_len), s.1.get(b_len))
    })
}

/// The packed BLIS path for one sequential problem.
///
/// # Safety
/// The CPU supports `S`; `p` describes valid, non-overlapping A, B, C with
/// `m, n, k ≥ 1`.
#[inline(always)]
unsafe fn gemm_packed<S: Simd, const MR: usize, const NV: usize>(p: &Problem, bl: &Blocking) {
    let nr = NV * S::LANES;
    let kc_max = bl.kc.min(p.k);
    let nc_max = bl.nc.min(p.n.next_multiple_of(nr));
    let mc_max = bl.mc.min(p.m.next_multiple_of(MR));
    let (abuf, bbuf) = scratch(mc_max * kc_max, nc_max * kc_max);
    // SAFETY: A, B and C are addressed only at (row, col) pairs inside their
    // shapes, which the caller guarantees valid; the packed buffers hold
    // mc_max·kc_max and nc_max·kc_max floats, the most one block packs
    // (mc_max and nc_max are multiples of MR and NR); S's features are present.
    unsafe {
        for jc in (0..p.n).step_by(bl.nc) {
            let ncb = bl.nc.min(p.n - jc);
            for pc in (0..p.k).step_by(bl.kc) {
                let kcb = bl.kc.min(p.k - pc);
                // β applies once, on the first pass over k; later passes accumulate.
                let beta = if pc == 0 { p.beta } else { 1.0 };
                let b_src = p.b.offset(pc as isize * p.rsb + jc as isize * p.csb);
                pack_b(nr, ncb, kcb, b_src, p.rsb, p.csb, bbuf);
                for ic in (0..p.m).step_by(bl.mc) {
                    let mcb = bl.mc.min(p.m - ic);
                    let a_src = p.a.offset(ic as isize * p.rsa + pc as isize * p.csa);
                    pack_a(MR, mcb, kcb, a_src, p.rsa, p.csa, abuf);
                    for jr in (0..ncb).step_by(nr) {
                        let b_panel = bbuf.add(jr * kcb);
                        for ir in (0..mcb).step_by(MR) {
                            let a_panel = abuf.add(ir * kcb);
                            let acc = accumulate::<S, MR, NV>(
                                kcb,
                                a_panel,
                                1,
                                MR as isize,
                                b_panel,
                                nr as isize,
                            );
                            let c_tile =
                                p.c.offset((ic + ir) as isize * p.rsc + (jc + jr) as isize * p.csc);
                            let (m_eff, n_eff) = (MR.min(mcb - ir), nr.min(ncb - jr));
                            store_tile::<S, MR, NV>(
                                &acc, p.alpha, beta, c_tile, p.rsc, p.csc, m_eff, n_eff,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The no-packing path: full tiles read A and B where they are; only the edge
/// strips (and B strips without unit column stride) are copied into
/// zero-padded panels. No blocking over k: meant for problems whose operands
/// sit in L2, or that have a single column strip (A would be used only once).
///
/// # Safety
/// As [`gemm_packed`].
#[inline(always)]
unsafe fn gemm_direct<S: Simd, const MR: usize, const NV: usize>(p: &Problem) {
    let nr = NV * S::LANES;
    let k = p.k;
    let m_full = p.m - p.m % MR;
    // The partial bottom strip of A (packed once) and the current B strip.
    let (a_edge, b_strip) = scratch(MR * k, nr * k);
    // SAFETY: full tiles read A rows ir..ir+MR < m_full and B columns
    // jr..jr+nr ≤ n (unit column stride) in place; partial ones read only
    // in-shape elements while packing into the MR·k and nr·k buffers; C is
    // written only inside its shape; S's features are present.
    unsafe {
        if m_full < p.m {
            let a_src = p.a.offset(m_full as isize * p.rsa);
            pack_a_panel(MR, p.m - m_full, k, a_src, p.rsa, p.csa, a_edge);
        }
        for jr in (0..p.n).step_by(nr) {
            let n_eff = nr.min(p.n - jr);
            let b_src = p.b.offset(jr as isize * p.csb);
            let (b_panel, b_rs) = if n_eff == nr && p.csb == 1 {
                (b_src, p.rsb)
            } else {
                pack_b_panel(nr, n_eff, k, b_src, p.rsb, p.csb, b_strip);
                (b_strip as *const f32, nr as isize)
            };
            for ir in (0..p.m).step_by(MR) {
                let acc = if ir < m_full {
                    let a_tile = p.a.offset(ir as isize * p.rsa);
                    accumulate::<S, MR, NV>(k, a_tile, p.rsa, p.csa, b_panel, b_rs)
                } else {
                    accumulate::<S, MR, NV>(k, a_edge, 1, MR as isize, b_panel, b_rs)
                };
                let c_tile = p.c.offset(ir as isize * p.rsc + jr as isize * p.csc);
                let m_eff = MR.min(p.m - ir);
                store_tile::<S, MR, NV>(&acc, p.alpha, p.beta, c_tile, p.rsc, p.csc, m_eff, n_eff);
            }
        }
    }
}

/// Which loop nest a piece runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// Pack A and B (BLIS).
    Packed,
    /// Read operands in place.
    Direct,
}

/// A sequential GEMM piece as a [`KernelOp`].
pub(crate) struct Run<'a> {
    pub problem: &'a Problem,
    pub path: Path,
}

impl KernelOp for Run<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd, const MR: usize, const NV: usize>(self, bl: &Blocking) {
        // SAFETY: the operations below are covered by this function's # Safety contract
        // (CPU features of the ISA, pointer validity), which the caller upholds.
        unsafe {
            match self.path {
                Path::Packed => gemm_packed::<S, MR, NV>(self.problem, bl),
                Path::Direct => gemm_direct::<S, MR, NV>(self.problem),
            }
        }
    }
}
