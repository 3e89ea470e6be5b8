//! The crate's thread setting and thread pool.
//!
//! Policy:
//! * The thread count is, in order of precedence: the value given to
//!   [`set_num_threads`], the `BACKPROP_NUM_THREADS` environment variable,
//!   `RAYON_NUM_THREADS`, the number of available cores.
//! * Parallel work runs on a pool owned by this crate (rayon), never on the
//!   caller's pool, and is **never nested**: a call made from inside any rayon
//!   worker thread (ours or the caller's) runs on that thread alone, as does a
//!   call with one thread asked for.
//! * Work is split so that results do not depend on the thread count (the GEMM
//!   never splits k); see [`crate::gemm`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// True when the current thread is a rayon worker, where nesting is refused.
pub(crate) fn in_worker() -> bool {
    rayon::current_thread_index().is_some()
}

/// The pool for `threads` threads, built on first use and kept until a
/// different size is asked for.
fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    static POOL: Mutex<Option<Arc<rayon::ThreadPool>>> = Mutex::new(None);
    let mut guard = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = guard.as_ref() {
        if p.current_num_threads() == threads {
            return Arc::clone(p);
        }
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("backprop-{i}"))
            .build()
            .expect("backprop: could not start the thread pool"),
    );
    *guard = Some(Arc::clone(&p));
    p
}

/// Runs `task(0..pieces)`, in parallel on the crate's pool of `threads`
/// threads when both exceed 1 and the caller is not itself a rayon worker.
/// Which thread runs which piece is unspecified; callers make each piece's
/// result independent of that.
pub(crate) fn for_each_piece<F>(threads: usize, pieces: usize, task: F)
where
    F: Fn(usize) + Sync,
{
    if pieces <= 1 || threads <= 1 || in_worker() {
        (0..pieces).for_each(task);
        return;
    }
    let pool = pool(threads);
    pool.scope(|s| {
        let task = &task;
        for i in 1..pieces {
            s.spawn(move |_| task(i));
        }
        task(0);
    });
}
