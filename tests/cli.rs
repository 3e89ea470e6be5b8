//! The command-line trainer (`examples/train`) run as a user runs it: bad
//! flags, crafted data files, diverging runs, unwritable outputs, resumed
//! runs with contradicting flags, corrupted checkpoints and `kill -9` during
//! checkpointing. Every failure must be a message and exit code 1 (2 for a
//! usage error), never a panic (101) or an abort (134), and no work may be
//! lost. These are the reproductions of issue 11.
//!
//! The binary is an example, which integration tests cannot depend on, so
//! the first test to need it builds it with the cargo that runs the tests,
//! into the same target directory and profile (a no-op when it is fresh).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use backprop::io::{load_checkpoint, to_bytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The `train` example, built once for this test binary's profile.
fn train_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // This test runs as <target>/<profile>/deps/cli-<hash>.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("a target directory");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a profile directory");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--example", "train", "--target-dir"])
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        // The library with the features this test was built with, so both
        // builds share its artifacts.
        if cfg!(feature = "gzip") {
            cmd.args(["--features", "gzip"]);
        }
        let status = cmd
            .status()
            .expect("running cargo to build the train example");
        assert!(status.success(), "building the train example failed");
        profile_dir
            .join("examples")
            .join(format!("train{}", std::env::consts::EXE_SUFFIX))
    })
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("backprop-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the trainer in `dir` with `args`.
fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(train_bin())
        .current_dir(dir)
        .args(args)
        .env_remove("BACKPROP_NUM_THREADS")
        .output()
        .expect("running the train example")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run failed cleanly (exit 1) with `message` on stderr, and trained
/// nothing.
#[track_caller]
fn assert_refused(o: &Output, message: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit status of a refusal: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(message), "expected {message:?} in:\n{err}");
}

/// The `"params_checksum"` of a run's `--json` report.
fn params_checksum(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let key = "\"params_checksum\":\"";
    let at = out
        .find(key)
        .unwrap_or_else(|| panic!("no checksum in {out:?}"))
        + key.len();
    out[at..at + 16].to_string()
}

/// A small 3-class CSV problem: `rows` rows of 4 features.
fn write_csv(path: &Path, rows: usize) {
    let mut rng = StdRng::seed_from_u64(11);
    let mut text = String::new();
    for i in 0..rows {
        let c = i % 3;
        for _ in 0..4 {
            text += &format!("{:.3},", c as f32 + rng.random_range(-1.0f32..1.0));
        }
        text += &format!("{c}\n");
    }
    std::fs::write(path, text).unwrap();
}

/// An IDX file of unsigned bytes.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// Items 1 and 2: numbers that used to panic or were silently replaced.
#[test]
fn bad_numbers_in_flags_are_refused_with_a_message() {
    let dir = scratch("flags");
    for (args, message) in [
        (
            &["--batch", "0"][..],
            "--batch 0: the minibatch size must be at least 1",
        ),
        (
            &["--lr", "nan"],
            "--lr NaN: schedule constant: LR = NaN must be finite and >= 0",
        ),
        (
            &["--lr", "inf"],
            "--lr inf: schedule constant: LR = inf must be finite and >= 0",
        ),
        (
            &["--lr=-1"],
            "--lr -1: schedule constant: LR = -1 must be finite and >= 0",
        ),
        (
            &["--weight-decay", "nan"],
            "--weight-decay NaN: must be finite and >= 0",
        ),
        (
            &["--weight-decay=-1"],
            "--weight-decay -1: must be finite and >= 0",
        ),
        (
            &["--threads", "100000"],
            "--threads 100000: must be 1 to 1024",
        ),
        (&["--schedule", "bogus:1"], "--schedule: "),
        (&["--lr", "nan", "--schedule", "constant:0.1"], "--lr NaN: "),
    ] {
        assert_refused(&run(&dir, args), message);
    }
    // Usage errors are clap's: exit 2, no panic.
    let o = run(&dir, &["--batch", "-3"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Environment variables are checked too.
    let o = Command::new(train_bin())
        .current_dir(&dir)
        .env("BACKPROP_ISA", "sse9")
        .output()
        .unwrap();
    assert_refused(&o, "BACKPROP_ISA: ");
    let o = Command::new(train_bin())
        .current_dir(&dir)
        .env("BACKPROP_NUM_THREADS", "99999999")
        .output()
        .unwrap();
    assert_refused(&o, "BACKPROP_NUM_THREADS=99999999: must be at most 1024");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Item 2: `--weight-decay 0` with AdamW means no decay (the default is
/// 0.01), and the two runs differ.
#[test]
fn adamw_without_weight_decay_can_be_asked_for() {
    let dir = scratch("adamw");
    write_csv(&dir.join("d.csv"), 40);
    let common = [
        "--data",
        "csv:d.csv",
        "--layers",
        "4,8,3",
        "--epochs",
        "2",
        "--json",
    ];
    let with = |extra: &[&str]| {
        let args: Vec<&str> = common.iter().chain(extra).copied().collect();
        let o = run(&dir, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        params_checksum(&o)
    };
    let default = with(&["--opt", "adamw"]);
    assert_eq!(default, with(&["--opt", "adamw", "--weight-decay", "0.01"]));
    assert_ne!(default, with(&["--opt", "adamw", "--weight-decay", "0"]));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Items 3 to 5: sizes derived from the data are bounded before anything is
/// allocated.
#[test]
fn sizes_from_the_data_are_refused_before_allocating() {
    let dir = scratch("sizes");
    std::fs::write(dir.join("big.csv"), "1,2,3,4,0\n1,2,3,4,1000000000\n").unwrap();
    assert_refused(
        &run(&dir, &["--data", "csv:big.csv"]),
        "big.csv: line 2: label \"1000000000\" is not a class index below 1048576",
    );
    std::fs::write(
        dir.join("wrap.csv"),
        "1,2,3,4,0\n1,2,3,4,18446744073709551615\n",
    )
    .unwrap();
    assert_refused(
        &run(&dir, &["--data", "csv:wrap.csv"]),
        "label \"18446744073709551615\" is not a class index below 1048576",
    );
    // IDX headers: 0 images of 65535 × 65535, of (2³² − 1)², of 2⁵⁵ pixels.
    for (name, rows, cols) in [
        ("a", 65535u32, 65535u32),
        ("b", u32::MAX, u32::MAX),
        ("c", 1 << 28, 1 << 27),
    ] {
        let m = dir.join(name);
        std::fs::create_dir(&m).unwrap();
        for set in ["train", "t10k"] {
            std::fs::write(
                m.join(format!("{set}-images-idx3-ubyte")),
                idx(&[0, rows, cols], &[]),
            )
            .unwrap();
            std::fs::write(m.join(format!("{set}-labels-idx1-ubyte")), idx(&[0], &[])).unwrap();
        }
        let data = format!("mnist:{name}");
        assert_refused(
            &run(&dir, &["--data", &data]),
            &format!("--data {data}: the training set is empty"),
        );
    }
    // A network over --max-params is refused before it is built (the
    // count is the one the builder will make: norms and residuals included).
    write_csv(&dir.join("d.csv"), 20);
    assert_refused(
        &run(&dir, &["--data", "csv:d.csv", "--layers", "4,4294967296,3"]),
        "--layers 4,4294967296,3: 34359738371 parameters, more than --max-params 268435456",
    );
    assert_refused(
        &run(
            &dir,
            &[
                "--data",
                "csv:d.csv",
                "--layers",
                "4,18446744073709551615,3",
            ],
        ),
        "--layers 4,18446744073709551615,3: too many parameters, more than --max-params",
    );
    let exact = [
        "--data",
        "csv:d.csv",
        "--layers",
        "4,8,8,3",
        "--norm",
        "batch",
        "--residual",
    ];
    let o = run(
        &dir,
        &[&exact[..], &["--epochs", "1", "--max-params", "171"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(" 171 parameters"), "{}", stderr(&o));
    assert_refused(
        &run(&dir, &[&exact[..], &["--max-params", "170"]].concat()),
        "--layers 4,8,8,3: 171 parameters, more than --max-params 170",
    );
    // Without the limit, the library's own cap still holds.
    assert_refused(
        &run(
            &dir,
            &[
                "--data",
                "csv:d.csv",
                "--layers",
                "4,4294967296,3",
                "--max-params",
                "18446744073709551615",
            ],
        ),
        "network: layer 0 makes the network larger than 2147483648 parameters",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Item 6: the last step of epoch 3 blows the weights up. The run stops
/// with an error, the checkpoint holds epoch 2 (finite), and it resumes.
#[test]
fn a_diverging_epoch_never_reaches_the_checkpoint() {
    let dir = scratch("diverge");
    write_csv(&dir.join("d.csv"), 40);
    let args = [
        "--data",
        "csv:d.csv",
        "--opt",
        "sgd",
        "--batch",
        "1000",
        "--layers",
        "4,8,3",
        "--schedule",
        "step_decay:0.01:1e32:2",
        "--epochs",
        "5",
        "--checkpoint",
        "ck",
    ];
    let o = run(&dir, &args);
    assert_refused(
        &o,
        "error: training diverged in epoch 3: its last update left the test loss NaN or \
         infinite (test loss NaN) — try a lower learning rate\n\
         the last checkpoint, written after epoch 2, is kept in ck",
    );
    let ckpt = load_checkpoint(dir.join("ck")).unwrap();
    assert_eq!(ckpt.epochs, 2);
    assert!(ckpt.net.params().iter().all(|p| p.is_finite()));
    // It resumes: to epoch 2 (nothing to do) cleanly, and on into the same
    // divergence, again without touching the checkpoint.
    let before = std::fs::read(dir.join("ck")).unwrap();
    let resume = |epochs: &str| {
        let mut a: Vec<&str> = args.to_vec();
        a[11] = epochs;
        a.extend(["--resume", "ck"]);
        run(&dir, &a)
    };
    let o = resume("2");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_refused(&resume("5"), "training diverged in epoch 3");
    assert_eq!(std::fs::read(dir.join("ck")).unwrap(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Item 8: every output path is checked before training, and errors name the
/// path given.
#[test]
fn output_paths_are_checked_before_training() {
    let dir = scratch("outputs");
    std::fs::create_dir(dir.join("adir")).unwrap();
    for (flag, path, message) in [
        (
            "--save",
            "nodir/m.st",
            "--save: nodir/m.st: cannot create a file in nodir: ",
        ),
        (
            "--checkpoint",
            "nodir/ck",
            "--checkpoint: nodir/ck: cannot create a file in nodir: ",
        ),
        (
            "--plot",
            "nodir/p.svg",
            "--plot: nodir/p.svg: cannot create a file in nodir: ",
        ),
        ("--save", "adir", "--save: adir: is a directory"),
    ] {
        let o = run(&dir, &["--epochs", "50", flag, path]);
        assert_refused(&o, message);
        let err = stderr(&o);
        assert!(!err.contains("epoch"), "trained before failing: {err}");
        assert!(!err.contains(".tmp-"), "{err}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only adir");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Item 9: under `--resume`, a flag that contradicts the checkpoint is
/// refused by name; one that agrees with it is accepted.
#[test]
fn resume_refuses_every_contradicting_flag() {
    let dir = scratch("resume-flags");
    write_csv(&dir.join("d.csv"), 40);
    let base = ["--data", "csv:d.csv", "--layers", "4,16,3", "--epochs", "1"];
    let o = run(&dir, &[&base[..], &["--checkpoint", "ck"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let resume = |extra: &[&str]| {
        let args: Vec<&str> = ["--data", "csv:d.csv", "--epochs", "1", "--resume", "ck"]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        run(&dir, &args)
    };
    for (extra, message) in [
        (&["--layers", "4,8,3"][..], "--layers 4,8,3 contradicts the checkpoint, which has layers 4,16,3; drop --layers to resume it"),
        (&["--norm", "batch"], "--norm cannot be used with --resume: the checkpoint holds the network"),
        (&["--residual"], "--residual cannot be used with --resume"),
        (&["--act", "tanh"], "--act cannot be used with --resume"),
        (&["--init", "xavier"], "--init cannot be used with --resume"),
        (&["--load", "ck"], "--load cannot be used with --resume"),
        (&["--lr", "0.01"], "--lr constant:0.01 contradicts the checkpoint, which has schedule constant:0.001"),
        (&["--schedule", "cosine:1e-3:0:100"], "--schedule cosine:0.001:0:100 contradicts the checkpoint"),
        (&["--seed", "7"], "--seed 7 contradicts the checkpoint, which has seed 42"),
        (&["--loss", "mse"], "--loss mse contradicts the checkpoint, which has loss SoftmaxCrossEntropy"),
        (&["--opt", "adamw"], "--opt adamw with --weight-decay unset gives adam:beta1=0.9:beta2=0.999:eps=0.00000001:weight_decay=decoupled(0.01), but the checkpoint was trained with adam:beta1=0.9:beta2=0.999:eps=0.00000001:weight_decay=none"),
        (&["--opt", "sgd"], "--opt sgd with --weight-decay unset gives sgd:"),
        (&["--weight-decay", "0.1"], "weight_decay=l2(0.1), but the checkpoint was trained with"),
        (&["--batch", "7"], "--batch 7 on 32 training rows makes 5 steps per epoch, but the checkpoint took 1 step(s) in 1 epoch(s)"),
    ] {
        assert_refused(&resume(extra), message);
    }
    // Flags that agree with the checkpoint are honoured.
    let o = resume(&[
        "--layers",
        "4,16,3",
        "--lr",
        "0.001",
        "--seed",
        "42",
        "--opt",
        "adam",
        "--loss",
        "softmax-ce",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Item 10: inputs that used to be taken silently or exhaust memory.
#[test]
fn suspicious_inputs_are_refused_or_read_correctly() {
    let dir = scratch("inputs");
    write_csv(&dir.join("d.csv"), 40);
    let body = std::fs::read_to_string(dir.join("d.csv")).unwrap();
    // A first row with a typo or a hex float is an error, not a header; a
    // byte-order mark is skipped.
    std::fs::write(dir.join("typo.csv"), format!("1,2,3x,4,0\n{body}")).unwrap();
    assert_refused(
        &run(&dir, &["--data", "csv:typo.csv"]),
        "typo.csv: line 1, column 3: \"3x\" is not a number",
    );
    std::fs::write(dir.join("hex.csv"), format!("0x1p3,2,3,4,0\n{body}")).unwrap();
    assert_refused(
        &run(&dir, &["--data", "csv:hex.csv"]),
        "hex.csv: line 1, column 1: \"0x1p3\" is not a number",
    );
    std::fs::write(dir.join("bom.csv"), format!("\u{feff}{body}")).unwrap();
    let o = run(
        &dir,
        &[
            "--data",
            "csv:bom.csv",
            "--layers",
            "4,8,3",
            "--epochs",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("32 training / 8 test samples"),
        "{}",
        stderr(&o)
    );
    // Too few rows for a test set.
    std::fs::write(dir.join("small.csv"), "1,2,0\n3,4,1\n5,6,0\n").unwrap();
    assert_refused(
        &run(&dir, &["--data", "csv:small.csv"]),
        "small.csv: 3 data rows; at least 5 are needed (the last 20 % are the test set)",
    );
    // Endless inputs fail at once.
    if Path::new("/dev/zero").exists() {
        assert_refused(
            &run(&dir, &["--data", "csv:/dev/zero"]),
            "/dev/zero: line 1: not text (a NUL byte or invalid UTF-8)",
        );
        assert_refused(
            &run(&dir, &["--load", "/dev/zero"]),
            "--load /dev/zero: not a safetensors file: invalid JSON in header",
        );
    }
    // Gzipped IDX files under their raw names.
    let m = dir.join("mnist");
    std::fs::create_dir(&m).unwrap();
    let gz = |bytes: Vec<u8>| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&bytes).unwrap();
        e.finish().unwrap()
    };
    let mut rng = StdRng::seed_from_u64(3);
    for (set, n) in [("train", 30u32), ("t10k", 10)] {
        let pixels: Vec<u8> = (0..n * 4).map(|_| rng.random()).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        std::fs::write(
            m.join(format!("{set}-images-idx3-ubyte")),
            gz(idx(&[n, 2, 2], &pixels)),
        )
        .unwrap();
        std::fs::write(
            m.join(format!("{set}-labels-idx1-ubyte")),
            gz(idx(&[n], &labels)),
        )
        .unwrap();
    }
    let o = run(
        &dir,
        &[
            "--data",
            "mnist:mnist",
            "--layers",
            "4,8,10",
            "--epochs",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // NaN weights are refused on load, naming the tensor.
    let o = run(
        &dir,
        &[
            "--data",
            "csv:d.csv",
            "--layers",
            "4,8,3",
            "--epochs",
            "1",
            "--save",
            "m.st",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut st = backprop::io::read_file(dir.join("m.st")).unwrap();
    st.tensors.get_mut("layers.0.bias").unwrap().data[2] = f32::NAN;
    let sum = backprop::io::checksum(&st);
    st.metadata.insert(backprop::io::KEY_CHECKSUM.into(), sum);
    std::fs::write(dir.join("nan.st"), to_bytes(&st).unwrap()).unwrap();
    assert_refused(
        &run(&dir, &["--data", "csv:d.csv", "--load", "nan.st"]),
        "--load nan.st: tensor \"layers.0.bias\" holds NaN at element 2; networks and \
         checkpoints must be finite",
    );
    // --save onto a symbolic link replaces the file it points to.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("real.st", dir.join("link.st")).unwrap();
        let args = [
            "--data",
            "csv:d.csv",
            "--layers",
            "4,8,3",
            "--epochs",
            "1",
            "--save",
            "link.st",
        ];
        let o = run(&dir, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(std::fs::symlink_metadata(dir.join("link.st"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(backprop::io::load_mlp(dir.join("real.st")).is_ok());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Item 11: a checkpoint with one flipped bit in its data is refused with a
/// clear message.
#[test]
fn a_corrupted_checkpoint_is_refused() {
    let dir = scratch("corrupt");
    write_csv(&dir.join("d.csv"), 40);
    let args = [
        "--data",
        "csv:d.csv",
        "--layers",
        "4,8,3",
        "--epochs",
        "1",
        "--checkpoint",
        "ck",
    ];
    assert!(run(&dir, &args).status.success());
    let mut bytes = std::fs::read(dir.join("ck")).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x04;
    std::fs::write(dir.join("ck"), &bytes).unwrap();
    assert_refused(
        &run(
            &dir,
            &["--data", "csv:d.csv", "--epochs", "2", "--resume", "ck"],
        ),
        "--resume ck: checksum mismatch: the file's metadata says fnv1a64:",
    );
    assert!(stderr(&run(
        &dir,
        &["--data", "csv:d.csv", "--epochs", "2", "--resume", "ck"]
    ))
    .contains("the file is corrupted"));
    // The library sees the same.
    assert!(matches!(
        load_checkpoint(dir.join("ck")),
        Err(backprop::io::IoError::Checksum { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Item 7 and the kill test: `kill -9` a checkpointing run at random moments
/// (seeded), resume each time; the checkpoint always loads, the final
/// weights are bitwise those of an uninterrupted run, and no temporary file
/// survives the next successful write.
#[test]
fn kill_9_during_checkpointing_loses_no_work() {
    let dir = scratch("kill");
    write_csv(&dir.join("d.csv"), 200);
    // A network of 1M parameters on little data: each epoch writes a 12 MB
    // checkpoint (Adam's two buffers included) and trains briefly, so most
    // kills land in a write.
    let common = [
        "--data",
        "csv:d.csv",
        "--layers",
        "4,1024,1024,3",
        "--batch",
        "40",
        "--threads",
        "1",
    ];
    let epochs = 16;
    let args = |n: u64, extra: &[&str]| -> Vec<String> {
        common
            .iter()
            .map(|s| s.to_string())
            .chain(["--epochs".to_string(), n.to_string()])
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    // The uninterrupted run, whose duration spreads the kills over a run
    // (a random delay, not a timing assertion).
    let started = std::time::Instant::now();
    let full = {
        let a = args(epochs + 1, &["--json"]);
        let o = run(&dir, &a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", stderr(&o));
        params_checksum(&o)
    };
    let span = started.elapsed().as_millis().max(50) as u64;
    let ck = dir.join("ck");
    let mut rng = StdRng::seed_from_u64(2024);
    let (mut kills, mut temps_seen) = (0, 0);
    for _ in 0..10 {
        let mut extra = vec!["--checkpoint", "ck"];
        if ck.exists() {
            extra.extend(["--resume", "ck"]);
        }
        let mut child = Command::new(train_bin())
            .current_dir(&dir)
            .args(args(epochs, &extra))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(10..span)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL on Unix
            kills += 1;
        }
        child.wait().unwrap();
        if ck.exists() {
            let c = load_checkpoint(&ck).unwrap_or_else(|e| panic!("after a kill: {e}"));
            assert!(c.epochs <= epochs);
        }
        temps_seen += std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".ck.tmp-")
            })
            .count();
    }
    assert!(kills > 0, "no run was killed");
    // One more epoch than the killed runs aimed for, so at least one
    // checkpoint is written by this last run.
    let mut extra = vec!["--checkpoint", "ck", "--json"];
    if ck.exists() {
        extra.extend(["--resume", "ck"]);
    }
    let a = args(epochs + 1, &extra);
    let o = run(&dir, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(params_checksum(&o), full, "resumed ≠ uninterrupted");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    eprintln!("{kills} kills, {temps_seen} temporary files seen after them");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A saved network evaluated as it is (`--load m --epochs 0`), and its
/// predictions for the test set written with `--predict` (issue 14, item 7).
#[test]
fn a_loaded_network_is_evaluated_and_predicts_without_training() {
    let dir = scratch("load-eval-predict");
    write_csv(&dir.join("d.csv"), 100);
    let common = ["--data", "csv:d.csv", "--layers", "4,8,3", "--seed", "3"];
    let trained = run(
        &dir,
        &[&common[..], &["--epochs", "2", "--save", "m.st", "--json"]].concat(),
    );
    assert!(trained.status.success(), "{}", stderr(&trained));
    let o = run(
        &dir,
        &[
            &common[..],
            &[
                "--load",
                "m.st",
                "--epochs",
                "0",
                "--predict",
                "p.csv",
                "--json",
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no epoch to train; test loss "), "{err}");
    assert!(err.contains("test accuracy"), "{err}");
    // Nothing trained: the same weights, and the same final test figures.
    assert_eq!(params_checksum(&o), params_checksum(&trained));
    let field = |o: &Output, key: &str| {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let at = out.rfind(key).unwrap_or_else(|| panic!("{key} in {out}")) + key.len();
        out[at..].split([',', '}']).next().unwrap().to_string()
    };
    assert_eq!(
        field(&o, "\"test_loss\":"),
        field(&trained, "\"test_loss\":")
    );
    // One line per test row (the last 20 %: 20 rows): target, class, p0..p2.
    let csv = std::fs::read_to_string(dir.join("p.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "target,prediction,p0,p1,p2");
    assert_eq!(lines.len(), 21);
    let mut right = 0;
    for line in &lines[1..] {
        let f: Vec<f32> = line.split(',').map(|v| v.parse().unwrap()).collect();
        assert_eq!(f.len(), 5);
        let p = &f[2..];
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{line}");
        let best = (0..3).fold(0, |b, j| if p[j] > p[b] { j } else { b });
        assert_eq!(best as f32, f[1], "{line}");
        right += usize::from(f[0] == f[1]);
    }
    let acc = field(&o, "\"test_accuracy\":").parse::<f64>().unwrap();
    assert!(
        (acc - right as f64 / 20.0).abs() < 1e-6,
        "{acc} vs {right}/20"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--load` of a plain PyTorch state dict (no metadata, `0.weight`-style
/// keys): the flags give the architecture, and the run evaluates the loaded
/// weights (issue 14, item 1).
#[test]
fn a_plain_state_dict_loads_with_the_architecture_from_the_flags() {
    let dir = scratch("load-plain");
    write_csv(&dir.join("d.csv"), 100);
    let common = ["--data", "csv:d.csv", "--layers", "4,8,3", "--seed", "3"];
    let trained = run(
        &dir,
        &[&common[..], &["--epochs", "2", "--save", "m.st", "--json"]].concat(),
    );
    assert!(trained.status.success(), "{}", stderr(&trained));
    // What `save_file(seq.state_dict(), f)` writes: the bare Sequential keys.
    let st = backprop::io::read_file(dir.join("m.st")).unwrap();
    let mut plain = backprop::io::SafeTensors::default();
    for (name, t) in st.tensors {
        plain.tensors.insert(name.replace("layers.", ""), t);
    }
    backprop::io::write_file(&plain, dir.join("plain.st")).unwrap();
    let o = run(
        &dir,
        &[
            &common[..],
            &["--load", "plain.st", "--epochs", "0", "--json"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(params_checksum(&o), params_checksum(&trained));
    // Without --layers, the names and shapes give the widths and --act (relu
    // by default) fills the gap.
    let o = run(
        &dir,
        &[
            "--data",
            "csv:d.csv",
            "--seed",
            "3",
            "--load",
            "plain.st",
            "--epochs",
            "0",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(params_checksum(&o), params_checksum(&trained));
    // With a dropout the file has no room for, the gap does not fit.
    let o = run(
        &dir,
        &[
            "--data",
            "csv:d.csv",
            "--load",
            "plain.st",
            "--dropout",
            "0.5",
            "--epochs",
            "0",
        ],
    );
    assert_refused(
        &o,
        "--load plain.st: cannot infer the architecture: index 1: 1 module(s) without tensors",
    );
    // A different architecture is refused, naming the tensor and the widths.
    let o = run(
        &dir,
        &[
            "--data",
            "csv:d.csv",
            "--layers",
            "4,16,3",
            "--load",
            "plain.st",
            "--epochs",
            "0",
        ],
    );
    assert_refused(&o, "--load plain.st: tensor \"0.weight\" has shape [8, 4]");
    assert!(stderr(&o).contains("4,16,3"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--dropout P` puts dropout after each hidden activation: the run trains,
/// repeats bit for bit, and differs from the run without it; a probability
/// outside [0, 1) is refused by name.
#[test]
fn dropout_from_the_command_line() {
    let dir = scratch("dropout");
    write_csv(&dir.join("d.csv"), 100);
    let common = [
        "--data",
        "csv:d.csv",
        "--layers",
        "4,16,3",
        "--epochs",
        "2",
        "--json",
    ];
    let a = run(&dir, &[&common[..], &["--dropout", "0.3"]].concat());
    assert!(a.status.success(), "{}", stderr(&a));
    let b = run(
        &dir,
        &[&common[..], &["--dropout", "0.3", "--threads", "1"]].concat(),
    );
    assert_eq!(params_checksum(&a), params_checksum(&b));
    let plain = run(&dir, &common);
    assert_ne!(params_checksum(&a), params_checksum(&plain));
    assert_refused(
        &run(&dir, &[&common[..], &["--dropout", "1.5"]].concat()),
        "--dropout 1.5: the drop probability must be in [0, 1)",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
