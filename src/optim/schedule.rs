//! Step-size schedules: maps from the step index t = 0, 1, 2, … to a learning
//! rate, composable with a linear warm-up.

use std::fmt;
use std::str::FromStr;

/// A step-size schedule: [`lr_at`](Schedule::lr_at)`(t)` is the learning rate
/// for step index t (0-based: the first optimizer step uses `lr_at(0)`, which
/// is what `lr_at(opt.steps())` gives before stepping).
///
/// | constructor | `lr_at(t)` | string form |
/// |---|---|---|
/// | [`constant`](Schedule::constant)`(lr)` | lr | `constant:LR` |
/// | [`step_decay`](Schedule::step_decay)`(lr, γ, s)` | lr·γ^⌊t/s⌋ | `step_decay:LR:GAMMA:S` |
/// | [`exponential`](Schedule::exponential)`(lr, γ)` | lr·γᵗ | `exponential:LR:GAMMA` |
/// | [`inverse_time`](Schedule::inverse_time)`(lr, k)` | lr/(1 + k·t) | `inverse_time:LR:K` |
/// | [`cosine`](Schedule::cosine)`(lr, lr_min, T)` | lr_min + (lr − lr_min)·(1 + cos(π·t/T))/2 for t < T, lr_min for t ≥ T | `cosine:LR:LR_MIN:T` |
/// | [`warmup`](Schedule::warmup)`(W, f, inner)` | inner(0)·(f + (1 − f)·t/W) for t < W, inner(t − W) for t ≥ W | `warmup:W:F:INNER` |
///
/// Every formula is evaluated in `f64` and rounded to `f32` once. `lr_at`
/// does not allocate (a warm-up holds its inner schedule in a `Box` built by
/// the constructor).
///
/// The value is a closed form of t, so the schedule has no state to
/// checkpoint: resuming at step t just asks for `lr_at(t)`. (PyTorch's
/// schedulers multiply a running learning rate instead; the closed forms here
/// are the ones PyTorch documents, without their accumulated rounding.)
///
/// Schedules print in the string form and parse back from it
/// ([`FromStr`], for command lines), exactly: `f32` values print with the
/// shortest representation that parses to the same number.
///
/// ```
/// use backprop::optim::Schedule;
///
/// // 100 warm-up steps from 0 to 1e-3, then a cosine decay to 0 over 900 steps.
/// let s = Schedule::warmup(100, 0.0, Schedule::cosine(1e-3, 0.0, 900));
/// assert_eq!(s.lr_at(0), 0.0);
/// assert_eq!(s.lr_at(50), 5e-4);
/// assert_eq!(s.lr_at(100), 1e-3); // warm-up end = the cosine's t = 0
/// assert_eq!(s.lr_at(1000), 0.0); // the cosine's t = T
///
/// let parsed: Schedule = "warmup:100:0:cosine:1e-3:0:900".parse().unwrap();
/// assert_eq!(parsed, s);
/// assert_eq!(s.to_string(), "warmup:100:0:cosine:0.001:0:900");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule(Kind);

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Constant {
        lr: f32,
    },
    StepDecay {
        lr: f32,
        gamma: f32,
        step_size: u64,
    },
    Exponential {
        lr: f32,
        gamma: f32,
    },
    InverseTime {
        lr: f32,
        k: f32,
    },
    Cosine {
        lr: f32,
        lr_min: f32,
        t_max: u64,
    },
    Warmup {
        steps: u64,
        start_factor: f32,
        inner: Box<Schedule>,
    },
}

/// The most warm-ups one schedule string may nest (parsing recurses once per
/// warm-up; the limit keeps hostile strings from overflowing the stack).
pub const MAX_WARMUP_NESTING: usize = 8;

/// Why a schedule could not be built or parsed.
///
/// The constructors panic with this error's message; [`Schedule::from_str`]
/// returns it.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleError {
    /// More than [`MAX_WARMUP_NESTING`] warm-ups nested in one string.
    TooDeep {
        /// Warm-ups found.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// The first `:`-separated token names no schedule.
    UnknownKind {
        /// The token found.
        token: String,
    },
    /// The schedule got the wrong number of `:`-separated arguments.
    ArgCount {
        /// The schedule's name, e.g. `"cosine"`.
        kind: &'static str,
        /// Its usage, e.g. `"cosine:LR:LR_MIN:T"`.
        usage: &'static str,
        /// Arguments expected after the name.
        expected: usize,
        /// Arguments found.
        got: usize,
    },
    /// An argument is not a number of the required type (`f32`, or `u64` for
    /// step counts).
    BadNumber {
        /// The schedule's name.
        kind: &'static str,
        /// The argument, e.g. `"LR"`.
        arg: &'static str,
        /// The token found.
        token: String,
    },
    /// An argument is a number outside its valid range.
    OutOfRange {
        /// The schedule's name.
        kind: &'static str,
        /// The argument, e.g. `"GAMMA"`.
        arg: &'static str,
        /// The value (`u64` arguments converted).
        value: f64,
        /// The valid range, in words.
        requirement: &'static str,
    },
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::TooDeep { depth, max } => {
                write!(f, "{depth} nested warm-ups; at most {max} are accepted")
            }
            ScheduleError::UnknownKind { token } => write!(
                f,
                "unknown schedule {token:?}; expected one of constant, step_decay, \
                 exponential, inverse_time, cosine, warmup"
            ),
            ScheduleError::ArgCount {
                usage,
                expected,
                got,
                ..
            } => write!(
                f,
                "schedule {usage} takes {expected} arguments after its name, got {got}"
            ),
            ScheduleError::BadNumber { kind, arg, token } => {
                write!(
                    f,
                    "schedule {kind}: {arg} = {token:?} is not a valid number"
                )
            }
            ScheduleError::OutOfRange {
                kind,
                arg,
                value,
                requirement,
            } => write!(f, "schedule {kind}: {arg} = {value} must be {requirement}"),
        }
    }
}

impl std::error::Error for ScheduleError {}

// ---- validation shared by the constructors and the parser ----

fn rate(kind: &'static str, arg: &'static str, v: f32) -> Result<f32, ScheduleError> {
    check(kind, arg, v, v.is_finite() && v >= 0.0, "finite and >= 0")
}

fn check(
    kind: &'static str,
    arg: &'static str,
    v: f32,
    ok: bool,
    requirement: &'static str,
) -> Result<f32, ScheduleError> {
    if ok {
        Ok(v)
    } else {
        Err(ScheduleError::OutOfRange {
            kind,
            arg,
            value: v as f64,
            requirement,
        })
    }
}

fn make_step_decay(lr: f32, gamma: f32, step_size: u64) -> Result<Schedule, ScheduleError> {
    let k = "step_decay";
    if step_size == 0 {
        return Err(ScheduleError::OutOfRange {
            kind: k,
            arg: "S",
            value: 0.0,
            requirement: ">= 1",
        });
    }
    Ok(Schedule(Kind::StepDecay {
        lr: rate(k, "LR", lr)?,
        gamma: rate(k, "GAMMA", gamma)?,
        step_size,
    }))
}

fn make_exponential(lr: f32, gamma: f32) -> Result<Schedule, ScheduleError> {
    let k = "exponential";
    Ok(Schedule(Kind::Exponential {
        lr: rate(k, "LR", lr)?,
        gamma: rate(k, "GAMMA", gamma)?,
    }))
}

fn make_inverse_time(lr: f32, k_: f32) -> Result<Schedule, ScheduleError> {
    let k = "inverse_time";
    Ok(Schedule(Kind::InverseTime {
        lr: rate(k, "LR", lr)?,
        k: rate(k, "K", k_)?,
    }))
}

fn make_cosine(lr: f32, lr_min: f32, t_max: u64) -> Result<Schedule, ScheduleError> {
    let k = "cosine";
    Ok(Schedule(Kind::Cosine {
        lr: rate(k, "LR", lr)?,
        lr_min: rate(k, "LR_MIN", lr_min)?,
        t_max,
    }))
}

fn make_warmup(steps: u64, start_factor: f32, inner: Schedule) -> Result<Schedule, ScheduleError> {
    let ok = (0.0..=1.0).contains(&start_factor);
    check("warmup", "F", start_factor, ok, "in [0, 1]")?;
    Ok(Schedule(Kind::Warmup {
        steps,
        start_factor,
        inner: Box::new(inner),
    }))
}

#[cold]
#[inline(never)]
#[track_caller]
fn build_fail(e: ScheduleError) -> ! {
    panic!("{e}")
}

#[track_caller]
fn built(r: Result<Schedule, ScheduleError>) -> Schedule {
    match r {
        Ok(s) => s,
        Err(e) => build_fail(e),
    }
}

impl Schedule {
    /// `lr_at(t) = lr` for every t.
    ///
    /// # Panics
    ///
    /// If `lr` is negative or not finite.
    #[track_caller]
    pub fn constant(lr: f32) -> Self {
        built(rate("constant", "LR", lr).map(|lr| Schedule(Kind::Constant { lr })))
    }

    /// Step decay (PyTorch's `StepLR`): `lr_at(t) = lr·γ^⌊t/step_size⌋`, so the
    /// rate is `lr` for t in 0..step_size and is multiplied by γ at every
    /// multiple of `step_size`.
    ///
    /// # Panics
    ///
    /// If `lr` or `gamma` is negative or not finite, or `step_size == 0`.
    #[track_caller]
    pub fn step_decay(lr: f32, gamma: f32, step_size: u64) -> Self {
        built(make_step_decay(lr, gamma, step_size))
    }

    /// Exponential decay (PyTorch's `ExponentialLR`): `lr_at(t) = lr·γᵗ`.
    ///
    /// # Panics
    ///
    /// If `lr` or `gamma` is negative or not finite.
    #[track_caller]
    pub fn exponential(lr: f32, gamma: f32) -> Self {
        built(make_exponential(lr, gamma))
    }

    /// Inverse-time decay: `lr_at(t) = lr/(1 + k·t)`, the 1/t schedule of
    /// stochastic approximation (k = 0 is constant).
    ///
    /// # Panics
    ///
    /// If `lr` or `k` is negative or not finite.
    #[track_caller]
    pub fn inverse_time(lr: f32, k: f32) -> Self {
        built(make_inverse_time(lr, k))
    }

    /// Cosine annealing from `lr` at t = 0 to `lr_min` at t = `t_max`, with
    /// PyTorch's `CosineAnnealingLR` closed form
    /// `lr_min + (lr − lr_min)·(1 + cos(π·t/t_max))/2` for t < `t_max`, and
    /// `lr_min` for every t ≥ `t_max` (PyTorch's recursive form would instead
    /// rise again after `t_max`). `t_max = 0` gives `lr_min` throughout.
    /// `lr_min > lr` is allowed (the rate then rises).
    ///
    /// # Panics
    ///
    /// If `lr` or `lr_min` is negative or not finite.
    #[track_caller]
    pub fn cosine(lr: f32, lr_min: f32, t_max: u64) -> Self {
        built(make_cosine(lr, lr_min, t_max))
    }

    /// A linear warm-up over the first `steps` steps, then `inner` with its
    /// clock started at the end of the warm-up:
    ///
    /// ```text
    /// t < steps:   lr_at(t) = inner.lr_at(0)·(start_factor + (1 − start_factor)·t/steps)
    /// t ≥ steps:   lr_at(t) = inner.lr_at(t − steps)
    /// ```
    ///
    /// The ramp is PyTorch's `LinearLR` (from `start_factor·lr` to `lr`,
    /// `end_factor = 1`) applied to the inner schedule's first rate; at
    /// t = `steps` it reaches exactly `inner.lr_at(0)`, so the result is
    /// continuous, and the whole run lasts `steps` + the inner schedule's
    /// length (like PyTorch's `SequentialLR` with a milestone at `steps`).
    /// `start_factor = 0` makes step 0 a no-op step; `steps = 0` is no
    /// warm-up. Warm-ups nest.
    ///
    /// # Panics
    ///
    /// If `start_factor` is not in [0, 1].
    #[track_caller]
    pub fn warmup(steps: u64, start_factor: f32, inner: Schedule) -> Self {
        built(make_warmup(steps, start_factor, inner))
    }

    /// The learning rate for step index `t` (0-based); see the table on
    /// [`Schedule`]. Computed in `f64`, rounded to `f32` once; never
    /// allocates, never panics.
    pub fn lr_at(&self, t: u64) -> f32 {
        self.lr_at_f64(t) as f32
    }

    fn lr_at_f64(&self, t: u64) -> f64 {
        match self.0 {
            Kind::Constant { lr } => lr as f64,
            Kind::StepDecay {
                lr,
                gamma,
                step_size,
            } => lr as f64 * (gamma as f64).powf((t / step_size) as f64),
            Kind::Exponential { lr, gamma } => lr as f64 * (gamma as f64).powf(t as f64),
            Kind::InverseTime { lr, k } => lr as f64 / (1.0 + k as f64 * t as f64),
            Kind::Cosine { lr, lr_min, t_max } => {
                let (lr, lr_min) = (lr as f64, lr_min as f64);
                if t >= t_max {
                    lr_min
                } else {
                    let phase = std::f64::consts::PI * t as f64 / t_max as f64;
                    lr_min + (lr - lr_min) * (1.0 + phase.cos()) / 2.0
                }
            }
            Kind::Warmup {
                steps,
                start_factor,
                ref inner,
            } => {
                if t < steps {
                    let f = start_factor as f64;
                    inner.lr_at_f64(0) * (f + (1.0 - f) * t as f64 / steps as f64)
                } else {
                    inner.lr_at_f64(t - steps)
                }
            }
        }
    }
}

impl fmt::Display for Schedule {
    /// The string form of the table on [`Schedule`], e.g.
    /// `warmup:100:0:cosine:0.001:0:900`; [`FromStr`] parses it back exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Constant { lr } => write!(f, "constant:{lr}"),
            Kind::StepDecay {
                lr,
                gamma,
                step_size,
            } => write!(f, "step_decay:{lr}:{gamma}:{step_size}"),
            Kind::Exponential { lr, gamma } => write!(f, "exponential:{lr}:{gamma}"),
            Kind::InverseTime { lr, k } => write!(f, "inverse_time:{lr}:{k}"),
            Kind::Cosine { lr, lr_min, t_max } => write!(f, "cosine:{lr}:{lr_min}:{t_max}"),
            Kind::Warmup {
                steps,
                start_factor,
                inner,
            } => write!(f, "warmup:{steps}:{start_factor}:{inner}"),
        }
    }
}

fn parse_f32(kind: &'static str, arg: &'static str, token: &str) -> Result<f32, ScheduleError> {
    token.parse().map_err(|_| ScheduleError::BadNumber {
        kind,
        arg,
        token: token.to_string(),
    })
}

fn parse_u64(kind: &'static str, arg: &'static str, token: &str) -> Result<u64, ScheduleError> {
    token.parse().map_err(|_| ScheduleError::BadNumber {
        kind,
        arg,
        token: token.to_string(),
    })
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// Parses the string form (see the table on [`Schedule`]): a name and its
    /// arguments separated by `:`, e.g. `"cosine:1e-3:0:10000"` or
    /// `"warmup:500:0.1:step_decay:0.1:0.5:1000"`. A warm-up's last argument
    /// is the whole inner schedule. `f32` arguments accept Rust's float
    /// syntax (`1e-3`, `0.001`, `1`); step counts are non-negative integers.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::UnknownKind`] for an unknown name,
    /// [`ScheduleError::ArgCount`] for too few or too many arguments,
    /// [`ScheduleError::BadNumber`] with the offending token,
    /// [`ScheduleError::OutOfRange`] for a number the constructor would
    /// reject. Errors inside a warm-up's inner schedule are reported as they
    /// are.
    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        // Each warm-up nests a schedule; untrusted strings (checkpoint files)
        // must not recurse deep enough to overflow the stack.
        let depth = s.split(':').filter(|t| t.trim() == "warmup").count();
        if depth > MAX_WARMUP_NESTING {
            return Err(ScheduleError::TooDeep {
                depth,
                max: MAX_WARMUP_NESTING,
            });
        }
        let (name, rest) = match s.split_once(':') {
            Some((name, rest)) => (name, Some(rest)),
            None => (s, None),
        };
        if name == "warmup" {
            // W:F:INNER..., where INNER contains ':' itself.
            let parts: Vec<&str> = rest.map_or(Vec::new(), |r| r.splitn(3, ':').collect());
            if parts.len() != 3 {
                return Err(ScheduleError::ArgCount {
                    kind: "warmup",
                    usage: "warmup:W:F:INNER",
                    expected: 3,
                    got: parts.len(),
                });
            }
            let steps = parse_u64("warmup", "W", parts[0])?;
            let f = parse_f32("warmup", "F", parts[1])?;
            let inner = parts[2].parse()?;
            return make_warmup(steps, f, inner);
        }
        let args: Vec<&str> = rest.map_or(Vec::new(), |r| r.split(':').collect());
        let want = |kind: &'static str, usage: &'static str, expected: usize| {
            if args.len() == expected {
                Ok(())
            } else {
                Err(ScheduleError::ArgCount {
                    kind,
                    usage,
                    expected,
                    got: args.len(),
                })
            }
        };
        match name {
            "constant" => {
                want("constant", "constant:LR", 1)?;
                let lr = parse_f32("constant", "LR", args[0])?;
                Ok(Schedule(Kind::Constant {
                    lr: rate("constant", "LR", lr)?,
                }))
            }
            "step_decay" => {
                let k = "step_decay";
                want(k, "step_decay:LR:GAMMA:S", 3)?;
                make_step_decay(
                    parse_f32(k, "LR", args[0])?,
                    parse_f32(k, "GAMMA", args[1])?,
                    parse_u64(k, "S", args[2])?,
                )
            }
            "exponential" => {
                let k = "exponential";
                want(k, "exponential:LR:GAMMA", 2)?;
                make_exponential(
                    parse_f32(k, "LR", args[0])?,
                    parse_f32(k, "GAMMA", args[1])?,
                )
            }
            "inverse_time" => {
                let k = "inverse_time";
                want(k, "inverse_time:LR:K", 2)?;
                make_inverse_time(parse_f32(k, "LR", args[0])?, parse_f32(k, "K", args[1])?)
            }
            "cosine" => {
                let k = "cosine";
                want(k, "cosine:LR:LR_MIN:T", 3)?;
                make_cosine(
                    parse_f32(k, "LR", args[0])?,
                    parse_f32(k, "LR_MIN", args[1])?,
                    parse_u64(k, "T", args[2])?,
                )
            }
            _ => Err(ScheduleError::UnknownKind {
                token: name.to_string(),
            }),
        }
    }
}
