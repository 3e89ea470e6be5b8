//! The minibatch training loop: shuffle, gather, forward/backward, clip,
//! optimizer step with the scheduled step size, divergence check.

use std::fmt;
use std::time::Instant;

use crate::dist::Group;
use crate::matrix::{MatMut, MatRef};
use crate::nn::loss::LossError;
use crate::nn::{BatchParallelism, Evaluation, Mlp, StepError, Targets};
use crate::optim::{clip_grad_norm, OptimState, Optimizer, Schedule};
use crate::rng::Rng;
use crate::train::{Batch, Dataset};

/// Why training stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainError {
    /// The step itself failed (bad targets, batch of one with BatchNorm, …).
    Step(StepError),
    /// The loss or the gradient became NaN or infinite at `step`; that step
    /// made no update (the parameters are the ones that produced the
    /// non-finite loss, which an earlier, too large update may have made
    /// non-finite already).
    Diverged {
        /// The 0-based step index.
        step: u64,
        /// The loss of that step.
        loss: f32,
    },
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Step(e) => write!(f, "{e}"),
            TrainError::Diverged { step, loss } => write!(
                f,
                "training diverged at step {step} (loss {loss}); the parameters are those \
                 before that step — try a lower learning rate or gradient clipping"
            ),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<StepError> for TrainError {
    fn from(e: StepError) -> Self {
        TrainError::Step(e)
    }
}

/// What one epoch did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: u64,
    /// Mean of the minibatch losses, weighted by batch size.
    pub mean_loss: f32,
    /// Optimizer steps taken in the epoch.
    pub steps: u64,
    /// Samples seen.
    pub samples: usize,
    /// Wall time of the epoch's training loop alone.
    pub seconds: f64,
}

/// Trains an [`Mlp`] with an optimizer and a step-size schedule.
///
/// ```
/// use backprop::nn::{Activation, Loss, MlpBuilder};
/// use backprop::optim::{Adam, AdamConfig, Schedule};
/// use backprop::nn::Targets;
/// use backprop::train::{Dataset, Trainer};
/// // XOR with ±1 labels.
/// let x = vec![0., 0., 0., 1., 1., 0., 1., 1.];
/// let data = Dataset::new(x, 4, 2, Targets::Signs(&[-1., 1., 1., -1.])).unwrap();
/// let net = MlpBuilder::new(2).dense(8).act(Activation::Tanh).dense(1)
///     .loss(Loss::Logistic).build(1).unwrap();
/// let opt = Adam::new(net.num_params(), AdamConfig::default());
/// let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(0.05), 7);
/// for _ in 0..300 {
///     t.train_epoch(&data, 4).unwrap();
/// }
/// assert_eq!(t.evaluate(&data, 4).unwrap().correct, Some(4));
/// ```
pub struct Trainer {
    net: Mlp,
    opt: Box<dyn Optimizer + Send>,
    schedule: Schedule,
    clip: Option<f32>,
    step: u64,
    epoch: u64,
    /// Seed of the per-epoch shuffles: epoch e shuffles with a generator
    /// seeded from (seed, e), so the whole RNG state is (seed, epoch) and a
    /// resumed run shuffles exactly as an uninterrupted one.
    seed: u64,
    /// The epoch's sample order and the gathered minibatch (reused).
    order: Vec<usize>,
    batch: Batch,
    /// Whether a step since the last [`Trainer::sync_optimizer`] updated
    /// this rank's slice of the optimizer state only (the same on every
    /// rank: set and cleared by steps and syncs, which all ranks take
    /// together).
    state_partial: bool,
}

impl Trainer {
    /// A trainer; `seed` drives the per-epoch shuffling.
    ///
    /// # Panics
    /// If the optimizer was sized for a different number of parameters.
    pub fn new(net: Mlp, opt: Box<dyn Optimizer + Send>, schedule: Schedule, seed: u64) -> Trainer {
        assert_eq!(
            opt.len(),
            net.num_params(),
            "Trainer: the optimizer holds state for {} parameters but the network has {}",
            opt.len(),
            net.num_params()
        );
        Trainer {
            net,
            opt,
            schedule,
            clip: None,
            step: 0,
            epoch: 0,
            seed,
            order: Vec::new(),
            batch: Batch::default(),
            state_partial: false,
        }
    }

    /// Clips the gradient to global L2 norm `max_norm` before every step.
    pub fn with_clip(mut self, max_norm: f32) -> Trainer {
        self.clip = Some(max_norm);
        self
    }

    /// The network.
    pub fn net(&self) -> &Mlp {
        &self.net
    }
    /// The network, mutably (e.g. to change its GEMM options).
    pub fn net_mut(&mut self) -> &mut Mlp {
        &mut self.net
    }
    /// Takes the network back.
    pub fn into_net(self) -> Mlp {
        self.net
    }
    /// The optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer {
        &*self.opt
    }
    /// Optimizer steps taken so far (the schedule's position).
    pub fn steps(&self) -> u64 {
        self.step
    }
    /// Epochs completed.
    pub fn epochs(&self) -> u64 {
        self.epoch
    }
    /// The shuffling seed given to [`Trainer::new`].
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The step-size schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
    /// The optimizer, mutably (e.g. to restore its state from a checkpoint).
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer {
        &mut *self.opt
    }
    /// Sets the position of a resumed run: `steps` optimizer steps and
    /// `epochs` completed epochs (the schedule and the shuffles continue from
    /// there).
    pub fn set_progress(&mut self, steps: u64, epochs: u64) {
        self.step = steps;
        self.epoch = epochs;
    }

    /// One optimizer step on a minibatch: forward, backward, optional
    /// clipping, then the update with the scheduled step size. Returns the
    /// minibatch's mean loss. Allocates nothing once the batch size has been
    /// seen.
    ///
    /// # Errors
    /// [`TrainError::Step`] for bad input, [`TrainError::Diverged`] (and no
    /// update) when the loss is not finite or the gradient holds a NaN or an
    /// infinity (seen by clipping's norm, or without clipping by one pass
    /// over the gradient: about 2.5 % of a K = 1024, L = 8 step).
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::{Loss, MlpBuilder, Targets};
    /// use backprop::optim::{Schedule, Sgd, SgdConfig};
    /// use backprop::train::{TrainError, Trainer};
    /// let net = MlpBuilder::new(2).dense(1).loss(Loss::Mse).build(0).unwrap();
    /// let opt = Sgd::new(net.num_params(), SgdConfig::default());
    /// let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(0.1), 0);
    /// let (x, y) = ([1.0f32, 2.0], [3.0f32]);
    /// let loss = t.step(MatRef::from_slice(&x, 1, 2), Targets::Values(MatRef::from_slice(&y, 1, 1)));
    /// assert!(loss.unwrap() > 0.0);
    /// assert_eq!(t.steps(), 1);
    /// // A step that would put NaN into the weights is refused, and nothing changes.
    /// let before = t.net().params().to_vec();
    /// let bad = [f32::NAN];
    /// let e = t.step(MatRef::from_slice(&x, 1, 2), Targets::Values(MatRef::from_slice(&bad, 1, 1)));
    /// assert!(matches!(e, Err(TrainError::Diverged { .. })));
    /// assert_eq!(t.net().params(), &before[..]);
    /// ```
    pub fn step(&mut self, x: MatRef<'_>, targets: Targets<'_>) -> Result<f32, TrainError> {
        let batch = x.rows();
        let r = self.net.rows_of(batch);
        if r.len() == batch {
            return self.run_step(batch, |net| net.forward_backward(x, targets));
        }
        // In a group: every rank is given the whole minibatch and computes
        // its own rows.
        if targets.len() != batch {
            return Err(TrainError::Step(StepError::Loss(LossError::TargetLen {
                expected: batch,
                got: targets.len(),
            })));
        }
        let xs = x.submatrix(r.start, 0, r.len(), x.cols());
        let ts = targets.rows(r);
        self.run_step(batch, |net| net.forward_backward(xs, ts))
    }

    /// Trains data-parallel with the ranks of `group`, bitwise as one process
    /// with [`BatchParallelism::Shards`]`(shards)`: each minibatch is cut
    /// into `shards` shards, this rank computes its own (`shards·r/R ..
    /// shards·(r+1)/R`), and every sum over the minibatch (gradients,
    /// BatchNorm statistics, the loss) is taken per shard and then over the
    /// shards in shard order across the ranks (see [`crate::dist`]). Every
    /// rank builds its trainer alike (network, optimizer, schedule, seed) and
    /// passes the same data; [`Trainer::train_epoch`] gathers only this
    /// rank's rows, [`Trainer::step`] takes the whole minibatch on every rank
    /// and uses this rank's rows.
    ///
    /// The parameters are the same on every rank after each step. Unless
    /// gradient clipping is on (or the optimizer cannot step a range), each
    /// rank applies the update to its own slice of the parameters only, so
    /// [`Mlp::grads`] is the summed gradient only in that slice, and the
    /// optimizer holds the state of that slice only (ZeRO-1, where it can:
    /// [`Optimizer::keep_state`]; the crate's optimizers can) until
    /// [`Trainer::sync_optimizer`] gathers the whole (call it on every rank
    /// before a checkpoint).
    ///
    /// # Panics
    /// If `shards` is smaller than the number of ranks (each needs one).
    ///
    /// ```
    /// use backprop::dist::{Group, LocalGroup};
    /// use backprop::matrix::MatRef;
    /// use backprop::nn::{BatchParallelism, MlpBuilder, Targets};
    /// use backprop::optim::{Schedule, Sgd, SgdConfig};
    /// use backprop::train::Trainer;
    /// let x: Vec<f32> = (0..16).map(|i| i as f32 / 8.0).collect();
    /// let y: Vec<f32> = x.iter().step_by(2).map(|v| 2.0 * v).collect();
    /// let trainer = || {
    ///     let net = MlpBuilder::new(2).dense(4).dense(1).build(3).unwrap();
    ///     let opt = Sgd::new(net.num_params(), SgdConfig::default());
    ///     Trainer::new(net, Box::new(opt), Schedule::constant(0.1), 0)
    /// };
    /// let step = |mut t: Trainer| {
    ///     t.step(MatRef::from_slice(&x, 8, 2), Targets::Values(MatRef::from_slice(&y, 8, 1))).unwrap();
    ///     t.into_net().params().to_vec()
    /// };
    /// // Two ranks as threads, 4 shards; one process with the same 4 shards.
    /// let ranks: Vec<Vec<f32>> = std::thread::scope(|s| {
    ///     let hs: Vec<_> = LocalGroup::ranks(2).into_iter().map(|c| {
    ///         s.spawn(move || step(trainer().with_group(Group::new(c), 4)))
    ///     }).collect();
    ///     hs.into_iter().map(|h| h.join().unwrap()).collect()
    /// });
    /// let mut alone = trainer();
    /// alone.net_mut().set_parallelism(BatchParallelism::Shards(4));
    /// let alone = step(alone);
    /// assert!(ranks.iter().all(|p| p == &alone));
    /// ```
    pub fn with_group(mut self, group: Group, shards: usize) -> Trainer {
        assert!(
            shards >= group.size(),
            "Trainer::with_group: {shards} shards cannot be spread over {} ranks (each needs one)",
            group.size()
        );
        self.net.set_parallelism(BatchParallelism::Shards(shards));
        self.net.set_group(Some(group));
        self
    }

    /// The group this trainer trains with, if any.
    pub fn group(&self) -> Option<&Group> {
        self.net.group()
    }

    /// In a group, gives every rank the whole, current optimizer state.
    /// Each rank updates only the parameters it owns
    /// ([`Group::owned_slice`]) and, where the optimizer can
    /// ([`Optimizer::keep_state`]), holds only their state (ZeRO-1: `1/R`
    /// of it); this gathers the slices into the full state on every rank,
    /// until the next step narrows it again. Call it on **every** rank (it
    /// is a collective) before reading [`Trainer::optimizer`]'s state or
    /// saving a checkpoint. Nothing to do alone, or when no step since the
    /// last sync updated a slice only (every rank updates everything with
    /// clipping or an optimizer that cannot step a range).
    pub fn sync_optimizer(&mut self) {
        let Some(g) = self.net.group().cloned() else {
            return;
        };
        if !self.state_partial {
            return;
        }
        let n = self.opt.len();
        let held = self.opt.state_range();
        let state = self.opt.state();
        let steps = state.steps;
        // Each rank's held state in place in a full-length buffer; its owned
        // slice, current, lies within it.
        let mut buffers: Vec<Vec<f32>> = state
            .buffers
            .iter()
            .map(|b| {
                let mut full = vec![0.0f32; n];
                full[held.clone()].copy_from_slice(b);
                full
            })
            .collect();
        for b in &mut buffers {
            g.all_gather_slices(b);
        }
        if held != (0..n) {
            assert!(
                self.opt.keep_state(0..n),
                "an optimizer that narrowed its state widens it"
            );
        }
        let state = OptimState {
            steps,
            buffers: buffers.iter().map(|b| &b[..]).collect(),
        };
        self.opt
            .load_state(&state)
            .expect("the optimizer's own state, gathered, fits it");
        self.state_partial = false;
    }

    /// [`Trainer::step`] with a loss of the caller's, as
    /// [`Mlp::forward_backward_with`] takes it: `loss(h, dh)` writes ∂L/∂h
    /// into the zeroed `dh` and returns L. Clipping, the divergence check
    /// and the scheduled update are the same.
    ///
    /// # Errors
    /// As [`Trainer::step`].
    ///
    /// ```
    /// use backprop::matrix::{MatMut, MatRef};
    /// use backprop::nn::MlpBuilder;
    /// use backprop::optim::{Schedule, Sgd, SgdConfig};
    /// use backprop::train::Trainer;
    /// let net = MlpBuilder::new(2).dense(1).build(0).unwrap();
    /// let opt = Sgd::new(net.num_params(), SgdConfig::default());
    /// let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(0.1), 0);
    /// // L = mean |h − 1|, with its subgradient.
    /// let l1 = |h: MatRef<'_>, mut dh: MatMut<'_>| {
    ///     let b = h.rows() as f32;
    ///     (0..h.rows()).map(|i| {
    ///         let r = h.get(i, 0) - 1.0;
    ///         dh.set(i, 0, r.signum() / b);
    ///         r.abs() / b
    ///     }).sum::<f32>()
    /// };
    /// let x = [0.5f32, -0.5, 1.0, 0.0];
    /// let first = t.step_with(MatRef::from_slice(&x, 2, 2), l1).unwrap();
    /// for _ in 0..50 {
    ///     t.step_with(MatRef::from_slice(&x, 2, 2), l1).unwrap();
    /// }
    /// assert!(t.step_with(MatRef::from_slice(&x, 2, 2), l1).unwrap() < first);
    /// ```
    ///
    /// In a group ([`Trainer::with_group`]), `x` is the whole minibatch on
    /// every rank and `loss` gets this rank's rows of it: divide by
    /// `x.rows()`, the whole minibatch's size, and the value returned is this
    /// rank's part of L.
    pub fn step_with(
        &mut self,
        x: MatRef<'_>,
        loss: impl FnOnce(MatRef<'_>, MatMut<'_>) -> f32,
    ) -> Result<f32, TrainError> {
        let batch = x.rows();
        let r = self.net.rows_of(batch);
        let xs = x.submatrix(r.start, 0, r.len(), x.cols());
        self.run_step(batch, |net| net.forward_backward_with(xs, loss))
    }

    /// One step around the backward pass `pass`: training mode and the
    /// step's dropout noise first; then clipping, the divergence check and
    /// the update.
    fn run_step(
        &mut self,
        batch: usize,
        pass: impl FnOnce(&mut Mlp) -> Result<f32, StepError>,
    ) -> Result<f32, TrainError> {
        self.net.set_training(true);
        self.net.set_noise(self.seed, self.step);
        let group = self.net.group().cloned();
        // In a group, each rank updates the slice of the parameters it owns
        // (the update is elementwise, so the bits are those of a full update)
        // and the slices are exchanged: the update's work is split over the
        // ranks. Clipping needs the whole gradient's norm, and an optimizer
        // may not step a range: then every rank updates everything.
        let sharded = group.is_some() && self.clip.is_none() && self.opt.can_step_range();
        if group.is_some() && !sharded && self.state_partial {
            // Clipping came on after sharded steps: every rank updates
            // everything from now on and needs the whole state (all ranks
            // get here at the same step).
            self.sync_optimizer();
        }
        self.net.set_full_grads(!sharded);
        self.net.set_part(group.is_some().then_some(batch));
        let loss = pass(&mut self.net);
        self.net.set_part(None);
        let loss = loss?;
        // Sharded: the gradient is summed only in this rank's slice.
        let own = group
            .as_ref()
            .filter(|_| sharded)
            .map(|g| g.owned_slice(g.rank(), self.net.num_params()));
        let (params, grads) = self.net.params_and_grads();
        // Clipping needs the norm anyway (it leaves non-finite gradients
        // alone); without it, one pass checks the gradient for NaN and ±∞.
        let finite = match (&own, self.clip) {
            (Some(r), _) => all_finite(&grads[r.clone()]),
            (None, Some(max)) => clip_grad_norm(grads, max).is_finite(),
            (None, None) => all_finite(grads),
        };
        let finite = loss.is_finite() && finite;
        // One verdict for all ranks (a caller's loss value is per rank).
        let finite = group.as_ref().map_or(finite, |g| g.all_agree(finite));
        if !finite {
            return Err(TrainError::Diverged {
                step: self.step,
                loss,
            });
        }
        let lr = self.schedule.lr_at(self.step);
        match (own, &group) {
            (Some(r), Some(g)) => {
                // ZeRO-1: hold the state of the owned slice only (a no-op
                // once narrowed, or for an optimizer that cannot).
                if self.opt.state_range() != r {
                    self.opt.keep_state(r.clone());
                }
                self.opt.step_range(params, grads, lr, r);
                self.state_partial = true;
                g.all_gather_slices(params);
            }
            _ => self.opt.step(params, grads, lr),
        }
        self.step += 1;
        Ok(loss)
    }

    /// One pass over `data` in a fresh random order (seeded), in minibatches
    /// of `batch` samples; the last, smaller batch is used too unless it holds
    /// a single sample (which BatchNorm could not normalise).
    ///
    /// # Errors
    /// As [`Trainer::step`].
    ///
    /// # Panics
    /// If `batch` is 0.
    ///
    /// ```
    /// use backprop::nn::{Loss, MlpBuilder, Targets};
    /// use backprop::optim::{Adam, AdamConfig, Schedule};
    /// use backprop::train::{Dataset, Trainer};
    /// let x: Vec<f32> = (0..40).map(|i| i as f32 / 10.0).collect();
    /// let c: Vec<usize> = (0..20).map(|i| usize::from(i >= 10)).collect();
    /// let data = Dataset::new(x, 20, 2, Targets::Classes(&c)).unwrap();
    /// let net = MlpBuilder::new(2).dense(2).loss(Loss::SoftmaxCrossEntropy).build(0).unwrap();
    /// let opt = Adam::new(net.num_params(), AdamConfig::default());
    /// let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(0.05), 9);
    /// let stats = t.train_epoch(&data, 8).unwrap();
    /// assert_eq!((t.epochs(), t.steps()), (1, 3)); // batches of 8, 8 and 4
    /// assert!(stats.mean_loss.is_finite());
    /// ```
    pub fn train_epoch(&mut self, data: &Dataset, batch: usize) -> Result<EpochStats, TrainError> {
        self.train_epoch_with(data, batch, |_, _, _| {})
    }

    /// [`Trainer::train_epoch`], calling `progress(done, total, loss)` after
    /// each minibatch (`done` of `total` minibatches, that minibatch's loss) —
    /// for a progress bar.
    ///
    /// # Errors
    /// As [`Trainer::step`].
    ///
    /// # Panics
    /// If `batch` is 0.
    pub fn train_epoch_with<F: FnMut(usize, usize, f32)>(
        &mut self,
        data: &Dataset,
        batch: usize,
        mut progress: F,
    ) -> Result<EpochStats, TrainError> {
        assert!(
            batch > 0,
            "Trainer::train_epoch: batch size must be positive"
        );
        let start = Instant::now();
        let n = data.len();
        self.order.clear();
        self.order.extend(0..n);
        Rng::seed_from_u64(shuffle_seed(self.seed, self.epoch)).shuffle(&mut self.order);
        let (mut total, mut seen, mut steps) = (0.0f64, 0usize, 0u64);
        let mut lo = 0;
        while lo < n {
            let hi = (lo + batch).min(n);
            if hi - lo < 2 && lo > 0 {
                break;
            }
            let loss = self.gather_and_step(data, lo, hi)?;
            total += loss as f64 * (hi - lo) as f64;
            seen += hi - lo;
            steps += 1;
            progress(steps as usize, n.div_ceil(batch), loss);
            lo = hi;
        }
        self.epoch += 1;
        Ok(EpochStats {
            epoch: self.epoch,
            mean_loss: (total / seen.max(1) as f64) as f32,
            steps,
            samples: seen,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Gathers samples `order[lo..hi]` into the minibatch buffers and steps.
    fn gather_and_step(&mut self, data: &Dataset, lo: usize, hi: usize) -> Result<f32, TrainError> {
        // The buffers move out for the step (no copy, no allocation) so the
        // gathered views and `self` can be borrowed at once.
        let mut buf = std::mem::take(&mut self.batch);
        let order = std::mem::take(&mut self.order);
        let result = {
            // In a group, only this rank's rows of the minibatch.
            let r = self.net.rows_of(hi - lo);
            let (x, targets) = data.gather(&order[lo + r.start..lo + r.end], &mut buf);
            match self.net.group() {
                Some(_) => self.run_step(hi - lo, |net| net.forward_backward(x, targets)),
                None => self.step(x, targets),
            }
        };
        self.batch = buf;
        self.order = order;
        result
    }

    /// The network in evaluation mode on the whole dataset, in chunks of
    /// `chunk` samples (which bounds the workspace): mean loss and, for
    /// classification, the number correct.
    ///
    /// # Errors
    /// As [`Mlp::evaluate`].
    pub fn evaluate(&mut self, data: &Dataset, chunk: usize) -> Result<Evaluation, StepError> {
        evaluate(&mut self.net, data, chunk)
    }
}

/// The seed of epoch `epoch`'s shuffle (a SplitMix64 step of the pair, so
/// neighbouring epochs get unrelated streams).
fn shuffle_seed(seed: u64, epoch: u64) -> u64 {
    let mut z = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// [`Trainer::evaluate`] for a bare network.
///
/// # Errors
/// As [`Mlp::evaluate`].
pub fn evaluate(net: &mut Mlp, data: &Dataset, chunk: usize) -> Result<Evaluation, StepError> {
    let chunk = chunk.max(1);
    let (mut loss, mut correct, mut any_correct) = (0.0f64, 0usize, false);
    let n = data.len();
    let mut lo = 0;
    let mut buf = Batch::default();
    while lo < n {
        let hi = (lo + chunk).min(n);
        let (x, t) = data.slice(lo, hi, &mut buf);
        let e = net.evaluate(x, t)?;
        loss += e.loss as f64 * (hi - lo) as f64;
        if let Some(c) = e.correct {
            correct += c;
            any_correct = true;
        }
        lo = hi;
    }
    Ok(Evaluation {
        loss: (loss / n.max(1) as f64) as f32,
        correct: any_correct.then_some(correct),
        samples: n,
    })
}

/// Whether every value is finite: one pass, spread over the crate's threads.
fn all_finite(v: &[f32]) -> bool {
    let bad = std::sync::atomic::AtomicBool::new(false);
    crate::parallel::for_each_range(v.len(), |r| {
        if !all_finite_serial(&v[r]) {
            bad.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    !bad.into_inner()
}

/// [`all_finite`] on one thread, in the active ISA's vector width (the
/// baseline build would run it four lanes at a time).
fn all_finite_serial(v: &[f32]) -> bool {
    let mut finite = false;
    crate::optim::vectorized(|| finite = no_inf_or_nan(v));
    finite
}

/// Whether no `|x|` reaches `0x7f80_0000` in its bits (all exponent bits
/// set: ±∞ and NaN): a maximum over integers, which the compiler splits into
/// independent vector lanes and sums with no rounding question.
#[inline(always)]
fn no_inf_or_nan(v: &[f32]) -> bool {
    v.iter()
        .fold(0u32, |m, &x| m.max(x.to_bits() & 0x7fff_ffff))
        < 0x7f80_0000
}

#[cfg(test)]
mod tests {
    use super::all_finite;

    #[test]
    fn all_finite_finds_nan_and_infinities_anywhere() {
        for n in [0usize, 1, 15, 16, 17, 100, 70_001] {
            let v = vec![1e30f32; n];
            assert!(all_finite(&v));
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in (0..n).step_by(1 + n / 50) {
                    let mut w = v.clone();
                    w[at] = bad;
                    assert!(!all_finite(&w), "{bad} at {at} of {n}");
                }
            }
        }
    }
}
