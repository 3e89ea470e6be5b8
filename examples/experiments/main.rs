//! Reproduces the course's claims about training neural networks with the
//! crate and writes a Markdown report with SVG plots:
//!
//! ```text
//! cargo run --release --example experiments                      # full run, ~13 min on 2 cores
//! cargo run --release --example experiments -- --quick           # small sizes, fewer seeds, ~20 s
//! cargo run --release --example experiments -- --only 2,3 --out /tmp/exp
//! ```
//!
//! 1. backprop is the chain rule, done efficiently (gradients and the O(K²L) step time);
//! 2. variance-preserving initialization through 50 ReLU layers;
//! 3. vanishing/exploding gradients and their remedies;
//! 4. a two-fold difference in init scale decides whether a 30-layer ReLU net trains (MNIST);
//! 5. BatchNorm: faster training, larger step sizes, train/eval modes, invariance (MNIST);
//! 6. LayerNorm: per sample, the same in training and evaluation.
//!
//! Every experiment that trains or draws random weights runs several seeds
//! and reports the spread (mean ± sd, counts for all-or-nothing outcomes,
//! bands or error bars in the charts). The experiments themselves are in
//! `lab.rs`; `tests/experiments.rs` runs them at small sizes and asserts the
//! trends in every one of several seeds. MNIST (experiments 4 and 5) is read
//! from `--mnist` (default `$BACKPROP_MNIST_DIR`, else `../shared/data/mnist`);
//! without it those two sections say so and the rest still runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use backprop::nn::Activation;
use backprop::train::Dataset;
use backprop_support::lab::*;
use backprop_support::plot::{Chart, Series};
use backprop_support::{mnist, plot};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Runs the course's experiments and writes a Markdown report with SVG plots")]
struct Args {
    /// Directory for report.md and the SVG files (created if missing).
    #[arg(long, default_value = "target/experiments")]
    out: PathBuf,
    /// MNIST directory (IDX files, plain or .gz).
    #[arg(long)]
    mnist: Option<PathBuf>,
    /// Small sizes and few steps: the whole report in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Run only these experiments (comma-separated numbers 1-6).
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
}

/// One experiment's part of the report.
struct Section {
    markdown: String,
    /// Key numbers for the summary at the top: (claim, what was measured).
    summary: Vec<(String, String)>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(path) => {
            eprintln!("report written to {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("experiments: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<PathBuf, String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let wanted = |n: u8| args.only.is_empty() || args.only.contains(&n);
    let mnist_dir = args.mnist.clone().unwrap_or_else(mnist::default_dir);
    let needs_mnist = wanted(4) || wanted(5);
    let data = if needs_mnist {
        match mnist::load(&mnist_dir) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("no MNIST ({e}): experiments 4 and 5 are skipped");
                None
            }
        }
    } else {
        None
    };
    let out = &args.out;
    let q = args.quick;
    let mut sections = Vec::new();
    type Exp<'a> = (u8, &'a str, Box<dyn Fn() -> Result<Section, String> + 'a>);
    let exps: Vec<Exp> = vec![
        (1, "backprop", Box::new(|| exp1(out, q))),
        (2, "init variance", Box::new(|| exp2(out, q))),
        (3, "gradient norms", Box::new(|| exp3(out, q))),
        (
            4,
            "deep MNIST",
            Box::new(|| exp4(out, q, data.as_ref(), &mnist_dir)),
        ),
        (
            5,
            "BatchNorm",
            Box::new(|| exp5(out, q, data.as_ref(), &mnist_dir)),
        ),
        (6, "LayerNorm", Box::new(|| Ok(exp6()))),
    ];
    for (n, name, f) in exps {
        if !wanted(n) {
            continue;
        }
        eprintln!("experiment {n} ({name}) ...");
        let t = Instant::now();
        let mut s = f()?;
        let secs = t.elapsed().as_secs_f64();
        let _ = writeln!(s.markdown, "\n*Run time: {secs:.1} s.*\n");
        eprintln!("experiment {n} done in {secs:.1} s");
        sections.push(s);
    }

    let mut md = String::new();
    md.push_str("# Experiments: the course's claims, checked on the crate\n\n");
    let _ = writeln!(
        md,
        "Written by `cargo run --release --example experiments{}` with {} thread(s) on the {} kernels{}. \
         Every number below comes from the crate's own layers, kernels and trainer; \
         `tests/experiments.rs` runs the same code (`support/src/lab.rs`) at small sizes \
         and asserts each trend.\n",
        if q { " -- --quick" } else { "" },
        backprop::num_threads(),
        backprop::active_isa(),
        if q { " (quick mode: small sizes, few steps)" } else { "" },
    );
    let _ = writeln!(
        md,
        "**Seeds.** Every experiment that trains or draws random weights runs several seeds and \
         reports mean ± standard deviation (sample sd, n − 1), or for all-or-nothing outcomes a \
         count (\"trains in k of n seeds\"); each section says how many seeds. A trend is stated \
         as holding only where it holds in every seed; otherwise the report says how often. \
         Timings (section 1) are single measurements: they depend on the machine, not on the \
         weights.\n\n\
         **Threads.** Training is bitwise identical for any thread count (fixed shards, fixed \
         reduction order, GEMMs never split k), so the thread count changes the timings only. \
         Independent runs (seeds, step sizes) run side by side on the {} thread(s), each on one \
         thread.\n\n\
         **Rounding.** The kernel path (here {}; `BACKPROP_ISA` forces another) fixes the f32 \
         rounding: vector width and summation order. Numbers that depend on it: every MNIST \
         number (sections 4 and 5) — training amplifies a last-bit difference into a different \
         trajectory, so a single run's accuracy differs between paths, and an outcome near a \
         tipping point (a plain net that may collapse at a large step) can flip; section 5 \
         measures this on every path the CPU has. The mean ± sd over seeds is what carries over \
         to another path, not any one seed. Also rounding-sized by construction, so their exact \
         values differ between paths and only their size carries over: the crate's f32 gradient \
         error (section 1), the layer-by-layer vs `Mlp::forward` mismatch (2), and BN(a⊙z+b) − \
         BN(z) and ∂b before BatchNorm (5). Numbers that do not depend on it beyond the last \
         printed digit: the f64 finite-difference and chain-rule errors (scalar f64 code), the \
         variances (2) and gradient norms (3) at initialization (one pass, relative rounding \
         ~1e-6), the exact zeros of evaluation-mode BatchNorm and of LayerNorm (6), the running \
         statistics' errors (5).\n",
        backprop::num_threads(),
        backprop::active_isa(),
    );
    md.push_str("| claim | measured |\n|---|---|\n");
    for s in &sections {
        for (claim, got) in &s.summary {
            let _ = writeln!(md, "| {claim} | {got} |");
        }
    }
    md.push('\n');
    for s in &sections {
        md.push_str(&s.markdown);
    }
    let path = out.join("report.md");
    plot::save_svg(&path, &md).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn save(out: &Path, name: &str, chart: &Chart) -> Result<String, String> {
    let path = out.join(name);
    chart
        .save(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!("![{}]({name})\n", name.trim_end_matches(".svg")))
}

fn save_row(out: &Path, name: &str, charts: &[Chart]) -> Result<String, String> {
    let path = out.join(name);
    plot::save_svg(&path, &plot::row_svg(charts))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!("![{}]({name})\n", name.trim_end_matches(".svg")))
}

/// A Markdown table's header: a left-aligned first column named `first`,
/// then right-aligned columns.
fn table_head(first: &str, cols: impl Iterator<Item = String>) -> String {
    let cols: Vec<String> = cols.collect();
    format!(
        "| {first} |{}\n|---|{}\n",
        cols.iter().map(|c| format!(" {c} |")).collect::<String>(),
        "---:|".repeat(cols.len())
    )
}

fn sci(v: f64) -> String {
    format!("{v:.2e}")
}

/// `mean ± sd` in scientific notation (the sd to 2 digits).
fn sci_pm(s: &Spread) -> String {
    if s.n > 1 {
        format!("{:.2e} ± {:.1e}", s.mean, s.sd)
    } else {
        sci(s.mean)
    }
}

/// `mean ± sd` with `d` decimals (no "-0.00": a mean that rounds to zero
/// prints unsigned).
fn fix_pm(s: &Spread, d: usize) -> String {
    let mut mean = format!("{:.d$}", s.mean);
    if mean.starts_with('-') && mean[1..].chars().all(|c| c == '0' || c == '.') {
        mean.remove(0);
    }
    if s.n > 1 {
        format!("{mean} ± {:.d$}", s.sd)
    } else {
        mean
    }
}

/// A fraction's `mean ± sd` as a percentage with 2 decimals.
fn pct_pm(s: &Spread) -> String {
    let p = Spread {
        mean: 100.0 * s.mean,
        sd: 100.0 * s.sd,
        ..*s
    };
    format!("{} %", fix_pm(&p, 2))
}

/// `lo–hi` of a fraction as percentages with 1 decimal.
fn pct_range(s: &Spread) -> String {
    format!("{:.1}–{:.1} %", 100.0 * s.min, 100.0 * s.max)
}

/// The seeds `first, first + stride, …` (`n` of them).
fn seeds(first: u64, stride: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| first + stride * i).collect()
}

/// "k of n seeds" wording for a count.
fn of(k: usize, n: usize) -> String {
    if k == n {
        format!("all {n} seeds")
    } else if k == 0 {
        format!("none of {n} seeds")
    } else {
        format!("{k} of {n} seeds")
    }
}

// ---------------------------------------------------------------------------

/// Seeds of experiment 1's gradient check, per network.
const GRAD_SEEDS: usize = 5;

fn exp1(out: &Path, quick: bool) -> Result<Section, String> {
    let mut md = String::from("## 1. Backprop is the chain rule, done efficiently\n\n");
    let nets = [
        PlainNet {
            input: 6,
            widths: vec![7, 5],
            acts: vec![Activation::Tanh, Activation::Sigmoid],
            classes: 4,
        },
        PlainNet {
            input: 5,
            widths: vec![8, 8, 6],
            acts: vec![Activation::Softplus, Activation::Gelu, Activation::Tanh],
            classes: 3,
        },
    ];
    let _ = write!(
        md,
        "The gradient of the mean softmax cross-entropy of a small network on a batch, four ways: \
         the crate's backprop (f32, fused SIMD kernels); the literal per-sample f64 backprop of \
         `backprop::reference` (`δ⁽ˡ⁾ = (W⁽ˡ⁺¹⁾δ⁽ˡ⁺¹⁾) ⊙ φ′(z⁽ˡ⁾)`, `∂w_ij = δ_j x_i`), which \
         is the yardstick; central finite differences in f64 (h = 1e-6); and the chain rule \
         applied to each weight on its own (f64, forward mode: the weight's effect on its `z_j` \
         pushed through every layer above). Errors are max |g − g_ref| / max |g_ref|, as mean ± \
         sd over {GRAD_SEEDS} seeds (each draws its own weights, inputs and labels); the summary \
         gives the largest.\n\n\
         | network | params | crate backprop (f32) | finite differences | per-weight chain rule |\n|---|---:|---:|---:|---:|\n"
    );
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for (i, net) in nets.iter().enumerate() {
        let checks: Vec<GradCheck> = seeds(10 + i as u64, 2, GRAD_SEEDS)
            .into_iter()
            .map(|s| gradient_check(net, 6, s))
            .collect();
        let (ce, fe, he) = (
            Spread::by(&checks, |c| c.crate_err),
            Spread::by(&checks, |c| c.fd_err),
            Spread::by(&checks, |c| c.chain_err),
        );
        let acts: Vec<&str> = net.acts.iter().map(|a| a.name()).collect();
        let shape = format!(
            "{}-{}-{} ({})",
            net.input,
            net.widths
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join("-"),
            net.classes,
            acts.join(", ")
        );
        let _ = writeln!(
            md,
            "| {shape} | {} | {} | {} | {} |",
            checks[0].params,
            sci_pm(&ce),
            sci_pm(&fe),
            sci_pm(&he)
        );
        worst = (
            worst.0.max(ce.max),
            worst.1.max(fe.max),
            worst.2.max(he.max),
        );
    }
    md.push_str(
        "\nAll four agree: backprop *is* the chain rule (the per-weight version sums the same \
         products in another order, to rounding), and the f32 kernels lose only f32 rounding.\n\n\
         **Done efficiently.** The per-weight chain rule and finite differences each cost a pass \
         over the network per parameter, O(P·K²L) = O(K⁴L²) for the whole gradient; backprop \
         reuses δ⁽ˡ⁺¹⁾ for every weight of layer l and costs about three forward passes. \
         Time for one full gradient of a K-K-K-10 tanh net, batch 16 (one seed: the time does not \
         depend on the weights' values, only on the machine, so the timings here and below are \
         single measurements, not averages over seeds):\n\n\
         | K | params | backprop (s) | per-weight chain rule (s) | finite differences (s) | chain rule / backprop |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let ks: &[usize] = if quick {
        &[4, 8, 16]
    } else {
        &[4, 8, 16, 32, 64]
    };
    let costs = gradient_costs(ks, 1);
    for c in &costs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.0} |",
            c.k,
            c.params,
            sci(c.backprop_s),
            sci(c.chain_s),
            sci(c.fd_s),
            c.chain_s / c.backprop_s
        );
    }
    let pts = |f: fn(&GradCost) -> f64| -> Vec<(f64, f64)> {
        costs.iter().map(|c| (c.k as f64, f(c))).collect()
    };
    let (sb, sc, sf) = (
        loglog_slope(&pts(|c| c.backprop_s)),
        loglog_slope(&pts(|c| c.chain_s)),
        loglog_slope(&pts(|c| c.fd_s)),
    );
    let chart = Chart::new("time for one gradient")
        .x_label("width K")
        .y_label("seconds")
        .x_log()
        .y_log()
        .series(Series::new(
            format!("backprop (slope {sb:.1})"),
            pts(|c| c.backprop_s),
        ))
        .series(Series::new(
            format!("per-weight chain rule (slope {sc:.1})"),
            pts(|c| c.chain_s),
        ))
        .series(Series::new(
            format!("finite differences (slope {sf:.1})"),
            pts(|c| c.fd_s),
        ));
    md.push('\n');
    md.push_str(&save(out, "exp1_gradient_cost.svg", &chart)?);
    let _ = writeln!(
        md,
        "\nFitted log-log slopes in K: backprop {sb:.2} (small K is overhead-bound, so below 2), \
         per-weight chain rule {sc:.2} and finite differences {sf:.2} (→ 4).\n"
    );

    // The O(K²L) step time.
    let (ks, ls, min_s): (&[usize], &[usize], f64) = if quick {
        (&[64, 128, 256, 512], &[1, 2, 4], 0.05)
    } else {
        (&[128, 256, 512, 1024], &[1, 2, 4, 8], 0.4)
    };
    let fit = step_time_scaling(ks, ls, 256, min_s);
    // The K exponent where the GEMMs dominate: slope per L over K ≥ 256, averaged.
    let large_k = ls
        .iter()
        .map(|&l| {
            let p: Vec<(f64, f64)> = fit
                .grid
                .iter()
                .filter(|g| g.1 == l && g.0 >= 256)
                .map(|g| (g.0 as f64, g.2))
                .collect();
            loglog_slope(&p)
        })
        .sum::<f64>()
        / ls.len() as f64;
    let last = costs.last().expect("at least one width");
    let _ = writeln!(
        md,
        "**O(K²L).** One training step (forward, backward, SGD-momentum update) of L dense \
         K × K layers, batch 256, median of repeated steps on {} thread(s). Least-squares fit of \
         ln t = c + a·ln K + b·ln L over the grid: **a = {:.2}, b = {:.2}** (theory: 2 and 1). \
         Small K sits below 2 because per-layer overheads (thread hand-offs, the optimizer pass, \
         the loss) do not scale with K²; over K ≥ 256 alone the K exponent is {large_k:.2}.\n",
        backprop::num_threads(),
        fit.k_exponent,
        fit.l_exponent
    );
    md.push_str(&table_head("L \\ K", ks.iter().map(|k| k.to_string())));
    for &l in ls {
        let _ = write!(md, "| {l} |");
        for &k in ks {
            let t = fit
                .grid
                .iter()
                .find(|g| g.0 == k && g.1 == l)
                .map_or(f64::NAN, |g| g.2);
            let _ = write!(md, " {:.3} ms |", 1e3 * t);
        }
        md.push('\n');
    }
    // One line per value of the other dimension; `along_k` picks the x axis.
    let chart = |along_k: bool| {
        let (title, x_label, exponent, lines) = if along_k {
            ("K", "width K", fit.k_exponent, ls)
        } else {
            ("L", "layers L", fit.l_exponent, ks)
        };
        let mut c = Chart::new(format!("step time vs {title} (fit: {title}^{exponent:.2})"))
            .x_label(x_label)
            .y_label("ms per step")
            .x_log()
            .y_log();
        for &v in lines {
            let p: Vec<(f64, f64)> = fit
                .grid
                .iter()
                .filter(|g| if along_k { g.1 == v } else { g.0 == v })
                .map(|g| (if along_k { g.0 } else { g.1 } as f64, 1e3 * g.2))
                .collect();
            let name = if along_k { "L" } else { "K" };
            c = c.series(Series::new(format!("{name} = {v}"), p));
        }
        c
    };
    let (by_k, by_l) = (chart(true), chart(false));
    md.push('\n');
    md.push_str(&save_row(out, "exp1_step_time.svg", &[by_k, by_l])?);
    Ok(Section {
        markdown: md,
        summary: vec![
            (
                "1. backprop = chain rule".into(),
                format!(
                    "max rel. error vs f64 reference: crate f32 {}, finite differences {}, per-weight chain rule {}",
                    sci(worst.0),
                    sci(worst.1),
                    sci(worst.2)
                ),
            ),
            (
                "1. step time O(K²L)".into(),
                format!(
                    "fitted t ∝ K^{:.2}·L^{:.2} (K ≥ 256: K^{:.2}); a gradient by the per-weight chain rule costs {:.0}× backprop at K = {}",
                    fit.k_exponent,
                    fit.l_exponent,
                    large_k,
                    last.chain_s / last.backprop_s,
                    last.k
                ),
            ),
        ],
    })
}

// ---------------------------------------------------------------------------

fn exp2(out: &Path, quick: bool) -> Result<Section, String> {
    let (k, depth, batch, nets) = if quick {
        (128, 50, 128, 4)
    } else {
        (512, 50, 512, 8)
    };
    let s1 = (1.0 / k as f32).sqrt();
    let runs = [
        ("σ = √(1/K)", s1),
        ("σ = √(2/K) (He)", 2f32.sqrt() * s1),
        ("σ = 2·√(2/K)", 2.0 * 2f32.sqrt() * s1),
    ]
    .map(|(label, sigma)| {
        (
            label,
            variance_through_depth(k, depth, batch, sigma, nets, 3),
        )
    });
    let mut md = String::from("## 2. Variance-preserving initialization\n\n");
    let _ = writeln!(
        md,
        "{depth} dense ReLU layers of width K = {k}, weights N(0, σ²), zero biases, {batch} inputs \
         x⁽⁰⁾ = ReLU(g) with g ~ N(0, 1) (so Var[z⁽¹⁾] = K·σ²/2). Each z⁽ˡ⁾ is computed by the \
         crate's fused dense kernel on the weights `Init::Normal(σ)` drew; the layer-by-layer pass \
         reproduces `Mlp::forward` (max relative difference {}). The argument: \
         Var[z⁽ˡ⁾] = K·σ²·E[φ(z⁽ˡ⁻¹⁾)²] = (K·σ²/2)·Var[z⁽ˡ⁻¹⁾], so σ² = 2/K keeps it, \
         σ² = 1/K halves it per layer and σ² = 8/K quadruples it. Shown: the mean over {nets} \
         independently drawn networks (one network's value wanders like a random walk in log \
         scale, one layer's gain has relative variance ≈ 5/K, so ln Var[z⁽ˡ⁾] of one network drifts by about √(5l/K); the mean is what the argument predicts). The spread: the smallest and largest \
         single-network Var[z⁽⁵⁰⁾], and the per-layer factor fitted to each network on its own \
         (mean ± sd over the {nets} networks); the chart shades each init's range from the \
         smallest to the largest single network at every layer.\n",
        sci(runs.iter().map(|r| r.1.forward_mismatch).fold(0.0, f64::max))
    );
    md.push_str("| init | Var[z⁽¹⁾] | Var[z⁽¹⁰⁾] | Var[z⁽²⁵⁾] | Var[z⁽⁵⁰⁾] | one net's Var[z⁽⁵⁰⁾], min–max | predicted Var[z⁽⁵⁰⁾] | per-layer factor (fit to the mean) | one net's factor (mean ± sd) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut chart = Chart::new(format!("Var[z⁽ˡ⁾] through {depth} ReLU layers, K = {k}"))
        .x_label("layer l")
        .y_label("Var[z⁽ˡ⁾]")
        .y_log();
    let mut factors = Vec::new();
    let mut theory = Vec::new();
    for (i, (label, r)) in runs.iter().enumerate() {
        // The argument's prediction: Var[z⁽¹⁾]·(K·σ²/2)ˡ⁻¹.
        let gain = k as f64 * (r.sigma as f64).powi(2) / 2.0;
        let predict = |l: usize| r.var[0] * gain.powi(l as i32 - 1);
        let predicted = predict(depth);
        let pts: Vec<(f64, f64)> = r
            .var
            .iter()
            .enumerate()
            .map(|(l, &v)| (l as f64 + 1.0, v))
            .collect();
        let factor = semilog_slope(&pts).exp();
        let per_net = Spread::by(&r.per_net, |v| {
            semilog_slope(&Series::from_y("", v).points).exp()
        });
        factors.push((factor, per_net));
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {}–{} | {} | {factor:.3} | {} |",
            sci(r.var[0]),
            sci(r.var[9]),
            sci(r.var[24]),
            sci(r.var[depth - 1]),
            sci(r.min[depth - 1]),
            sci(r.max[depth - 1]),
            sci(predicted),
            fix_pm(&per_net, 3)
        );
        let band = r.min.iter().zip(&r.max).map(|(&a, &b)| (a, b)).collect();
        chart = chart.series(Series::new(*label, pts).band(band));
        let label = if i == 0 {
            "theory (K·σ²/2)ˡ⁻¹·Var[z⁽¹⁾]"
        } else {
            ""
        };
        let pts = (1..=depth).map(|l| (l as f64, predict(l))).collect();
        theory.push(Series::new(label, pts).dashed().colour(i));
    }
    for t in theory {
        chart = chart.series(t);
    }
    md.push('\n');
    md.push_str(&save(out, "exp2_variance.svg", &chart.size(640.0, 420.0))?);
    Ok(Section {
        markdown: md,
        summary: vec![(
            "2. He init keeps Var[z⁽ˡ⁾] ≈ 1 through 50 ReLU layers".into(),
            format!(
                "mean over {nets} nets of Var[z⁽⁵⁰⁾]: He {}, σ=√(1/K) {} (≈2⁻⁵⁰), σ=2√(2/K) {} (≈4⁵⁰); one net's per-layer factor {} / {} / {}",
                sci(runs[1].1.var[depth - 1]),
                sci(runs[0].1.var[depth - 1]),
                sci(runs[2].1.var[depth - 1]),
                fix_pm(&factors[1].1, 3),
                fix_pm(&factors[0].1, 3),
                fix_pm(&factors[2].1, 3)
            ),
        )],
    })
}

// ---------------------------------------------------------------------------

/// Per-layer factor of ‖∂W⁽ˡ⁾‖ toward the input (layer l → l − 1) over
/// seeds, worded from the spread: "grows"/"shrinks" only when every seed
/// agrees.
fn toward_input(factors: &[f64]) -> String {
    let s = Spread::of(factors);
    let up = factors.iter().filter(|&&f| f > 1.0).count();
    let n = factors.len();
    let by = fix_pm(&s, 2);
    if up == n {
        format!(
            "grows toward the input, ×{by} per layer (above 1 in {})",
            of(n, n)
        )
    } else if up == 0 {
        format!(
            "shrinks toward the input, ×{by} per layer (below 1 in {})",
            of(n, n)
        )
    } else {
        format!(
            "changes by ×{by} per layer toward the input (growing in {}, shrinking in the others)",
            of(up, n)
        )
    }
}

/// Seeds of experiment 3 (weights, inputs and labels).
fn exp3_seeds(quick: bool) -> Vec<u64> {
    seeds(4, 1, if quick { 3 } else { 5 })
}

fn exp3(out: &Path, quick: bool) -> Result<Section, String> {
    let (k, depth, batch) = if quick { (64, 20, 64) } else { (128, 30, 128) };
    let seed_list = exp3_seeds(quick);
    let ns = seed_list.len();
    let nets = [
        DeepNet::Plain { scale: 1.0 },
        DeepNet::Plain {
            scale: 2.0 * 2f32.sqrt(),
        },
        DeepNet::He,
        DeepNet::Skip { scale: 1.0 },
        DeepNet::Skip {
            scale: 1.0 / (depth as f32).sqrt(),
        },
        DeepNet::BatchNorm { scale: 1.0 },
        DeepNet::LayerNorm { scale: 1.0 },
    ];
    // norms[net][seed]
    let norms: Vec<Vec<GradNorms>> = nets
        .iter()
        .map(|&n| {
            seed_list
                .iter()
                .map(|&s| gradient_norms(n, k, depth, batch, s))
                .collect()
        })
        .collect();
    let mut md = String::from("## 3. Vanishing and exploding gradients, and their remedies\n\n");
    let _ = writeln!(
        md,
        "{depth} hidden ReLU layers of width K = {k} on Gaussian inputs, 10 random classes, one \
         batch of {batch}, at initialization. ‖∂ℓ/∂W⁽ˡ⁾‖ and ‖∂ℓ/∂b⁽ˡ⁾‖ = ‖Σ_batch δ⁽ˡ⁾‖ \
         are read from the gradient arena after one `forward_backward`. \"skip\" is a first dense \
         layer then blocks x + ReLU(W·x + b); \"BatchNorm\"/\"LayerNorm\" are dense → norm → \
         ReLU. σ is the hidden layers' weight scale. Each network is drawn from {ns} seeds \
         (weights, inputs, labels): the tables give mean ± sd over them, the charts the mean \
         with the range from the smallest to the largest seed shaded.\n"
    );
    md.push_str("| network | ‖∂W⁽¹⁾‖ | ‖∂W⁽ᴸ⁾‖ | max/min ‖∂W⁽ˡ⁾‖ over l | ‖∂b⁽¹⁾‖/‖∂b⁽ᴸ⁾‖ (δ carried back) |\n|---|---:|---:|---:|---:|\n");
    let mut cw = Chart::new("‖∂ℓ/∂W⁽ˡ⁾‖ per layer")
        .x_label("layer l")
        .y_label("Frobenius norm")
        .y_log()
        .size(560.0, 420.0);
    let mut cb = Chart::new("‖∂ℓ/∂b⁽ˡ⁾‖ = ‖Σ δ⁽ˡ⁾‖ per layer")
        .x_label("layer l")
        .y_label("norm")
        .y_log()
        .size(560.0, 420.0);
    // Mean per layer with the seeds' range, for one of a net's per-layer vectors.
    let layer_series = |gs: &[GradNorms], label: String, f: fn(&GradNorms) -> &Vec<f64>| {
        let per_layer: Vec<Spread> = (0..depth).map(|l| Spread::by(gs, |g| f(g)[l])).collect();
        let mean: Vec<f64> = per_layer.iter().map(|s| s.mean).collect();
        Series::from_y(label, &mean).band(per_layer.iter().map(Spread::range).collect())
    };
    let max_over_min = |g: &GradNorms| {
        g.weight.iter().cloned().fold(0.0, f64::max)
            / g.weight.iter().cloned().fold(f64::INFINITY, f64::min)
    };
    for (i, gs) in norms.iter().enumerate() {
        let net = gs[0].net;
        let back = Spread::by(gs, |g| g.bias[0] / g.bias[depth - 1]);
        let back = if matches!(net, DeepNet::BatchNorm { .. }) {
            format!(
                "{} (∂b = 0: BN removes the bias, max ‖∂b‖ {} over all seeds)",
                sci_pm(&back),
                sci(gs
                    .iter()
                    .flat_map(|g| g.bias.iter().cloned())
                    .fold(0.0, f64::max))
            )
        } else {
            sci_pm(&back)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {back} |",
            net.label(),
            sci_pm(&Spread::by(gs, |g| g.weight[0])),
            sci_pm(&Spread::by(gs, |g| g.weight[depth - 1])),
            fix_pm(&Spread::by(gs, max_over_min), 1),
        );
        cw = cw.series(layer_series(gs, net.label(), |g| &g.weight).colour(i));
        if !matches!(net, DeepNet::BatchNorm { .. }) {
            cb = cb.series(layer_series(gs, net.label(), |g| &g.bias).colour(i));
        }
    }
    md.push('\n');
    md.push_str(&save_row(out, "exp3_gradient_norms.svg", &[cw, cb])?);

    // The first layer's gradient as the network gets deeper.
    let depths: Vec<usize> = if quick {
        vec![2, 4, 8, 16]
    } else {
        vec![2, 4, 8, 16, 32, 64]
    };
    let mut cd = Chart::new("‖∂ℓ/∂W⁽¹⁾‖ vs depth")
        .x_label("hidden layers L")
        .y_label("Frobenius norm")
        .x_log()
        .y_log();
    md.push_str(
        "\nThe first layer's ‖∂ℓ/∂W⁽¹⁾‖ as the net gets deeper (mean ± sd over the seeds):\n\n",
    );
    md.push_str(&table_head(
        "network",
        depths.iter().map(|d| format!("L = {d}")),
    ));
    let mut small_slopes = Vec::new();
    for (i, &net) in nets.iter().enumerate() {
        let net = match net {
            DeepNet::Skip { scale } if scale < 1.0 => continue, // its σ depends on L
            n => n,
        };
        // first[seed][depth index]
        let first: Vec<Vec<f64>> = seed_list
            .iter()
            .map(|&s| {
                depths
                    .iter()
                    .map(|&d| gradient_norms(net, k, d, batch, s).weight[0])
                    .collect()
            })
            .collect();
        let per_depth: Vec<Spread> = (0..depths.len())
            .map(|j| Spread::by(&first, |f| f[j]))
            .collect();
        let _ = write!(md, "| {} |", net.label());
        for sp in &per_depth {
            let _ = write!(md, " {} |", sci_pm(sp));
        }
        md.push('\n');
        if net == (DeepNet::Plain { scale: 1.0 }) {
            small_slopes = first
                .iter()
                .map(|f| {
                    let pts: Vec<(f64, f64)> =
                        depths.iter().zip(f).map(|(&d, &v)| (d as f64, v)).collect();
                    semilog_slope(&pts).exp()
                })
                .collect();
        }
        let pts = depths
            .iter()
            .zip(&per_depth)
            .map(|(&d, sp)| (d as f64, sp.mean))
            .collect();
        let ranges = per_depth.iter().map(Spread::range).collect();
        cd = cd.series(Series::new(net.label(), pts).band(ranges).colour(i));
    }
    md.push('\n');
    md.push_str(&save(
        out,
        "exp3_first_layer_vs_depth.svg",
        &cd.size(560.0, 420.0),
    )?);
    // Per-layer growth of ‖∂W⁽ˡ⁾‖ toward the input (layer l → l − 1), per seed.
    let growth = |net: usize| -> Vec<f64> {
        norms[net]
            .iter()
            .map(|g| (-semilog_slope(&Series::from_y("", &g.weight).points)).exp())
            .collect()
    };
    let he_ratio = Spread::by(&norms[2], max_over_min);
    let _ = writeln!(
        md,
        "\nWith σ = √(1/K) every layer's signal halves in variance going up and δ halves going \
         down, so δ⁽¹⁾ is 2^-(L-1)/2 of δ⁽ᴸ⁾ and every ‖∂W⁽ˡ⁾‖ = ‖x⁽ˡ⁻¹⁾‖·‖δ⁽ˡ⁾‖-scale is \
         2^-(L-1)/2 of He's: the gradient of the whole net vanishes with depth (the first-layer \
         norm shrinks by ×{} per added layer over the seeds, theory 1/√2 = 0.71). \
         σ = 2·√(2/K) explodes the same way (×4 variance per layer). He init keeps every layer \
         within a factor {} of the others (largest over the seeds {:.1}). Skip connections carry \
         δ back through the identity, so nothing vanishes even with the small init, but \
         unscaled branches compound the variance (×1.5 per block): δ grows toward the input \
         (‖∂b⁽¹⁾‖/‖∂b⁽ᴸ⁾‖ in the table) while x⁽ˡ⁾ grows toward the output, and ‖∂W⁽ˡ⁾‖ \
         {}; scaling the branches by 1/√L brings ‖∂W⁽¹⁾‖ back to He's order ({} vs {}), \
         with the layers within a factor {} of each other. \
         Normalization puts the gradient back at He's scale whatever σ was: with BatchNorm \
         ‖∂W⁽ˡ⁾‖ {} — the known mean-field effect of batch statistics with ReLU —; with \
         LayerNorm it {}; the dense bias before BatchNorm gets no gradient at all.\n",
        fix_pm(&Spread::of(&small_slopes), 2),
        fix_pm(&he_ratio, 1),
        he_ratio.max,
        toward_input(&growth(3)),
        sci_pm(&Spread::by(&norms[4], |g| g.weight[0])),
        sci_pm(&Spread::by(&norms[2], |g| g.weight[0])),
        fix_pm(&Spread::by(&norms[4], max_over_min), 1),
        toward_input(&growth(5)),
        toward_input(&growth(6)),
    );
    let first = |net: usize| sci_pm(&Spread::by(&norms[net], |g| g.weight[0]));
    Ok(Section {
        markdown: md,
        summary: vec![(
            format!("3. gradients vanish/explode with depth ({depth} ReLU layers, {ns} seeds)"),
            format!(
                "‖∂W⁽¹⁾‖: σ=√(1/K) {}, He {}, σ=2√(2/K) {}, skip (1/√L) {}, BatchNorm {}, LayerNorm {}",
                first(0),
                first(2),
                first(1),
                first(4),
                first(5),
                first(6)
            ),
        )],
    })
}

// ---------------------------------------------------------------------------

fn no_mnist(title: &str, dir: &Path) -> Section {
    Section {
        markdown: format!(
            "{title}\n\nSkipped: no MNIST at `{}` (pass `--mnist DIR` or set `BACKPROP_MNIST_DIR`).\n\n",
            dir.display()
        ),
        summary: vec![],
    }
}

/// Training-loss and test-accuracy charts of `runs`, each `(runs, dashed)`:
/// the mean over seeds as a line, the range over seeds shaded.
fn curve_charts(runs: &[(&Runs, bool)], title: &str) -> [Chart; 2] {
    let mut loss = Chart::new(format!("{title}: training loss"))
        .x_label("step")
        .y_label("mean minibatch loss")
        .y_log();
    let mut acc = Chart::new(format!("{title}: test accuracy"))
        .x_label("step")
        .y_label("accuracy (%)");
    for (i, &(r, dashed)) in runs.iter().enumerate() {
        let style = |s: Series| {
            let s = s.colour(i % 2);
            if dashed {
                s.dashed()
            } else {
                s
            }
        };
        let series = |f: &dyn Fn(&Point) -> f64| {
            let along = r.along(f);
            Series::new(
                &r.label,
                along.iter().map(|(x, sp)| (*x as f64, sp.mean)).collect(),
            )
            .band(along.iter().map(|(_, sp)| sp.range()).collect())
        };
        loss = loss.series(style(series(&|p| p.1)));
        acc = acc.series(style(series(&|p| 100.0 * p.3)));
    }
    [loss, acc]
}

/// Seeds of experiment 4 (weights from `s`, data order from `s + 1`).
fn exp4_seeds(quick: bool) -> Vec<u64> {
    seeds(5, 2, if quick { 2 } else { 5 })
}

fn exp4(
    out: &Path,
    quick: bool,
    data: Option<&(Dataset, Dataset)>,
    dir: &Path,
) -> Result<Section, String> {
    let title = "## 4. A two-fold difference in init scale decides training";
    let Some((train, test)) = data else {
        return Ok(no_mnist(title, dir));
    };
    let (depth, width, steps, every) = if quick {
        (30, 128, 300, 50)
    } else {
        (30, 256, 3000, 100)
    };
    let lr = 0.01;
    let seed_list = exp4_seeds(quick);
    let n = seed_list.len();
    let runs = deep_init_curves(train, test, depth, width, steps, lr, every, &seed_list);
    let mut md = format!("{title}\n\n");
    let _ = writeln!(
        md,
        "After He et al. 2015 (Fig. 3): a {depth}-layer ReLU MLP of width {width} on MNIST \
         (784 → {depth} × {width} → 10, softmax cross-entropy), SGD with momentum 0.9, step size \
         {lr}, batch 128, {steps} steps. The only difference is the weights' σ: √(1/K) \
         (Xavier-like; Glorot's normal init for equal fans) or √(2/K) (He). {n} seeds; seed s \
         draws the weights from s and the data order from s + 1, the same for both inits. Test \
         set evaluated every {every} steps. Mean ± sd over the seeds; the charts show the mean \
         with the range over the seeds shaded.\n"
    );
    md.push_str(
        "| init | train loss (last interval) | test loss | test accuracy | accuracy, min–max |\n|---|---:|---:|---:|---:|\n",
    );
    for r in &runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            r.label,
            fix_pm(&r.final_train_loss(), 4),
            fix_pm(&r.final_test_loss(), 4),
            pct_pm(&r.final_accuracy()),
            pct_range(&r.final_accuracy())
        );
    }
    md.push('\n');
    md.push_str(&save_row(
        out,
        "exp4_deep_init.svg",
        &curve_charts(
            &[(&runs[0], false), (&runs[1], false)],
            &format!("{depth}-layer ReLU"),
        ),
    )?);
    // Where each run leaves the ln 10 plateau, and where it passes 90 %.
    let when = |r: &Runs, f: &dyn Fn(&Point) -> bool| -> String {
        let hits: Vec<u64> = r.curves.iter().filter_map(|c| c.first(f)).collect();
        match (hits.iter().min(), hits.iter().max()) {
            (Some(a), Some(b)) => format!(
                "in {} (by step {}{})",
                of(hits.len(), n),
                a,
                if a == b {
                    String::new()
                } else {
                    format!("–{b}")
                }
            ),
            _ => format!("in none of {n} seeds within {steps} steps"),
        }
    };
    let (xavier, he) = (&runs[0], &runs[1]);
    let relapses = xavier.count(|c| c.points.windows(2).any(|w| w[0].1 < 2.2 && w[1].1 > 2.25));
    let _ = writeln!(
        md,
        "\nWith σ = √(1/K) the signal reaching the output is 2^-{depth}/2 of the input's and the \
         gradient is as small (section 3): the loss starts on the ln 10 = 2.303 plateau, chance. \
         It leaves that plateau (train loss below 2.2) {} and reaches 90 % test accuracy {}; \
         the loss falls back to the plateau during the run in {}. With He init the same network \
         leaves the plateau {} and reaches 90 % {}. The He run ends ahead in final test \
         accuracy in {}, by {} points. A two-fold change of the weights' variance is the \
         whole difference.\n",
        when(xavier, &|p| p.1 < 2.2),
        when(xavier, &|p| p.3 >= 0.9),
        of(relapses, n),
        when(he, &|p| p.1 < 2.2),
        when(he, &|p| p.3 >= 0.9),
        of(
            (0..n)
                .filter(|&i| he.curves[i].final_accuracy() > xavier.curves[i].final_accuracy())
                .count(),
            n
        ),
        fix_pm(
            &Spread::of(
                &(0..n)
                    .map(|i| {
                        100.0 * (he.curves[i].final_accuracy() - xavier.curves[i].final_accuracy())
                    })
                    .collect::<Vec<_>>()
            ),
            1
        ),
    );
    Ok(Section {
        markdown: md,
        summary: vec![(
            format!(
                "4. {depth}-layer ReLU on MNIST: Xavier-like σ=√(1/K) vs He σ=√(2/K) ({n} seeds)"
            ),
            format!(
                "after {steps} steps: train loss {} vs {}, test accuracy {} vs {}",
                fix_pm(&xavier.final_train_loss(), 3),
                fix_pm(&he.final_train_loss(), 3),
                pct_pm(&xavier.final_accuracy()),
                pct_pm(&he.final_accuracy())
            ),
        )],
    })
}

// ---------------------------------------------------------------------------

/// A run "trains" when its final test accuracy is above this (chance is
/// 10 %; a run that collapses ends near it).
const TRAINS: f64 = 0.5;

/// Seeds of experiment 5: the step-size sweep's, and the learning curves'
/// (the first of the sweep's). Seed s draws the weights from s and the data
/// order from s + 1.
fn exp5_seeds(quick: bool) -> (Vec<u64>, Vec<u64>) {
    if quick {
        (seeds(8, 2, 3), seeds(8, 2, 2))
    } else {
        (seeds(8, 2, 10), seeds(8, 2, 5))
    }
}

/// `k/n` of the runs in `acc` that train.
fn trains(acc: &[f64]) -> usize {
    acc.iter().filter(|&&a| a > TRAINS).count()
}

fn exp5(
    out: &Path,
    quick: bool,
    data: Option<&(Dataset, Dataset)>,
    dir: &Path,
) -> Result<Section, String> {
    let title = "## 5. BatchNorm";
    let mut md = format!("{title}\n\n");
    let mut summary = Vec::new();
    if let Some((train, test)) = data {
        let (lrs, sweep_steps, steps, every): (&[f32], u64, u64, u64) = if quick {
            (&[0.1, 1.0, 3.0, 10.0], 300, 600, 100)
        } else {
            (
                &[0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
                2000,
                10_000,
                250,
            )
        };
        let (sweep_seeds, curve_seeds) = exp5_seeds(quick);
        let ns = sweep_seeds.len();
        let _ = writeln!(
            md,
            "After Ioffe & Szegedy 2015 (Fig. 1a): MNIST, 784 → 3 × 100 sigmoid → 10, Xavier \
             init, softmax cross-entropy, plain SGD (no momentum), batch 60; \"with BatchNorm\" \
             inserts BatchNorm between each dense layer and its sigmoid. Test accuracy in \
             evaluation mode (running statistics). Seed s draws the weights from s and the data \
             order from s + 1, the same for both nets.\n\n\
             **Step-size sweep** ({sweep_steps} steps each, {ns} seeds; mean ± sd of the final \
             test accuracy; a run whose loss turns non-finite counts as 0 %; a run *trains* when \
             it ends above {:.0} % — chance is 10 %, and a collapsed run ends near it; the last \
             two columns pair the nets seed by seed):\n\n\
             | step size | without BatchNorm | trains | with BatchNorm | trains | BN − plain (points) | BN ahead |\n\
             |---:|---:|---:|---:|---:|---:|---:|",
            100.0 * TRAINS
        );
        let sweep = bn_lr_sweep(train, test, lrs, sweep_steps, &sweep_seeds);
        let gap = |i: usize| -> Vec<f64> {
            sweep
                .plain_at(i)
                .iter()
                .zip(sweep.bn_at(i))
                .map(|(p, b)| 100.0 * (b - p))
                .collect()
        };
        for (i, lr) in lrs.iter().enumerate() {
            let (p, b) = (sweep.plain_at(i), sweep.bn_at(i));
            let _ = writeln!(
                md,
                "| {lr} | {} | {}/{ns} | {} | {}/{ns} | {} | {}/{ns} |",
                pct_pm(&Spread::of(&p)),
                trains(&p),
                pct_pm(&Spread::of(&b)),
                trains(&b),
                fix_pm(&Spread::of(&gap(i)), 2),
                gap(i).iter().filter(|&&g| g > 0.0).count()
            );
        }
        // The plain net's best step size: per seed, and by mean.
        let best = sweep.plain_best();
        let best_i = sweep.plain_best_mean();
        let best_lr = lrs[best_i];
        let best_acc = Spread::of(&sweep.plain_at(best_i));
        let per_seed: Vec<String> = (0..lrs.len())
            .filter_map(|i| {
                let k = best.iter().filter(|&&b| b == i).count();
                (k > 0).then(|| format!("{} in {}", lrs[i], of(k, ns)))
            })
            .collect();
        let per_seed = match per_seed.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => per_seed.join(""),
        };
        // The runner-up by mean, paired with the best seed by seed.
        let second = (0..lrs.len())
            .filter(|&i| i != best_i)
            .max_by(|&a, &b| {
                Spread::of(&sweep.plain_at(a))
                    .mean
                    .total_cmp(&Spread::of(&sweep.plain_at(b)).mean)
            })
            .expect("at least two step sizes");
        let lead: Vec<f64> = sweep
            .plain_at(best_i)
            .iter()
            .zip(sweep.plain_at(second))
            .map(|(a, b)| 100.0 * (a - b))
            .collect();
        // The largest step size at which a net trains in every seed.
        let largest_all = |acc: &dyn Fn(usize) -> Vec<f64>| {
            (0..lrs.len())
                .rev()
                .find(|&i| trains(&acc(i)) == ns)
                .map(|i| lrs[i])
        };
        let plain_all = largest_all(&|i| sweep.plain_at(i));
        let bn_all = largest_all(&|i| sweep.bn_at(i));
        let ten_i = sweep.index(10.0 * best_lr);
        let ten_lr = lrs[ten_i];
        let ten_in_sweep = (ten_lr / best_lr - 10.0).abs() < 1e-3;
        let describe_at = |i: usize| {
            let (p, b) = (sweep.plain_at(i), sweep.bn_at(i));
            format!(
                "the plain net trains in {} ({}) and the BatchNorm net in {} ({})",
                of(trains(&p), ns),
                pct_pm(&Spread::of(&p)),
                of(trains(&b), ns),
                pct_pm(&Spread::of(&b))
            )
        };
        let _ = writeln!(
            md,
            "\nPer seed, the plain net's best step size of the sweep (its highest final \
             accuracy) is {}; by mean accuracy it is {best_lr} ({}), ahead of {} by {} points, ahead in {}. \
             {}{}\n",
            per_seed,
            pct_pm(&best_acc),
            lrs[second],
            fix_pm(&Spread::of(&lead), 2),
            of(lead.iter().filter(|&&d| d > 0.0).count(), ns),
            if ten_in_sweep {
                format!("At 10× that step ({ten_lr}), {}. ", describe_at(ten_i))
            } else {
                String::new()
            },
            match (plain_all, bn_all) {
                (Some(p), Some(b)) => format!(
                    "The largest step size at which the plain net trains in every seed is {p}; \
                     for the BatchNorm net it is {b}, {}× larger.",
                    b / p
                ),
                _ => "Neither net trains in every seed at some step size of the sweep.".into(),
            }
        );
        // Where BatchNorm ends ahead in every seed, and where only in some.
        let (all_ahead, some): (Vec<usize>, Vec<usize>) = (0..lrs.len())
            .filter(|&i| trains(&sweep.bn_at(i)) > 0 || trains(&sweep.plain_at(i)) > 0)
            .partition(|&i| gap(i).iter().all(|&g| g > 0.0));
        let _ =
            writeln!(
            md,
            "Among the step sizes where either net trains, BatchNorm ends ahead of the plain net \
             in every seed at {}{}.\n",
            if all_ahead.is_empty() {
                "none".to_string()
            } else {
                all_ahead.iter().map(|&i| lrs[i].to_string()).collect::<Vec<_>>().join(", ")
            },
            some.iter()
                .map(|&i| format!(
                    "; at {} only in {} (by {} points, within the seeds' spread of either net)",
                    lrs[i],
                    of(gap(i).iter().filter(|&&g| g > 0.0).count(), ns),
                    fix_pm(&Spread::of(&gap(i)), 2)
                ))
                .collect::<String>()
        );
        let bars = |acc: &dyn Fn(usize) -> Vec<f64>, label: &str| {
            let sp: Vec<Spread> = (0..lrs.len()).map(|i| Spread::of(&acc(i))).collect();
            Series::new(
                label,
                lrs.iter()
                    .zip(&sp)
                    .map(|(&lr, s)| (lr as f64, 100.0 * s.mean))
                    .collect(),
            )
            .error_bars(sp.iter().map(|s| (100.0 * s.min, 100.0 * s.max)).collect())
        };
        let cs = Chart::new(format!("final test accuracy vs step size ({ns} seeds)"))
            .x_label("step size")
            .y_label("accuracy (%): mean, bars min–max")
            .x_log()
            .series(bars(&|i| sweep.plain_at(i), "without BatchNorm"))
            .series(bars(&|i| sweep.bn_at(i), "with BatchNorm"));
        md.push_str(&save(out, "exp5_lr_sweep.svg", &cs)?);

        // Rounding: the plain net at its best step and at the smallest larger
        // step where it fails in some seed, on the other kernel paths.
        let isas = backprop::kernel::available_isas();
        let others: Vec<backprop::Isa> = isas
            .iter()
            .copied()
            .filter(|&i| i != backprop::active_isa())
            .collect();
        let tipping = (best_i + 1..lrs.len()).find(|&i| trains(&sweep.plain_at(i)) < ns);
        if !others.is_empty() {
            let check: Vec<usize> = std::iter::once(best_i).chain(tipping).collect();
            let paths: Vec<String> =
                std::iter::once(format!("{} (this report)", backprop::active_isa()))
                    .chain(others.iter().map(|i| i.to_string()))
                    .collect();
            let _ = writeln!(
                md,
                "\n**What rounding decides.** The plain net's sweep runs at its best step by mean \
                 ({best_lr}) and at the next step size where it fails in some seed{}, repeated on \
                 the other kernel paths this CPU has: the same arithmetic, rounded differently \
                 (SIMD width and summation order). Final test accuracy:\n",
                tipping.map_or(" (none in this sweep)".into(), |i| format!(" ({})", lrs[i]))
            );
            md.push_str(&table_head(
                "seed",
                check
                    .iter()
                    .flat_map(|&i| paths.iter().map(move |p| format!("step {}: {p}", lrs[i]))),
            ));
            // acc[check][seed][path], this report's path first.
            let acc: Vec<Vec<Vec<f64>>> = check
                .iter()
                .map(|&i| {
                    plain_on_isas(train, test, lrs[i], sweep_steps, &sweep_seeds, &others)
                        .into_iter()
                        .enumerate()
                        .map(|(r, row)| std::iter::once(sweep.plain[r][i]).chain(row).collect())
                        .collect()
                })
                .collect();
            for (r, seed) in sweep_seeds.iter().enumerate() {
                let _ = write!(md, "| {seed} |");
                for a in &acc {
                    for v in &a[r] {
                        let _ = write!(md, " {:.2} % |", 100.0 * v);
                    }
                }
                md.push('\n');
            }
            let mut any_flip = false;
            let notes: Vec<String> = check
                .iter()
                .zip(&acc)
                .map(|(&i, a)| {
                    let widest = a
                        .iter()
                        .map(|row| Spread::of(row))
                        .map(|sp| sp.max - sp.min)
                        .fold(0.0, f64::max);
                    let flips = a
                        .iter()
                        .filter(|row| trains(row) != 0 && trains(row) != row.len())
                        .count();
                    any_flip |= flips > 0;
                    let per_path: Vec<String> = (0..paths.len())
                        .map(|p| {
                            let col: Vec<f64> = a.iter().map(|row| row[p]).collect();
                            format!("{}/{ns}", trains(&col))
                        })
                        .collect();
                    format!(
                        "at step {} the kernel path moves a seed's final accuracy by up to {:.2} \
                         points and decides whether it trains or collapses in {} (trains in {} \
                         seeds on {})",
                        lrs[i],
                        100.0 * widest,
                        of(flips, ns),
                        per_path.join(" / "),
                        std::iter::once(backprop::active_isa())
                            .chain(others.iter().copied())
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(" / ")
                    )
                })
                .collect();
            let _ = writeln!(
                md,
                "\nSo {}.{}\n",
                notes.join("; "),
                if any_flip {
                    " Where the outcome sits on a tipping point, one seed's outcome is a \
                     property of the rounding, not of the method; the count over seeds is what \
                     carries over."
                } else {
                    ""
                }
            );
        }

        let slow = 0.1;
        let curve_lrs = [slow, best_lr];
        let runs = bn_curves(train, test, steps, &curve_lrs, every, &curve_seeds);
        let nc = curve_seeds.len();
        let _ = writeln!(
            md,
            "\n**Learning curves** ({steps} steps = {:.1} epochs, {nc} seeds) at step size {slow} \
             and at the plain net's best by mean, {best_lr}; test accuracy, mean ± sd:\n\n\
             | run | @ {} steps | @ {} steps | @ {steps} steps |\n|---|---:|---:|---:|",
            steps as f64 * 60.0 / train.len() as f64,
            steps / 10,
            steps / 2
        );
        let acc = |p: &Point| p.3;
        for r in &runs {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                r.label,
                pct_pm(&r.at(steps / 10, acc)),
                pct_pm(&r.at(steps / 2, acc)),
                pct_pm(&r.final_accuracy())
            );
        }
        // BatchNorm ahead of the plain net, seed by seed, at a step count.
        let ahead = |plain: &Runs, bn: &Runs, step: u64| {
            let k = (0..nc)
                .filter(|&i| {
                    let at = |c: &Curve| c.points.iter().find(|p| p.0 >= step).map_or(0.0, |p| p.3);
                    at(&bn.curves[i]) > at(&plain.curves[i])
                })
                .count();
            of(k, nc)
        };
        let _ = writeln!(
            md,
            "\nSeed by seed, the BatchNorm net is ahead of the plain one at step {slow} after {} \
             steps in {} and after {steps} in {}; at step {best_lr}, after {} steps in {} and \
             after {steps} in {}.\n",
            steps / 10,
            ahead(&runs[0], &runs[1], steps / 10),
            ahead(&runs[0], &runs[1], steps),
            steps / 10,
            ahead(&runs[2], &runs[3], steps / 10),
            ahead(&runs[2], &runs[3], steps),
        );
        let dashed: Vec<(&Runs, bool)> = runs
            .iter()
            .map(|r| (r, r.label.ends_with(&format!("step {slow}"))))
            .collect();
        md.push_str(&save_row(
            out,
            "exp5_bn_curves.svg",
            &curve_charts(&dashed, "3×100 sigmoid"),
        )?);
        summary.push((
            format!("5. BatchNorm trains faster and tolerates larger steps (MNIST, 3×100 sigmoid, batch 60; {ns} seeds for the sweep, {nc} for the curves)"),
            format!(
                "at step 0.1 after {steps} steps: {} with BN vs {} without; plain best step by mean {best_lr} ({}; best in {}){}; largest step that trains in every seed: plain {}, BN {}",
                pct_pm(&runs[1].final_accuracy()),
                pct_pm(&runs[0].final_accuracy()),
                pct_pm(&best_acc),
                of(best.iter().filter(|&&b| b == best_i).count(), ns),
                if ten_in_sweep {
                    format!(
                        "; at {ten_lr}: plain trains in {}, BN in {}",
                        of(trains(&sweep.plain_at(ten_i)), ns),
                        of(trains(&sweep.bn_at(ten_i)), ns)
                    )
                } else {
                    String::new()
                },
                plain_all.map_or("none".into(), |v| v.to_string()),
                bn_all.map_or("none".into(), |v| v.to_string()),
            ),
        ));
    } else {
        let s = no_mnist("", dir);
        md.push_str(&s.markdown);
    }

    let bn_seeds = seeds(4, 1, BN_SEEDS);
    let ps: Vec<BnProperties> = bn_seeds.iter().map(|&s| bn_properties(32, 60, s)).collect();
    let max = |f: fn(&BnProperties) -> f64| Spread::by(&ps, f).max;
    let min = |f: fn(&BnProperties) -> f64| Spread::by(&ps, f).min;
    let (mean_theory, var_theory) = running_stats_rms_theory(0.1, 60);
    let _ = writeln!(
        md,
        "\n**What BatchNorm computes** (synthetic features N(μ_j, s_j²), 32 features, batches of \
         60; {BN_SEEDS} seeds, each drawing its own μ_j, s_j, data and weights: exact properties \
         as the worst case over the seeds, statistical ones as mean ± sd):\n\n\
         | property | measured |\n|---|---|\n\
         | BN(a⊙z + b) = BN(z) for a ∈ [0.5, 2], b ∈ [−3, 3] (training mode) | max difference {} (ε = 1e-5 and rounding only) |\n\
         | ⇒ a dense bias right before BatchNorm is useless | max \\|∂b\\| ≤ {} while max \\|∂W\\| ≥ {} |\n\
         | training mode: a sample's output depends on its batch mates | max change ≥ {} when the others are replaced |\n\
         | evaluation mode: running statistics, no dependence | max change ≤ {} |\n\
         | running mean tracks the population mean (momentum 0.1, 300 batches) | rms error over the features {}·s (theory {:.4}·s); largest feature {}·s |\n\
         | running unbiased variance tracks the population's | rms error {}·s² (theory {:.4}·s²); largest feature {}·s² |\n\
         | training vs evaluation output on a batch of 4096 | max difference {} (batch vs running statistics) |\n",
        sci(max(|p| p.affine_invariance)),
        sci(max(|p| p.bias_grad_before_bn)),
        sci(min(|p| p.weight_grad_before_bn)),
        sci(min(|p| p.train_partner_change)),
        sci(max(|p| p.eval_partner_change)),
        fix_pm(&Spread::by(&ps, |p| p.running_mean_rms), 4),
        mean_theory,
        fix_pm(&Spread::by(&ps, |p| p.running_mean_err), 3),
        fix_pm(&Spread::by(&ps, |p| p.running_var_rms), 4),
        var_theory,
        fix_pm(&Spread::by(&ps, |p| p.running_var_err), 3),
        fix_pm(&Spread::by(&ps, |p| p.train_vs_eval), 3),
    );
    let _ = writeln!(
        md,
        "The running statistics are exponential averages of per-batch estimates, so they keep a \
         sampling error that more batches do not remove: Var[running] = m/(2 − m)·Var[batch \
         estimate], with Var[batch mean] = s²/60 and Var[unbiased batch variance] = 2s⁴/59 \
         (`running_stats_rms_theory`). The largest of 32 features' errors is about 2.3× the \
         rms, as for the largest of 32 draws of |N(0, 1)|.\n"
    );
    summary.push((
        format!("5. BN(a⊙z+b) = BN(z); train vs eval ({BN_SEEDS} seeds)"),
        format!(
            "max \\|BN(a⊙z+b) − BN(z)\\| ≤ {}; batch mates change a training-mode output by ≥ {}, an evaluation-mode one by ≤ {}; running-mean rms error {}·s (theory {:.4}·s)",
            sci(max(|p| p.affine_invariance)),
            sci(min(|p| p.train_partner_change)),
            sci(max(|p| p.eval_partner_change)),
            fix_pm(&Spread::by(&ps, |p| p.running_mean_rms), 4),
            mean_theory,
        ),
    ));
    Ok(Section {
        markdown: md,
        summary,
    })
}

// ---------------------------------------------------------------------------

/// Seeds of the synthetic BatchNorm and LayerNorm checks (cheap: no training).
const BN_SEEDS: usize = 20;
const LN_SEEDS: usize = 10;

fn exp6() -> Section {
    let ps: Vec<LnProperties> = seeds(5, 1, LN_SEEDS)
        .into_iter()
        .map(|s| ln_properties(20, 16, s))
        .collect();
    let max = |f: fn(&LnProperties) -> f64| sci(Spread::by(&ps, f).max);
    let bn_min = sci(Spread::by(&ps, |p| p.bn_partner_change).min);
    let mut md = String::from("## 6. LayerNorm\n\n");
    let _ = writeln!(
        md,
        "A 20 → 64 → LayerNorm → tanh → 10 network with randomised γ, β, batches of 16, \
         {LN_SEEDS} seeds (weights, γ, β and data each); the largest value over the seeds, and \
         for BatchNorm the smallest. LayerNorm normalises each sample over its features, so \
         nothing in it looks at the other samples, and it has no running statistics, so \
         training and evaluation are the same computation.\n\n\
         | property | measured |\n|---|---|\n\
         | a sample's output with other batch mates (training mode) | max change {} |\n\
         | a sample's output alone (batch of 1) vs in the batch | max change {} |\n\
         | training vs evaluation mode, same batch | max difference {} |\n\
         | BatchNorm in the same place, other batch mates | change at least {bn_min} |\n",
        max(|p| p.partner_change),
        max(|p| p.alone_change),
        max(|p| p.train_vs_eval),
    );
    Section {
        markdown: md,
        summary: vec![(
            format!("6. LayerNorm is per sample; train = eval ({LN_SEEDS} seeds)"),
            format!(
                "batch mates change an output by ≤ {}, a batch of one by ≤ {}, eval vs train ≤ {} (BatchNorm: ≥ {bn_min})",
                max(|p| p.partner_change),
                max(|p| p.alone_change),
                max(|p| p.train_vs_eval),
            ),
        )],
    }
}
