//! Cache sizes of the running CPU and the GEMM block sizes derived from them.
//!
//! # The rule
//!
//! The loop nest (see `gemm::loops`) keeps one operand block per cache level.
//! Each kernel path names where its packed B panel lives, a `Residency` (the
//! AVX-512 path's depends on the CPU's vendor, below), and
//! the rest follows from the running CPU's caches:
//!
//! | block | size | `Residency::PanelInL3` | `Residency::PanelInL2` |
//! |---|---|---|---|
//! | B micro-panel | `kc × nr` | L1d (fixed `kc`, below; the AVX-512 path's is 64 KiB and read from L2) | L2, read into L1d once per A micro-panel (fixed `kc`, below) |
//! | packed A block | `mc × kc` | `≤ L2 / 4` | `≤ L2 / 16` |
//! | packed B panel | `kc × nc` | `≤ L3 / 2` | `≤ L2 / 2` |
//! | whole A of a short product | `mc_whole × kc` | `≤ L2 / 4` | `≤ L2 / 4` |
//!
//! `mc` is a multiple of `mr` in `[mr, 1536]`, `nc` a multiple of `nr` in
//! `[nr, 4096]`: past those a larger block only adds packing latency.
//! `mc_whole` is a multiple of `mr` in `[mc, 1536]`.
//!
//! **`PanelInL3`** is the textbook BLIS split (the A block fills a quarter of L2,
//! the B panel streams from L3 one micro-panel per `jr` step). It is what the
//! AVX2 and portable paths use, and the AVX-512 path on AMD CPUs; on a 512 KiB
//! Zen 3 L2 it gives 72 × 512 floats, the hand-tuned constants it replaced.
//!
//! **`PanelInL2`** keeps the whole `kc × nc` B panel in L2 and makes the A block
//! small, so every pass of the `ic` loop reads B from L2 instead of L3. The
//! AVX-512 path uses it on Intel CPUs (and on vendors other than AMD and
//! Hygon). On the
//! AVX-512 Xeons of the last generations the L2 is large (2 MiB per core) and
//! fast while the L3 is a slow mesh, and the C tiles of a long k loop stream
//! through L2 too: measured on a Sapphire Rapids-class Xeon (one thread, the
//! avx512 path, `kc = 256`), 1024³ went from ~125 to ~146 GFLOP/s (A block
//! `L2/4` → `L2/16`, B panel `L3/2` → `L2/2`), 2048³ from 126 to 141, and
//! 256×1024×1024 from 134 to 137. The AVX2 path measured within 2 % either way
//! on that machine, so it keeps the split it was tuned with. With the panel in
//! L2, the micro-panel need not fit L1d: the AVX-512 path's `kc = 512` makes it
//! 64 KiB and halves the passes over C (see `kernel/avx512.rs`): on the large
//! shapes 2–9 % more GFLOP/s than `kc = 256` in interleaved `gemm_demo` rounds,
//! 2–5 % less time in same-run `compare_rev.sh` medians (and it gives
//! `mc = 60`, `nc = 512` on a 2 MiB L2; doubling either measured no better).
//!
//! **Which one the AVX-512 path takes is the vendor's** (`Residency::wide`):
//! a Zen 4 core's L3 is its core complex's own, close and fast, and its L2 half
//! a Xeon's (1 MiB), where the panel-in-L2 rule gives a 512 KiB panel
//! (`nc = 256` at `kc = 512`) and packs each A block once per 256 columns.
//! Measured on a 2-core Zen 4 (EPYC, avx512 path, alternating in one process,
//! medians of per-round time ratios, `PanelInL3` against `PanelInL2`, the
//! mean of two runs with either side first): one thread 1024³ 0.95, 2048³
//! 0.93, 256×1024×1024 0.97, 128×784×512 0.99, the Aᵀ shapes 784×128×512 and
//! 1024×256×1024 0.96, δ·Wᵀ shapes (B transposed) 0.97–0.99, the K = 1024,
//! L = 8 training step and the MNIST step 0.98; two threads 0.95–1.00 (the
//! README has the table, and 512³ at 1.01 from one run). Every `nc` of 1024
//! or more measured alike (0.94–0.95 at 1024³, whatever `mc` from 24 to 120):
//! the gain is the wider panel, which this L3 serves about as fast as L2. There the 64 KiB
//! micro-panel of `kc = 512` does not fit L1d either and is read from L2.
//!
//! **`mc_whole`**: a product computed by one piece (the whole product on one
//! thread, or one thread's columns under a column split) of at most
//! `mc_whole` rows packs all its rows of A as one block per pass over k and B
//! one `kc × nr` micro-panel at a time, just before the tiles that read it.
//! Its few rows cannot repay a B panel packed ahead, which goes out to the
//! next cache level and comes back; a micro-panel packed on the spot is read
//! from L1 or L2. Measured on the Sapphire Rapids-class Xeon (one thread,
//! avx512, alternating in one process): δ·Wᵀ products (B transposed) with
//! 64–256 rows 0.89–0.94× the time, X·W with 16–128 rows 0.97–0.99×, 512-wide
//! products with 64–256 rows within ±2 %. Past a quarter of L2 the gain fades
//! (384 and 500 rows: 1.01–1.03× for X·W). On the `PanelInL3` paths the A
//! block already has a quarter of L2, so `mc_whole = mc` there: a product of
//! at most `mc` rows, which had one A block anyway, now packs B panel by
//! panel too.
//!
//! **`kc` is fixed per kernel path** and not derived from the L1 size. It is the
//! one block size that changes result bits: C is rounded to `f32` after every
//! pass over `kc` steps of k. A fixed `kc` keeps results bitwise identical on
//! every CPU that runs the same path (and, as before, for any thread count).
//! `mr`, `nr`, `mc`, `nc` and `mc_whole` only decide which products are computed where, never
//! how an element is summed, so they change no bit.
//!
//! # Detection
//!
//! x86-64: CPUID leaf 4 (Intel) or 0x8000001D (AMD, Hygon), which list each cache
//! level's ways, partitions, line size and sets. Elsewhere, or when the leaves
//! are missing (some virtual machines hide them), the documented fallbacks
//! [`CacheSizes::FALLBACK`] are used.

use std::sync::OnceLock;

use super::Blocking;

/// Per-core data cache sizes in bytes (L3: the whole cache, which the threads
/// of one GEMM share).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    /// Level-1 data cache of one core.
    pub l1d: usize,
    /// Level-2 cache of one core.
    pub l2: usize,
    /// Level-3 cache (0 when the CPU has none).
    pub l3: usize,
}

impl CacheSizes {
    /// Used when the CPU does not report its caches: 32 KiB L1d, 1 MiB L2,
    /// 8 MiB L3 (a common server core of the last years).
    pub const FALLBACK: CacheSizes = CacheSizes {
        l1d: 32 << 10,
        l2: 1 << 20,
        l3: 8 << 20,
    };
}

/// The running CPU's cache sizes, detected once (see the module docs).
///
/// ```
/// let c = backprop::kernel::cache_sizes();
/// assert!(c.l1d >= 4096 && c.l2 >= c.l1d);
/// ```
pub fn cache_sizes() -> CacheSizes {
    static SIZES: OnceLock<CacheSizes> = OnceLock::new();
    *SIZES.get_or_init(|| detect().unwrap_or(CacheSizes::FALLBACK))
}

/// Where a kernel path keeps its packed `kc × nc` B panel (see the module docs
/// for the rule each one gives and the measurements behind them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Residency {
    /// B panel in half of L3, A block in a quarter of L2 (BLIS's split).
    PanelInL3,
    /// B panel in half of L2, A block in a sixteenth of L2.
    PanelInL2,
}

impl Residency {
    /// The AVX-512 path's residency on a CPU of `vendor`: `PanelInL2` on
    /// Intel, whose server cores reach a slow mesh L3 through a large L2;
    /// `PanelInL3` on AMD and Hygon, whose L3 is the core complex's own and
    /// fast; `PanelInL2` elsewhere (the rule this path was tuned with). See
    /// the module docs for the measurements.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn wide(vendor: Vendor) -> Residency {
        match vendor {
            Vendor::Amd => Residency::PanelInL3,
            Vendor::Intel | Vendor::Other => Residency::PanelInL2,
        }
    }
}

/// The CPU's vendor, as CPUID leaf 0 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Vendor {
    /// `GenuineIntel`.
    Intel,
    /// `AuthenticAMD` or `HygonGenuine` (Zen cores).
    Amd,
    /// Any other, and every CPU that is not x86-64.
    Other,
}

/// The running CPU's vendor (read once: CPUID is slow, and in a virtual
/// machine a trap to the hypervisor).
#[cfg(target_arch = "x86_64")]
pub(crate) fn vendor() -> Vendor {
    static VENDOR: OnceLock<Vendor> = OnceLock::new();
    *VENDOR.get_or_init(|| match &vendor_name() {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    })
}

/// The running CPU's vendor.
#[cfg(not(target_arch = "x86_64"))]
#[allow(dead_code)]
pub(crate) fn vendor() -> Vendor {
    Vendor::Other
}

/// Whether the CPU runs a 512-bit FMA as two 256-bit halves: AMD family 19h,
/// whose only cores with AVX-512 are Zen 4 (Intel's AVX-512 cores and Zen 5
/// have full-width FMA pipes). A k step of the AVX-512 path's 12 × 32 tile
/// (24 FMAs) then takes 24 cycles instead of 12, which leaves time to read B
/// in place (see `gemm`'s path rule). Read once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn fma512_half_rate() -> bool {
    static HALF: OnceLock<bool> = OnceLock::new();
    *HALF.get_or_init(|| vendor() == Vendor::Amd && family() == 0x19)
}

/// Whether the CPU runs a 512-bit FMA as two 256-bit halves.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn fma512_half_rate() -> bool {
    false
}

/// The display family of CPUID leaf 1 (base family, plus the extended family
/// when the base is 0xF).
#[cfg(target_arch = "x86_64")]
fn family() -> u32 {
    let eax = cpuid(1, 0).eax;
    let base = (eax >> 8) & 0xf;
    if base == 0xf {
        base + ((eax >> 20) & 0xff)
    } else {
        base
    }
}

/// CPUID `leaf`, sub-leaf `sub`.
#[cfg(target_arch = "x86_64")]
fn cpuid(leaf: u32, sub: u32) -> core::arch::x86_64::CpuidResult {
    // CPUID exists on every x86-64 CPU, and a leaf past the highest one it
    // reports returns data, not a fault; callers check leaves 0 and
    // 0x80000000 before trusting the others. (The
    // intrinsic is a safe function on current toolchains and an `unsafe` one
    // on older supported ones, hence the allow.)
    #[allow(unused_unsafe)]
    // SAFETY: as above: CPUID has no precondition on x86-64.
    unsafe {
        core::arch::x86_64::__cpuid_count(leaf, sub)
    }
}

/// The 12-byte vendor string of CPUID leaf 0 (EBX, EDX, ECX).
#[cfg(target_arch = "x86_64")]
fn vendor_name() -> [u8; 12] {
    let r = cpuid(0, 0);
    let mut name = [0u8; 12];
    for (chunk, reg) in name.chunks_exact_mut(4).zip([r.ebx, r.edx, r.ecx]) {
        chunk.copy_from_slice(&reg.to_le_bytes());
    }
    name
}

/// A path's blocking on the running CPU, derived on first use and kept in the
/// path's own `slot`: the one body behind each ISA file's `blocking()`.
pub(crate) fn cached(
    slot: &OnceLock<Blocking>,
    mr: usize,
    nr: usize,
    kc: usize,
    residency: Residency,
) -> Blocking {
    *slot.get_or_init(|| derive(mr, nr, kc, residency, &cache_sizes()))
}

/// The blocking of a path with register tile `mr × nr`, depth `kc` and B panel
/// residency `residency` on a CPU with caches `c`, by the rule of the module docs.
pub(crate) fn derive(
    mr: usize,
    nr: usize,
    kc: usize,
    residency: Residency,
    c: &CacheSizes,
) -> Blocking {
    let floats = |bytes: usize| bytes / std::mem::size_of::<f32>();
    let l3 = if c.l3 == 0 { c.l2 } else { c.l3 };
    let (a_bytes, b_bytes) = match residency {
        Residency::PanelInL3 => (c.l2 / 4, l3 / 2),
        Residency::PanelInL2 => (c.l2 / 16, c.l2 / 2),
    };
    let mc = (floats(a_bytes) / kc).clamp(mr, 1536) / mr * mr;
    let nc = (floats(b_bytes) / kc).clamp(nr, 4096) / nr * nr;
    let mc_whole = ((floats(c.l2 / 4) / kc).clamp(mr, 1536) / mr * mr).max(mc);
    Blocking {
        mr,
        nr,
        kc,
        mc,
        nc,
        mc_whole,
    }
}

/// Reads the cache descriptors, or `None` when the CPU does not list them.
#[cfg(target_arch = "x86_64")]
fn detect() -> Option<CacheSizes> {
    let max_leaf = cpuid(0, 0).eax;
    let leaf = match vendor() {
        Vendor::Intel if max_leaf >= 4 => 4,
        Vendor::Amd => {
            let max_ext = cpuid(0x8000_0000, 0).eax;
            if max_ext < 0x8000_001D || cpuid(0x8000_0001, 0).ecx & (1 << 22) == 0 {
                return None;
            }
            0x8000_001D
        }
        _ => return None,
    };
    let mut sizes = CacheSizes {
        l1d: 0,
        l2: 0,
        l3: 0,
    };
    for sub in 0..16 {
        let r = cpuid(leaf, sub);
        let kind = r.eax & 0x1f; // 0 none, 1 data, 2 instruction, 3 unified
        if kind == 0 {
            break;
        }
        if kind == 2 {
            continue;
        }
        let level = (r.eax >> 5) & 0x7;
        let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
        let partitions = ((r.ebx >> 12) & 0x3ff) as usize + 1;
        let line = (r.ebx & 0xfff) as usize + 1;
        let sets = r.ecx as usize + 1;
        let bytes = ways * partitions * line * sets;
        match level {
            1 => sizes.l1d = bytes,
            2 => sizes.l2 = bytes,
            3 => sizes.l3 = bytes,
            _ => {}
        }
    }
    plausible(sizes)
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Option<CacheSizes> {
    None
}

/// Keeps reported sizes only when they look like real caches (a hypervisor
/// may report zeros or nonsense).
fn plausible(c: CacheSizes) -> Option<CacheSizes> {
    let ok = (4 << 10..=1 << 20).contains(&c.l1d)
        && (c.l1d..=64 << 20).contains(&c.l2)
        && (c.l3 == 0 || (c.l2..=1 << 30).contains(&c.l3));
    ok.then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule on the caches of a few real cores: every block fits the share of
    /// its level it is given, and is a whole number of register tiles.
    #[test]
    fn blocks_fit_their_cache_level() {
        let cores = [
            ("Zen 4", 32 << 10, 1 << 20, 32 << 20),
            ("Sapphire Rapids", 48 << 10, 2 << 20, 105 << 20),
            ("Skylake client", 32 << 10, 256 << 10, 8 << 20),
            ("no L3", 32 << 10, 512 << 10, 0),
        ];
        for (name, l1d, l2, l3) in cores {
            let c = CacheSizes { l1d, l2, l3 };
            let paths = [
                (12, 32, 512, Residency::PanelInL2),
                (12, 32, 512, Residency::PanelInL3),
                (12, 32, 256, Residency::PanelInL3),
                (6, 16, 512, Residency::PanelInL3),
                (6, 8, 256, Residency::PanelInL3),
            ];
            for (mr, nr, kc, residency) in paths {
                let b = derive(mr, nr, kc, residency, &c);
                assert_eq!(b.kc, kc, "{name}: kc is the path's own");
                assert!(
                    b.mc.is_multiple_of(mr) && b.mc >= mr,
                    "{name}: mc {} not a multiple of {mr}",
                    b.mc
                );
                assert!(
                    b.nc.is_multiple_of(nr) && b.nc >= nr,
                    "{name}: nc {} not a multiple of {nr}",
                    b.nc
                );
                let (a_share, b_share) = match residency {
                    Residency::PanelInL3 => (l2 / 4, if l3 == 0 { l2 } else { l3 } / 2),
                    Residency::PanelInL2 => (l2 / 16, l2 / 2),
                };
                assert!(
                    b.mc * kc * 4 <= a_share || b.mc == mr,
                    "{name}: A block {}×{kc} overflows {a_share} bytes",
                    b.mc
                );
                assert!(
                    b.nc * kc * 4 <= b_share || b.nc == nr,
                    "{name}: B panel {kc}×{} overflows {b_share} bytes",
                    b.nc
                );
                assert!(
                    b.mc_whole.is_multiple_of(mr) && b.mc_whole >= b.mc,
                    "{name}: mc_whole {} below mc {} or not a multiple of {mr}",
                    b.mc_whole,
                    b.mc
                );
                assert!(
                    b.mc_whole * kc * 4 <= l2 / 4 || b.mc_whole == b.mc,
                    "{name}: whole A {}×{kc} overflows a quarter of L2",
                    b.mc_whole
                );
            }
        }
    }

    /// The figures the module docs quote for a 2 MiB-L2 Xeon.
    #[test]
    fn panel_in_l2_on_a_sapphire_rapids_core() {
        let c = CacheSizes {
            l1d: 48 << 10,
            l2: 2 << 20,
            l3: 105 << 20,
        };
        let b = derive(12, 32, 512, Residency::PanelInL2, &c);
        assert_eq!((b.mc, b.nc, b.mc_whole), (60, 512, 252));
        let kc256 = derive(12, 32, 256, Residency::PanelInL2, &c);
        assert_eq!((kc256.mc, kc256.nc), (120, 1024));
        let old = derive(12, 32, 256, Residency::PanelInL3, &c);
        assert_eq!((old.mc, old.nc), (504, 4096));
    }

    /// The AVX-512 path on a Zen 4 core keeps its panel in L3: the figures
    /// the module docs quote, and the Intel rule on the same caches.
    #[test]
    fn panel_in_l3_on_a_zen4_core() {
        let c = CacheSizes {
            l1d: 32 << 10,
            l2: 1 << 20,
            l3: 32 << 20,
        };
        assert_eq!(Residency::wide(Vendor::Amd), Residency::PanelInL3);
        assert_eq!(Residency::wide(Vendor::Intel), Residency::PanelInL2);
        assert_eq!(Residency::wide(Vendor::Other), Residency::PanelInL2);
        let zen4 = derive(12, 32, 512, Residency::wide(Vendor::Amd), &c);
        assert_eq!((zen4.mc, zen4.nc, zen4.mc_whole), (120, 4096, 120));
        let intel = derive(12, 32, 512, Residency::wide(Vendor::Intel), &c);
        assert_eq!((intel.mc, intel.nc, intel.mc_whole), (24, 256, 120));
    }

    #[test]
    fn vendor_is_read_once_and_agrees_with_detection() {
        let v = vendor();
        assert_eq!(v, vendor());
        if cfg!(target_arch = "x86_64") && detect().is_some() {
            assert_ne!(
                v,
                Vendor::Other,
                "caches were detected, so the vendor is known"
            );
        }
    }

    #[test]
    fn implausible_reports_fall_back() {
        let zero = CacheSizes {
            l1d: 0,
            l2: 0,
            l3: 0,
        };
        assert_eq!(plausible(zero), None);
        assert_eq!(plausible(CacheSizes::FALLBACK), Some(CacheSizes::FALLBACK));
        let c = cache_sizes();
        assert!(plausible(c).is_some(), "detected {c:?}");
    }
}
