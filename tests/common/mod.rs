//! Helpers shared by the integration tests: strided buffers with sentinel
//! guards, seeded random fills and k-scaled tolerances.
#![allow(dead_code)]

use backprop::matrix::{MatMut, MatRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A value no kernel computes from the test inputs: guard cells must keep it.
pub const SENTINEL: f32 = -7.654_321e29;
/// Guard cells before and after every buffer.
pub const GUARD: usize = 9;

/// How a test matrix is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    RowMajor,
    ColMajor,
    /// Row-major with 3 unused slots after every row.
    RowPadded,
    /// Column-major with 5 unused slots after every column.
    ColPadded,
    /// Row-major walked backwards in both directions (negative strides).
    Reversed,
}

pub const LAYOUTS: [Layout; 5] = [
    Layout::RowMajor,
    Layout::ColMajor,
    Layout::RowPadded,
    Layout::ColPadded,
    Layout::Reversed,
];

/// A matrix stored with a layout inside a sentinel-guarded buffer.
#[derive(Clone, Debug)]
pub struct Strided {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
    origin: usize,
    span: usize,
}

impl Strided {
    pub fn new(rows: usize, cols: usize, layout: Layout) -> Strided {
        let (rs, cs): (isize, isize) = match layout {
            Layout::RowMajor => (cols as isize, 1),
            Layout::ColMajor => (1, rows as isize),
            Layout::RowPadded => (cols as isize + 3, 1),
            Layout::ColPadded => (1, rows as isize + 5),
            Layout::Reversed => (-(cols as isize), -1),
        };
        let (span, origin) = if rows == 0 || cols == 0 {
            (0, 0)
        } else {
            let r = (rows - 1) as isize;
            let c = (cols - 1) as isize;
            let lo = (r * rs).min(0) + (c * cs).min(0);
            let hi = (r * rs).max(0) + (c * cs).max(0);
            ((hi - lo + 1) as usize, (-lo) as usize)
        };
        Strided {
            data: vec![SENTINEL; span + 2 * GUARD],
            rows,
            cols,
            rs,
            cs,
            origin,
            span,
        }
    }

    pub fn index(&self, i: usize, j: usize) -> usize {
        (GUARD as isize + self.origin as isize + i as isize * self.rs + j as isize * self.cs)
            as usize
    }

    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[self.index(i, j)]
    }

    pub fn set(&mut self, i: usize, j: usize, v: f32) {
        let ix = self.index(i, j);
        self.data[ix] = v;
    }

    /// Fills the matrix's elements with `f(i, j)`.
    pub fn fill_with(&mut self, mut f: impl FnMut(usize, usize) -> f32) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                self.set(i, j, f(i, j));
            }
        }
    }

    pub fn random(rows: usize, cols: usize, layout: Layout, rng: &mut StdRng) -> Strided {
        let mut s = Strided::new(rows, cols, layout);
        s.fill_with(|_, _| rng.random_range(-1.0f32..1.0));
        s
    }

    pub fn view(&self) -> MatRef<'_> {
        MatRef::from_strided(
            &self.data[GUARD..GUARD + self.span],
            self.rows,
            self.cols,
            self.rs,
            self.cs,
        )
    }

    pub fn view_mut(&mut self) -> MatMut<'_> {
        MatMut::from_strided_mut(
            &mut self.data[GUARD..GUARD + self.span],
            self.rows,
            self.cols,
            self.rs,
            self.cs,
        )
    }

    /// Row-major copy of the elements.
    pub fn to_vec(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.rows * self.cols);
        for i in 0..self.rows {
            for j in 0..self.cols {
                v.push(self.get(i, j));
            }
        }
        v
    }

    /// Panics if any slot that is not an element of the matrix changed.
    #[track_caller]
    pub fn assert_guards(&self, what: &str) {
        let mut is_elem = vec![false; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                is_elem[self.index(i, j)] = true;
            }
        }
        for (ix, (&v, &e)) in self.data.iter().zip(&is_elem).enumerate() {
            if !e {
                assert_eq!(
                    v.to_bits(),
                    SENTINEL.to_bits(),
                    "{what}: slot {ix} outside the {}×{} view was overwritten",
                    self.rows,
                    self.cols
                );
            }
        }
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Checks `c = α·a·b + β·c0` element by element with a tolerance that grows
/// with k: |error| ≤ 2·(k + 2)·ε·(|α|·Σ_p |a_ip·b_pj| + |β·c0_ij|) + 1e-30.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn assert_gemm_close(
    what: &str,
    alpha: f32,
    a: &Strided,
    b: &Strided,
    beta: f32,
    c0: &[f32],
    c: &Strided,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    for i in 0..m {
        for j in 0..n {
            let (want, tol) = gemm_elem(alpha, a, b, beta, c0[i * n + j], i, j);
            let got = c.get(i, j) as f64;
            assert!(
                (got - want).abs() <= tol,
                "{what}: C[{i},{j}] = {got} but expected {want} (tol {tol:e}); m={m} k={k} n={n} α={alpha} β={beta}"
            );
        }
    }
}

/// Element `(i, j)` of `α·A·B + β·c0` in f64, and its k-scaled tolerance
/// 2·(k + 2)·ε·(|α|·Σ_p |a_ip·b_pj| + |β·c0|) + 1e-30.
#[allow(clippy::too_many_arguments)]
pub fn gemm_elem(
    alpha: f32,
    a: &Strided,
    b: &Strided,
    beta: f32,
    c0: f32,
    i: usize,
    j: usize,
) -> (f64, f64) {
    let (mut s, mut mag) = (0.0f64, 0.0f64);
    for p in 0..a.cols {
        let x = a.get(i, p) as f64 * b.get(p, j) as f64;
        s += x;
        mag += x.abs();
    }
    let mut y = alpha as f64 * s;
    let mut scale = (alpha as f64).abs() * mag;
    if beta != 0.0 {
        y += beta as f64 * c0 as f64;
        scale += (beta as f64 * c0 as f64).abs();
    }
    (
        y,
        2.0 * (a.cols as f64 + 2.0) * f32::EPSILON as f64 * scale + 1e-30,
    )
}
