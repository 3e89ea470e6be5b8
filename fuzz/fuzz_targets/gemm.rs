//! The GEMM against a naive f64 triple loop for arbitrary shapes (tile and
//! block edges included), layouts (transposed, padded, negative strides for
//! every operand), α/β (β = 0 with C poisoned by NaN), thread counts, ISA
//! paths and packing modes; guard cells around every buffer must survive.
#![no_main]

use arbitrary::Arbitrary;
use backprop::gemm::{gemm_with, GemmOptions, Packing};
use backprop::kernel::available_isas;
use backprop::matrix::{MatMut, MatRef};
use backprop::Threads;
use libfuzzer_sys::fuzz_target;

/// Sizes that hit the register tiles (6, 8, 12, 16, 32), the blocks `mc`
/// (60 on a 2 MiB-L2 Intel AVX-512 core, 120 on AVX-512 Zen 4, 72 on AVX2
/// with a 512 KiB L2) and `kc` (256, 512) ± 1, and two passes of `kc` = 512 ± 1.
const DIMS: [usize; 30] = [
    0, 1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 15, 16, 17, 31, 32, 33, 47, 59, 60, 61, 71, 72, 73, 97,
    119, 120, 121, 130,
];
const DEPTHS: [usize; 20] = [
    0, 1, 2, 3, 7, 8, 9, 31, 64, 191, 192, 193, 255, 256, 257, 511, 512, 513, 1023, 1025,
];
const SCALARS: [f32; 6] = [0.0, 1.0, -0.5, 2.0, 0.25, -3.0];
const GUARD: usize = 5;
const SENTINEL: f32 = -7.654_321e29;

#[derive(Arbitrary, Debug)]
struct Input {
    m: u8,
    k: u8,
    n: u8,
    layouts: [u8; 3],
    alpha: u8,
    beta: u8,
    threads: u8,
    isa: u8,
    packing: u8,
    seed: u64,
}

/// A matrix inside a sentinel-guarded buffer, laid out by `layout`.
struct Buf {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
    origin: usize,
    span: usize,
}

impl Buf {
    fn new(rows: usize, cols: usize, layout: u8) -> Buf {
        let (rs, cs): (isize, isize) = match layout % 5 {
            0 => (cols as isize, 1),
            1 => (1, rows as isize),
            2 => (cols as isize + 3, 1),
            3 => (1, rows as isize + 2),
            _ => (-(cols as isize), -1),
        };
        let (span, origin) = if rows == 0 || cols == 0 {
            (0, 0)
        } else {
            let (r, c) = ((rows - 1) as isize, (cols - 1) as isize);
            let lo = (r * rs).min(0) + (c * cs).min(0);
            let hi = (r * rs).max(0) + (c * cs).max(0);
            ((hi - lo + 1) as usize, (-lo) as usize)
        };
        Buf {
            data: vec![SENTINEL; span + 2 * GUARD],
            rows,
            cols,
            rs,
            cs,
            origin,
            span,
        }
    }
    fn index(&self, i: usize, j: usize) -> usize {
        (GUARD as isize + self.origin as isize + i as isize * self.rs + j as isize * self.cs)
            as usize
    }
    fn get(&self, i: usize, j: usize) -> f32 {
        self.data[self.index(i, j)]
    }
    fn fill(&mut self, mut f: impl FnMut() -> f32) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                let ix = self.index(i, j);
                self.data[ix] = f();
            }
        }
    }
    fn view(&self) -> MatRef<'_> {
        MatRef::from_strided(
            &self.data[GUARD..GUARD + self.span],
            self.rows,
            self.cols,
            self.rs,
            self.cs,
        )
    }
    fn view_mut(&mut self) -> MatMut<'_> {
        let span = self.span;
        MatMut::from_strided_mut(
            &mut self.data[GUARD..GUARD + span],
            self.rows,
            self.cols,
            self.rs,
            self.cs,
        )
    }
    fn guards_intact(&self) -> bool {
        let mut elem = vec![false; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                elem[self.index(i, j)] = true;
            }
        }
        self.data
            .iter()
            .zip(&elem)
            .all(|(v, &e)| e || v.to_bits() == SENTINEL.to_bits())
    }
}

fuzz_target!(|inp: Input| {
    let (m, k, n) = (
        DIMS[inp.m as usize % DIMS.len()],
        DEPTHS[inp.k as usize % DEPTHS.len()],
        DIMS[inp.n as usize % DIMS.len()],
    );
    let isas = available_isas();
    let isa = isas[inp.isa as usize % isas.len()];
    let packing = [Packing::Auto, Packing::Always, Packing::Never][inp.packing as usize % 3];
    let opts = GemmOptions {
        threads: Threads::Fixed(1 + inp.threads as usize % 3),
        isa: Some(isa),
        packing,
    };
    let (alpha, beta) = (
        SCALARS[inp.alpha as usize % 6],
        SCALARS[inp.beta as usize % 6],
    );
    let mut state = inp.seed | 1;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut a = Buf::new(m, k, inp.layouts[0]);
    let mut b = Buf::new(k, n, inp.layouts[1]);
    let mut c = Buf::new(m, n, inp.layouts[2]);
    a.fill(&mut rand);
    b.fill(&mut rand);
    if beta == 0.0 {
        c.fill(|| f32::NAN);
    } else {
        c.fill(&mut rand);
    }
    let c0: Vec<f32> = (0..m * n)
        .map(|x| c.get(x / n.max(1), x % n.max(1)))
        .collect();
    gemm_with(&opts, alpha, a.view(), b.view(), beta, c.view_mut());
    assert!(
        a.guards_intact() && b.guards_intact() && c.guards_intact(),
        "a guard cell changed"
    );
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let x = a.get(i, p) as f64 * b.get(p, j) as f64;
                s += x;
                mag += x.abs();
            }
            let mut want = alpha as f64 * s;
            let mut scale = (alpha as f64).abs() * mag;
            if beta != 0.0 {
                want += beta as f64 * c0[i * n + j] as f64;
                scale += (beta as f64 * c0[i * n + j] as f64).abs();
            }
            let tol = 2.0 * (k as f64 + 2.0) * f32::EPSILON as f64 * scale + 1e-30;
            let got = c.get(i, j) as f64;
            assert!(
                (got - want).abs() <= tol,
                "{opts:?} {m}×{k}×{n}: C[{i},{j}] = {got}, want {want}"
            );
        }
    }
});
