//! The crate's thread setting and thread pool.
//!
//! Policy:
//! * The thread count is, in order of precedence: the value given to
//!   [`set_num_threads`], the `BACKPROP_NUM_THREADS` environment variable,
//!   `RAYON_NUM_THREADS`, the number of available cores.
//! * Parallel work runs on a team of threads owned by this crate, never on the
//!   caller's pool, and is **never nested**: a call made from inside one of our
//!   pieces, or while the team is busy with another caller's work, runs on the
//!   calling thread alone, as does a call with one thread asked for. With the
//!   `rayon` feature, so does a call from inside any rayon worker thread (the
//!   caller's pool); without it (the default, which keeps rayon out of the
//!   build) such a call uses the team as any other, so a rayon program that
//!   calls in from many workers at once should enable the feature or set one
//!   thread. Results are the same bits either way.
//! * The team is a small fork-join of its own (a mutex, two condition
//!   variables, parked threads) rather than a rayon pool, because a call must
//!   not allocate: rayon's job injection allocates a queue block every 63 jobs,
//!   which would break the training step's no-allocation guarantee. The calling
//!   thread works on the pieces too.
//! * Work is split so that results do not depend on the thread count (the GEMM
//!   never splits k); see [`crate::gemm`]. On x86-64 every piece runs under
//!   the calling thread's floating-point control setting (the MXCSR: rounding
//!   and subnormal flushing), so a caller that flushes subnormals gets the
//!   same bits from pieces that run on the team's threads. (Elsewhere the
//!   setting is not handed on; the crate itself changes it only on x86-64.)
//! * The calling thread and the team spin briefly before parking, both for a
//!   new job and for the last pieces of one: training calls GEMMs back to
//!   back, and a wake-up through the kernel costs tens of microseconds, a
//!   tenth of a 128-row layer's product on two threads.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use crate::kernel::subnormal::{fp_control, UseFpControl};

/// How many threads a call may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threads {
    /// The crate-wide setting ([`num_threads`]).
    #[default]
    Global,
    /// Exactly this many threads (0 is treated as 1).
    Fixed(usize),
}

impl Threads {
    /// The concrete thread count this setting stands for.
    pub fn count(self) -> usize {
        match self {
            Threads::Global => num_threads(),
            Threads::Fixed(n) => n.max(1),
        }
    }
}

/// 0 means "not set by the program".
static SET_BY_PROGRAM: AtomicUsize = AtomicUsize::new(0);

/// Sets the crate-wide thread count used by every parallel kernel; 0 restores
/// the default (environment, then available cores).
pub fn set_num_threads(n: usize) {
    SET_BY_PROGRAM.store(n, Ordering::Relaxed);
}

fn env_threads(var: &str) -> Option<usize> {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
}

/// The crate-wide thread count: [`set_num_threads`], else `BACKPROP_NUM_THREADS`,
/// else `RAYON_NUM_THREADS`, else the available cores.
///
/// ```
/// assert!(backprop::num_threads() >= 1);
/// ```
pub fn num_threads() -> usize {
    match SET_BY_PROGRAM.load(Ordering::Relaxed) {
        0 => {
            static DEFAULT: OnceLock<usize> = OnceLock::new();
            *DEFAULT.get_or_init(|| {
                env_threads("BACKPROP_NUM_THREADS")
                    .or_else(|| env_threads("RAYON_NUM_THREADS"))
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            })
        }
        n => n,
    }
}

thread_local! {
    /// Set while this thread runs a piece (or is a team worker): nested
    /// parallel calls then run inline.
    static IN_PIECE: Cell<bool> = const { Cell::new(false) };
}

/// True when a parallel call made here must run inline: inside one of our
/// pieces or (with the `rayon` feature) on a rayon worker thread, someone
/// else's pool.
pub(crate) fn in_worker() -> bool {
    IN_PIECE.with(Cell::get) || in_rayon_worker()
}

#[cfg(feature = "rayon")]
fn in_rayon_worker() -> bool {
    rayon::current_thread_index().is_some()
}

#[cfg(not(feature = "rayon"))]
fn in_rayon_worker() -> bool {
    false
}

/// Spin iterations a worker waits for a new job, and a caller for the last
/// pieces of its job, before parking: 2¹⁴ `pause`s, about 0.4 ms on a Zen 4
/// (measured) and about 1 ms on Intel cores whose `pause` takes ~140 cycles. A
/// caller spins only while another thread is still working on its job.
const SPIN_ROUNDS: usize = 1 << 14;

/// The task of the current fork-join, with its lifetime erased (see `Team::run`).
type Task = &'static (dyn Fn(usize) + Sync);

#[derive(Default)]
struct State {
    /// Bumped for every job; workers wait for a change.
    epoch: u64,
    task: Option<Task>,
    pieces: usize,
    /// The caller's floating-point control setting, under which every piece
    /// runs (so a piece's bits do not depend on the thread that runs it).
    fp_control: u32,
    /// Next piece to claim, and pieces finished.
    next: usize,
    done: usize,
    /// A piece panicked; its payload is re-raised on the caller.
    panic: Option<Box<dyn std::any::Any + Send>>,
    /// The caller is parked on `finished` (otherwise finishing a job needs
    /// no wake-up call).
    caller_parked: bool,
    /// Workers parked on `work` (when none is, a new job needs no wake-up
    /// call: the spinning workers see the epoch change).
    workers_parked: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    finished: Condvar,
    /// Mirror of `State::epoch`, read without the lock by workers that spin
    /// briefly before parking (training calls GEMMs back to back, and waking
    /// a parked thread costs tens of microseconds).
    epoch: AtomicU64,
    /// Workers that have started (their thread set-up, which allocates, is
    /// done).
    started: AtomicUsize,
    /// The epoch whose pieces have all finished, read without the lock by a
    /// caller that spins briefly for the last piece before parking (waking
    /// a parked caller costs as much as waking a worker).
    finished_epoch: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims and runs pieces until none is left.
    fn work_on<'a>(&'a self, mut st: MutexGuard<'a, State>) {
        while let (Some(task), true) = (st.task, st.next < st.pieces) {
            let i = st.next;
            st.next += 1;
            let control = st.fp_control;
            drop(st);
            let was = IN_PIECE.with(|f| f.replace(true));
            let result = catch_unwind(AssertUnwindSafe(|| {
                let _fp = UseFpControl::new(control);
                task(i)
            }));
            IN_PIECE.with(|f| f.set(was));
            st = self.lock();
            if let Err(payload) = result {
                st.panic.get_or_insert(payload);
            }
            st.done += 1;
            if st.done == st.pieces {
                self.finished_epoch.store(st.epoch, Ordering::Release);
                if st.caller_parked {
                    self.finished.notify_all();
                }
            }
        }
    }
}

/// A fork-join team: `threads − 1` parked workers plus the calling thread.
struct Team {
    threads: usize,
    shared: Arc<Shared>,
    /// Serialises callers; a caller that finds it taken runs inline.
    busy: Mutex<()>,
    handles: Vec<JoinHandle<()>>,
}

impl Team {
    fn new(threads: usize) -> Team {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            finished: Condvar::new(),
            epoch: AtomicU64::new(0),
            started: AtomicUsize::new(0),
            finished_epoch: AtomicU64::new(0),
        });
        let handles = (1..threads)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("backprop-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("backprop: could not start a worker thread")
            })
            .collect();
        // Every worker's start-up (thread set-up, its thread-locals) happens
        // here, not later in the middle of a caller's work: a steady-state
        // training step allocates nothing, whatever the scheduler does.
        while shared.started.load(Ordering::Acquire) + 1 < threads {
            std::thread::yield_now();
        }
        Team {
            threads,
            shared,
            busy: Mutex::new(()),
            handles,
        }
    }

    /// Runs `task(0..pieces)` on the team and the calling thread; returns when
    /// every piece has finished, re-raising a piece's panic.
    fn run(&self, pieces: usize, task: &(dyn Fn(usize) + Sync)) {
        let Ok(_guard) = self.busy.try_lock() else {
            (0..pieces).for_each(task);
            return;
        };
        // SAFETY: the reference is published to the workers only until this
        // function returns, and it returns only after `done == pieces`, i.e.
        // after every piece that dereferenced it has finished; `task` is
        // cleared under the lock before returning, so no worker can claim it
        // later. The erased lifetime is therefore never outlived.
        let erased: Task = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Task>(task) };
        let mut st = self.shared.lock();
        st.epoch = st.epoch.wrapping_add(1);
        self.shared.epoch.store(st.epoch, Ordering::Release);
        st.task = Some(erased);
        st.fp_control = fp_control();
        st.pieces = pieces;
        st.next = 0;
        st.done = 0;
        let epoch = st.epoch;
        if st.workers_parked > 0 {
            self.shared.work.notify_all();
        }
        self.shared.work_on(st);
        // The other threads' last pieces usually end within microseconds:
        // spin for them before parking, as the workers do for a new job.
        for _ in 0..SPIN_ROUNDS {
            if self.shared.finished_epoch.load(Ordering::Acquire) == epoch {
                break;
            }
            std::hint::spin_loop();
        }
        let mut st = self.shared.lock();
        while st.done < st.pieces {
            st.caller_parked = true;
            st = self
                .shared
                .finished
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        st.caller_parked = false;
        st.task = None;
        if let Some(payload) = st.panic.take() {
            drop(st);
            resume_unwind(payload);
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(shared: &Shared) {
    IN_PIECE.with(|f| f.set(true));
    shared.started.fetch_add(1, Ordering::Release);
    let mut seen = 0u64;
    loop {
        // Spin a while (SPIN_ROUNDS) for the next job before parking; the job
        // is then taken under the lock as usual, so this only saves a wake-up.
        for _ in 0..SPIN_ROUNDS {
            if shared.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            std::hint::spin_loop();
        }
        let mut st = shared.lock();
        while st.epoch == seen && !st.shutdown {
            st.workers_parked += 1;
            st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            st.workers_parked -= 1;
        }
        if st.shutdown {
            return;
        }
        seen = st.epoch;
        shared.work_on(st);
    }
}

/// The team for `threads` threads, started on first use and kept until a
/// different size is asked for.
fn team(threads: usize) -> Arc<Team> {
    static TEAM: Mutex<Option<Arc<Team>>> = Mutex::new(None);
    let mut guard = TEAM.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = guard.as_ref() {
        if t.threads == threads {
            return Arc::clone(t);
        }
    }
    let t = Arc::new(Team::new(threads));
    *guard = Some(Arc::clone(&t));
    t
}

/// Runs `task(0..pieces)`, in parallel on the crate's team of `threads`
/// threads (the caller included) when both exceed 1 and the call is not
/// nested (see the module docs). Which thread runs which piece is
/// unspecified; callers make each piece's result independent of that. A
/// call allocates nothing once the team exists.
pub(crate) fn for_each_piece<F>(threads: usize, pieces: usize, task: F)
where
    F: Fn(usize) + Sync,
{
    if pieces <= 1 || threads <= 1 || in_worker() {
        (0..pieces).for_each(task);
        return;
    }
    team(threads).run(pieces, &task);
}

/// Elementwise loops shorter than this run on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// Runs `f(range)` over `0..n` cut into one contiguous range per thread of the
/// crate-wide setting (in parallel when `n` is large enough). For elementwise
/// updates, whose result does not depend on the cut.
pub(crate) fn for_each_range<F>(n: usize, f: F)
where
    F: Fn(std::ops::Range<usize>) + Sync,
{
    let threads = if n < PARALLEL_MIN_ELEMENTS {
        1
    } else {
        num_threads()
    };
    // Ranges in multiples of 64 elements (whole cache lines, whole vectors).
    let chunk = n.div_ceil(threads).next_multiple_of(64).max(64);
    let pieces = n.div_ceil(chunk);
    for_each_piece(threads, pieces, |t| f(t * chunk..((t + 1) * chunk).min(n)));
}

/// A mutable slice handed to parallel pieces that each touch a disjoint range.
///
/// It holds the slice's mutable borrow for `'a`, so the compiler checks that
/// the slice stays borrowed (and untouched by anyone else) for as long as
/// pieces can reach it; `range` is left to promise only that the pieces'
/// ranges are disjoint.
pub(crate) struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a SharedMut only yields sub-slices through `range`, whose caller
// guarantees that concurrent ranges are disjoint; T itself crosses threads.
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    /// Wraps `s`, borrowing it mutably for `'a`.
    pub(crate) fn new(s: &'a mut [T]) -> SharedMut<'a, T> {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _borrow: std::marker::PhantomData,
        }
    }

    /// The elements `r`.
    ///
    /// # Safety
    /// No other live reference (from this or another thread) overlaps `r`.
    ///
    /// # Panics
    /// If `r` is out of bounds.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn range(&self, r: std::ops::Range<usize>) -> &mut [T] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "SharedMut: range {r:?} out of 0..{}",
            self.len
        );
        // SAFETY: in bounds (checked), the slice is borrowed for 'a (the
        // type), and exclusive (caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::for_each_piece;
    use crate::kernel::subnormal::flush_subnormals;
    use std::hint::black_box;
    use std::sync::Mutex;

    /// A caller that flushes subnormals to zero has every piece flushed,
    /// whichever thread runs it, and the team's threads are back to their
    /// own setting afterwards (a later caller without flushing gets
    /// subnormals from every piece).
    #[test]
    fn pieces_run_under_the_callers_fp_control() {
        let run = |flush: bool| {
            let results = Mutex::new(Vec::new());
            let _guard = flush.then(flush_subnormals);
            for_each_piece(2, 64, |_| {
                // Long enough for the second thread to claim pieces too.
                let t = std::time::Instant::now();
                while t.elapsed() < std::time::Duration::from_micros(100) {
                    std::hint::spin_loop();
                }
                let r = black_box(black_box(f32::MIN_POSITIVE) * black_box(0.5f32));
                let mut v = results.lock().unwrap();
                v.push((std::thread::current().id(), r.to_bits()));
            });
            results.into_inner().unwrap()
        };
        let mut both_threads = false;
        // Another test may hold the team, and then a call runs inline: try
        // until one call ran on two threads.
        for _ in 0..50 {
            let flushed = run(true);
            let kept = run(false);
            for (what, v, want_zero) in [("flushed", &flushed, true), ("kept", &kept, false)] {
                assert_eq!(v.len(), 64);
                for &(_, bits) in v {
                    let zero = bits == 0;
                    if cfg!(target_arch = "x86_64") {
                        assert_eq!(zero, want_zero, "{what}: piece result {bits:#x}");
                    }
                }
            }
            let ids = |v: &[(std::thread::ThreadId, u32)]| {
                v.iter()
                    .map(|p| p.0)
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            };
            if ids(&flushed) > 1 && ids(&kept) > 1 {
                both_threads = true;
                break;
            }
        }
        assert!(both_threads, "no call ran on two threads");
    }
}

#[cfg(all(test, feature = "rayon"))]
mod rayon_tests {
    /// Inside a rayon pool our calls run inline (no nested team).
    #[test]
    fn calls_from_a_rayon_worker_run_inline() {
        assert!(!super::in_worker());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        assert!(pool.install(super::in_worker));
    }
}
