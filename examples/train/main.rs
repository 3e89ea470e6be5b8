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
use std::path::Path;
use std::process::ExitCode;

use backprop::io::{save_mlp, write_atomic};
use backprop::nn::{Evaluation, Mlp};
use indicatif::{ProgressBar, ProgressStyle};

mod cli;
use backprop_support::plot::{row_svg, save_svg, Chart, Series};
use cli::EpochRow;

fn main() -> ExitCode {
    let args = match cli::parse_args(std::env::args_os()) {
        Ok(a) => a,
        // Usage errors exit with 2, --help and --version with 0, as clap does.
        Err(e) => e.exit(),
    };
    let group = match backprop::dist::world() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: MPI: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&args, group.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match group {
            // The other ranks may be waiting for this one: end them all.
            Some(g) => {
                eprintln!("error (rank {}): {e}", g.rank());
                g.abort(1)
            }
            None => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A progress bar per epoch on stderr (hidden when stderr is not a
/// terminal) and a summary line per epoch.
#[derive(Default)]
struct Terminal {
    bar: Option<ProgressBar>,
}

impl cli::Progress for Terminal {
    fn batch(&mut self, epoch: u64, done: usize, total: usize, loss: f32) {
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} loss {msg} ({per_sec})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(epoch.to_string());
            bar
        });
        bar.set_position(done as u64);
        bar.set_message(format!("{loss:.4}"));
    }

    fn epoch(&mut self, row: &EpochRow) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
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
    }
}

fn run(args: &cli::Args, group: Option<backprop::dist::Group>) -> Result<(), String> {
    cli::validate(args)?;
    cli::check_outputs(args)?;
    let mut setup = cli::setup(args)?;
    let ranks = group.as_ref().map_or(1, |g| g.size());
    if let Some(g) = group.clone() {
        setup = cli::join_group(setup, args, g)?;
    }
    let lead = setup.lead;
    // Only the lead process (rank 0) reports and writes files.
    macro_rules! say {
        ($($t:tt)*) => { if lead { eprintln!($($t)*); } };
    }
    if let Some(path) = &args.resume {
        say!(
            "resuming {} after epoch {}",
            path.display(),
            setup.trainer.epochs()
        );
    }
    say!(
        "{} training / {} test samples, {} parameters, {} kernels, {} threads{}",
        setup.train.len(),
        setup.test.len(),
        setup.trainer.net().num_params(),
        backprop::active_isa(),
        backprop::num_threads(),
        match (&group, setup.trainer.net().parallelism()) {
            (Some(_), backprop::nn::BatchParallelism::Shards(s)) =>
                format!(" per rank, {ranks} ranks, {s} shards"),
            _ => String::new(),
        }
    );
    let mut terminal = Terminal::default();
    let result = cli::train_epochs(&mut setup, args, &mut terminal);
    if let Some(bar) = terminal.bar.take() {
        bar.finish_and_clear();
    }
    let rows = result?;
    // The final network on the test set: printed when no epoch ran (a loaded
    // or resumed network evaluated as it is), reported in --json always.
    let final_eval = setup
        .trainer
        .evaluate(&setup.test, 1000)
        .map_err(|e| format!("evaluation: {e}"))?;
    if !lead {
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!(
            "no epoch to train; test loss {:.4}{}",
            final_eval.loss,
            final_eval.accuracy().map_or(String::new(), |a| format!(
                ", test accuracy {:.2} %",
                100.0 * a
            ))
        );
    }
    let net = setup.trainer.net();
    if let Some(path) = &args.predict {
        let csv = cli::predictions_csv(net, &setup.test)?;
        write_atomic(path, csv.as_bytes()).map_err(|e| format!("--predict: {e}"))?;
    }
    if let Some(path) = &args.save {
        save_mlp(net, path).map_err(|e| format!("--save: {e}"))?;
    }
    if let Some(path) = &args.plot {
        write_plot(path, &rows).map_err(|e| format!("--plot {}: {e}", path.display()))?;
    }
    if args.json {
        let comm = group.as_ref().map(|g| g.stats());
        println!("{}", json_report(&rows, net, &final_eval, ranks, comm));
    }
    Ok(())
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

fn json_report(
    rows: &[EpochRow],
    net: &Mlp,
    last: &Evaluation,
    ranks: usize,
    comm: Option<backprop::dist::CommStats>,
) -> String {
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
        "],\"test_loss\":{},\"test_accuracy\":{},\"threads\":{},\"ranks\":{},\"shards\":{},\"comm_bytes_sent\":{},\"comm_seconds\":{},\"comm_background_seconds\":{},\"isa\":\"{}\",\"params_checksum\":\"{}\",\"peak_rss_mb\":{}}}",
        json_number(last.loss as f64),
        last.accuracy().map_or("null".into(), |a| json_number(a as f64)),
        backprop::num_threads(),
        ranks,
        match net.parallelism() {
            backprop::nn::BatchParallelism::Shards(s) => s.to_string(),
            backprop::nn::BatchParallelism::SplitGemm => "null".into(),
        },
        comm.map_or("null".into(), |c| c.bytes_sent.to_string()),
        comm.map_or("null".into(), |c| json_number(c.seconds)),
        comm.map_or("null".into(), |c| json_number(c.background_seconds)),
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
