//! The GEMM against the naive reference: shape sweeps over tile and block
//! edges, every layout, α/β, NaN-poisoned C, sentinel guards, thread-count
//! invariance and every ISA path this CPU has.

mod common;

use backprop::gemm::{blocking, gemm, gemm_with, sgemm, GemmOptions, Packing};
use backprop::kernel::available_isas;
use backprop::matrix::{MatMut, MatRef};
use backprop::{reference, Isa, Threads};
use common::*;
use proptest::prelude::*;

const ALPHAS_BETAS: [f32; 4] = [0.0, 1.0, -0.5, 2.0];

/// Runs one product and checks it against the reference and the guards.
#[allow(clippy::too_many_arguments)]
fn check(
    opts: &GemmOptions,
    (m, k, n): (usize, usize, usize),
    layouts: (Layout, Layout, Layout),
    alpha: f32,
    beta: f32,
    seed: u64,
) {
    let mut r = rng(seed);
    let a = Strided::random(m, k, layouts.0, &mut r);
    let b = Strided::random(k, n, layouts.1, &mut r);
    let mut c = Strided::random(m, n, layouts.2, &mut r);
    if beta == 0.0 {
        // β = 0 must never read C.
        c.fill_with(|_, _| f32::NAN);
    }
    let c0 = c.to_vec();
    gemm_with(opts, alpha, a.view(), b.view(), beta, c.view_mut());
    let what = format!("{opts:?} {layouts:?}");
    assert_gemm_close(&what, alpha, &a, &b, beta, &c0, &c);
    c.assert_guards(&what);
    a.assert_guards("A");
    b.assert_guards("B");
}

fn opts(isa: Isa, threads: usize, packing: Packing) -> GemmOptions {
    GemmOptions {
        threads: Threads::Fixed(threads),
        isa: Some(isa),
        packing,
    }
}

/// Sizes around the register tile and the cache blocks of `isa`.
fn edges(isa: Isa) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let b = isa.blocking();
    let ms = vec![
        0,
        1,
        b.mr - 1,
        b.mr,
        b.mr + 1,
        2 * b.mr + 1,
        // Bottom edges of 4, 5, 8 and 9 rows: both paths run them on 4-, 8- or
        // full-height tiles.
        b.mr + 4,
        b.mr + 5,
        b.mr + 8,
        b.mr + 9,
        b.mc - 1,
        b.mc,
        b.mc + 1,
        // The last height packed whole with B panel by panel, and the first
        // past it (a packed panel shared by all row blocks).
        b.mc_whole,
        b.mc_whole + 1,
    ];
    // A last strip of half a tile (one vector: the narrow tile) and one wider.
    let ns = vec![
        0,
        1,
        b.nr - 1,
        b.nr,
        b.nr + 1,
        b.nr + b.nr / 2,
        b.nr + b.nr / 2 + 1,
        2 * b.nr + 3,
    ];
    let ks = vec![0, 1, 2, b.kc - 1, b.kc, b.kc + 1, 2 * b.kc + 3];
    (ms, ns, ks)
}

#[test]
fn shape_sweep_every_isa_and_path() {
    let mut seed = 1;
    for isa in available_isas() {
        let (ms, ns, ks) = edges(isa);
        for packing in [Packing::Always, Packing::Never, Packing::Auto] {
            for &m in &ms {
                for &n in &ns {
                    for &k in &ks {
                        seed += 1;
                        let beta = if seed % 2 == 0 { 0.0 } else { -0.5 };
                        check(
                            &opts(isa, 1, packing),
                            (m, k, n),
                            (Layout::RowMajor, Layout::RowMajor, Layout::RowMajor),
                            1.5,
                            beta,
                            seed,
                        );
                    }
                }
            }
        }
    }
}

/// Both paths round C after each pass of `kc` steps of k and apply α and β
/// the same way, so the path (the shape's and the CPU's choice) never changes
/// a bit: every layout, α/β, and k around one and two passes.
#[test]
fn both_paths_give_the_same_bits() {
    let mut seed = 5000;
    for isa in available_isas() {
        let kc = isa.blocking().kc;
        for k in [kc - 1, kc, kc + 1, 2 * kc + 3] {
            for la in LAYOUTS {
                for lb in LAYOUTS {
                    seed += 1;
                    let alpha = ALPHAS_BETAS[1 + (seed % 3) as usize];
                    let beta = ALPHAS_BETAS[(seed / 3 % 4) as usize];
                    let (m, n) = (29, 45);
                    let mut r = rng(seed);
                    let a = Strided::random(m, k, la, &mut r);
                    let b = Strided::random(k, n, lb, &mut r);
                    let c0 = Strided::random(m, n, Layout::RowMajor, &mut r);
                    let run = |packing| {
                        let mut c = Strided::new(m, n, Layout::RowMajor);
                        c.fill_with(|i, j| c0.get(i, j));
                        let o = opts(isa, 1, packing);
                        gemm_with(&o, alpha, a.view(), b.view(), beta, c.view_mut());
                        c.to_vec().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                    };
                    assert!(
                        run(Packing::Always) == run(Packing::Never),
                        "{isa} {m}×{k}×{n} {la:?} {lb:?} α = {alpha} β = {beta}: paths differ"
                    );
                }
            }
        }
    }
}

#[test]
fn every_layout_alpha_beta() {
    let mut seed = 1000;
    for isa in available_isas() {
        let b = isa.blocking();
        let shapes = [
            (b.mr + 1, b.kc + 1, b.nr + 1),
            (2 * b.mr - 1, 7, 3 * b.nr - 1),
            // A bottom edge of mr/2 + 2 rows: the 8-row edge tile of a
            // 12-row kernel, the full-height one of a 6-row kernel.
            (b.mr + b.mr / 2 + 2, 9, b.nr + 3),
            (33, 65, 9),
            // Past mc_whole: the packed path's shared panel, every layout.
            (b.mc_whole + 1, b.kc + 1, b.nr + 1),
        ];
        for &(m, k, n) in &shapes {
            for la in LAYOUTS {
                for lb in LAYOUTS {
                    for lc in LAYOUTS {
                        for packing in [Packing::Always, Packing::Never] {
                            seed += 1;
                            let alpha = ALPHAS_BETAS[(seed % 4) as usize];
                            let beta = ALPHAS_BETAS[((seed / 4) % 4) as usize];
                            check(
                                &opts(isa, 1, packing),
                                (m, k, n),
                                (la, lb, lc),
                                alpha,
                                beta,
                                seed,
                            );
                        }
                    }
                }
            }
        }
        // All sixteen α/β pairs on one layout mix.
        for alpha in ALPHAS_BETAS {
            for beta in ALPHAS_BETAS {
                seed += 1;
                check(
                    &opts(isa, 1, Packing::Auto),
                    (b.mr * 3 + 2, 40, b.nr * 2 + 5),
                    (Layout::ColPadded, Layout::RowPadded, Layout::RowPadded),
                    alpha,
                    beta,
                    seed,
                );
            }
        }
    }
}

#[test]
fn block_edges_of_nc_and_mc() {
    for isa in available_isas() {
        let b = isa.blocking();
        for &(m, k, n) in &[
            (3, 5, b.nc + 1),
            (2 * b.mc + 1, 3, 2 * b.nr),
            (b.mc + b.mr - 1, b.kc * 2 + 1, b.nr + 3),
            (b.mc_whole - 1, b.kc * 2 + 1, b.nc + b.nr + 3),
            (b.mc_whole + b.mr + 5, b.kc + 1, b.nc + 1),
        ] {
            check(
                &opts(isa, 1, Packing::Always),
                (m, k, n),
                (Layout::RowMajor, Layout::RowMajor, Layout::RowMajor),
                1.0,
                1.0,
                (m * 31 + n) as u64,
            );
        }
    }
}

/// Splitting over threads must not change a single bit: the split is on the
/// tile grid and k is never split. The packed path, forced, is also run at
/// β = 0 with C poisoned by NaN (no thread may read C there).
#[test]
fn bitwise_identical_for_1_2_3_threads() {
    let shapes = [
        (200, 300, 150),
        (7, 300, 1000),
        (1000, 300, 9),
        (130, 513, 257),
        (128, 784, 512),
        (97, 1, 1001),
    ];
    for isa in available_isas() {
        for &(m, k, n) in &shapes {
            for (la, lb, lc) in [
                (Layout::RowMajor, Layout::RowMajor, Layout::RowMajor),
                (Layout::ColMajor, Layout::RowMajor, Layout::ColPadded),
                (Layout::RowMajor, Layout::ColMajor, Layout::RowPadded),
            ] {
                for (packing, beta) in [(Packing::Auto, 0.5), (Packing::Always, 0.0)] {
                    let mut r = rng((m * k + n) as u64);
                    let a = Strided::random(m, k, la, &mut r);
                    let b = Strided::random(k, n, lb, &mut r);
                    let mut c_init = Strided::random(m, n, lc, &mut r);
                    if beta == 0.0 {
                        c_init.fill_with(|_, _| f32::NAN);
                    }
                    let mut results = Vec::new();
                    for threads in [1, 2, 3] {
                        let mut c = c_init.clone();
                        gemm_with(
                            &opts(isa, threads, packing),
                            0.75,
                            a.view(),
                            b.view(),
                            beta,
                            c.view_mut(),
                        );
                        c.assert_guards("threads");
                        results.push(c);
                    }
                    let what = format!("{isa}: {m}×{k}×{n} {la:?}/{lb:?}/{lc:?} {packing:?}");
                    assert_gemm_close(&what, 0.75, &a, &b, beta, &c_init.to_vec(), &results[0]);
                    for (t, c) in results.iter().enumerate().skip(1) {
                        let same = c
                            .data
                            .iter()
                            .zip(&results[0].data)
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{what}: {} threads differ from 1", t + 1);
                    }
                }
            }
        }
    }
}

#[test]
fn nan_and_inf_propagate() {
    for isa in available_isas() {
        for packing in [Packing::Always, Packing::Never] {
            let (m, k, n) = (9, 20, 19);
            let mut a = Strided::new(m, k, Layout::RowMajor);
            a.fill_with(|_, _| 1.0);
            a.set(4, 7, f32::NAN);
            let mut b = Strided::new(k, n, Layout::RowMajor);
            b.fill_with(|_, _| 1.0);
            b.set(3, 11, f32::INFINITY);
            let mut c = Strided::new(m, n, Layout::RowMajor);
            gemm_with(
                &opts(isa, 1, packing),
                1.0,
                a.view(),
                b.view(),
                0.0,
                c.view_mut(),
            );
            for i in 0..m {
                for j in 0..n {
                    let v = c.get(i, j);
                    if i == 4 {
                        assert!(v.is_nan(), "{isa}: row with NaN in A gave {v}");
                    } else if j == 11 {
                        assert_eq!(v, f32::INFINITY, "{isa}: column with +Inf in B");
                    } else {
                        assert_eq!(v, k as f32);
                    }
                }
            }
        }
    }
}

#[test]
fn alpha_zero_or_k_zero_reads_neither_a_nor_b() {
    let a = vec![f32::NAN; 12];
    let b = vec![f32::NAN; 12];
    let mut c = vec![2.0f32; 9];
    gemm(
        0.0,
        MatRef::from_slice(&a, 3, 4),
        MatRef::from_slice(&b, 4, 3),
        0.5,
        MatMut::from_slice_mut(&mut c, 3, 3),
    );
    assert_eq!(c, vec![1.0; 9]);
    let mut c = vec![f32::NAN; 6];
    let empty: [f32; 0] = [];
    gemm(
        1.0,
        MatRef::from_slice(&empty, 2, 0),
        MatRef::from_slice(&empty, 0, 3),
        0.0,
        MatMut::from_slice_mut(&mut c, 2, 3),
    );
    assert_eq!(c, vec![0.0; 6]);
}

#[test]
#[should_panic(expected = "gemm: inner dimensions differ: A is 2×3 but B is 4×2")]
fn inner_dimension_mismatch_is_named() {
    let x = [0.0f32; 12];
    let mut c = [0.0f32; 4];
    gemm(
        1.0,
        MatRef::from_slice(&x[..6], 2, 3),
        MatRef::from_slice(&x[..8], 4, 2),
        0.0,
        MatMut::from_slice_mut(&mut c, 2, 2),
    );
}

#[test]
#[should_panic(expected = "gemm: C is 3×2 but A·B is 2×2")]
fn output_shape_mismatch_is_named() {
    let x = [0.0f32; 12];
    let mut c = [0.0f32; 6];
    gemm(
        1.0,
        MatRef::from_slice(&x[..6], 2, 3),
        MatRef::from_slice(&x[..6], 3, 2),
        0.0,
        MatMut::from_slice_mut(&mut c, 3, 2),
    );
}

/// The raw entry point is a drop-in for matrixmultiply's: same arguments, same
/// results (to rounding), negative strides included.
#[test]
fn raw_sgemm_matches_matrixmultiply() {
    let mut r = rng(77);
    for &(m, k, n) in &[(1, 1, 1), (17, 33, 65), (64, 64, 64), (130, 70, 20)] {
        for (la, lb, lc) in [
            (Layout::RowMajor, Layout::RowMajor, Layout::RowMajor),
            (Layout::Reversed, Layout::ColMajor, Layout::RowPadded),
            (Layout::ColPadded, Layout::Reversed, Layout::ColMajor),
        ] {
            let a = Strided::random(m, k, la, &mut r);
            let b = Strided::random(k, n, lb, &mut r);
            let c0 = Strided::random(m, n, lc, &mut r);
            let mut ours = c0.clone();
            let mut theirs = c0.clone();
            let pa = a.view().as_ptr();
            let pb = b.view().as_ptr();
            // SAFETY: pointers and strides come from checked views of live buffers;
            // C is a separate buffer with non-overlapping strides.
            unsafe {
                let pc = ours.view_mut().as_mut_ptr();
                sgemm(
                    m, k, n, 1.25, pa, a.rs, a.cs, pb, b.rs, b.cs, -0.5, pc, c0.rs, c0.cs,
                );
                let pc = theirs.view_mut().as_mut_ptr();
                matrixmultiply::sgemm(
                    m, k, n, 1.25, pa, a.rs, a.cs, pb, b.rs, b.cs, -0.5, pc, c0.rs, c0.cs,
                );
            }
            assert_gemm_close("sgemm", 1.25, &a, &b, -0.5, &c0.to_vec(), &ours);
            assert_gemm_close("matrixmultiply", 1.25, &a, &b, -0.5, &c0.to_vec(), &theirs);
            ours.assert_guards("sgemm");
        }
    }
}

#[test]
fn reference_is_the_textbook_triple_loop() {
    // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]]
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [5.0, 6.0, 7.0, 8.0];
    let mut c = [1.0f32; 4];
    reference::gemm(
        2.0,
        MatRef::from_slice(&a, 2, 2),
        MatRef::from_slice(&b, 2, 2),
        -1.0,
        MatMut::from_slice_mut(&mut c, 2, 2),
    );
    assert_eq!(c, [37.0, 43.0, 85.0, 99.0]);
}

#[test]
fn blocking_is_consistent() {
    for isa in available_isas() {
        let b = isa.blocking();
        assert_eq!(b.mc % b.mr, 0, "{isa}: MC must be a multiple of MR");
        assert_eq!(b.nc % b.nr, 0, "{isa}: NC must be a multiple of NR");
        assert_eq!(
            b.mc_whole % b.mr,
            0,
            "{isa}: mc_whole must be a multiple of MR"
        );
        assert!(b.mc_whole >= b.mc, "{isa}: mc_whole below MC");
    }
    assert_eq!(blocking(), backprop::active_isa().blocking());
}

fn layout_strategy() -> impl Strategy<Value = Layout> {
    prop::sample::select(LAYOUTS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn random_shapes_and_strides(
        m in 0usize..70, k in 0usize..300, n in 0usize..70,
        la in layout_strategy(), lb in layout_strategy(), lc in layout_strategy(),
        ai in 0usize..4, bi in 0usize..4, threads in 1usize..4,
        packing in prop::sample::select(vec![Packing::Auto, Packing::Always, Packing::Never]),
        seed in any::<u64>(),
    ) {
        let isa = backprop::active_isa();
        check(
            &opts(isa, threads, packing),
            (m, k, n),
            (la, lb, lc),
            ALPHAS_BETAS[ai],
            ALPHAS_BETAS[bi],
            seed,
        );
    }
}
