//! Training checkpoints: network, optimizer state and trainer position in one
//! safetensors file, for bitwise-exact resumption.

use std::collections::BTreeSet;
use std::path::Path;

use super::container::{read_file, SafeTensors, Tensor};
use super::network::{
    check_finite, meta, mlp_from_safetensors, mlp_to_safetensors, seal, write_finite,
};
use super::IoError;
use crate::nn::Mlp;
use crate::optim::{OptimState, Optimizer, Schedule};
use crate::train::Trainer;

/// The checkpoint format version, stored under `backprop.checkpoint_version`.
///
/// Version 2 is the first whose shuffles come from the crate's own generator
/// ([`crate::rng`]). Version 1 checkpoints are refused with a message saying
/// so: their run shuffled with another generator, so resuming one could not
/// continue it bit for bit. (Their network still loads as a model file, with
/// [`load_mlp`](super::load_mlp).)
pub const CHECKPOINT_VERSION: &str = "2";

const KEY_VERSION: &str = "backprop.checkpoint_version";
const KEY_OPT_STEPS: &str = "backprop.optimizer.steps";
const KEY_OPT_BUFFERS: &str = "backprop.optimizer.buffers";
const KEY_OPT_CONFIG: &str = "backprop.optimizer.config";
const KEY_STEPS: &str = "backprop.trainer.steps";
const KEY_EPOCHS: &str = "backprop.trainer.epochs";
const KEY_SEED: &str = "backprop.trainer.seed";
const KEY_SCHEDULE: &str = "backprop.trainer.schedule";

/// Tensor-name prefix of the optimizer buffers.
const OPT_PREFIX: &str = "optimizer.";

/// An optimizer's saved state, owned: the step count and the named buffers
/// (PyTorch's names, [`Optimizer::state_names`]), each in the parameter
/// arena's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerSnapshot {
    /// Steps the optimizer had taken ([`Optimizer::steps`]; Adam's t).
    pub steps: u64,
    /// `(name, buffer)` in the order of [`Optimizer::state_names`].
    pub buffers: Vec<(String, Vec<f32>)>,
    /// The optimizer's [`Optimizer::config_text`] (`None` in checkpoints
    /// written before it was stored, or by an optimizer without one): a
    /// trainer resumes only under an optimizer with the same text.
    pub config: Option<String>,
}

impl OptimizerSnapshot {
    /// The borrowed form [`Optimizer::load_state`] takes.
    pub fn as_state(&self) -> OptimState<'_> {
        OptimState {
            steps: self.steps,
            buffers: self.buffers.iter().map(|(_, b)| b.as_slice()).collect(),
        }
    }
}

/// Everything a checkpoint holds.
///
/// Not saved: gradient clipping, GEMM options and batch parallelism; the
/// optimizer's configuration (β's, momentum, decay) is saved as text only, to
/// be compared. Rebuild the optimizer (and trainer) with the same settings,
/// then [`restore`] or [`Checkpoint::into_trainer`].
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The network: architecture, parameters and BatchNorm statistics.
    pub net: Mlp,
    /// The optimizer's step count and buffers.
    pub optimizer: OptimizerSnapshot,
    /// Optimizer steps the trainer had taken ([`Trainer::steps`]).
    pub steps: u64,
    /// Epochs the trainer had completed ([`Trainer::epochs`]).
    pub epochs: u64,
    /// The trainer's shuffling seed ([`Trainer::seed`]).
    pub seed: u64,
    /// The trainer's step-size schedule.
    pub schedule: Schedule,
}

/// A trainer's checkpoint as tensors and metadata.
///
/// # Layout
/// The network's tensors and metadata as in
/// [`mlp_to_safetensors`](super::mlp_to_safetensors); each optimizer buffer
/// as `optimizer.{name}` (`optimizer.exp_avg`, `optimizer.exp_avg_sq` for
/// Adam, `optimizer.momentum_buffer` for SGD with momentum), shape
/// `[num_params]`, in the flat parameter arena's layout (not per layer);
/// and these metadata keys, all decimal integers unless stated:
///
/// | key | value |
/// |---|---|
/// | `backprop.checkpoint_version` | [`CHECKPOINT_VERSION`] (`"2"`) |
/// | `backprop.optimizer.steps` | [`Optimizer::steps`] |
/// | `backprop.optimizer.buffers` | JSON array of the buffer names, in [`Optimizer::state_names`] order |
/// | `backprop.optimizer.config` | [`Optimizer::config_text`] (absent when empty) |
/// | `backprop.trainer.steps` | [`Trainer::steps`] |
/// | `backprop.trainer.epochs` | [`Trainer::epochs`] |
/// | `backprop.trainer.seed` | [`Trainer::seed`] |
/// | `backprop.trainer.schedule` | the schedule's string form ([`Schedule`]'s `Display`, parsed back with `FromStr`) |
///
/// # Panics
/// If the optimizer holds the state of part of the parameters only
/// ([`Optimizer::keep_state`]; a trainer in a group between its steps and
/// [`Trainer::sync_optimizer`](crate::train::Trainer::sync_optimizer)): the
/// file would not resume.
pub fn checkpoint_to_safetensors(trainer: &Trainer) -> SafeTensors {
    let opt = trainer.optimizer();
    let held = opt.state_range();
    assert!(
        held == (0..opt.len()),
        "checkpoint: the optimizer holds the state of parameters {held:?} of {} only (a rank \
         of a group): call Trainer::sync_optimizer on every rank before saving",
        opt.len()
    );
    let mut st = mlp_to_safetensors(trainer.net());
    let state = opt.state();
    let names = opt.state_names();
    let mut list = Vec::with_capacity(names.len());
    for (name, buf) in names.iter().zip(&state.buffers) {
        st.tensors.insert(
            format!("{OPT_PREFIX}{name}"),
            Tensor::new(vec![buf.len()], buf.to_vec()),
        );
        list.push(*name);
    }
    let names_json = serde_json::to_string(&list).expect("a list of strings serialises");
    let m = &mut st.metadata;
    m.insert(KEY_VERSION.into(), CHECKPOINT_VERSION.into());
    m.insert(KEY_OPT_STEPS.into(), state.steps.to_string());
    m.insert(KEY_OPT_BUFFERS.into(), names_json);
    m.insert(KEY_STEPS.into(), trainer.steps().to_string());
    m.insert(KEY_EPOCHS.into(), trainer.epochs().to_string());
    m.insert(KEY_SEED.into(), trainer.seed().to_string());
    m.insert(KEY_SCHEDULE.into(), trainer.schedule().to_string());
    let config = opt.config_text();
    if !config.is_empty() {
        m.insert(KEY_OPT_CONFIG.into(), config);
    }
    // The network's checksum covered only the network: again over everything.
    seal(&mut st);
    st
}

/// Reads a checkpoint made by [`checkpoint_to_safetensors`].
///
/// # Errors
/// As [`mlp_from_safetensors`](super::mlp_from_safetensors) for the network;
/// [`IoError::MissingMetadata`] / [`IoError::Metadata`] for a missing or
/// malformed key (an unparsable schedule, a version other than
/// [`CHECKPOINT_VERSION`]); [`IoError::MissingTensor`] /
/// [`IoError::WrongShape`] for an optimizer buffer that is absent or not
/// `[num_params]`; [`IoError::UnexpectedTensor`] for an `optimizer.*` tensor
/// not listed in `backprop.optimizer.buffers`; [`IoError::NonFinite`] for a
/// NaN or infinite optimizer value. The checksum (over the whole file,
/// optimizer state included) is verified by the network's loader.
pub fn checkpoint_from_safetensors(st: &SafeTensors) -> Result<Checkpoint, IoError> {
    let version = meta(st, KEY_VERSION)?;
    if version == "1" {
        return Err(IoError::Metadata {
            key: KEY_VERSION.into(),
            message: format!(
                "checkpoint version \"1\" was written by an older build whose shuffles came from \
                 another generator, so resuming it could not reproduce that run (this build reads \
                 {CHECKPOINT_VERSION:?}); its network loads as a model file"
            ),
        });
    }
    if version != CHECKPOINT_VERSION {
        return Err(IoError::Metadata {
            key: KEY_VERSION.into(),
            message: format!(
                "checkpoint version {version:?} is not supported (this build reads \
                 {CHECKPOINT_VERSION:?})"
            ),
        });
    }
    let net = mlp_from_safetensors(st)?;
    let n = net.num_params();

    let names_text = meta(st, KEY_OPT_BUFFERS)?;
    let bad = |message: String| IoError::Metadata {
        key: KEY_OPT_BUFFERS.into(),
        message,
    };
    let names: Vec<String> = serde_json::from_str(names_text)
        .map_err(|e| bad(format!("not a JSON array of strings: {e}")))?;
    let mut buffers = Vec::with_capacity(names.len());
    let mut listed = BTreeSet::new();
    for name in &names {
        if !listed.insert(name.as_str()) {
            return Err(IoError::DuplicateName { name: name.clone() });
        }
        let key = format!("{OPT_PREFIX}{name}");
        let t = st
            .tensors
            .get(&key)
            .ok_or_else(|| IoError::MissingTensor { name: key.clone() })?;
        if t.shape != [n] {
            return Err(IoError::WrongShape {
                name: key,
                expected: vec![n],
                got: t.shape.clone(),
            });
        }
        check_finite([(key.as_str(), t.data.as_slice())])?;
        buffers.push((name.clone(), t.data.clone()));
    }
    for key in st.tensors.keys() {
        if let Some(name) = key.strip_prefix(OPT_PREFIX) {
            if !listed.contains(name) {
                return Err(IoError::UnexpectedTensor { name: key.clone() });
            }
        }
    }

    let schedule_text = meta(st, KEY_SCHEDULE)?;
    let schedule: Schedule = schedule_text.parse().map_err(|e| IoError::Metadata {
        key: KEY_SCHEDULE.into(),
        message: format!("{schedule_text:?}: {e}"),
    })?;
    Ok(Checkpoint {
        net,
        optimizer: OptimizerSnapshot {
            steps: meta_u64(st, KEY_OPT_STEPS)?,
            buffers,
            config: st.metadata.get(KEY_OPT_CONFIG).cloned(),
        },
        steps: meta_u64(st, KEY_STEPS)?,
        epochs: meta_u64(st, KEY_EPOCHS)?,
        seed: meta_u64(st, KEY_SEED)?,
        schedule,
    })
}

fn meta_u64(st: &SafeTensors, key: &'static str) -> Result<u64, IoError> {
    let text = meta(st, key)?;
    text.parse().map_err(|_| IoError::Metadata {
        key: key.into(),
        message: format!("{text:?} is not a non-negative 64-bit integer"),
    })
}

/// Saves the trainer's network, optimizer state and position to a
/// safetensors file (layout in [`checkpoint_to_safetensors`]), atomically
/// ([`write_atomic`](super::write_atomic)): a crash while saving leaves the
/// previous checkpoint intact. A trainer in a group
/// ([`Trainer::with_group`](crate::train::Trainer::with_group)) holds the
/// optimizer state of its own slice only: call
/// [`Trainer::sync_optimizer`](crate::train::Trainer::sync_optimizer) on
/// every rank first, then save on one.
///
/// # Panics
/// As [`checkpoint_to_safetensors`]: if the optimizer holds part of its
/// state only.
///
/// # Errors
/// [`IoError::NonFinite`] (and nothing written, so the previous checkpoint
/// stays) if a parameter, statistic or optimizer value is NaN or infinite;
/// [`IoError::Io`] if the file cannot be written.
///
/// ```
/// use backprop::io::{load_checkpoint, restore, save_checkpoint};
/// use backprop::nn::{Activation, Loss, MlpBuilder};
/// use backprop::optim::{Adam, AdamConfig, Schedule};
/// use backprop::nn::Targets;
/// use backprop::train::{Dataset, Trainer};
///
/// let x = vec![0., 0., 0., 1., 1., 0., 1., 1.];
/// let data = Dataset::new(x, 4, 2, Targets::Signs(&[-1., 1., 1., -1.])).unwrap();
/// let make = || {
///     let net = MlpBuilder::new(2).dense(8).act(Activation::Tanh).dense(1)
///         .loss(Loss::Logistic).build(1).unwrap();
///     let opt = Adam::new(net.num_params(), AdamConfig::default());
///     Trainer::new(net, Box::new(opt), Schedule::constant(0.05), 7)
/// };
/// let path = std::env::temp_dir().join(format!("backprop-ckpt-doc-{}.safetensors", std::process::id()));
///
/// let mut a = make();
/// for _ in 0..3 { a.train_epoch(&data, 2).unwrap(); }
/// save_checkpoint(&a, &path).unwrap();
/// a.train_epoch(&data, 2).unwrap();
///
/// let mut b = make();
/// restore(&mut b, &load_checkpoint(&path).unwrap()).unwrap();
/// b.train_epoch(&data, 2).unwrap();
/// assert_eq!(a.net().params(), b.net().params()); // bitwise
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn save_checkpoint(trainer: &Trainer, path: impl AsRef<Path>) -> Result<(), IoError> {
    write_finite(&checkpoint_to_safetensors(trainer), path.as_ref())
}

/// Loads a checkpoint saved by [`save_checkpoint`].
///
/// # Errors
/// [`IoError::Io`] if the file cannot be read, the errors of
/// [`from_bytes`](super::from_bytes) for a malformed file and those of
/// [`checkpoint_from_safetensors`] for one that is not a checkpoint.
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint, IoError> {
    checkpoint_from_safetensors(&read_file(path)?)
}

/// Puts a checkpoint into a trainer built with the same configuration (same
/// layers, loss, optimizer kind, schedule and seed; the initial weights do
/// not matter): copies the parameters and BatchNorm statistics, loads the
/// optimizer state and sets the trainer's progress. Training on from there
/// gives bitwise the weights of a run that never stopped, since epoch e
/// shuffles with a seed derived from (seed, e) alone.
///
/// # Errors
/// [`IoError::Mismatch`] if the network's input width, loss or layers, the
/// seed, the schedule, the optimizer's buffer names or (when the checkpoint
/// stores it) its configuration text differ from the checkpoint's;
/// [`IoError::Optimizer`] if the optimizer rejects the state.
/// The trainer is unchanged on error.
pub fn restore(trainer: &mut Trainer, ckpt: &Checkpoint) -> Result<(), IoError> {
    check_net(trainer.net(), &ckpt.net)?;
    if trainer.seed() != ckpt.seed {
        return Err(IoError::Mismatch {
            what: "seed",
            expected: trainer.seed().to_string(),
            found: ckpt.seed.to_string(),
        });
    }
    if *trainer.schedule() != ckpt.schedule {
        return Err(IoError::Mismatch {
            what: "schedule",
            expected: trainer.schedule().to_string(),
            found: ckpt.schedule.to_string(),
        });
    }
    check_names(trainer.optimizer(), &ckpt.optimizer)?;
    // The only fallible mutation comes first; it changes nothing on error.
    trainer
        .optimizer_mut()
        .load_state(&ckpt.optimizer.as_state())?;
    let net = trainer.net_mut();
    net.params_mut().copy_from_slice(ckpt.net.params());
    net.buffers_mut().copy_from_slice(ckpt.net.buffers());
    trainer.set_progress(ckpt.steps, ckpt.epochs);
    Ok(())
}

impl Checkpoint {
    /// A trainer that continues the saved run: the saved network, schedule,
    /// seed and progress, and `opt` (built with the original configuration)
    /// loaded with the saved state. Set clipping etc. on the result as
    /// before.
    ///
    /// # Errors
    /// [`IoError::Mismatch`] if `opt` is not sized for the network, or its
    /// buffer names or (when the checkpoint stores it) its configuration text
    /// differ from the checkpoint's; [`IoError::Optimizer`] if it rejects the
    /// state.
    pub fn into_trainer(self, mut opt: Box<dyn Optimizer + Send>) -> Result<Trainer, IoError> {
        if opt.len() != self.net.num_params() {
            return Err(IoError::Mismatch {
                what: "optimizer length",
                expected: opt.len().to_string(),
                found: self.net.num_params().to_string(),
            });
        }
        check_names(&*opt, &self.optimizer)?;
        opt.load_state(&self.optimizer.as_state())?;
        let mut t = Trainer::new(self.net, opt, self.schedule, self.seed);
        t.set_progress(self.steps, self.epochs);
        Ok(t)
    }
}

fn check_net(have: &Mlp, saved: &Mlp) -> Result<(), IoError> {
    let mismatch = |what, a: String, b: String| IoError::Mismatch {
        what,
        expected: a,
        found: b,
    };
    if have.input_dim() != saved.input_dim() {
        return Err(mismatch(
            "network input width",
            have.input_dim().to_string(),
            saved.input_dim().to_string(),
        ));
    }
    if have.loss_kind() != saved.loss_kind() {
        return Err(mismatch(
            "network loss",
            format!("{:?}", have.loss_kind()),
            format!("{:?}", saved.loss_kind()),
        ));
    }
    if have.layers() != saved.layers() {
        return Err(mismatch(
            "network layers",
            format!("{:?}", have.layers()),
            format!("{:?}", saved.layers()),
        ));
    }
    Ok(())
}

fn check_names(opt: &dyn Optimizer, saved: &OptimizerSnapshot) -> Result<(), IoError> {
    let have = opt.state_names();
    if have.len() != saved.buffers.len()
        || have.iter().zip(&saved.buffers).any(|(a, (b, _))| a != b)
    {
        return Err(IoError::Mismatch {
            what: "optimizer state buffers",
            expected: format!("{have:?}"),
            found: format!(
                "{:?}",
                saved.buffers.iter().map(|(n, _)| n).collect::<Vec<_>>()
            ),
        });
    }
    if let Some(config) = &saved.config {
        let have = opt.config_text();
        if have != *config {
            return Err(IoError::Mismatch {
                what: "optimizer",
                expected: have,
                found: config.clone(),
            });
        }
    }
    Ok(())
}
