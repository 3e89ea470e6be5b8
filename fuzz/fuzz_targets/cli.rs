//! The command-line trainer's flag and data path (`examples/train/cli.rs`,
//! included as it is): generated command lines over small generated files.
//!
//! The input builds a scratch directory (a CSV file, an IDX directory, a
//! network file and a checkpoint, each from a valid file with fuzzed bytes
//! or fuzzed text) and a command line of the trainer's flags with values
//! drawn from edge cases (NaN, infinities, negatives, huge integers, empty
//! strings, paths that do or do not exist) or from the input, after a
//! `--max-params 100000` that keeps networks small. Then:
//!
//! * parsing ([`cli::parse_args`]) returns arguments or clap's error;
//! * validation, the output-path checks and the setup (data, network,
//!   resumption) return `Ok` or an error message, never panic, abort or
//!   allocate without bound (libFuzzer's malloc limit catches the latter);
//! * a setup that succeeds is consistent: non-empty training and test sets
//!   whose width is the network's input width, at most `MAX_ELEMENTS`
//!   parameters;
//! * for a small network, one epoch then runs (the flag's epoch count capped
//!   at one more): it either succeeds with finite losses or fails with a
//!   message; and a checkpoint it wrote loads back bitwise equal to the
//!   trainer's state, and is always finite, also after a failure.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use backprop::io::{load_checkpoint, save_checkpoint, save_mlp};
use backprop::nn::{Activation, Loss, MlpBuilder, MAX_ELEMENTS};
use backprop::optim::{Adam, AdamConfig, Schedule};
use backprop::train::Trainer;
use libfuzzer_sys::fuzz_target;

#[path = "../../examples/train/cli.rs"]
mod cli;

/// Networks up to this many parameters × training samples are trained.
const MAX_WORK: usize = 200_000;

#[derive(Arbitrary, Debug)]
enum Value {
    Int(u16),
    Float(f32),
    Special(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// (flag index, value) pairs.
    flags: Vec<(u8, Value)>,
    /// Which data source `--data` names.
    data: u8,
    /// The CSV file's text.
    csv: String,
    /// (position, xor mask) edits of the valid IDX, network and checkpoint
    /// files.
    edits: Vec<(u16, u8)>,
}

const FLAGS: &[&str] = &[
    "--data",
    "--layers",
    "--act",
    "--norm",
    "--residual",
    "--loss",
    "--opt",
    "--lr",
    "--weight-decay",
    "--schedule",
    "--init",
    "--batch",
    "--epochs",
    "--threads",
    "--seed",
    "--save",
    "--load",
    "--checkpoint",
    "--resume",
    "--plot",
    "--json",
    "--bogus",
];

const SPECIALS: &[&str] = &[
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "1",
    "2",
    "1e40",
    "-0",
    "18446744073709551615",
    "4294967296",
    "",
    "4,8,3",
    "4,0,3",
    "4",
    "4,18446744073709551615,3",
    "4,4294967296,3",
    "adam",
    "adamw",
    "sgd",
    "momentum",
    "batch",
    "layer",
    "mse",
    "logistic",
    "softmax-ce",
    "constant:0.01",
    "step_decay:0.01:1e32:1",
    "cosine:1:0:0",
    "warmup:1:0.5:constant:0.1",
    "csv:d.csv",
    "mnist:m",
    "synthetic",
    "csv:/dev/zero",
    "csv:missing.csv",
    "net.st",
    "ck.st",
    "out/x.st",
    "nodir/x.st",
    "out",
    "/dev/zero",
];

/// The scratch directory of this process (fuzzing runs one input at a time).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("backprop-fuzz-cli-{}", std::process::id()));
        std::fs::create_dir_all(d.join("m")).expect("scratch directory");
        std::fs::create_dir_all(d.join("out")).expect("scratch directory");
        d
    })
}

/// A valid IDX file of unsigned bytes.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// `bytes` with the input's edits applied (positions modulo the length).
fn edited(mut bytes: Vec<u8>, edits: &[(u16, u8)]) -> Vec<u8> {
    if !bytes.is_empty() {
        for &(at, mask) in edits {
            let i = usize::from(at) % bytes.len();
            bytes[i] ^= mask;
        }
    }
    bytes
}

/// A valid network file and checkpoint for 4-feature, 3-class data.
fn valid_files() -> &'static (Vec<u8>, Vec<u8>) {
    static FILES: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = scratch();
        let net = MlpBuilder::new(4)
            .dense(8)
            .act(Activation::Relu)
            .dense(3)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(42)
            .expect("a small network");
        save_mlp(&net, dir.join("valid-net.st")).expect("saving");
        let opt = Adam::new(net.num_params(), AdamConfig::default());
        let t = Trainer::new(net, Box::new(opt), Schedule::constant(1e-3), 42);
        save_checkpoint(&t, dir.join("valid-ck.st")).expect("saving");
        (
            std::fs::read(dir.join("valid-net.st")).expect("reading"),
            std::fs::read(dir.join("valid-ck.st")).expect("reading"),
        )
    })
}

fn write_files(input: &Input) {
    let dir = scratch();
    let (net, ck) = valid_files();
    std::fs::write(dir.join("d.csv"), &input.csv).expect("writing");
    std::fs::write(dir.join("net.st"), edited(net.clone(), &input.edits)).expect("writing");
    std::fs::write(dir.join("ck.st"), edited(ck.clone(), &input.edits)).expect("writing");
    let pixels: Vec<u8> = (0..24u8).collect();
    let labels = [1u8, 2, 3, 4, 5, 6];
    for set in ["train", "t10k"] {
        let images = edited(idx(&[6, 2, 2], &pixels), &input.edits);
        std::fs::write(dir.join(format!("m/{set}-images-idx3-ubyte")), images).expect("writing");
        std::fs::write(
            dir.join(format!("m/{set}-labels-idx1-ubyte")),
            idx(&[6], &labels),
        )
        .expect("writing");
    }
    let _ = std::fs::remove_file(dir.join("out/x.st"));
}

fn argv(input: &Input) -> Vec<String> {
    let dir = scratch();
    // A parameter limit that keeps every network well inside the RSS limit.
    let mut args = vec!["train".to_string(), "--max-params".into(), "100000".into()];
    let data = match input.data % 3 {
        0 => format!("csv:{}", dir.join("d.csv").display()),
        1 => format!("mnist:{}", dir.join("m").display()),
        _ => format!("csv:{}", dir.join("missing.csv").display()),
    };
    args.extend(["--data".to_string(), data]);
    for (f, v) in input.flags.iter().take(12) {
        let flag = FLAGS[usize::from(*f) % FLAGS.len()];
        let value = match v {
            Value::Int(i) => i.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Special(s) => SPECIALS[usize::from(*s) % SPECIALS.len()].to_string(),
            Value::Text(t) => t.clone(),
        };
        // Relative file names live in the scratch directory.
        let value = if value.ends_with(".st") || value.starts_with("out") {
            dir.join(value).display().to_string()
        } else if let Some(rest) = value.strip_prefix("csv:").filter(|r| !r.starts_with('/')) {
            format!("csv:{}", dir.join(rest).display())
        } else if let Some(rest) = value.strip_prefix("mnist:") {
            format!("mnist:{}", dir.join(rest).display())
        } else {
            value
        };
        args.push(flag.to_string());
        if !matches!(flag, "--residual" | "--json") {
            args.push(value);
        }
    }
    args
}

struct Quiet;

impl cli::Progress for Quiet {
    fn batch(&mut self, _: u64, _: usize, _: usize, loss: f32) {
        assert!(loss.is_finite(), "a finite minibatch loss is reported");
    }
    fn epoch(&mut self, row: &cli::EpochRow) {
        assert!(row.train_loss.is_finite() && row.test_loss.is_finite());
    }
}

fuzz_target!(|input: Input| {
    write_files(&input);
    let Ok(mut args) = cli::parse_args(argv(&input)) else {
        return; // clap's usage error: a value, not a panic
    };
    // The synthetic set (20 000 samples) is too slow to fuzz with, and a
    // thousand threads per input too (both are valid).
    if args.data == "synthetic" || args.threads.is_some_and(|t| t > 4) {
        return;
    }
    let err = |r: Result<(), String>| r.err().inspect(|e| assert!(!e.is_empty()));
    if err(cli::validate(&args)).is_some() || err(cli::check_outputs(&args)).is_some() {
        return;
    }
    let mut setup = match cli::setup(&args) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    let net = setup.trainer.net();
    assert!(!setup.train.is_empty() && !setup.test.is_empty());
    assert_eq!(net.input_dim(), setup.train.features());
    assert_eq!(setup.test.features(), setup.train.features());
    assert!(net.num_params() <= MAX_ELEMENTS);
    if net.num_params().saturating_mul(setup.train.len()) > MAX_WORK {
        return;
    }
    args.epochs = args.epochs.min(setup.trainer.epochs() + 1);
    let result = cli::train_epochs(&mut setup, &args, &mut Quiet);
    if let Some(path) = &args.checkpoint {
        if let Ok(c) = load_checkpoint(path) {
            assert!(c.net.params().iter().all(|p| p.is_finite()));
            if result.as_ref().is_ok_and(|rows| !rows.is_empty()) {
                let t = &setup.trainer;
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(c.epochs, t.epochs());
                assert_eq!(bits(c.net.params()), bits(t.net().params()));
                assert_eq!(bits(c.net.buffers()), bits(t.net().buffers()));
            }
        }
    }
    match result {
        Ok(rows) => assert!(rows.len() <= 1),
        Err(e) => assert!(!e.is_empty()),
    }
});
