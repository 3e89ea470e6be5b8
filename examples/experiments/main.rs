//! Reproduces the course's claims about training neural networks with the
//! crate and writes a Markdown report with SVG plots:
//!
//! ```text
//! cargo run --release --example experiments                      # full run, a few minutes
//! cargo run --release --example experiments -- --quick           # small sizes, under a minute
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
//! The experiments themselves are in `lab.rs`; `tests/experiments.rs` runs
//! them at small sizes and asserts the trends. MNIST (experiments 4 and 5) is
//! read from `--mnist` (default `$BACKPROP_MNIST_DIR`, else
//! `../shared/data/mnist`); without it those two sections say so and the rest
//! still runs.

mod lab;
#[path = "../common/mnist.rs"]
mod mnist;
#[path = "../common/plot.rs"]
mod plot;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use backprop::nn::Activation;
use backprop::train::Dataset;
use clap::Parser;
use lab::*;
use plot::{Chart, Series};

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
         `tests/experiments.rs` runs the same code (`examples/experiments/lab.rs`) at small sizes \
         and asserts each trend.\n",
        if q { " -- --quick" } else { "" },
        backprop::num_threads(),
        backprop::active_isa(),
        if q { " (quick mode: small sizes, few steps)" } else { "" },
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

fn sci(v: f64) -> String {
    format!("{v:.2e}")
}

// ---------------------------------------------------------------------------

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
    md.push_str(
        "The gradient of the mean softmax cross-entropy of a small network on a batch, four ways: \
         the crate's backprop (f32, fused SIMD kernels); the literal per-sample f64 backprop of \
         `backprop::reference` (`δ⁽ˡ⁾ = (W⁽ˡ⁺¹⁾δ⁽ˡ⁺¹⁾) ⊙ φ′(z⁽ˡ⁾)`, `∂w_ij = δ_j x_i`), which \
         is the yardstick; central finite differences in f64 (h = 1e-6); and the chain rule \
         applied to each weight on its own (f64, forward mode: the weight's effect on its `z_j` \
         pushed through every layer above). Errors are max |g − g_ref| / max |g_ref|.\n\n\
         | network | params | crate backprop (f32) | finite differences | per-weight chain rule |\n|---|---:|---:|---:|---:|\n",
    );
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for (i, net) in nets.iter().enumerate() {
        let c = gradient_check(net, 6, 10 + i as u64);
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
            c.params,
            sci(c.crate_err),
            sci(c.fd_err),
            sci(c.chain_err)
        );
        worst = (
            worst.0.max(c.crate_err),
            worst.1.max(c.fd_err),
            worst.2.max(c.chain_err),
        );
    }
    md.push_str(
        "\nAll four agree: backprop *is* the chain rule (the per-weight version sums the same \
         products in another order, to rounding), and the f32 kernels lose only f32 rounding.\n\n\
         **Done efficiently.** The per-weight chain rule and finite differences each cost a pass \
         over the network per parameter, O(P·K²L) = O(K⁴L²) for the whole gradient; backprop \
         reuses δ⁽ˡ⁺¹⁾ for every weight of layer l and costs about three forward passes. \
         Time for one full gradient of a K-K-K-10 tanh net, batch 16:\n\n\
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
        (&[64, 128, 256], &[1, 2, 4], 0.05)
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
    md.push_str("| L \\ K |");
    for k in ks {
        let _ = write!(md, " {k} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(ks.len()));
    md.push('\n');
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
         scale, one layer's gain has relative variance ≈ 5/K, so ln Var[z⁽ˡ⁾] of one network drifts by about √(5l/K); the mean is what the argument predicts).\n",
        sci(runs.iter().map(|r| r.1.forward_mismatch).fold(0.0, f64::max))
    );
    md.push_str("| init | Var[z⁽¹⁾] | Var[z⁽¹⁰⁾] | Var[z⁽²⁵⁾] | Var[z⁽⁵⁰⁾] | predicted Var[z⁽⁵⁰⁾] | per-layer factor (fit) |\n|---|---:|---:|---:|---:|---:|---:|\n");
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
        factors.push(factor);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {factor:.3} |",
            sci(r.var[0]),
            sci(r.var[9]),
            sci(r.var[24]),
            sci(r.var[depth - 1]),
            sci(predicted)
        );
        chart = chart.series(Series::new(*label, pts));
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
                "Var[z⁽⁵⁰⁾]: He {}, σ=√(1/K) {} (≈2⁻⁵⁰), σ=2√(2/K) {} (≈4⁵⁰); per-layer factors {:.3} / {:.3} / {:.3}",
                sci(runs[1].1.var[depth - 1]),
                sci(runs[0].1.var[depth - 1]),
                sci(runs[2].1.var[depth - 1]),
                factors[1],
                factors[0],
                factors[2]
            ),
        )],
    })
}

// ---------------------------------------------------------------------------

fn exp3(out: &Path, quick: bool) -> Result<Section, String> {
    let (k, depth, batch) = if quick { (64, 20, 64) } else { (128, 30, 128) };
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
    let norms: Vec<GradNorms> = nets
        .iter()
        .map(|&n| gradient_norms(n, k, depth, batch, 4))
        .collect();
    let mut md = String::from("## 3. Vanishing and exploding gradients, and their remedies\n\n");
    let _ = writeln!(
        md,
        "{depth} hidden ReLU layers of width K = {k} on Gaussian inputs, 10 random classes, one \
         batch of {batch}, at initialization. ‖∂ℓ/∂W⁽ˡ⁾‖ and ‖∂ℓ/∂b⁽ˡ⁾‖ = ‖Σ_batch δ⁽ˡ⁾‖ \
         are read from the gradient arena after one `forward_backward`. \"skip\" is a first dense \
         layer then blocks x + ReLU(W·x + b); \"BatchNorm\"/\"LayerNorm\" are dense → norm → \
         ReLU. σ is the hidden layers' weight scale.\n"
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
    for (i, g) in norms.iter().enumerate() {
        let lo = g.weight.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = g.weight.iter().cloned().fold(0.0, f64::max);
        let back = if g.bias[depth - 1] > 0.0 {
            sci(g.bias[0] / g.bias[depth - 1])
        } else {
            "–".into()
        };
        let back = if matches!(g.net, DeepNet::BatchNorm { .. }) {
            format!(
                "{back} (∂b = 0: BN removes the bias, max ‖∂b‖ {})",
                sci(g.bias.iter().cloned().fold(0.0, f64::max))
            )
        } else {
            back
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {back} |",
            g.net.label(),
            sci(g.weight[0]),
            sci(g.weight[depth - 1]),
            hi / lo
        );
        cw = cw.series(Series::from_y(g.net.label(), &g.weight).colour(i));
        if !matches!(g.net, DeepNet::BatchNorm { .. }) {
            cb = cb.series(Series::from_y(g.net.label(), &g.bias).colour(i));
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
    md.push_str("\nThe first layer's ‖∂ℓ/∂W⁽¹⁾‖ as the net gets deeper:\n\n| network |");
    for d in &depths {
        let _ = write!(md, " L = {d} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(depths.len()));
    md.push('\n');
    let mut small_slope = 0.0;
    for (i, &net) in nets.iter().enumerate() {
        let net = match net {
            DeepNet::Skip { scale } if scale < 1.0 => continue, // its σ depends on L
            n => n,
        };
        let pts: Vec<(f64, f64)> = depths
            .iter()
            .map(|&d| (d as f64, gradient_norms(net, k, d, batch, 4).weight[0]))
            .collect();
        let _ = write!(md, "| {} |", net.label());
        for p in &pts {
            let _ = write!(md, " {} |", sci(p.1));
        }
        md.push('\n');
        if net == (DeepNet::Plain { scale: 1.0 }) {
            small_slope = semilog_slope(&pts).exp();
        }
        cd = cd.series(Series::new(net.label(), pts).colour(i));
    }
    md.push('\n');
    md.push_str(&save(
        out,
        "exp3_first_layer_vs_depth.svg",
        &cd.size(560.0, 420.0),
    )?);
    let he = &norms[2];
    let small = &norms[0];
    // Per-layer growth of ‖∂W⁽ˡ⁾‖ toward the input (layer l → l − 1).
    let growth = |g: &GradNorms| (-semilog_slope(&Series::from_y("", &g.weight).points)).exp();
    let _ = writeln!(
        md,
        "\nWith σ = √(1/K) every layer's signal halves in variance going up and δ halves going \
         down, so δ⁽¹⁾ is 2^-(L-1)/2 of δ⁽ᴸ⁾ and every ‖∂W⁽ˡ⁾‖ = ‖x⁽ˡ⁻¹⁾‖·‖δ⁽ˡ⁾‖-scale is \
         2^-(L-1)/2 of He's: the gradient of the whole net vanishes with depth (the first-layer \
         norm shrinks by ×{small_slope:.2} per added layer, theory 1/√2 = 0.71). \
         σ = 2·√(2/K) explodes the same way (×4 variance per layer). He init keeps every layer \
         within a factor {:.1}. Skip connections carry δ back through the identity, so nothing \
         vanishes even with the small init, but unscaled branches compound the variance \
         (×1.5 per block) and the gradient grows toward the input (×{:.2} per layer here); \
         scaling the branches by 1/√L keeps it flat. Normalization puts the gradient back at \
         He's scale whatever σ was (BatchNorm with ReLU still lets it grow ×{:.2} per layer \
         toward the input, the known mean-field effect of batch statistics; LayerNorm ×{:.2}; \
         the dense bias before BatchNorm gets no gradient at all).\n",
        he.weight.iter().cloned().fold(0.0, f64::max)
            / he.weight.iter().cloned().fold(f64::INFINITY, f64::min),
        growth(&norms[3]),
        growth(&norms[5]),
        growth(&norms[6])
    );
    Ok(Section {
        markdown: md,
        summary: vec![(
            format!("3. gradients vanish/explode with depth ({depth} ReLU layers)"),
            format!(
                "‖∂W⁽¹⁾‖: σ=√(1/K) {}, He {}, σ=2√(2/K) {}, skip (1/√L) {}, BatchNorm {}, LayerNorm {}",
                sci(small.weight[0]),
                sci(he.weight[0]),
                sci(norms[1].weight[0]),
                sci(norms[4].weight[0]),
                sci(norms[5].weight[0]),
                sci(norms[6].weight[0])
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

/// Training-loss and test-accuracy charts of `curves`, each `(curve, dashed)`.
fn curve_charts(curves: &[(Curve, bool)], title: &str) -> [Chart; 2] {
    let mut loss = Chart::new(format!("{title}: training loss"))
        .x_label("step")
        .y_label("mean minibatch loss")
        .y_log();
    let mut acc = Chart::new(format!("{title}: test accuracy"))
        .x_label("step")
        .y_label("accuracy (%)");
    for (i, (c, dashed)) in curves.iter().enumerate() {
        let style = |s: Series| {
            let s = s.colour(i % 2);
            if *dashed {
                s.dashed()
            } else {
                s
            }
        };
        let l = Series::new(
            &c.label,
            c.points.iter().map(|p| (p.0 as f64, p.1)).collect(),
        );
        let a = Series::new(
            &c.label,
            c.points.iter().map(|p| (p.0 as f64, 100.0 * p.3)).collect(),
        );
        loss = loss.series(style(l));
        acc = acc.series(style(a));
    }
    [loss, acc]
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
    let curves = deep_init_curves(train, test, depth, width, steps, lr, every);
    let mut md = format!("{title}\n\n");
    let _ = writeln!(
        md,
        "After He et al. 2015 (Fig. 3): a {depth}-layer ReLU MLP of width {width} on MNIST \
         (784 → {depth} × {width} → 10, softmax cross-entropy), SGD with momentum 0.9, step size \
         {lr}, batch 128, {steps} steps, the same seed and data order for both. The only \
         difference is the weights' σ: √(1/K) (Xavier-like; Glorot's normal init for equal fans) \
         or √(2/K) (He). Test set evaluated every {every} steps.\n"
    );
    md.push_str(
        "| init | train loss (last interval) | test loss | test accuracy |\n|---|---:|---:|---:|\n",
    );
    for c in &curves {
        let p = c.points.last().copied().unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.4} | {:.2} % |",
            c.label,
            p.1,
            p.2,
            100.0 * p.3
        );
    }
    md.push('\n');
    let solid: Vec<(Curve, bool)> = curves.iter().map(|c| (c.clone(), false)).collect();
    md.push_str(&save_row(
        out,
        "exp4_deep_init.svg",
        &curve_charts(&solid, &format!("{depth}-layer ReLU")),
    )?);
    // Where each curve leaves the ln 10 plateau, and where it passes 90 %.
    let first = |c: &Curve, f: &dyn Fn(&Point) -> bool| c.points.iter().find(|p| f(p)).map(|p| p.0);
    let describe = |s: Option<u64>| {
        s.map_or(format!("never in {steps} steps"), |s| {
            format!("by step {s}")
        })
    };
    let (xavier, he) = (&curves[0], &curves[1]);
    let relapse = xavier
        .points
        .windows(2)
        .any(|w| w[0].1 < 2.2 && w[1].1 > 2.25);
    let _ = writeln!(
        md,
        "\nWith σ = √(1/K) the signal reaching the output is 2^-{depth}/2 of the input's and the \
         gradient is as small (section 3): the loss sits at ln 10 = 2.303, chance. It leaves that \
         plateau (train loss below 2.2) {} and reaches 90 % test accuracy {}{}. With He init the \
         same network leaves the plateau {} and reaches 90 % {}. A two-fold change of the \
         weights' variance is the whole difference.\n",
        describe(first(xavier, &|p| p.1 < 2.2)),
        describe(first(xavier, &|p| p.3 >= 0.9)),
        if relapse {
            ", and its training is unstable (the loss falls back to the plateau during the run)"
        } else {
            ""
        },
        describe(first(he, &|p| p.1 < 2.2)),
        describe(first(he, &|p| p.3 >= 0.9)),
    );
    Ok(Section {
        markdown: md,
        summary: vec![(
            format!("4. {depth}-layer ReLU on MNIST: Xavier-like σ=√(1/K) vs He σ=√(2/K)"),
            format!(
                "after {steps} steps: train loss {:.3} vs {:.3}, test accuracy {:.1} % vs {:.1} %",
                curves[0].final_train_loss(),
                curves[1].final_train_loss(),
                100.0 * curves[0].final_accuracy(),
                100.0 * curves[1].final_accuracy()
            ),
        )],
    })
}

// ---------------------------------------------------------------------------

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
            (&[0.1, 1.0, 10.0], 300, 600, 100)
        } else {
            (
                &[0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
                2000,
                10_000,
                250,
            )
        };
        let _ = writeln!(
            md,
            "After Ioffe & Szegedy 2015 (Fig. 1a): MNIST, 784 → 3 × 100 sigmoid → 10, Xavier \
             init, softmax cross-entropy, plain SGD (no momentum), batch 60; \"with BatchNorm\" \
             inserts BatchNorm between each dense layer and its sigmoid. Test accuracy in \
             evaluation mode (running statistics).\n\n\
             **Step-size sweep** ({sweep_steps} steps each; a run whose loss turns non-finite \
             counts as 0 %):\n\n| step size | without BatchNorm | with BatchNorm |\n|---:|---:|---:|"
        );
        let sweep = bn_lr_sweep(train, test, lrs, sweep_steps);
        for r in &sweep.rows {
            let _ = writeln!(
                md,
                "| {} | {:.2} % | {:.2} % |",
                r.0,
                100.0 * r.1,
                100.0 * r.2
            );
        }
        let (best_lr, best_acc) = sweep.plain_best();
        let ten = sweep.at(10.0 * best_lr);
        let _ = writeln!(
            md,
            "\nThe plain net's best step size is {best_lr} ({:.2} %). At {}× that ({}), the plain \
             net reaches {:.2} % and the BatchNorm net {:.2} %.\n",
            100.0 * best_acc,
            ten.0 / best_lr,
            ten.0,
            100.0 * ten.1,
            100.0 * ten.2
        );
        let mut cs = Chart::new("final test accuracy vs step size")
            .x_label("step size")
            .y_label("accuracy (%)")
            .x_log();
        cs = cs
            .series(Series::new(
                "without BatchNorm",
                sweep
                    .rows
                    .iter()
                    .map(|r| (r.0 as f64, 100.0 * r.1))
                    .collect(),
            ))
            .series(Series::new(
                "with BatchNorm",
                sweep
                    .rows
                    .iter()
                    .map(|r| (r.0 as f64, 100.0 * r.2))
                    .collect(),
            ));
        md.push_str(&save(out, "exp5_lr_sweep.svg", &cs)?);

        let mut curves = Vec::new();
        let slow = 0.1;
        for lr in [slow, best_lr] {
            for mut c in bn_curves(train, test, steps, lr, every) {
                c.label = format!("{}, step {lr}", c.label);
                curves.push((c, lr == slow));
            }
        }
        let _ = writeln!(
            md,
            "\n**Learning curves** ({steps} steps = {:.0} epochs) at step size {slow} and at the \
             plain net's best, {best_lr}:\n\n| run | test acc. @ {} steps | @ {} steps | @ {steps} steps |\n|---|---:|---:|---:|",
            steps as f64 * 60.0 / train.len() as f64,
            steps / 10,
            steps / 2
        );
        let at = |c: &Curve, s: u64| {
            c.points
                .iter()
                .find(|p| p.0 >= s)
                .map_or(f64::NAN, |p| 100.0 * p.3)
        };
        for (c, _) in &curves {
            let _ = writeln!(
                md,
                "| {} | {:.2} % | {:.2} % | {:.2} % |",
                c.label,
                at(c, steps / 10),
                at(c, steps / 2),
                100.0 * c.final_accuracy()
            );
        }
        md.push('\n');
        md.push_str(&save_row(
            out,
            "exp5_bn_curves.svg",
            &curve_charts(&curves, "3×100 sigmoid"),
        )?);
        summary.push((
            "5. BatchNorm trains faster and tolerates larger steps (MNIST, 3×100 sigmoid, batch 60)".into(),
            format!(
                "at step 0.1 after {steps} steps: {:.2} % with BN vs {:.2} % without; plain best step {best_lr} ({:.2} %), at {}: BN {:.2} %, plain {:.2} %",
                100.0 * curves[1].0.final_accuracy(),
                100.0 * curves[0].0.final_accuracy(),
                100.0 * best_acc,
                ten.0,
                100.0 * ten.2,
                100.0 * ten.1
            ),
        ));
    } else {
        let s = no_mnist("", dir);
        md.push_str(&s.markdown);
    }

    let p = bn_properties(32, 60, 4);
    let _ = writeln!(
        md,
        "\n**What BatchNorm computes** (synthetic features N(μ_j, s_j²), 32 features, batches of 60):\n\n\
         | property | measured |\n|---|---|\n\
         | BN(a⊙z + b) = BN(z) for a ∈ [0.5, 2], b ∈ [−3, 3] (training mode) | max difference {} (ε = 1e-5 only) |\n\
         | ⇒ a dense bias right before BatchNorm is useless | max \\|∂b\\| = {} vs max \\|∂W\\| = {} |\n\
         | training mode: a sample's output depends on its batch mates | max change {} when the others are replaced |\n\
         | evaluation mode: running statistics, no dependence | max change {} |\n\
         | running mean / unbiased variance track the population (momentum 0.1, 300 batches) | max error {:.3}·s / {:.3}·s² |\n\
         | training vs evaluation output on a batch of 4096 | max difference {:.3} (batch vs running statistics) |\n",
        sci(p.affine_invariance),
        sci(p.bias_grad_before_bn),
        sci(p.weight_grad_before_bn),
        sci(p.train_partner_change),
        sci(p.eval_partner_change),
        p.running_mean_err,
        p.running_var_err,
        p.train_vs_eval
    );
    summary.push((
        "5. BN(a⊙z+b) = BN(z); train vs eval".into(),
        format!(
            "max \\|BN(a⊙z+b) − BN(z)\\| = {}; batch mates change a training-mode output by {}, an evaluation-mode one by {}",
            sci(p.affine_invariance),
            sci(p.train_partner_change),
            sci(p.eval_partner_change)
        ),
    ));
    Ok(Section {
        markdown: md,
        summary,
    })
}

// ---------------------------------------------------------------------------

fn exp6() -> Section {
    let p = ln_properties(20, 16, 5);
    let mut md = String::from("## 6. LayerNorm\n\n");
    let _ = writeln!(
        md,
        "A 20 → 64 → LayerNorm → tanh → 10 network with randomised γ, β, batches of 16. \
         LayerNorm normalises each sample over its features, so nothing in it looks at the \
         other samples, and it has no running statistics, so training and evaluation are the \
         same computation.\n\n\
         | property | measured |\n|---|---|\n\
         | a sample's output with other batch mates (training mode) | max change {} |\n\
         | a sample's output alone (batch of 1) vs in the batch | max change {} |\n\
         | training vs evaluation mode, same batch | max difference {} |\n\
         | BatchNorm in the same place, other batch mates | max change {} |\n",
        sci(p.partner_change),
        sci(p.alone_change),
        sci(p.train_vs_eval),
        sci(p.bn_partner_change)
    );
    Section {
        markdown: md,
        summary: vec![(
            "6. LayerNorm is per sample; train = eval".into(),
            format!(
                "batch mates change an output by {}, a batch of one by {}, eval vs train {} (BatchNorm: {})",
                sci(p.partner_change),
                sci(p.alone_change),
                sci(p.train_vs_eval),
                sci(p.bn_partner_change)
            ),
        )],
    }
}
