//! A probe of the machine's FMA throughput, so GEMM speed can be quoted as a
//! fraction of peak.

use super::{dispatch, Blocking, Isa, KernelOp, Simd};

/// Independent FMA chains: more than latency × ports (4 × 2) on every x86 core,
/// so the probe is bound by FMA throughput, not latency.
const CHAINS: usize = 12;

struct Probe {
    iterations: u64,
}

impl KernelOp for Probe {
    type Output = (u64, f32);
    #[inline(always)]
    unsafe fn run<S: Simd, const MR: usize, const NV: usize>(
        self,
        s: S,
        _: &Blocking,
    ) -> (u64, f32) {
        // No requirement: register arithmetic and stores into a local array.
        // The array below holds one vector.
        const { assert!(S::LANES <= 16) };
        // Opaque inputs that are not a fixed point of a ← a·x + y, so no
        // iteration can be folded or hoisted.
        let mut acc = [s.splat(std::hint::black_box(1.0)); CHAINS];
        let x = s.splat(std::hint::black_box(0.999));
        let y = s.splat(std::hint::black_box(0.0011));
        // The chains are serial dependencies the compiler may not reassociate, so
        // every FMA is executed; the opaque count keeps the loop from being folded.
        let iterations = std::hint::black_box(self.iterations);
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = s.fmadd(*a, x, y);
            }
        }
        let mut sum = 0.0;
        let mut out = [0f32; 16];
        for a in acc {
            // SAFETY: `out` holds 16 ≥ LANES floats.
            unsafe { s.store(out.as_mut_ptr(), a) };
            sum += out[..S::LANES].iter().sum::<f32>();
        }
        let flops = iterations * (CHAINS * S::LANES * 2) as u64;
        (flops, sum)
    }
}

/// Runs `iterations` rounds of independent FMAs on `isa` and returns the number
/// of floating-point operations done (an FMA counts as two). Time it to get
/// the core's peak: `flops / seconds`.
///
/// # Panics
/// If the CPU does not support `isa`.
///
/// ```
/// use std::time::Instant;
/// let t = Instant::now();
/// let flops = backprop::kernel::fma_peak_probe(backprop::active_isa(), 1_000_000);
/// println!("{:.1} GFLOP/s", flops as f64 / t.elapsed().as_secs_f64() / 1e9);
/// ```
pub fn fma_peak_probe(isa: Isa, iterations: u64) -> u64 {
    let (flops, sink) = dispatch::run(isa, Probe { iterations });
    std::hint::black_box(sink);
    flops
}
