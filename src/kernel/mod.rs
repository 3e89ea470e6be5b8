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
//!   (packing pads edges with zeros), with one exception: the no-packing path
//!   reads a partial strip of B in place where the ISA has a masked load
//!   (`Simd::MASKED_LOAD`): only the strip's `n_eff` columns are read, the
//!   last vector masked (its other lanes read as zeros, as in a padded
//!   panel). Only the
//!   `m_eff × n_eff` corner of C is touched. β = 0 means C is never read, so
//!   it may hold NaN.
//! * Edge tiles and tiles of C with a non-unit column stride go through a
//!   register-sized buffer, using the **same** vector arithmetic as full tiles:
//!   a C element gets bitwise the same value whichever path wrote it. This is
//!   what lets the threaded GEMM give identical bits for every thread count.
//!
//! The kernels are generic over a `Simd` token type and `#[inline(always)]`;
//! each ISA file instantiates them inside a `#[target_feature]` function, so
//! the intrinsics inline into code compiled for that ISA while the rest of the
//! crate stays baseline (run-time dispatch, no RUSTFLAGS needed). That function
//! creates the ISA's token, a value whose existence proves the CPU supports
//! the ISA, and passes it down: register arithmetic is safe code, and `unsafe`
//! marks only the raw-pointer accesses.
//!
//! Files: `simd.rs` (the token trait), `micro.rs` (the k loop), `tile.rs` (the
//! tile store and its epilogues), one file per ISA, `dispatch.rs` (which ISA
//! runs).

pub mod activation;
pub mod cache;
pub(crate) mod dispatch;
mod micro;
mod peak;
pub(crate) mod portable;
pub(crate) mod quad;
mod simd;
pub(crate) mod subnormal;
mod tile;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

pub use activation::Activation;
pub use cache::{cache_sizes, CacheSizes};
pub use dispatch::{active_isa, available_isas, Isa};
pub use peak::fma_peak_probe;

pub(crate) use micro::accumulate;
pub(crate) use simd::{prefetch_tile, MaskedLoad, Simd};
pub(crate) use tile::{store_tile, Epilogue};

/// An operation that is instantiated once per kernel set and run inside that
/// ISA's `#[target_feature]` context (see `dispatch::run`).
///
/// Implementations of `run` must be `#[inline(always)]`: that is what makes the
/// intrinsics inline into the feature-enabled entry point.
pub(crate) trait KernelOp {
    /// What the operation returns.
    type Output;
    /// Runs the operation with the SIMD token `s` (its existence proves the CPU
    /// supports `S`), register tile `MR × NV·S::LANES` and cache blocking
    /// `blocking`.
    ///
    /// # Safety
    /// The implementor's: the token carries the CPU requirement, so what is
    /// left is about data. The GEMM operations (`gemm::loops`) follow the raw
    /// pointers of a `Problem`, valid only as long as the views or `sgemm`
    /// arguments it was built from; that is why `run` is `unsafe` at all.
    /// Operations that hold only references and slices (the activation map,
    /// the FMA probe, the optimizer's update) have no requirement.
    unsafe fn run<S: Simd, const MR: usize, const NV: usize>(
        self,
        s: S,
        blocking: &Blocking,
    ) -> Self::Output;
}

/// Cache blocking of one kernel set: each ISA file gives its register tile and
/// `kc`; `mc`, `nc` and `mc_whole` follow the running CPU's caches (see
/// [`cache`] for the rule, and for why `kc` alone is fixed: it decides the
/// rounding). Obtained from [`crate::gemm::blocking`] or
/// [`crate::Isa::blocking`]; more fields may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Blocking {
    /// Rows of the register tile (micro-panel height of packed A).
    pub mr: usize,
    /// Columns of the register tile (micro-panel width of packed B).
    pub nr: usize,
    /// Depth of one pass over k; a `kc × nr` micro-panel of B stays in L1 (on the
    /// AVX-512 path it is 64 KiB and is read from L2: see [`cache`]).
    pub kc: usize,
    /// Rows of a packed A block; the `mc × kc` block stays in L2 (a quarter or
    /// a sixteenth of it, by the path's residency rule in [`cache`]).
    pub mc: usize,
    /// Columns of a packed B panel; the `kc × nc` panel stays in L3 or, on the
    /// AVX-512 path of a CPU other than AMD's and Hygon's, in L2 (see
    /// [`cache`]).
    pub nc: usize,
    /// Most rows a product computed by one piece (the whole product on one
    /// thread, or one thread's columns under a column split) may have for the
    /// packed path to pack its A as one block per pass over k and B panel by
    /// panel, each `kc × nr` micro-panel just before its tiles use it (a
    /// quarter of L2 for the `mc_whole × kc` block; at least `mc`). See
    /// [`cache`].
    pub mc_whole: usize,
}
