//! The command-line trainer without its terminal: the flags, their
//! validation, the data and network they name, and the epoch loop with its
//! checkpoints. `main.rs` adds the progress bar, the plot and the JSON
//! report; the fuzz target `cli` includes this file as it is, to drive the
//! flag and data paths with generated command lines and files.
//!
//! The rule this module keeps: no flag, file or environment variable reaches
//! a panic, an abort or an unbounded allocation. Every number is validated
//! here (with a message naming the flag), every size from the data goes
//! through the library's checked constructors, and every output path is
//! checked writable before any training starts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use backprop::dist::Group;
use backprop::io::{
    check_writable, load_checkpoint, load_weights_into, mlp_from_safetensors, mlp_from_state_dict,
    read_file, save_checkpoint, Checkpoint,
};
use backprop::nn::{Activation, BatchParallelism, Init, Layer, Loss, Mlp, MlpBuilder, Targets};
use backprop::optim::{Adam, AdamConfig, Optimizer, Schedule, Sgd, SgdConfig, WeightDecay};
use backprop::train::csv::{read_csv, LabelKind};
use backprop::train::{Dataset, TrainError, Trainer};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use backprop_support::mnist;

/// The most threads `--threads`, `BACKPROP_NUM_THREADS` or
/// `RAYON_NUM_THREADS` may ask for.
pub const MAX_THREADS: usize = 1024;

/// `--max-params` by default: 2²⁸ parameters.
pub const DEFAULT_MAX_PARAMS: usize = 1 << 28;

#[derive(Parser, Debug, Clone)]
#[command(about = "Train a fully connected network with backprop")]
pub struct Args {
    /// `synthetic` (5-class spirals), `mnist:DIR` (IDX files, raw or gzipped) or
    /// `csv:FILE` (features then label; the last 20 % of rows are the test set).
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Layer widths from input to output, e.g. 784,512,512,10 (default: fits the data).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Activation of the hidden layers.
    #[arg(long, value_enum, default_value = "relu")]
    pub act: Act,
    /// Normalisation after each hidden dense layer.
    #[arg(long, value_enum, default_value = "none")]
    pub norm: Norm,
    /// Wrap hidden layers of equal width in residual blocks x + f(x).
    #[arg(long)]
    pub residual: bool,
    /// Dropout with this drop probability after each hidden activation (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Loss (default: softmax-ce for classes, mse for csv regression).
    #[arg(long, value_enum)]
    pub loss: Option<LossArg>,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adam")]
    pub opt: Opt,
    /// Step size (the schedule's base value when --schedule is not given).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Weight decay λ ≥ 0: L2 (coupled) for sgd/momentum/nesterov/adam, decoupled for
    /// adamw (default: 0, and 0.01 for adamw; `--weight-decay 0` gives AdamW without decay).
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Step-size schedule, e.g. `cosine:1e-3:0:5000` or `warmup:100:0.1:constant:1e-3`.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Weight initialization.
    #[arg(long, value_enum, default_value = "he")]
    pub init: InitArg,
    /// Minibatch size (at least 1).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Epochs to train.
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    /// Threads, 1 to 1024 (default: the crate's setting: BACKPROP_NUM_THREADS,
    /// RAYON_NUM_THREADS, cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Cut each minibatch into S fixed shards whose gradients are summed in shard order
    /// (bitwise the same for any thread count and, under mpirun, any number of ranks; default:
    /// each GEMM splits its own work over the threads, and 8 shards under mpirun).
    #[arg(long, value_name = "S")]
    pub shards: Option<usize>,
    /// Under mpirun, in messages (ranks on several nodes, or --no-shared-memory): exchange a
    /// step's gradients on the computing thread, each bucket as the backward pass fills it,
    /// rather than on a thread beside it (the same weights; for timing).
    #[arg(long)]
    pub no_overlap: bool,
    /// Under mpirun, in messages: send a step's gradients in buckets of at least N values
    /// (default 262144).
    #[arg(long, value_name = "N")]
    pub bucket_values: Option<usize>,
    /// Under mpirun with every rank on one node: exchange gradients and parameters in messages
    /// rather than through shared memory (the same weights; the path a cluster of several nodes
    /// takes).
    #[arg(long)]
    pub no_shared_memory: bool,
    /// Seed of the initialization, the shuffles and the synthetic data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Save the trained network (safetensors, PyTorch names, architecture in the metadata).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Start from a saved network: a file this tool saved brings its architecture (replacing
    /// --layers/--act/--norm/--residual/--init); a plain PyTorch nn.Sequential state dict
    /// loads into the network --layers etc. describe or, without --layers, into the one its
    /// tensor names and shapes describe, with --act (and --dropout) between the layers.
    #[arg(long)]
    pub load: Option<PathBuf>,
    /// Write a checkpoint (network, optimizer state, schedule position, shuffle seed, epoch)
    /// after every epoch, atomically; only a finite state is ever written.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue from a checkpoint up to --epochs epochs in total; the final weights are bitwise
    /// those of an uninterrupted run. The checkpoint fixes the network, loss, seed, schedule and
    /// optimizer: flags that contradict it are refused.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Write an SVG of the loss and accuracy curves.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the trained (or loaded) network's prediction for every test-set row to this CSV
    /// file, by the loss's rule (class, sign or values), beside the row's target; with
    /// softmax or logistic loss also the probabilities.
    #[arg(long)]
    pub predict: Option<PathBuf>,
    /// Print one JSON object with the run's results on stdout.
    #[arg(long)]
    pub json: bool,
    /// Refuse to build a network with more parameters than this (default 2²⁸: 1 GiB for
    /// the weights, as much for the gradients and twice that for Adam's state).
    #[arg(long, default_value_t = DEFAULT_MAX_PARAMS)]
    pub max_params: usize,
    /// The flags given on the command line (clap ids, e.g. `weight_decay`), as
    /// opposed to defaults.
    #[arg(skip)]
    pub given: Vec<String>,
}

impl Args {
    /// Whether the flag with clap id `id` was on the command line.
    pub fn given(&self, id: &str) -> bool {
        self.given.iter().any(|g| g == id)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Act {
    Relu,
    LeakyRelu,
    Tanh,
    Sigmoid,
    /// GELU, tanh form (nn.GELU(approximate='tanh')).
    Gelu,
    /// GELU, exact erf form (nn.GELU()).
    GeluErf,
    Softplus,
    Identity,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum Norm {
    None,
    Batch,
    Layer,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LossArg {
    Mse,
    Logistic,
    SoftmaxCe,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Opt {
    Sgd,
    Momentum,
    Nesterov,
    Adam,
    Adamw,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InitArg {
    He,
    Xavier,
    Lecun,
}

/// Parses a command line (program name first), recording which flags were
/// given. Errors are clap's (usage, `--help`, `--version` included).
pub fn parse_args<I, T>(argv: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches: ArgMatches = Args::command().try_get_matches_from(argv)?;
    let mut args = Args::from_arg_matches(&matches)?;
    args.given = matches
        .ids()
        .map(|id| id.as_str().to_string())
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .collect();
    Ok(args)
}

/// A flag value as spelled on the command line (`softmax-ce`).
fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}

/// The flag spelling of a clap id (`weight_decay` → `--weight-decay`).
fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// Checks every number and the environment before anything is loaded.
pub fn validate(args: &Args) -> Result<(), String> {
    if !(0.0..1.0).contains(&args.dropout) {
        return Err(format!(
            "--dropout {}: the drop probability must be in [0, 1)",
            args.dropout
        ));
    }
    if args.batch == 0 {
        return Err("--batch 0: the minibatch size must be at least 1".into());
    }
    if let Some(s) = args.shards {
        if !(1..=MAX_SHARDS).contains(&s) {
            return Err(format!("--shards {s}: must be 1 to {MAX_SHARDS}"));
        }
    }
    if let Some(t) = args.threads {
        if !(1..=MAX_THREADS).contains(&t) {
            return Err(format!("--threads {t}: must be 1 to {MAX_THREADS}"));
        }
    }
    for var in ["BACKPROP_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if let Ok(v) = std::env::var(var) {
            if v.trim().parse::<usize>().is_ok_and(|n| n > MAX_THREADS) {
                return Err(format!("{var}={v}: must be at most {MAX_THREADS}"));
            }
        }
    }
    if let Ok(v) = std::env::var("BACKPROP_ISA") {
        let v = v.trim();
        if !v.is_empty() && !v.eq_ignore_ascii_case("auto") {
            let isa: backprop::Isa = v.parse().map_err(|e| format!("BACKPROP_ISA: {e}"))?;
            if !isa.is_available() {
                return Err(format!(
                    "BACKPROP_ISA={v}: this CPU cannot run the {isa} kernels"
                ));
            }
        }
    }
    // --lr is checked even when --schedule overrides it.
    format!("constant:{}", args.lr)
        .parse::<Schedule>()
        .map_err(|e| format!("--lr {}: {e}", args.lr))?;
    schedule(args)?;
    if let Some(wd) = args.weight_decay {
        if !(wd.is_finite() && wd >= 0.0) {
            return Err(format!("--weight-decay {wd}: must be finite and >= 0"));
        }
    }
    Ok(())
}

/// The step-size schedule the flags name: `--schedule`, else a constant `--lr`.
fn schedule(args: &Args) -> Result<Schedule, String> {
    match &args.schedule {
        Some(s) => s.parse().map_err(|e| format!("--schedule: {e}")),
        // Through the parser, whose errors are values, not panics.
        None => format!("constant:{}", args.lr)
            .parse()
            .map_err(|e| format!("--lr {}: {e}", args.lr)),
    }
}

/// Checks that every output path can be written, before any work is done:
/// a run must not train for an hour and then fail on its output.
pub fn check_outputs(args: &Args) -> Result<(), String> {
    for (name, path) in [
        ("--save", &args.save),
        ("--checkpoint", &args.checkpoint),
        ("--plot", &args.plot),
        ("--predict", &args.predict),
    ] {
        if let Some(p) = path {
            check_writable(p).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(())
}

/// What a run trains: the data, and a trainer positioned at its start (or at
/// the checkpoint it resumes).
pub struct Setup {
    pub train: Dataset,
    pub test: Dataset,
    pub trainer: Trainer,
    /// Whether this process reports and writes files: the only one, or rank 0.
    pub lead: bool,
}

/// The most shards `--shards` takes.
pub const MAX_SHARDS: usize = 4096;

/// The shards of a run under mpirun when `--shards` is not given.
pub const DEFAULT_MPI_SHARDS: usize = 8;

/// Trains data-parallel with the ranks of `group` (started by mpirun): each
/// minibatch in `--shards` shards (default [`DEFAULT_MPI_SHARDS`]), this rank
/// computing its own; only rank 0 reports and writes files.
pub fn join_group(setup: Setup, args: &Args, group: Group) -> Result<Setup, String> {
    let shards = args.shards.unwrap_or(DEFAULT_MPI_SHARDS);
    if shards < group.size() {
        return Err(format!(
            "--shards {shards}: fewer shards than the {} ranks (each rank needs one)",
            group.size()
        ));
    }
    let mut group = group
        .with_overlap(!args.no_overlap)
        .with_shared_memory(!args.no_shared_memory);
    match args.bucket_values {
        Some(0) => return Err("--bucket-values 0: a bucket holds at least one value".into()),
        Some(n) => group = group.with_bucket_values(n),
        None => {}
    }
    Ok(Setup {
        lead: group.rank() == 0,
        trainer: setup.trainer.with_group(group, shards),
        ..setup
    })
}

/// Loads the data and builds (or resumes) the trainer.
pub fn setup(args: &Args) -> Result<Setup, String> {
    validate(args)?;
    if let Some(t) = args.threads {
        backprop::set_num_threads(t);
    }
    let resume = match &args.resume {
        Some(path) => {
            Some(load_checkpoint(path).map_err(|e| format!("--resume {}: {e}", path.display()))?)
        }
        None => None,
    };
    let given_loss = args.loss.map(|l| match l {
        LossArg::Mse => Loss::Mse,
        LossArg::Logistic => Loss::Logistic,
        LossArg::SoftmaxCe => Loss::SoftmaxCrossEntropy,
    });
    // A resumed run reads its labels as the checkpoint's loss needs them.
    let loss_hint = given_loss.or(resume.as_ref().map(|c| c.net.loss_kind()));
    let (train, test) = load_data(args, loss_hint)?;
    if train.is_empty() {
        return Err(format!("--data {}: the training set is empty", args.data));
    }
    if test.is_empty() {
        return Err(format!("--data {}: the test set is empty", args.data));
    }
    let loss = given_loss.unwrap_or(match train.labels() {
        Targets::Classes(_) => Loss::SoftmaxCrossEntropy,
        Targets::Signs(_) => Loss::Logistic,
        Targets::Values(_) => Loss::Mse,
    });
    let mut trainer = match resume {
        Some(ckpt) => {
            check_resume_flags(args, &ckpt)?;
            check_resume_batches(args, &ckpt, train.len())?;
            let opt = optimizer(args, ckpt.net.num_params())?;
            if let Some(theirs) = &ckpt.optimizer.config {
                let ours = opt.config_text();
                if ours != *theirs {
                    return Err(format!(
                        "--opt {} with --weight-decay {} gives {ours}, but the checkpoint was \
                         trained with {theirs}; give its --opt and --weight-decay to resume it",
                        value_name(args.opt),
                        args.weight_decay
                            .map_or_else(|| "unset".to_string(), |w| w.to_string()),
                    ));
                }
            }
            ckpt.into_trainer(opt)
                .map_err(|e| format!("--resume: {e}"))?
        }
        None => {
            let net = match &args.load {
                Some(path) => load_network(args, path, &train, loss)?,
                None => build_net(args, &train, loss)?,
            };
            let opt = optimizer(args, net.num_params())?;
            Trainer::new(net, opt, schedule(args)?, args.seed)
        }
    };
    if trainer.net().input_dim() != train.features() {
        return Err(format!(
            "the network takes {} inputs but the data has {} features",
            trainer.net().input_dim(),
            train.features()
        ));
    }
    if let Some(s) = args.shards {
        trainer
            .net_mut()
            .set_parallelism(BatchParallelism::Shards(s));
    }
    Ok(Setup {
        train,
        test,
        trainer,
        lead: true,
    })
}

/// The input width and every dense layer's width, in order (residual
/// blocks expanded): what `--layers` describes.
fn widths(net: &Mlp) -> Vec<usize> {
    fn walk(layers: &[Layer], out: &mut Vec<usize>) {
        for l in layers {
            match l {
                Layer::Dense { units, .. } => out.push(*units),
                Layer::Residual(inner) => walk(inner, out),
                _ => {}
            }
        }
    }
    let mut out = vec![net.input_dim()];
    walk(net.layers(), &mut out);
    out
}

fn join(v: &[usize]) -> String {
    v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// Refuses, naming it, every given flag that contradicts the checkpoint;
/// flags the checkpoint fixes are honoured when they agree with it.
fn check_resume_flags(args: &Args, ckpt: &Checkpoint) -> Result<(), String> {
    let differs = |id: &str, ours: String, theirs: String| {
        Err(format!(
            "{} {ours} contradicts the checkpoint, which has {theirs}; drop {} to resume it",
            flag(id),
            flag(id)
        ))
    };
    for id in ["act", "norm", "residual", "init", "load", "dropout"] {
        if args.given(id) {
            return Err(format!(
                "{} cannot be used with --resume: the checkpoint holds the network",
                flag(id)
            ));
        }
    }
    if let Some(layers) = args.layers.as_ref().filter(|_| args.given("layers")) {
        let have = widths(&ckpt.net);
        if *layers != have {
            return differs("layers", join(layers), format!("layers {}", join(&have)));
        }
    }
    if args.given("loss") {
        let theirs = ckpt.net.loss_kind();
        let ours = args.loss.map(value_name).unwrap_or_default();
        let same = matches!(
            (args.loss, theirs),
            (Some(LossArg::Mse), Loss::Mse)
                | (Some(LossArg::Logistic), Loss::Logistic)
                | (Some(LossArg::SoftmaxCe), Loss::SoftmaxCrossEntropy)
        );
        if !same {
            return differs("loss", ours, format!("loss {theirs:?}"));
        }
    }
    if args.given("seed") && args.seed != ckpt.seed {
        return differs("seed", args.seed.to_string(), format!("seed {}", ckpt.seed));
    }
    for id in ["schedule", "lr"] {
        if args.given(id) {
            let ours = schedule(args)?;
            if ours != ckpt.schedule {
                return differs(id, ours.to_string(), format!("schedule {}", ckpt.schedule));
            }
        }
    }
    Ok(())
}

/// Refuses a `--batch` (or a training set) other than the checkpoint's: the
/// checkpoint does not store them, but its step count must be its completed
/// epochs times the minibatches of one epoch, and a resumed run is bitwise
/// equal to an uninterrupted one only with the same minibatches.
fn check_resume_batches(args: &Args, ckpt: &Checkpoint, rows: usize) -> Result<(), String> {
    let per_epoch = rows.div_ceil(args.batch) as u64;
    if ckpt.steps != ckpt.epochs.saturating_mul(per_epoch) {
        return Err(format!(
            "--batch {} on {rows} training rows makes {per_epoch} steps per epoch, but the \
             checkpoint took {} step(s) in {} epoch(s); give the --batch and --data it was \
             trained with",
            args.batch, ckpt.steps, ckpt.epochs
        ));
    }
    Ok(())
}

/// The training and test sets named by `--data`; `loss` (if known) decides
/// how a CSV file's labels are read.
pub fn load_data(args: &Args, loss: Option<Loss>) -> Result<(Dataset, Dataset), String> {
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
        let kind = match loss {
            Some(Loss::Mse) => LabelKind::Value,
            Some(Loss::Logistic) => LabelKind::Sign,
            _ => LabelKind::Class,
        };
        let all = read_csv(file, kind).map_err(|e| format!("{file}: {e}"))?;
        if all.len() < 5 {
            return Err(format!(
                "{file}: {} data rows; at least 5 are needed (the last 20 % are the test set)",
                all.len()
            ));
        }
        let cut = all.len() - all.len() / 5;
        return Ok((all.subset(0, cut), all.subset(cut, all.len())));
    }
    Err(format!(
        "--data {:?}: expected synthetic, mnist:DIR or csv:FILE",
        args.data
    ))
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
    Dataset::new(x, n, 2, Targets::Classes(&y)).expect("generated data is finite")
}

/// `--load`: a file with this crate's architecture metadata loads as it is;
/// a plain PyTorch state dict (`safetensors.torch.save_file(seq.state_dict(),
/// f)`, no metadata) loads by name into the network the flags describe
/// (`--layers`, `--act`, `--norm`, `--residual`), or, without `--layers`,
/// into the network its names and shapes describe, with `--act` (and
/// `--dropout`) between the layers. In evaluation mode either way.
fn load_network(args: &Args, path: &Path, train: &Dataset, loss: Loss) -> Result<Mlp, String> {
    let fail = |e: String| format!("--load {}: {e}", path.display());
    let st = read_file(path).map_err(|e| fail(e.to_string()))?;
    if st.metadata.contains_key("backprop.format_version") {
        return mlp_from_safetensors(&st).map_err(|e| fail(e.to_string()));
    }
    if !args.given("layers") {
        let mut fill = vec![Layer::Act(activation(args.act))];
        if args.dropout > 0.0 {
            fill.push(Layer::Dropout { p: args.dropout });
        }
        return mlp_from_state_dict(&st, &fill, loss).map_err(|e| {
            fail(format!(
                "{e} (give --layers, --act, --norm and --residual to describe the network)"
            ))
        });
    }
    let mut net = build_net(args, train, loss)?;
    load_weights_into(&mut net, &st).map_err(|e| {
        fail(format!(
            "{e} (a file without this crate's metadata is loaded by name into the network \
             that --layers, --act, --norm and --residual describe: {})",
            widths(&net)
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ))
    })?;
    net.set_training(false);
    Ok(net)
}

/// The network `--layers`, `--act`, `--norm`, `--residual` and `--init`
/// describe for this data (default widths fit the data).
pub fn build_net(args: &Args, train: &Dataset, loss: Loss) -> Result<Mlp, String> {
    let classes = match train.labels() {
        // Labels are below `csv::MAX_CLASSES` (or 10 for MNIST): no overflow.
        Targets::Classes(c) => c.iter().max().map_or(1, |m| m.saturating_add(1)),
        Targets::Values(y) => y.cols(),
        Targets::Signs(_) => 1,
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
    // Counted before building, so the limit holds before any allocation.
    let params = planned_params(&layers, args.norm != Norm::None);
    if params.is_none_or(|p| p > args.max_params) {
        return Err(format!(
            "--layers {}: {} parameters, more than --max-params {}",
            join(&layers),
            params.map_or_else(|| "too many".to_string(), |p| p.to_string()),
            args.max_params
        ));
    }
    let act = activation(args.act);
    let init = match args.init {
        InitArg::He => Init::He,
        InitArg::Xavier => Init::Xavier,
        InitArg::Lecun => Init::LeCun,
    };
    let norm = args.norm;
    let dropout = args.dropout;
    let hidden = |b: MlpBuilder, w: usize| {
        let b = b.dense(w);
        let b = match norm {
            Norm::None => b,
            Norm::Batch => b.batch_norm(),
            Norm::Layer => b.layer_norm(),
        };
        let b = b.act(act);
        if dropout > 0.0 {
            b.dropout(dropout)
        } else {
            b
        }
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

/// The activation `--act` names.
fn activation(act: Act) -> Activation {
    match act {
        Act::Relu => Activation::Relu,
        Act::LeakyRelu => Activation::LeakyRelu { slope: 0.01 },
        Act::Tanh => Activation::Tanh,
        Act::Sigmoid => Activation::Sigmoid,
        Act::Gelu => Activation::Gelu,
        Act::GeluErf => Activation::GeluErf,
        Act::Softplus => Activation::Softplus,
        Act::Identity => Activation::Identity,
    }
}

/// The parameter count of the network `build_net` makes from `layers`
/// (a dense layer `fan_in·fan_out + fan_out`, a norm after each hidden one
/// `2·width`), or `None` if it overflows.
fn planned_params(layers: &[usize], norm: bool) -> Option<usize> {
    let mut total = 0usize;
    for (i, pair) in layers.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let dense = fan_in.checked_mul(fan_out)?.checked_add(fan_out)?;
        let hidden = i + 2 < layers.len();
        let norm = if norm && hidden {
            fan_out.checked_mul(2)?
        } else {
            0
        };
        total = total.checked_add(dense)?.checked_add(norm)?;
    }
    Some(total)
}

/// The optimizer `--opt` and `--weight-decay` name, for `n` parameters.
pub fn optimizer(args: &Args, n: usize) -> Result<Box<dyn Optimizer + Send>, String> {
    let wd = args.weight_decay.unwrap_or(0.0);
    let l2 = if wd != 0.0 {
        WeightDecay::L2(wd)
    } else {
        WeightDecay::None
    };
    let fail = |e: backprop::optim::OptimError| format!("--opt/--weight-decay: {e}");
    let sgd = |momentum, nesterov| -> Result<Box<dyn Optimizer + Send>, String> {
        let cfg = SgdConfig {
            momentum,
            nesterov,
            weight_decay: l2,
        };
        Ok(Box::new(Sgd::try_new(n, cfg).map_err(fail)?))
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
            Ok(Box::new(Adam::try_new(n, cfg).map_err(fail)?))
        }
        Opt::Adamw => {
            let cfg = AdamConfig::adamw(args.weight_decay.unwrap_or(0.01));
            Ok(Box::new(Adam::try_new(n, cfg).map_err(fail)?))
        }
    }
}

/// One epoch's results.
#[derive(Clone, Debug)]
pub struct EpochRow {
    pub epoch: u64,
    pub seconds: f64,
    pub samples_per_s: f64,
    pub train_loss: f32,
    pub test_loss: f32,
    pub test_accuracy: Option<f32>,
}

/// What the epoch loop reports as it goes.
pub trait Progress {
    /// Minibatch `done` of `total` of epoch `epoch` had loss `loss`.
    fn batch(&mut self, epoch: u64, done: usize, total: usize, loss: f32);
    /// Epoch `row.epoch` is done (and checkpointed, if asked).
    fn epoch(&mut self, row: &EpochRow);
}

/// Trains up to `--epochs` epochs, evaluating on the test set and writing
/// the checkpoint after each. A checkpoint is written only for a state whose
/// parameters, statistics, optimizer state and evaluation are all finite; a
/// run that leaves any of them non-finite stops with an error, and the last
/// checkpoint written stays as it was.
pub fn train_epochs(
    setup: &mut Setup,
    args: &Args,
    progress: &mut dyn Progress,
) -> Result<Vec<EpochRow>, String> {
    let Setup {
        train,
        test,
        trainer,
        lead,
    } = setup;
    let mut rows = Vec::new();
    let mut saved: Option<u64> = None;
    let kept = |saved: Option<u64>| match (&args.checkpoint, saved) {
        (Some(c), Some(e)) => format!(
            "\nthe last checkpoint, written after epoch {e}, is kept in {}",
            c.display()
        ),
        (Some(c), None) if c.exists() => {
            format!("\n{} was not changed by this run", c.display())
        }
        _ => String::new(),
    };
    while trainer.epochs() < args.epochs {
        let epoch = trainer.epochs() + 1;
        let total = train.len().div_ceil(args.batch);
        let stats = trainer
            .train_epoch_with(train, args.batch, |done, _, l| {
                if *lead {
                    progress.batch(epoch, done, total, l)
                }
            })
            .map_err(|e| match e {
                TrainError::Diverged { .. } => format!("{e}{}", kept(saved)),
                _ => format!("training: {e}"),
            })?;
        let eval = trainer
            .evaluate(test, 1000)
            .map_err(|e| format!("evaluation: {e}"))?;
        let net = trainer.net();
        let state = trainer.optimizer().state();
        let bad = if !net.params().iter().all(|p| p.is_finite()) {
            Some("parameters")
        } else if !net.buffers().iter().all(|p| p.is_finite()) {
            Some("normalisation statistics")
        } else if !state
            .buffers
            .iter()
            .all(|b| b.iter().all(|p| p.is_finite()))
        {
            Some("optimizer state")
        } else if !eval.loss.is_finite() {
            Some("test loss")
        } else {
            None
        };
        if let Some(what) = bad {
            return Err(format!(
                "training diverged in epoch {epoch}: its last update left the {what} NaN or \
                 infinite (test loss {}) — try a lower learning rate{}",
                eval.loss,
                kept(saved)
            ));
        }
        let row = EpochRow {
            epoch,
            seconds: stats.seconds,
            samples_per_s: stats.samples as f64 / stats.seconds,
            train_loss: stats.mean_loss,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy(),
        };
        if args.checkpoint.is_some() {
            // Every rank: the optimizer state's slices to every rank.
            trainer.sync_optimizer();
        }
        if let (Some(path), true) = (&args.checkpoint, *lead) {
            save_checkpoint(trainer, path).map_err(|e| format!("--checkpoint: {e}"))?;
            saved = Some(epoch);
        }
        if *lead {
            progress.epoch(&row);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The CSV `--predict` writes: a header, then one line per row of `data`
/// with the target, the prediction and (softmax, logistic) the probabilities.
/// Runs in chunks of 1000 rows, through one inference workspace.
pub fn predictions_csv(net: &Mlp, data: &Dataset) -> Result<String, String> {
    use backprop::nn::{Inference, Prediction};
    use std::fmt::Write as _;
    let fail = |e: backprop::nn::StepError| format!("--predict: {e}");
    let loss = net.loss_kind();
    let k = net.output_dim();
    let names = |what: &str, n: usize| -> Vec<String> {
        match n {
            1 => vec![what.to_string()],
            _ => (0..n).map(|j| format!("{what}{j}")).collect(),
        }
    };
    let w = if loss == Loss::Mse { k } else { 1 };
    let mut header = names("target", w);
    header.extend(names("prediction", w));
    match loss {
        Loss::Mse => {}
        Loss::Logistic => header.push("p_positive".into()),
        Loss::SoftmaxCrossEntropy => header.extend((0..k).map(|j| format!("p{j}"))),
    }
    let mut s = header.join(",") + "\n";
    let mut ws = Inference::default();
    let mut buf = backprop::train::Batch::default();
    for lo in (0..data.len()).step_by(1000) {
        let hi = (lo + 1000).min(data.len());
        let (x, targets) = data.slice(lo, hi, &mut buf);
        // One forward pass gives both the prediction and the probabilities.
        let h = net.infer(x, &mut ws).map_err(fail)?;
        let pred = loss.predict(h);
        let proba = match loss {
            Loss::Mse => Vec::new(),
            _ => loss.probabilities(h).map_err(fail)?,
        };
        let per = proba.len() / (hi - lo);
        for i in 0..hi - lo {
            let mut fields: Vec<String> = Vec::new();
            match targets {
                Targets::Classes(c) => fields.push(c[i].to_string()),
                Targets::Signs(t) => fields.push(t[i].to_string()),
                Targets::Values(y) => fields.extend((0..y.cols()).map(|j| y.get(i, j).to_string())),
            }
            match &pred {
                Prediction::Classes(c) => fields.push(c[i].to_string()),
                Prediction::Signs(t) => fields.push(t[i].to_string()),
                Prediction::Values { data, width } => {
                    fields.extend(data[i * width..(i + 1) * width].iter().map(f32::to_string))
                }
            }
            fields.extend(proba[i * per..(i + 1) * per].iter().map(f32::to_string));
            let _ = writeln!(s, "{}", fields.join(","));
        }
    }
    Ok(s)
}
