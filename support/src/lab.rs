//! The experiments behind `cargo run --release --example experiments`: each
//! function runs one experiment on the crate's own layers, kernels and
//! trainer and returns the numbers. `examples/experiments/main.rs` turns them into the report;
//! `tests/experiments.rs` runs the same functions at small sizes and asserts
//! the trends, so what the report shows is what CI checks.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use backprop::gemm::{dense_forward, GemmOptions};
use backprop::matrix::{MatMut, MatRef};
use backprop::nn::{Activation, Init, Loss, Mlp, MlpBuilder, Targets};
use backprop::optim::{Schedule, Sgd, SgdConfig};
use backprop::reference::mlp_loss_and_grads;
use backprop::train::{Dataset, Trainer};
use backprop::{Isa, Threads};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// `n` draws of N(0, 1), seeded.
pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = backprop::rng::Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| backprop::nn::init::standard_normal(&mut rng))
        .collect()
}

/// Mean and (biased) variance of `xs`, accumulated in f64.
pub fn mean_var(xs: &[f32]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// Frobenius norm of `xs`, in f64.
pub fn norm(xs: &[f32]) -> f64 {
    xs.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()
}

/// `net.forward` on `rows` samples of `x` (row-major), copied out.
pub fn forward_rows(net: &mut Mlp, x: &[f32], rows: usize) -> Vec<f32> {
    let d = net.input_dim();
    net.forward(MatRef::from_slice(x, rows, d))
        .expect("input fits the network")
        .as_row_major_slice()
        .expect("network outputs are contiguous")
        .to_vec()
}

/// Largest |a − b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max)
}

/// Least-squares slope of `y` against `x`.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

/// Least-squares slope of `ln y` against `ln x` (the exponent of a power law).
pub fn loglog_slope(points: &[(f64, f64)]) -> f64 {
    let pts: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x.ln(), y.ln())).collect();
    slope(&pts)
}

/// Least-squares slope of `ln y` against `x` (the log of a per-step factor).
pub fn semilog_slope(points: &[(f64, f64)]) -> f64 {
    let pts: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x, y.ln())).collect();
    slope(&pts)
}

// ---------------------------------------------------------------------------
// Several seeds: the spread of a result, and running the seeds side by side.
// ---------------------------------------------------------------------------

/// The spread of one quantity over runs (seeds): count, mean, sample
/// standard deviation (n − 1 in the denominator; 0 for a single run),
/// smallest and largest value. Non-finite values are left out of all five.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of the finite values in `xs` (`n = 0` and NaN statistics
    /// when there are none).
    pub fn of(xs: &[f64]) -> Spread {
        let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        let n = v.len();
        if n == 0 {
            return Spread {
                n,
                mean: f64::NAN,
                sd: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let ss: f64 = v.iter().map(|x| (x - mean).powi(2)).sum();
        Spread {
            n,
            mean,
            sd: if n > 1 {
                (ss / (n - 1) as f64).sqrt()
            } else {
                0.0
            },
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }

    /// The spread of `f` applied to each item.
    pub fn by<T>(items: &[T], f: impl Fn(&T) -> f64) -> Spread {
        Spread::of(&items.iter().map(f).collect::<Vec<_>>())
    }

    /// `(min, max)`, the range a chart's band or error bar shows.
    pub fn range(&self) -> (f64, f64) {
        (self.min, self.max)
    }
}

thread_local! {
    /// Set on the threads of [`par_map`]: each runs its networks on one thread.
    static IN_PAR_MAP: Cell<bool> = const { Cell::new(false) };
}

/// GEMM options for a network built here: one thread inside [`par_map`]
/// (its workers already keep every core busy), the crate's setting
/// otherwise. Training results are bitwise the same for any thread count, so
/// this changes the run time only.
pub fn worker_gemm_options() -> GemmOptions {
    GemmOptions {
        threads: if IN_PAR_MAP.with(Cell::get) {
            Threads::Fixed(1)
        } else {
            Threads::Global
        },
        ..GemmOptions::default()
    }
}

/// `f` applied to every item, on up to [`backprop::num_threads`] threads
/// that take the items in order; the results come back in the items'
/// order. Independent training runs (one per seed, step size, …) of small
/// networks go faster side by side than one after another with their GEMMs
/// split over the threads.
pub fn par_map<I: Sync, T: Send>(items: &[I], f: impl Fn(&I) -> T + Sync) -> Vec<T> {
    let workers = backprop::num_threads().min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<T>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                IN_PAR_MAP.with(|c| c.set(true));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    out.lock().expect("a worker panicked")[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .expect("a worker panicked")
        .into_iter()
        .map(|r| r.expect("every item was run"))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Backprop is the chain rule, done efficiently.
// ---------------------------------------------------------------------------

/// A plain stack `input → widths[0] → … → classes` of dense layers, each
/// hidden one followed by `acts[l]`, with softmax cross-entropy.
#[derive(Clone, Debug)]
pub struct PlainNet {
    pub input: usize,
    pub widths: Vec<usize>,
    pub acts: Vec<Activation>,
    pub classes: usize,
}

impl PlainNet {
    /// The crate's network for this description.
    pub fn build(&self, init: Init, seed: u64) -> Mlp {
        let mut b = MlpBuilder::new(self.input)
            .init(init)
            .loss(Loss::SoftmaxCrossEntropy);
        for (&w, &a) in self.widths.iter().zip(&self.acts) {
            b = b.dense(w).act(a);
        }
        b.dense(self.classes).build(seed).expect("valid network")
    }

    /// Fan-in and fan-out of every dense layer, output layer included.
    fn dims(&self) -> Vec<(usize, usize)> {
        let mut d = vec![self.input];
        d.extend_from_slice(&self.widths);
        d.push(self.classes);
        d.windows(2).map(|w| (w[0], w[1])).collect()
    }
}

/// Per sample, per layer: `(z, φ(z))`.
type Tapes = Vec<Vec<(Vec<f64>, Vec<f64>)>>;

/// The mean softmax cross-entropy of a plain net in f64, and the per-layer
/// `(z, x)` of every sample (the forward values the chain rule reuses).
/// `params` has the arena layout: per layer `W` (`fan_in × fan_out`,
/// row-major) then `b`.
fn plain_forward(
    net: &PlainNet,
    params: &[f64],
    x: &[Vec<f64>],
    classes: &[usize],
) -> (f64, Tapes) {
    let dims = net.dims();
    let mut loss = 0.0;
    let mut tapes = Vec::with_capacity(x.len());
    for (n, xn) in x.iter().enumerate() {
        let mut a = xn.clone();
        let mut off = 0;
        let mut tape = Vec::with_capacity(dims.len());
        for (l, &(fi, fo)) in dims.iter().enumerate() {
            let (w, b) = (
                &params[off..off + fi * fo],
                &params[off + fi * fo..off + fi * fo + fo],
            );
            off += fi * fo + fo;
            let z: Vec<f64> = (0..fo)
                .map(|j| b[j] + (0..fi).map(|i| w[i * fo + j] * a[i]).sum::<f64>())
                .collect();
            let out: Vec<f64> = if l < net.acts.len() {
                z.iter()
                    .map(|&v| backprop::reference::activation(net.acts[l], v))
                    .collect()
            } else {
                z.clone()
            };
            tape.push((z, out.clone()));
            a = out;
        }
        let m = a.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = a.iter().map(|v| (v - m).exp()).sum();
        loss += m + s.ln() - a[classes[n]];
        tapes.push(tape);
    }
    (loss / x.len() as f64, tapes)
}

/// ∂(mean loss)/∂θ for every parameter θ by the chain rule applied to that one
/// parameter on its own (forward-mode): the change of θ moves one `z` of its
/// layer, and that tangent is pushed through every layer above to the loss.
/// Each parameter costs a pass over the layers above it, so the whole
/// gradient costs O(P·K²L) instead of backprop's O(K²L).
pub fn chain_rule_per_weight(
    net: &PlainNet,
    params: &[f64],
    x: &[Vec<f64>],
    classes: &[usize],
) -> Vec<f64> {
    let dims = net.dims();
    let (_, tapes) = plain_forward(net, params, x, classes);
    let batch = x.len() as f64;
    // Offsets of each layer's W and b.
    let mut offs = Vec::new();
    let mut off = 0;
    for &(fi, fo) in &dims {
        offs.push((off, off + fi * fo));
        off += fi * fo + fo;
    }
    let mut grad = vec![0.0; params.len()];
    for (l, &(fi, fo)) in dims.iter().enumerate() {
        for p in 0..fi * fo + fo {
            // θ = W_ij (p < fi·fo) or b_j: ∂z_j/∂θ is x_i or 1, other z's fixed.
            let (i, j) = if p < fi * fo {
                (Some(p / fo), p % fo)
            } else {
                (None, p - fi * fo)
            };
            let mut g = 0.0;
            for (n, tape) in tapes.iter().enumerate() {
                let input = if l == 0 { &x[n] } else { &tape[l - 1].1 };
                let mut dz = vec![0.0; fo];
                dz[j] = i.map_or(1.0, |i| input[i]);
                let mut lm = l;
                loop {
                    // dz of layer lm → d(out) of layer lm.
                    let dout: Vec<f64> = if lm < net.acts.len() {
                        dz.iter()
                            .zip(&tape[lm].0)
                            .map(|(&d, &z)| {
                                d * backprop::reference::activation_derivative(net.acts[lm], z)
                            })
                            .collect()
                    } else {
                        dz.clone()
                    };
                    if lm + 1 == dims.len() {
                        // Softmax cross-entropy: ∂ℓ/∂h_k = p_k − [k = y].
                        let h = &tape[lm].1;
                        let m = h.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let s: f64 = h.iter().map(|v| (v - m).exp()).sum();
                        for (k, &d) in dout.iter().enumerate() {
                            let pk = (h[k] - m).exp() / s;
                            g += (pk - if k == classes[n] { 1.0 } else { 0.0 }) * d;
                        }
                        break;
                    }
                    lm += 1;
                    let (fi2, fo2) = dims[lm];
                    let w = &params[offs[lm].0..offs[lm].1];
                    dz = (0..fo2)
                        .map(|q| (0..fi2).map(|r| w[r * fo2 + q] * dout[r]).sum())
                        .collect();
                }
            }
            grad[offs[l].0 + p] = g / batch;
        }
    }
    grad
}

/// Central finite differences of the f64 loss, step `h` per parameter.
pub fn finite_differences(
    net: &PlainNet,
    params: &[f64],
    x: &[Vec<f64>],
    classes: &[usize],
    h: f64,
) -> Vec<f64> {
    let mut p = params.to_vec();
    (0..params.len())
        .map(|i| {
            p[i] = params[i] + h;
            let up = plain_forward(net, &p, x, classes).0;
            p[i] = params[i] - h;
            let down = plain_forward(net, &p, x, classes).0;
            p[i] = params[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Four gradients of the same small network and batch, compared with the
/// literal f64 backprop of `backprop::reference` (per-sample
/// `δ⁽ˡ⁾ = (W⁽ˡ⁺¹⁾δ⁽ˡ⁺¹⁾) ⊙ φ′(z⁽ˡ⁾)`, `∂w_ij = δ_j x_i`).
#[derive(Clone, Debug)]
pub struct GradCheck {
    pub params: usize,
    /// max |g_ref|, the scale the errors are relative to.
    pub scale: f64,
    /// max |g − g_ref| / scale for the crate's f32 SIMD backprop.
    pub crate_err: f64,
    /// … for central finite differences (f64, h = 1e-6).
    pub fd_err: f64,
    /// … for the per-weight chain rule (f64).
    pub chain_err: f64,
}

/// Runs [`GradCheck`] on `net` with a batch of `batch` Gaussian inputs.
pub fn gradient_check(net: &PlainNet, batch: usize, seed: u64) -> GradCheck {
    let mut mlp = net.build(Init::Xavier, seed);
    let xs = gaussian(batch * net.input, seed ^ 1);
    let mut rng = StdRng::seed_from_u64(seed ^ 2);
    let classes: Vec<usize> = (0..batch)
        .map(|_| rng.random_range(0..net.classes))
        .collect();
    mlp.forward_backward(
        MatRef::from_slice(&xs, batch, net.input),
        Targets::Classes(&classes),
    )
    .expect("shapes match");
    let g_crate: Vec<f64> = mlp.grads().iter().map(|&v| v as f64).collect();
    let p64: Vec<f64> = mlp.params().iter().map(|&v| v as f64).collect();
    let x64: Vec<Vec<f64>> = xs
        .chunks(net.input)
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect();
    let (_, g_ref) = mlp_loss_and_grads(
        net.input,
        mlp.layers(),
        Loss::SoftmaxCrossEntropy,
        &p64,
        &x64,
        Targets::Classes(&classes),
    );
    let g_fd = finite_differences(net, &p64, &x64, &classes, 1e-6);
    let g_chain = chain_rule_per_weight(net, &p64, &x64, &classes);
    let scale = g_ref.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = |g: &[f64]| {
        g.iter()
            .zip(&g_ref)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
            / scale
    };
    GradCheck {
        params: p64.len(),
        scale,
        crate_err: err(&g_crate),
        fd_err: err(&g_fd),
        chain_err: err(&g_chain),
    }
}

/// Seconds for one full gradient of a 2-hidden-layer tanh net of width `k`
/// (batch 16): the crate's backprop, the per-weight chain rule and finite
/// differences. Shows backprop's O(K²) against O(K⁴) for the other two.
#[derive(Clone, Debug)]
pub struct GradCost {
    pub k: usize,
    pub params: usize,
    pub backprop_s: f64,
    pub chain_s: f64,
    pub fd_s: f64,
}

/// Times the three ways to get a gradient for each width in `ks`.
pub fn gradient_costs(ks: &[usize], seed: u64) -> Vec<GradCost> {
    let batch = 16;
    ks.iter()
        .map(|&k| {
            let net = PlainNet {
                input: k,
                widths: vec![k, k],
                acts: vec![Activation::Tanh; 2],
                classes: 10,
            };
            let mut mlp = net.build(Init::Xavier, seed);
            let xs = gaussian(batch * k, seed);
            let classes: Vec<usize> = (0..batch).map(|i| i % 10).collect();
            let x = MatRef::from_slice(&xs, batch, k);
            let reps = 20;
            mlp.forward_backward(x, Targets::Classes(&classes)).unwrap();
            let t = Instant::now();
            for _ in 0..reps {
                mlp.forward_backward(x, Targets::Classes(&classes)).unwrap();
            }
            let backprop_s = t.elapsed().as_secs_f64() / reps as f64;
            let p64: Vec<f64> = mlp.params().iter().map(|&v| v as f64).collect();
            let x64: Vec<Vec<f64>> = xs
                .chunks(k)
                .map(|r| r.iter().map(|&v| v as f64).collect())
                .collect();
            let t = Instant::now();
            std::hint::black_box(chain_rule_per_weight(&net, &p64, &x64, &classes));
            let chain_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            std::hint::black_box(finite_differences(&net, &p64, &x64, &classes, 1e-6));
            let fd_s = t.elapsed().as_secs_f64();
            GradCost {
                k,
                params: p64.len(),
                backprop_s,
                chain_s,
                fd_s,
            }
        })
        .collect()
}

/// Median seconds of one training step (forward, backward, SGD-momentum
/// update) of `l` dense K × K layers (ReLU between, MSE), batch `batch`.
pub fn step_seconds(k: usize, l: usize, batch: usize, min_seconds: f64) -> f64 {
    let mut b = MlpBuilder::new(k).loss(Loss::Mse);
    for _ in 1..l {
        b = b.dense(k).act(Activation::Relu);
    }
    let net = b.dense(k).build(1).expect("valid network");
    let n = net.num_params();
    let sgd = Sgd::new(
        n,
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
    );
    let mut t = Trainer::new(net, Box::new(sgd), Schedule::constant(1e-4), 1);
    let x = gaussian(batch * k, 3);
    let y = gaussian(batch * k, 4);
    let xm = MatRef::from_slice(&x, batch, k);
    let ym = MatRef::from_slice(&y, batch, k);
    for _ in 0..2 {
        t.step(xm, Targets::Values(ym)).unwrap();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed().as_secs_f64() < min_seconds && times.len() < 200) {
        let s = Instant::now();
        t.step(xm, Targets::Values(ym)).unwrap();
        times.push(s.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Step time over a K × L grid, with the least-squares fit
/// `ln t = c + a·ln K + b·ln L`.
#[derive(Clone, Debug)]
pub struct ScalingFit {
    /// `(k, l, seconds)`.
    pub grid: Vec<(usize, usize, f64)>,
    pub k_exponent: f64,
    pub l_exponent: f64,
}

/// Measures [`step_seconds`] on every `(k, l)` and fits the exponents.
pub fn step_time_scaling(ks: &[usize], ls: &[usize], batch: usize, min_seconds: f64) -> ScalingFit {
    let mut grid = Vec::new();
    for &l in ls {
        for &k in ks {
            grid.push((k, l, step_seconds(k, l, batch, min_seconds)));
        }
    }
    // Normal equations of the 3-parameter linear fit in (ln K, ln L).
    let rows: Vec<[f64; 4]> = grid
        .iter()
        .map(|&(k, l, t)| [1.0, (k as f64).ln(), (l as f64).ln(), t.ln()])
        .collect();
    let mut a = [[0.0f64; 4]; 3];
    for r in &rows {
        for i in 0..3 {
            for j in 0..4 {
                a[i][j] += r[i] * r[j];
            }
        }
    }
    let s = solve3(a);
    ScalingFit {
        grid,
        k_exponent: s[1],
        l_exponent: s[2],
    }
}

/// Solves a 3 × 3 system given as an augmented matrix (Gaussian elimination
/// with partial pivoting).
fn solve3(mut a: [[f64; 4]; 3]) -> [f64; 3] {
    for c in 0..3 {
        let p = (c..3)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, p);
        let pivot = a[c];
        for (r, row) in a.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot[c];
                for (x, p) in row.iter_mut().zip(pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    [a[0][3] / a[0][0], a[1][3] / a[1][1], a[2][3] / a[2][2]]
}

// ---------------------------------------------------------------------------
// 2. Variance-preserving initialization.
// ---------------------------------------------------------------------------

/// Var[z⁽ˡ⁾] for l = 1..=depth through `depth` ReLU layers of width `k` whose
/// weights are N(0, σ²), on `batch` inputs x⁽⁰⁾ = ReLU(g), g ~ N(0, 1) (as if
/// they came out of a layer with Var\[z\] = 1), over `nets` independently drawn
/// networks. One network's Var[z⁽ˡ⁾] drifts like a random walk in log scale
/// (its own weights are one draw, shared by every sample); the mean over
/// networks is what the variance argument E_W[Var z⁽ˡ⁾] = (K·σ²/2)·Var z⁽ˡ⁻¹⁾
/// predicts.
#[derive(Clone, Debug)]
pub struct VarianceRun {
    pub sigma: f32,
    /// Mean over networks of Var[z⁽ˡ⁾], index l − 1.
    pub var: Vec<f64>,
    /// Smallest and largest single-network Var[z⁽ˡ⁾].
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    /// Each network's Var[z⁽ˡ⁾]: `per_net[net][l − 1]`.
    pub per_net: Vec<Vec<f64>>,
    /// max over networks of |x⁽ᴸ⁾ − net.forward(x⁽⁰⁾)| / max |x⁽ᴸ⁾|: the
    /// layer-by-layer pass here is the network's own forward pass.
    pub forward_mismatch: f64,
}

/// Builds each network with the crate's `Init::Normal(sigma)` and runs it
/// layer by layer through the fused dense kernel, recording the
/// pre-activations.
pub fn variance_through_depth(
    k: usize,
    depth: usize,
    batch: usize,
    sigma: f32,
    nets: usize,
    seed: u64,
) -> VarianceRun {
    let mut run = VarianceRun {
        sigma,
        var: vec![0.0; depth],
        min: vec![f64::INFINITY; depth],
        max: vec![0.0; depth],
        per_net: Vec::with_capacity(nets),
        forward_mismatch: 0.0,
    };
    for s in 0..nets as u64 {
        let seed = seed.wrapping_mul(1000).wrapping_add(s);
        let mut b = MlpBuilder::new(k).init(Init::Normal(sigma));
        for _ in 0..depth {
            b = b.dense(k).act(Activation::Relu);
        }
        let mut net = b.build(seed).expect("valid network");
        let x0: Vec<f32> = gaussian(batch * k, seed ^ 7)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let opts = GemmOptions::default();
        let mut x = x0.clone();
        let mut out = vec![0.0f32; batch * k];
        let mut z = vec![0.0f32; batch * k];
        let mut vars = Vec::with_capacity(depth);
        for (l, d) in net.dense_layers().into_iter().enumerate() {
            let (p, fi, fo) = (net.params(), d.fan_in, d.fan_out);
            dense_forward(
                &opts,
                MatRef::from_slice(&x, batch, fi),
                MatRef::from_slice(&p[d.weight], fi, fo),
                d.bias.map(|b| &p[b]),
                Activation::Relu,
                MatMut::from_slice_mut(&mut out, batch, fo),
                Some(MatMut::from_slice_mut(&mut z, batch, fo)),
            );
            let v = mean_var(&z).1;
            run.var[l] += v / nets as f64;
            run.min[l] = run.min[l].min(v);
            run.max[l] = run.max[l].max(v);
            vars.push(v);
            std::mem::swap(&mut x, &mut out);
        }
        run.per_net.push(vars);
        let h = net
            .forward(MatRef::from_slice(&x0, batch, k))
            .expect("shapes match")
            .as_row_major_slice()
            .expect("network outputs are contiguous")
            .to_vec();
        let top = x.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
        run.forward_mismatch = run
            .forward_mismatch
            .max(max_abs_diff(&x, &h) / top.max(f64::MIN_POSITIVE));
    }
    run
}

// ---------------------------------------------------------------------------
// 3. Vanishing/exploding gradients and their remedies.
// ---------------------------------------------------------------------------

/// The deep nets of experiment 3: `depth` hidden ReLU layers of width `k`
/// on `k` inputs, 10 classes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DeepNet {
    /// Plain layers with N(0, σ²) weights, σ = `scale`·√(1/K).
    Plain { scale: f32 },
    /// Plain layers, He init.
    He,
    /// After the first layer (σ = √(1/K)), blocks x + ReLU(W·x + b) whose
    /// weights have σ = `scale`·√(1/K).
    Skip { scale: f32 },
    /// dense → BatchNorm → ReLU with σ = `scale`·√(1/K).
    BatchNorm { scale: f32 },
    /// dense → LayerNorm → ReLU with σ = `scale`·√(1/K).
    LayerNorm { scale: f32 },
}

impl DeepNet {
    /// A short name for tables and legends.
    pub fn label(&self) -> String {
        let s = |scale: f32| {
            if scale == 1.0 {
                "σ=√(1/K)".to_string()
            } else {
                format!("σ={}·√(1/K)", short(scale))
            }
        };
        match *self {
            DeepNet::Plain { scale } if scale > 1.0 => {
                format!("plain, σ={}·√(2/K)", short(scale / 2f32.sqrt()))
            }
            DeepNet::Plain { scale } => format!("plain, {}", s(scale)),
            DeepNet::He => "plain, He σ=√(2/K)".into(),
            DeepNet::Skip { scale } => format!("skip, {}", s(scale)),
            DeepNet::BatchNorm { scale } => format!("BatchNorm, {}", s(scale)),
            DeepNet::LayerNorm { scale } => format!("LayerNorm, {}", s(scale)),
        }
    }

    /// The network, `depth` hidden layers of width `k`.
    pub fn build(&self, k: usize, depth: usize, seed: u64) -> Mlp {
        let sigma = |scale: f32| Init::Normal(scale * (1.0 / k as f32).sqrt());
        let b = MlpBuilder::new(k).loss(Loss::SoftmaxCrossEntropy);
        let b = match *self {
            DeepNet::Plain { scale } => {
                let mut b = b.init(sigma(scale));
                for _ in 0..depth {
                    b = b.dense(k).act(Activation::Relu);
                }
                b
            }
            DeepNet::He => {
                let mut b = b.init(Init::He);
                for _ in 0..depth {
                    b = b.dense(k).act(Activation::Relu);
                }
                b
            }
            DeepNet::Skip { scale } => {
                let mut b = b.init(sigma(1.0)).dense(k).act(Activation::Relu);
                for _ in 1..depth {
                    b = b.residual(|r| r.dense_init(k, sigma(scale)).act(Activation::Relu));
                }
                b
            }
            DeepNet::BatchNorm { scale } | DeepNet::LayerNorm { scale } => {
                let mut b = b.init(sigma(scale));
                for _ in 0..depth {
                    b = b.dense(k);
                    b = if matches!(self, DeepNet::BatchNorm { .. }) {
                        b.batch_norm()
                    } else {
                        b.layer_norm()
                    };
                    b = b.act(Activation::Relu);
                }
                b
            }
        };
        // The output layer is LeCun-scaled in every variant so that only the
        // hidden layers differ.
        b.dense_init(10, Init::LeCun)
            .build(seed)
            .expect("valid network")
    }
}

/// `v` with 3 significant digits and no trailing zeros.
fn short(v: f32) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// ‖∂ℓ/∂W⁽ˡ⁾‖_F and ‖∂ℓ/∂b⁽ˡ⁾‖ of the hidden layers l = 1..=depth at
/// initialization, on one batch of Gaussian inputs with random labels.
#[derive(Clone, Debug)]
pub struct GradNorms {
    pub net: DeepNet,
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
}

/// Runs one forward/backward pass of `net` and reads the per-layer norms from
/// the gradient arena.
pub fn gradient_norms(net: DeepNet, k: usize, depth: usize, batch: usize, seed: u64) -> GradNorms {
    let mut mlp = net.build(k, depth, seed);
    let x = gaussian(batch * k, seed ^ 11);
    let classes: Vec<usize> = (0..batch).map(|i| (i * 7 + seed as usize) % 10).collect();
    mlp.forward_backward(MatRef::from_slice(&x, batch, k), Targets::Classes(&classes))
        .expect("shapes match");
    let g = mlp.grads();
    let layers = mlp.dense_layers();
    let hidden = &layers[..layers.len() - 1];
    GradNorms {
        net,
        weight: hidden.iter().map(|d| norm(&g[d.weight.clone()])).collect(),
        bias: hidden
            .iter()
            .map(|d| norm(&g[d.bias.clone().expect("dense layers here have a bias")]))
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// Training on MNIST (experiments 4 and 5).
// ---------------------------------------------------------------------------

/// `(step, mean train loss since the last point, test loss, test accuracy)`.
pub type Point = (u64, f64, f64, f64);

/// One curve of a training run: at each evaluation point, the step, the mean
/// training loss since the previous point, and the test loss and accuracy.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    pub label: String,
    pub points: Vec<Point>,
    /// The step at which training diverged (non-finite loss), if it did.
    pub diverged_at: Option<u64>,
}

impl Curve {
    /// Test accuracy at the last evaluation; 0 if training diverged.
    pub fn final_accuracy(&self) -> f64 {
        if self.diverged_at.is_some() {
            return 0.0;
        }
        self.points.last().map_or(0.0, |p| p.3)
    }
    /// Test loss at the last evaluation; NaN if training diverged.
    pub fn final_test_loss(&self) -> f64 {
        if self.diverged_at.is_some() {
            return f64::NAN;
        }
        self.points.last().map_or(f64::NAN, |p| p.2)
    }
    /// The first evaluation point that satisfies `f`.
    pub fn first(&self, f: impl Fn(&Point) -> bool) -> Option<u64> {
        self.points.iter().find(|p| f(p)).map(|p| p.0)
    }
    /// Mean training loss over the last evaluation interval.
    pub fn final_train_loss(&self) -> f64 {
        self.points.last().map_or(f64::NAN, |p| p.1)
    }
}

/// Trains `net` with plain SGD (momentum `momentum`, step size `lr`) for
/// `steps` minibatches of `batch` samples drawn in a seeded shuffled order,
/// evaluating on `test` every `every` steps. A non-finite loss stops the run
/// and is recorded.
#[allow(clippy::too_many_arguments)]
pub fn train_curve(
    label: &str,
    net: Mlp,
    train: &Dataset,
    test: &Dataset,
    steps: u64,
    batch: usize,
    lr: f32,
    momentum: f32,
    every: u64,
    seed: u64,
) -> Curve {
    let n = net.num_params();
    let sgd = Sgd::new(
        n,
        SgdConfig {
            momentum,
            ..Default::default()
        },
    );
    let mut t = Trainer::new(net, Box::new(sgd), Schedule::constant(lr), seed);
    let d = train.features();
    let Targets::Classes(labels) = train.labels() else {
        panic!("train_curve: classification data expected");
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rng);
    let (mut pos, mut bx, mut by) = (0, Vec::new(), Vec::new());
    let mut curve = Curve {
        label: label.into(),
        ..Default::default()
    };
    let (mut sum, mut count) = (0.0f64, 0u64);
    let mut row_buf = backprop::train::Batch::default();
    for step in 1..=steps {
        if pos + batch > order.len() {
            order.shuffle(&mut rng);
            pos = 0;
        }
        bx.clear();
        by.clear();
        for &i in &order[pos..pos + batch] {
            let (row, _) = train.slice(i, i + 1, &mut row_buf);
            bx.extend_from_slice(
                row.as_row_major_slice()
                    .expect("a dataset row is contiguous"),
            );
            by.push(labels[i]);
        }
        pos += batch;
        match t.step(MatRef::from_slice(&bx, batch, d), Targets::Classes(&by)) {
            Ok(loss) => {
                sum += loss as f64;
                count += 1;
            }
            Err(_) => {
                curve.diverged_at = Some(step);
                break;
            }
        }
        if step % every == 0 || step == steps {
            let e = t.evaluate(test, 2000).expect("test set fits the network");
            curve.points.push((
                step,
                sum / count.max(1) as f64,
                e.loss as f64,
                e.accuracy().unwrap_or(0.0) as f64,
            ));
            sum = 0.0;
            count = 0;
        }
    }
    curve
}

/// One configuration trained from several seeds: `curves[i]` is the run
/// from `seeds[i]`.
#[derive(Clone, Debug)]
pub struct Runs {
    pub label: String,
    pub seeds: Vec<u64>,
    pub curves: Vec<Curve>,
}

impl Runs {
    /// Final test accuracy over the seeds (a diverged run counts 0).
    pub fn final_accuracy(&self) -> Spread {
        Spread::by(&self.curves, Curve::final_accuracy)
    }
    /// Mean training loss over the last evaluation interval, over the seeds.
    pub fn final_train_loss(&self) -> Spread {
        Spread::by(&self.curves, Curve::final_train_loss)
    }
    /// Final test loss over the seeds that did not diverge.
    pub fn final_test_loss(&self) -> Spread {
        Spread::by(&self.curves, Curve::final_test_loss)
    }
    /// How many seeds' runs satisfy `f`.
    pub fn count(&self, f: impl Fn(&Curve) -> bool) -> usize {
        self.curves.iter().filter(|c| f(c)).count()
    }
    /// At every evaluation step (of the longest run), the spread over seeds
    /// of `f` of that step's point; runs that stopped before it are left out.
    pub fn along(&self, f: impl Fn(&Point) -> f64) -> Vec<(u64, Spread)> {
        let longest = self
            .curves
            .iter()
            .max_by_key(|c| c.points.len())
            .map_or(&[][..], |c| &c.points[..]);
        longest
            .iter()
            .map(|&(step, ..)| {
                let v: Vec<f64> = self
                    .curves
                    .iter()
                    .filter_map(|c| c.points.iter().find(|p| p.0 == step).map(&f))
                    .collect();
                (step, Spread::of(&v))
            })
            .collect()
    }
    /// The spread over seeds of `f` of the first point at or after `step`.
    pub fn at(&self, step: u64, f: impl Fn(&Point) -> f64) -> Spread {
        let v: Vec<f64> = self
            .curves
            .iter()
            .filter_map(|c| c.points.iter().find(|p| p.0 >= step).map(&f))
            .collect();
        Spread::of(&v)
    }
}

/// Groups `curves` (in job order, `seeds.len()` consecutive runs per
/// configuration) into one [`Runs`] per label.
fn group_runs(labels: &[String], seeds: &[u64], curves: Vec<Curve>) -> Vec<Runs> {
    let mut it = curves.into_iter();
    labels
        .iter()
        .map(|label| Runs {
            label: label.clone(),
            seeds: seeds.to_vec(),
            curves: it.by_ref().take(seeds.len()).collect(),
        })
        .collect()
}

/// Experiment 4: a `depth`-layer ReLU MLP of width `width` on MNIST with
/// σ = √(1/K) ("Xavier-like") and He σ = √(2/K). Seed `s` draws the weights
/// from `s` and the data order from `s + 1`, the same for both inits; the
/// runs go side by side ([`par_map`]).
#[allow(clippy::too_many_arguments)]
pub fn deep_init_curves(
    train: &Dataset,
    test: &Dataset,
    depth: usize,
    width: usize,
    steps: u64,
    lr: f32,
    every: u64,
    seeds: &[u64],
) -> Vec<Runs> {
    let inits = [
        ("σ = √(1/K) (Xavier-like)", Init::LeCun),
        ("σ = √(2/K) (He)", Init::He),
    ];
    let jobs: Vec<(Init, u64)> = inits
        .iter()
        .flat_map(|&(_, init)| seeds.iter().map(move |&s| (init, s)))
        .collect();
    let curves = par_map(&jobs, |&(init, seed)| {
        let mut b = MlpBuilder::new(train.features())
            .init(init)
            .loss(Loss::SoftmaxCrossEntropy);
        for _ in 0..depth {
            b = b.dense(width).act(Activation::Relu);
        }
        let mut net = b.dense(10).build(seed).expect("valid network");
        net.set_gemm_options(worker_gemm_options());
        train_curve("", net, train, test, steps, 128, lr, 0.9, every, seed + 1)
    });
    let labels: Vec<String> = inits.iter().map(|i| i.0.to_string()).collect();
    group_runs(&labels, seeds, curves)
}

/// The network of experiment 5 (after Ioffe & Szegedy 2015, Fig. 1a): 784 →
/// 3 × 100 sigmoid → 10, Xavier init, with or without BatchNorm before each
/// sigmoid.
pub fn sigmoid_net(inputs: usize, batch_norm: bool, seed: u64) -> Mlp {
    let mut b = MlpBuilder::new(inputs)
        .init(Init::Xavier)
        .loss(Loss::SoftmaxCrossEntropy);
    for _ in 0..3 {
        b = b.dense(100);
        if batch_norm {
            b = b.batch_norm();
        }
        b = b.act(Activation::Sigmoid);
    }
    b.dense(10).build(seed).expect("valid network")
}

/// One run of experiment 5: the sigmoid net (weights from `seed`) trained
/// with plain SGD, batch 60, step `lr`, data order from `seed + 1`, on the
/// kernel path `isa` (`None`: the active one).
#[allow(clippy::too_many_arguments)]
pub fn sigmoid_run(
    train: &Dataset,
    test: &Dataset,
    batch_norm: bool,
    lr: f32,
    steps: u64,
    every: u64,
    seed: u64,
    isa: Option<Isa>,
) -> Curve {
    let mut net = sigmoid_net(train.features(), batch_norm, seed);
    net.set_gemm_options(GemmOptions {
        isa,
        ..worker_gemm_options()
    });
    train_curve("", net, train, test, steps, 60, lr, 0.0, every, seed + 1)
}

/// The plain sigmoid net's final accuracy at step size `lr` for each seed
/// on each kernel path in `isas` (`acc[seed][isa]`): the same arithmetic
/// rounded differently, to show which outcomes rounding decides.
pub fn plain_on_isas(
    train: &Dataset,
    test: &Dataset,
    lr: f32,
    steps: u64,
    seeds: &[u64],
    isas: &[Isa],
) -> Vec<Vec<f64>> {
    let jobs: Vec<(u64, Isa)> = seeds
        .iter()
        .flat_map(|&s| isas.iter().map(move |&i| (s, i)))
        .collect();
    let acc = par_map(&jobs, |&(seed, isa)| {
        sigmoid_run(train, test, false, lr, steps, steps, seed, Some(isa)).final_accuracy()
    });
    acc.chunks(isas.len()).map(<[f64]>::to_vec).collect()
}

/// Final test accuracy of the plain and the BatchNorm sigmoid net for each
/// step size and seed (plain SGD, batch 60, the same number of steps each).
#[derive(Clone, Debug)]
pub struct LrSweep {
    pub lrs: Vec<f32>,
    pub seeds: Vec<u64>,
    /// `plain[seed][lr]`: the plain net's accuracy; a diverged run counts 0.
    pub plain: Vec<Vec<f64>>,
    /// `bn[seed][lr]`: the same with BatchNorm.
    pub bn: Vec<Vec<f64>>,
}

impl LrSweep {
    /// The index of the step size closest to `lr` in ratio.
    pub fn index(&self, lr: f32) -> usize {
        (0..self.lrs.len())
            .min_by(|&a, &b| {
                let d = |i: usize| (self.lrs[i] / lr).ln().abs();
                d(a).total_cmp(&d(b))
            })
            .expect("a non-empty sweep")
    }
    /// The plain net's accuracies at step size index `i`, one per seed.
    pub fn plain_at(&self, i: usize) -> Vec<f64> {
        self.plain.iter().map(|r| r[i]).collect()
    }
    /// The BatchNorm net's accuracies at step size index `i`, one per seed.
    pub fn bn_at(&self, i: usize) -> Vec<f64> {
        self.bn.iter().map(|r| r[i]).collect()
    }
    /// Per seed, the index of the plain net's best step size (the smaller
    /// one on a tie).
    pub fn plain_best(&self) -> Vec<usize> {
        self.plain
            .iter()
            .map(|r| (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b }))
            .collect()
    }
    /// The index of the step size with the plain net's best mean accuracy.
    pub fn plain_best_mean(&self) -> usize {
        (0..self.lrs.len()).fold(0, |b, i| {
            if Spread::of(&self.plain_at(i)).mean > Spread::of(&self.plain_at(b)).mean {
                i
            } else {
                b
            }
        })
    }
}

/// Runs the step-size sweep of experiment 5 for every seed, the runs side by
/// side ([`par_map`]).
pub fn bn_lr_sweep(
    train: &Dataset,
    test: &Dataset,
    lrs: &[f32],
    steps: u64,
    seeds: &[u64],
) -> LrSweep {
    let jobs: Vec<(u64, f32, bool)> = seeds
        .iter()
        .flat_map(|&s| {
            lrs.iter()
                .flat_map(move |&lr| [false, true].map(|bn| (s, lr, bn)))
        })
        .collect();
    let acc = par_map(&jobs, |&(seed, lr, bn)| {
        sigmoid_run(train, test, bn, lr, steps, steps, seed, None).final_accuracy()
    });
    // acc is ordered seed-major, then step size, then (plain, BatchNorm).
    let per_seed = |bn: usize| -> Vec<Vec<f64>> {
        acc.chunks(2 * lrs.len())
            .map(|c| c.iter().skip(bn).step_by(2).copied().collect())
            .collect()
    };
    LrSweep {
        lrs: lrs.to_vec(),
        seeds: seeds.to_vec(),
        plain: per_seed(0),
        bn: per_seed(1),
    }
}

// ---------------------------------------------------------------------------
// 5 (no data needed) and 6: what the normalization layers compute.
// ---------------------------------------------------------------------------

/// The properties of BatchNorm the report states, measured.
#[derive(Clone, Debug)]
pub struct BnProperties {
    /// max |BN(a⊙z + b) − BN(z)| in training mode, a ∈ [0.5, 2], b ∈ [−3, 3].
    pub affine_invariance: f64,
    /// max |∂ℓ/∂b| of the dense layer feeding BatchNorm, and max |∂ℓ/∂W|.
    pub bias_grad_before_bn: f64,
    pub weight_grad_before_bn: f64,
    /// Training mode: max change of sample 0's output when the other samples
    /// of its batch are replaced.
    pub train_partner_change: f64,
    /// Evaluation mode: the same change (running statistics: none).
    pub eval_partner_change: f64,
    /// max |train-mode output − eval-mode output| on one batch after the
    /// running statistics have converged on the data's distribution.
    pub train_vs_eval: f64,
    /// max over features of |running mean − μ|/s and |running var − s²|/s²
    /// against the population N(μ, s²) of BatchNorm's input.
    pub running_mean_err: f64,
    pub running_var_err: f64,
    /// The same errors as root mean squares over the features (what
    /// [`running_stats_rms_theory`] predicts).
    pub running_mean_rms: f64,
    pub running_var_rms: f64,
}

/// The root-mean-square error, in units of s and s², of BatchNorm's running
/// mean and unbiased running variance once they have forgotten their start,
/// for Gaussian features, momentum `m` and batches of `b`. The running value
/// is an exponential average r ← (1 − m)·r + m·v of independent batch
/// estimates v, so Var\[r\] = m/(2 − m)·Var\[v\], with Var\[batch mean\] = s²/b
/// and Var[unbiased batch variance] = 2s⁴/(b − 1).
pub fn running_stats_rms_theory(m: f64, b: usize) -> (f64, f64) {
    let keep = m / (2.0 - m);
    (
        (keep / b as f64).sqrt(),
        (keep * 2.0 / (b as f64 - 1.0)).sqrt(),
    )
}

/// Measures [`BnProperties`] on synthetic data (`features` wide, batches of
/// `batch`): inputs N(μ_j, s_j²) per feature.
pub fn bn_properties(features: usize, batch: usize, seed: u64) -> BnProperties {
    let mut rng = StdRng::seed_from_u64(seed);
    let mu: Vec<f32> = (0..features).map(|_| rng.random_range(-2.0..2.0)).collect();
    let s: Vec<f32> = (0..features).map(|_| rng.random_range(0.5..3.0)).collect();
    let mut normals = backprop::rng::Rng::seed_from_u64(seed ^ 0x5EED);
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n * features)
            .map(|i| {
                let j = i % features;
                mu[j] + s[j] * backprop::nn::init::standard_normal(&mut normals)
            })
            .collect()
    };
    // BN(a⊙z + b) = BN(z).
    let mut bn = MlpBuilder::new(features).batch_norm().build(seed).unwrap();
    let z = draw(batch);
    let a: Vec<f32> = (0..features)
        .map(|j| 0.5 + 1.5 * ((j * 37 % 101) as f32 / 100.0))
        .collect();
    let shift: Vec<f32> = (0..features)
        .map(|j| -3.0 + 6.0 * ((j * 53 % 97) as f32 / 96.0))
        .collect();
    let zt: Vec<f32> = z
        .iter()
        .enumerate()
        .map(|(i, &v)| a[i % features] * v + shift[i % features])
        .collect();
    let affine_invariance = max_abs_diff(
        &forward_rows(&mut bn, &z, batch),
        &forward_rows(&mut bn, &zt, batch),
    );

    // The bias of a dense layer right before BatchNorm gets no gradient.
    let mut net = MlpBuilder::new(features)
        .dense(features)
        .batch_norm()
        .act(Activation::Tanh)
        .dense(3)
        .loss(Loss::SoftmaxCrossEntropy)
        .build(seed)
        .unwrap();
    let classes: Vec<usize> = (0..batch).map(|i| i % 3).collect();
    net.forward_backward(
        MatRef::from_slice(&z, batch, features),
        Targets::Classes(&classes),
    )
    .unwrap();
    let first = net.dense_layers()[0].clone();
    let (wr, br) = (
        first.weight,
        first.bias.expect("the first layer has a bias"),
    );
    let maxabs = |v: &[f32]| v.iter().fold(0.0f64, |m, &x| m.max(x.abs() as f64));
    let bias_grad_before_bn = maxabs(&net.grads()[br]);
    let weight_grad_before_bn = maxabs(&net.grads()[wr]);

    // Running statistics: 300 training-mode batches, then compare.
    let mut bn = MlpBuilder::new(features).batch_norm().build(seed).unwrap();
    for _ in 0..300 {
        let x = draw(batch);
        forward_rows(&mut bn, &x, batch);
    }
    let stats = bn.buffers().to_vec();
    // Errors in units of the feature's spread: |m − μ|/s and |v − s²|/s².
    let mean_errs: Vec<f64> = (0..features)
        .map(|j| ((stats[j] - mu[j]) / s[j]) as f64)
        .collect();
    let var_errs: Vec<f64> = (0..features)
        .map(|j| ((stats[features + j] - s[j] * s[j]) / (s[j] * s[j])) as f64)
        .collect();
    let rms = |e: &[f64]| (e.iter().map(|v| v * v).sum::<f64>() / e.len() as f64).sqrt();
    let max_abs = |e: &[f64]| e.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let (running_mean_err, running_var_err) = (max_abs(&mean_errs), max_abs(&var_errs));
    let (running_mean_rms, running_var_rms) = (rms(&mean_errs), rms(&var_errs));

    // Partners: sample 0 with two different sets of batch mates.
    let b1 = draw(batch);
    let mut b2 = draw(batch);
    b2[..features].copy_from_slice(&b1[..features]);
    let train_partner_change = max_abs_diff(
        &forward_rows(&mut bn, &b1, batch)[..features],
        &forward_rows(&mut bn, &b2, batch)[..features],
    );
    let big = draw(4096);
    let train_out = forward_rows(&mut bn, &big, 4096);
    bn.set_training(false);
    let eval_partner_change = max_abs_diff(
        &forward_rows(&mut bn, &b1, batch)[..features],
        &forward_rows(&mut bn, &b2, batch)[..features],
    );
    let train_vs_eval = max_abs_diff(&train_out, &forward_rows(&mut bn, &big, 4096));
    BnProperties {
        affine_invariance,
        bias_grad_before_bn,
        weight_grad_before_bn,
        train_partner_change,
        eval_partner_change,
        train_vs_eval,
        running_mean_err,
        running_var_err,
        running_mean_rms,
        running_var_rms,
    }
}

/// The properties of LayerNorm the report states, measured.
#[derive(Clone, Debug)]
pub struct LnProperties {
    /// max |out(sample in batch A) − out(same sample in batch B)|, training mode.
    pub partner_change: f64,
    /// max |out(sample in a batch) − out(sample alone)|, training mode.
    pub alone_change: f64,
    /// max |training-mode output − evaluation-mode output| on one batch.
    pub train_vs_eval: f64,
    /// The same partner change for BatchNorm in training mode, for contrast.
    pub bn_partner_change: f64,
}

/// Measures [`LnProperties`] on a random `features → 64 → LN → tanh → 10`
/// net whose γ, β are randomised (so they matter).
pub fn ln_properties(features: usize, batch: usize, seed: u64) -> LnProperties {
    let build = |ln: bool| {
        let b = MlpBuilder::new(features).dense(64);
        let b = if ln { b.layer_norm() } else { b.batch_norm() };
        let mut net = b
            .act(Activation::Tanh)
            .dense(10)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(seed)
            .unwrap();
        let noise = gaussian(net.num_params(), seed ^ 3);
        for (p, n) in net.params_mut().iter_mut().zip(noise) {
            *p += 0.1 * n;
        }
        net
    };
    let a = gaussian(batch * features, seed ^ 4);
    let mut b = gaussian(batch * features, seed ^ 5);
    b[..features].copy_from_slice(&a[..features]);
    let mut ln = build(true);
    let out_a = forward_rows(&mut ln, &a, batch);
    let partner_change = max_abs_diff(&out_a[..10], &forward_rows(&mut ln, &b, batch)[..10]);
    let alone_change = max_abs_diff(&out_a[..10], &forward_rows(&mut ln, &a[..features], 1));
    ln.set_training(false);
    let train_vs_eval = max_abs_diff(&out_a, &forward_rows(&mut ln, &a, batch));
    let mut bn = build(false);
    let bn_partner_change = max_abs_diff(
        &forward_rows(&mut bn, &a, batch)[..10],
        &forward_rows(&mut bn, &b, batch)[..10],
    );
    LnProperties {
        partner_change,
        alone_change,
        train_vs_eval,
        bn_partner_change,
    }
}

/// Experiment 5's learning curves: for each step size in `lrs`, the plain
/// and the BatchNorm sigmoid net over `seeds`, in that order.
pub fn bn_curves(
    train: &Dataset,
    test: &Dataset,
    steps: u64,
    lrs: &[f32],
    every: u64,
    seeds: &[u64],
) -> Vec<Runs> {
    let mut labels = Vec::new();
    let mut jobs = Vec::new();
    for &lr in lrs {
        for (name, bn) in [("without BatchNorm", false), ("with BatchNorm", true)] {
            labels.push(format!("{name}, step {lr}"));
            jobs.extend(seeds.iter().map(|&s| (bn, lr, s)));
        }
    }
    let curves = par_map(&jobs, |&(bn, lr, seed)| {
        sigmoid_run(train, test, bn, lr, steps, every, seed, None)
    });
    group_runs(&labels, seeds, curves)
}
