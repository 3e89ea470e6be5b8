//! Run-time ISA selection: detect once, cache, allow a loud override.
//!
//! The first call to [`active_isa`] reads `BACKPROP_ISA`:
//! unset, empty or `auto` picks the best ISA the CPU has; `avx512`, `avx2` or
//! `portable` (alias `scalar`) force that path and panic if the CPU lacks it, so
//! a test run that asked for a path can never silently test another one.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use super::{portable, Blocking, KernelOp};

/// An instruction-set path of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Isa {
    /// Portable `wide` code: SSE2 on baseline x86-64, NEON on aarch64.
    Portable,
    /// x86-64 AVX2 with FMA (256-bit).
    Avx2,
    /// x86-64 AVX-512F (512-bit).
    Avx512,
}

impl Isa {
    /// Every path this crate has, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The name used by `BACKPROP_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether the running CPU supports this path (whether its SIMD token can
    /// be made: the tokens' constructors hold the feature checks).
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => portable::Portable::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => super::avx2::Avx2::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => super::avx512::Avx512::new().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The register tile and cache blocking of this path's GEMM kernels on the
    /// running CPU: `mc`, `nc` and `mc_whole` follow its cache sizes, `mr`,
    /// `nr` and `kc` are the path's own (see [`crate::kernel::cache`] for the
    /// rule).
    pub fn blocking(self) -> Blocking {
        match self {
            Isa::Portable => portable::blocking(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => super::avx2::blocking(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => super::avx512::blocking(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => portable::blocking(),
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of parsing an ISA name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownIsa(pub String);

impl fmt::Display for UnknownIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown ISA {:?}: expected one of auto, portable (or scalar), avx2, avx512",
            self.0
        )
    }
}

impl std::error::Error for UnknownIsa {}

impl FromStr for Isa {
    type Err = UnknownIsa;
    /// Parses `portable`/`scalar`, `avx2` or `avx512` (case-insensitive).
    fn from_str(s: &str) -> Result<Isa, UnknownIsa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" | "scalar" => Ok(Isa::Portable),
            "avx2" => Ok(Isa::Avx2),
            "avx512" | "avx512f" => Ok(Isa::Avx512),
            _ => Err(UnknownIsa(s.to_string())),
        }
    }
}

/// The paths the running CPU supports, slowest first.
pub fn available_isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
}

/// The path every kernel call uses unless told otherwise: the best available
/// one, or the one forced by `BACKPROP_ISA`. Decided once per process.
///
/// # Panics
/// On first use, if `BACKPROP_ISA` names an unknown path or one this CPU lacks.
///
/// ```
/// let isa = backprop::active_isa();
/// assert!(isa.is_available());
/// println!("kernels: {isa}");
/// ```
pub fn active_isa() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = *available_isas()
            .last()
            .expect("portable is always available");
        match std::env::var("BACKPROP_ISA") {
            Ok(v) if !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("auto") => {
                let isa: Isa = v.parse().unwrap_or_else(|e| panic!("BACKPROP_ISA: {e}"));
                require(isa);
                isa
            }
            _ => best,
        }
    })
}

/// Panics with a clear message if `isa` cannot run here.
#[track_caller]
pub(crate) fn require(isa: Isa) {
    if !isa.is_available() {
        let have: Vec<&str> = available_isas().iter().map(|i| i.name()).collect();
        panic!(
            "the {isa} kernels were requested but this CPU does not support them (available: {})",
            have.join(", ")
        );
    }
}

/// Runs `op` with the kernel set of `isa`.
///
/// # Panics
/// If the CPU does not support `isa`.
#[track_caller]
pub(crate) fn run<Op: KernelOp>(isa: Isa, op: Op) -> Op::Output {
    require(isa);
    match isa {
        // SAFETY: the portable path has no CPU requirement.
        Isa::Portable => unsafe { portable::dispatch(op) },
        // SAFETY: `require` checked that the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { super::avx2::dispatch(op) },
        // SAFETY: `require` checked that the CPU has AVX-512F, AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { super::avx512::dispatch(op) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("require() refuses x86 paths elsewhere"),
    }
}
