//! Trains a fully connected network from the command line.
//!
//! ```sh
//! cargo run --release --example train                      # synthetic spirals, a few seconds
//! cargo run --release --example train -- --data mnist:../shared/data/mnist \
//!     --layers 784,512,512,10 --opt adam --lr 1e-3 --batch 128 --epochs 5
//! cargo run --release --example train -- --help
//! ```
//!
//! Progress goes to stderr (a bar per epoch when stderr is a terminal, and a
//! summary line per epoch); `--json` prints one JSON object on stdout at the
//! end; `--plot FILE.svg` draws the loss and accuracy curves.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use backprop::io::{load_checkpoint, load_mlp, save_checkpoint, save_mlp};
use backprop::nn::{Activation, Init, Loss, Mlp, MlpBuilder};
use backprop::optim::{Adam, AdamConfig, Optimizer, Schedule, Sgd, SgdConfig, WeightDecay};
use backprop::train::csv::{read_csv, LabelKind};
use backprop::train::{Dataset, Labels, TrainError, Trainer};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "common/mnist.rs"]
mod mnist;
#[path = "common/plot.rs"]
mod plot;
use plot::{row_svg, save_svg, Chart, Series};

#[derive(Parser, Debug)]
#[command(about = "Train a fully connected network with backprop")]
struct Args {
    /// `synthetic` (5-class spirals), `mnist:DIR` (IDX files, raw or .gz) or
    /// `csv:FILE` (features then label; the last 20 % of rows are the test set).
    #[arg(long, default_value = "synthetic")]
    data: String,
    /// Layer widths from input to output, e.g. 784,512,512,10 (default: fits the data).
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    /// Activation of the hidden layers.
    #[arg(long, value_enum, default_value = "relu")]
    act: Act,
    /// Normalisation after each hidden dense layer.
    #[arg(long, value_enum, default_value = "none")]
    norm: Norm,
    /// Wrap hidden layers of equal width in residual blocks x + f(x).
    #[arg(long)]
    residual: bool,
    /// Loss (default: softmax-ce for classes, mse for csv regression).
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adam")]
    opt: Opt,
    /// Step size (the schedule's base value when --schedule is not given).
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Weight decay: L2 (coupled) for sgd/momentum/nesterov/adam, decoupled for adamw.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Step-size schedule, e.g. `cosine:1e-3:0:5000` or `warmup:100:0.1:constant:1e-3`.
    #[arg(long)]
    schedule: Option<String>,
    /// Weight initialization.
    #[arg(long, value_enum, default_value = "he")]
    init: InitArg,
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Epochs to train.
    #[arg(long, default_value_t = 10)]
    epochs: u64,
    /// Threads (default: the crate's setting: BACKPROP_NUM_THREADS, RAYON_NUM_THREADS, cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the initialization, the shuffles and the synthetic data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Save the trained network (safetensors, PyTorch names, architecture in the metadata).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Start from a saved network (its architecture replaces --layers/--act/--norm/--residual/--init).
    #[arg(long)]
    load: Option<PathBuf>,
    /// Write a checkpoint (network, optimizer state, schedule position, shuffle seed, epoch)
    /// after every epoch, atomically.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Continue from a checkpoint up to --epochs epochs in total; the final weights are bitwise
    /// those of an uninterrupted run.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Write an SVG of the loss and accuracy curves.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print one JSON object with the run's results on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Act {
    Relu,
    LeakyRelu,
    Tanh,
    Sigmoid,
    Gelu,
    Softplus,
    Identity,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Norm {
    None,
    Batch,
    Layer,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LossArg {
    Mse,
    Logistic,
    SoftmaxCe,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Opt {
    Sgd,
    Momentum,
    Nesterov,
    Adam,
    Adamw,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum InitArg {
    He,
    Xavier,
    Lecun,
}

/// One epoch's results.
struct EpochRow {
    epoch: u64,
    seconds: f64,
    samples_per_s: f64,
    train_loss: f32,
    test_loss: f32,
    test_accuracy: Option<f32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if let Some(t) = args.threads {
        backprop::set_num_threads(t);
    }
    let (train, test) = load_data(args)?;
    let loss = match args.loss {
        Some(LossArg::Mse) => Loss::Mse,
        Some(LossArg::Logistic) => Loss::Logistic,
        Some(LossArg::SoftmaxCe) => Loss::SoftmaxCrossEntropy,
        None => match train.labels() {
            Labels::Classes(_) => Loss::SoftmaxCrossEntropy,
            Labels::Signs(_) => Loss::Logistic,
            Labels::Values { .. } => Loss::Mse,
        },
    };
    let mut trainer = match &args.resume {
        Some(path) => {
            let ckpt = load_checkpoint(path).map_err(|e| format!("--resume: {e}"))?;
            let opt = optimizer(args, ckpt.net.num_params())?;
            let t = ckpt
                .into_trainer(opt)
                .map_err(|e| format!("--resume: {e}"))?;
            eprintln!("resuming {} after epoch {}", path.display(), t.epochs());
            t
        }
        None => {
            let net = match &args.load {
                Some(path) => load_mlp(path).map_err(|e| format!("--load: {e}"))?,
                None => build_net(args, &train, loss)?,
            };
            let opt = optimizer(args, net.num_params())?;
            let schedule = match &args.schedule {
                Some(s) => s
                    .parse::<Schedule>()
                    .map_err(|e| format!("--schedule: {e}"))?,
                None => Schedule::constant(args.lr),
            };
            Trainer::new(net, opt, schedule, args.seed)
        }
    };
    if trainer.net().input_dim() != train.features() {
        return Err(format!(
            "the network takes {} inputs but the data has {} features",
            trainer.net().input_dim(),
            train.features()
        ));
    }
    eprintln!(
        "{} training / {} test samples, {} parameters, {} kernels, {} threads",
        train.len(),
        test.len(),
        trainer.net().num_params(),
        backprop::active_isa(),
        backprop::num_threads()
    );
    let mut rows = Vec::new();
    while trainer.epochs() < args.epochs {
        let epoch = trainer.epochs() + 1;
        let bar = ProgressBar::new(train.len().div_ceil(args.batch) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} loss {msg} ({per_sec})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(epoch.to_string());
        let stats = trainer
            .train_epoch_with(&train, args.batch, |done, _, l| {
                bar.set_position(done as u64);
                bar.set_message(format!("{l:.4}"));
            })
            .map_err(|e| match (&e, &args.checkpoint) {
                (TrainError::Diverged { .. }, Some(c)) if c.exists() => format!(
                    "{e}\nthe last checkpoint written (after the last completed epoch) is kept in {}",
                    c.display()
                ),
                (TrainError::Diverged { .. }, _) => e.to_string(),
                _ => format!("training: {e}"),
            })?;
        bar.finish_and_clear();
        let eval = trainer
            .evaluate(&test, 1000)
            .map_err(|e| format!("evaluation: {e}"))?;
        let row = EpochRow {
            epoch,
            seconds: stats.seconds,
            samples_per_s: stats.samples as f64 / stats.seconds,
            train_loss: stats.mean_loss,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy(),
        };
        eprintln!(
            "epoch {:>3}: train loss {:.4}, test loss {:.4}{}, {:.2} s, {:.0} samples/s",
            row.epoch,
            row.train_loss,
            row.test_loss,
            row.test_accuracy.map_or(String::new(), |a| format!(
                ", test accuracy {:.2} %",
                100.0 * a
            )),
            row.seconds,
            row.samples_per_s
        );
        rows.push(row);
        if let Some(path) = &args.checkpoint {
            save_checkpoint(&trainer, path).map_err(|e| format!("--checkpoint: {e}"))?;
        }
    }
    if let Some(path) = &args.save {
        save_mlp(trainer.net(), path).map_err(|e| format!("--save: {e}"))?;
    }
    if let Some(path) = &args.plot {
        write_plot(path, &rows).map_err(|e| format!("--plot {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", json_report(&rows, trainer.net()));
    }
    Ok(())
}

/// The training and test sets named by `--data`.
fn load_data(args: &Args) -> Result<(Dataset, Dataset), String> {
    if args.data == "synthetic" {
        return Ok((
            spirals(20_000, args.seed),
            spirals(4000, args.seed ^ 0x5eed),
        ));
    }
    if let Some(dir) = args.data.strip_prefix("mnist:") {
        return mnist::load(Path::new(dir));
    }
    if let Some(file) = args.data.strip_prefix("csv:") {
        let kind = match args.loss {
            Some(LossArg::Mse) => LabelKind::Value,
            Some(LossArg::Logistic) => LabelKind::Sign,
            _ => LabelKind::Class,
        };
        let all = read_csv(file, kind).map_err(|e| format!("{file}: {e}"))?;
        let cut = all.len() - all.len() / 5;
        return Ok((subset(&all, 0, cut), subset(&all, cut, all.len())));
    }
    Err(format!(
        "--data {:?}: expected synthetic, mnist:DIR or csv:FILE",
        args.data
    ))
}

/// Rows `lo..hi` of a dataset as a new dataset.
fn subset(d: &Dataset, lo: usize, hi: usize) -> Dataset {
    let f = d.features();
    let x = d.x_data()[lo * f..hi * f].to_vec();
    let labels = match d.labels() {
        Labels::Classes(c) => Labels::Classes(c[lo..hi].to_vec()),
        Labels::Signs(s) => Labels::Signs(s[lo..hi].to_vec()),
        Labels::Values { data, width } => Labels::Values {
            data: data[lo * width..hi * width].to_vec(),
            width: *width,
        },
    };
    Dataset::new(x, hi - lo, f, labels).expect("a subset of a valid dataset is valid")
}

/// Five interleaved noisy spirals in the plane, wound two times: a small
/// problem that needs the hidden layers and a few epochs.
fn spirals(n: usize, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::with_capacity(2 * n), Vec::with_capacity(n));
    for i in 0..n {
        let c = i % 5;
        let r: f32 = rng.random_range(0.05..1.0);
        let turn = 2.0 * std::f32::consts::PI;
        let a = c as f32 * turn / 5.0 + 2.0 * turn * r + rng.random_range(-0.55..0.55);
        x.push(r * a.cos());
        x.push(r * a.sin());
        y.push(c);
    }
    Dataset::new(x, n, 2, Labels::Classes(y)).expect("generated data is finite")
}

fn build_net(args: &Args, train: &Dataset, loss: Loss) -> Result<Mlp, String> {
    let classes = match train.labels() {
        Labels::Classes(c) => c.iter().max().map_or(1, |m| m + 1),
        Labels::Values { width, .. } => *width,
        Labels::Signs(_) => 1,
    };
    let layers = args
        .layers
        .clone()
        .unwrap_or_else(|| match train.features() {
            2 => vec![2, 256, 256, 256, classes],
            f => vec![f, 512, 512, classes],
        });
    if layers.len() < 2 {
        return Err("--layers needs at least the input and output widths".into());
    }
    if layers[0] != train.features() {
        return Err(format!(
            "--layers starts with {} inputs but the data has {} features",
            layers[0],
            train.features()
        ));
    }
    let act = match args.act {
        Act::Relu => Activation::Relu,
        Act::LeakyRelu => Activation::LeakyRelu { slope: 0.01 },
        Act::Tanh => Activation::Tanh,
        Act::Sigmoid => Activation::Sigmoid,
        Act::Gelu => Activation::Gelu,
        Act::Softplus => Activation::Softplus,
        Act::Identity => Activation::Identity,
    };
    let init = match args.init {
        InitArg::He => Init::He,
        InitArg::Xavier => Init::Xavier,
        InitArg::Lecun => Init::LeCun,
    };
    let norm = args.norm;
    let hidden = |b: MlpBuilder, w: usize| {
        let b = b.dense(w);
        let b = match norm {
            Norm::None => b,
            Norm::Batch => b.batch_norm(),
            Norm::Layer => b.layer_norm(),
        };
        b.act(act)
    };
    let mut b = MlpBuilder::new(layers[0]).init(init).loss(loss);
    let mut width = layers[0];
    for &w in &layers[1..layers.len() - 1] {
        b = if args.residual && w == width {
            b.residual(|r| hidden(r, w))
        } else {
            hidden(b, w)
        };
        width = w;
    }
    b = b.dense(*layers.last().expect("checked above"));
    b.build(args.seed).map_err(|e| format!("network: {e}"))
}

fn optimizer(args: &Args, n: usize) -> Result<Box<dyn Optimizer + Send>, String> {
    let wd = args.weight_decay;
    let l2 = if wd > 0.0 {
        WeightDecay::L2(wd)
    } else {
        WeightDecay::None
    };
    let sgd = |momentum, nesterov| -> Result<Box<dyn Optimizer + Send>, String> {
        let cfg = SgdConfig {
            momentum,
            nesterov,
            weight_decay: l2,
        };
        Ok(Box::new(Sgd::try_new(n, cfg).map_err(|e| e.to_string())?))
    };
    match args.opt {
        Opt::Sgd => sgd(0.0, false),
        Opt::Momentum => sgd(0.9, false),
        Opt::Nesterov => sgd(0.9, true),
        Opt::Adam => {
            let cfg = AdamConfig {
                weight_decay: l2,
                ..AdamConfig::default()
            };
            Ok(Box::new(Adam::try_new(n, cfg).map_err(|e| e.to_string())?))
        }
        Opt::Adamw => {
            let cfg = AdamConfig::adamw(if wd > 0.0 { wd } else { 0.01 });
            Ok(Box::new(Adam::try_new(n, cfg).map_err(|e| e.to_string())?))
        }
    }
}

/// FNV-1a over the parameter bytes: equal whenever the weights are bitwise equal.
fn checksum(params: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in params {
        for b in p.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Peak resident set in MB (Linux `VmHWM`), if known.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

fn json_report(rows: &[EpochRow], net: &Mlp) -> String {
    let mut s = String::from("{\"epochs\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"epoch\":{},\"seconds\":{},\"samples_per_second\":{},\"train_loss\":{},\"test_loss\":{},\"test_accuracy\":{}}}",
            r.epoch,
            json_number(r.seconds),
            json_number(r.samples_per_s),
            json_number(r.train_loss as f64),
            json_number(r.test_loss as f64),
            r.test_accuracy.map_or("null".into(), |a| json_number(a as f64))
        );
    }
    let _ = write!(
        s,
        "],\"threads\":{},\"isa\":\"{}\",\"params_checksum\":\"{}\",\"peak_rss_mb\":{}}}",
        backprop::num_threads(),
        backprop::active_isa(),
        checksum(net.params()),
        peak_rss_mb().map_or("null".into(), json_number)
    );
    s
}

/// An SVG with two panels: train/test loss (log scale) and test accuracy, per epoch.
fn write_plot(path: &Path, rows: &[EpochRow]) -> std::io::Result<()> {
    let per_epoch = |value: fn(&EpochRow) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r.epoch as f64, value(r))).collect()
    };
    let loss = Chart::new("loss")
        .x_label("epoch")
        .x_integer()
        .y_log()
        .series(Series::new("train", per_epoch(|r| r.train_loss as f64)))
        .series(Series::new("test", per_epoch(|r| r.test_loss as f64)));
    let accuracy = Chart::new("test accuracy (%)")
        .x_label("epoch")
        .x_integer()
        .series(Series::new(
            "test",
            per_epoch(|r| r.test_accuracy.map_or(f64::NAN, |a| 100.0 * a as f64)),
        ));
    save_svg(path, &row_svg(&[loss, accuracy]))
}
