//! [`Communicator`] over MPI (feature `mpi`, through the `mpi` crate and the
//! system's MPI library, e.g. Open MPI).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use mpi::datatype::{Equivalence, Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::ffi;
use mpi::point_to_point::{Destination as _, Source as _, Status};
use mpi::raw::AsRaw as _;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives as _};
use mpi::Count;

use super::{check_peer, Communicator, SharedSegments};

/// The ranks of `MPI_COMM_WORLD`, as started by `mpirun`/`mpiexec` (a
/// program started alone is a world of one).
///
/// MPI is initialised asking for `MPI_THREAD_MULTIPLE` (at least
/// `MPI_THREAD_SERIALIZED` is needed), and every collective holds the
/// communicator's lock, so it may be used from any thread. With
/// `MPI_THREAD_MULTIPLE`, [`Communicator::channel`] duplicates the
/// communicator (`MPI_Comm_dup`) for the gradient exchange beside the
/// backward pass, whose collectives wait by polling with back-off rather
/// than in MPI's busy loop, so the computing threads keep their cores; with
/// `MPI_THREAD_SERIALIZED` alone it offers none, and training exchanges
/// gradients on its own thread. A
/// watchdog ends the process, naming its rank, when one collective has
/// waited longer than the timeout (`BACKPROP_MPI_TIMEOUT` seconds, default
/// 300): MPI itself has no timeout, and a peer that hangs rather than dies
/// would otherwise hang every rank. (A peer that dies is seen by `mpirun`,
/// which ends the job and names the rank.) MPI is finalised when the last
/// clone of the `Arc` is dropped: drop it on the thread that called
/// [`MpiCommunicator::init`], as MPI asks.
///
/// When every rank runs on one node (`MPI_Comm_split_type` with
/// `MPI_COMM_TYPE_SHARED` keeps the whole world together),
/// [`Communicator::shared_segments`] allocates an MPI-3 shared-memory
/// window (`MPI_Win_allocate_shared`), which every rank reads in place; its
/// barrier is `MPI_Win_sync`, `MPI_Barrier`, `MPI_Win_sync`, watched by the
/// watchdog like every collective. The windows are freed (a collective)
/// when the communicator is dropped, in the order they were made, so that
/// the ranks never have to drop their segments at the same point or in the
/// same order; until then a window's memory stays allocated (a new one is
/// made only when a network's shard layout changes or the parameter gather
/// outgrows its window, so they add up to little).
pub struct MpiCommunicator {
    world: Mutex<World>,
    rank: usize,
    size: usize,
    /// Whether MPI gave `MPI_THREAD_MULTIPLE`.
    multiple: bool,
    /// Whether every rank runs on this node (shared segments on offer).
    shares: bool,
    /// This communicator, for the segments it makes (their barrier calls it).
    me: Weak<MpiCommunicator>,
    /// Windows whose segments were dropped, freed with the communicator.
    retired: Mutex<Vec<Window>>,
    /// Windows made so far: the next one's number.
    windows: AtomicU64,
    /// Collectives poll with back-off instead of spinning (a channel's,
    /// which run beside the computing threads; the world's calling thread
    /// has nothing else to do while it waits, so it takes MPI's faster
    /// busy wait).
    patient: bool,
    timeout: f64,
    /// Nanoseconds since `start` when the current collective began; 0 when
    /// none is in progress.
    busy_since: Arc<AtomicU64>,
    start: Instant,
    // Dropped last (after the communicator is freed): the last owner
    // finalises MPI.
    universe: Arc<Finaliser>,
}

/// The world communicator's handle.
struct World(SimpleCommunicator);

// SAFETY: MPI is initialised with at least MPI_THREAD_SERIALIZED, which
// allows MPI calls from any thread as long as no two are concurrent. Every
// use of a handle goes through its `MpiCommunicator::world` mutex, so calls
// on one communicator never are; a second communicator (a channel) exists
// only under MPI_THREAD_MULTIPLE, which allows calls on different
// communicators at once.
unsafe impl Send for World {}

/// An MPI window handle, numbered in the order the windows were made (the
/// same on every rank: making one is a collective).
struct Window(ffi::MPI_Win, u64);

// SAFETY: the handle is only used under the communicator's `world` mutex
// (the barrier's `MPI_Win_sync`, and `MPI_Win_free` in the communicator's
// drop), so never by two threads at once, as MPI_THREAD_SERIALIZED allows.
unsafe impl Send for Window {}

/// The universe, whose drop finalises MPI.
struct Finaliser(#[allow(dead_code)] Universe);

// SAFETY: the universe is only dropped (MPI_Finalize, once, by the last
// owner of the `Arc`), never used otherwise, and no collective is running
// then: every communicator holding the `Arc` has been dropped, its handle
// freed first. MPI asks that the thread that initialised MPI finalise it:
// the crate's own threads (the gradient exchange) release their handles
// before the network that started them is dropped, so that holds as long
// as the caller drops its last `Group` on the thread that called `init`.
unsafe impl Send for Finaliser {}
// SAFETY: as for `Send`: the universe is never accessed through a shared
// reference.
unsafe impl Sync for Finaliser {}

impl std::fmt::Debug for MpiCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCommunicator")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl MpiCommunicator {
    /// Initialises MPI and returns the world's communicator.
    ///
    /// # Errors
    /// A message if MPI was initialised already or cannot give
    /// `MPI_THREAD_SERIALIZED`.
    pub fn init() -> Result<Arc<MpiCommunicator>, String> {
        let (universe, level) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or("MPI was initialised already")?;
        if level < mpi::Threading::Serialized {
            return Err(format!(
                "the MPI library gives threading level {level:?}; MPI_THREAD_SERIALIZED is needed"
            ));
        }
        let world = universe.world();
        let shares = world.split_shared(0).size() == world.size();
        let timeout = std::env::var("BACKPROP_MPI_TIMEOUT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(300.0);
        MpiCommunicator::over(
            world,
            level == mpi::Threading::Multiple,
            false,
            shares,
            timeout,
            Arc::new(Finaliser(universe)),
        )
    }

    /// A communicator over `comm`, with its watchdog.
    fn over(
        comm: SimpleCommunicator,
        multiple: bool,
        patient: bool,
        shares: bool,
        timeout: f64,
        universe: Arc<Finaliser>,
    ) -> Result<Arc<MpiCommunicator>, String> {
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        let comm = Arc::new_cyclic(|me| MpiCommunicator {
            world: Mutex::new(World(comm)),
            rank,
            size,
            multiple,
            shares,
            me: me.clone(),
            retired: Mutex::new(Vec::new()),
            windows: AtomicU64::new(0),
            patient,
            timeout,
            busy_since: Arc::new(AtomicU64::new(0)),
            start: Instant::now(),
            universe,
        });
        let (busy, start) = (Arc::downgrade(&comm.busy_since), comm.start);
        std::thread::Builder::new()
            .name("backprop-mpi-watchdog".into())
            .spawn(move || watchdog(busy, start, rank, timeout))
            .map_err(|e| format!("cannot start the MPI watchdog thread: {e}"))?;
        Ok(comm)
    }

    /// Runs `f` on the world, marked busy for the watchdog.
    fn call<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.start.elapsed().as_nanos() as u64;
        self.busy_since.store(now.max(1), Ordering::Relaxed);
        let out = f(&world.0);
        self.busy_since.store(0, Ordering::Relaxed);
        out
    }
}

/// Ends the process when a collective has been in progress for longer than
/// `timeout` seconds; returns once the communicator is gone.
fn watchdog(busy: Weak<AtomicU64>, start: Instant, rank: usize, timeout: f64) {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let Some(busy) = busy.upgrade() else {
            return;
        };
        let since = busy.load(Ordering::Relaxed);
        if since == 0 {
            continue;
        }
        let waited =
            start.elapsed().as_nanos() as u64 - since.min(start.elapsed().as_nanos() as u64);
        if waited as f64 * 1e-9 > timeout {
            eprintln!(
                "backprop: rank {rank}: a collective has waited {timeout} s for the other ranks \
                 (one of them died or hangs, or the network failed); ending rank {rank} \
                 (BACKPROP_MPI_TIMEOUT sets the limit)"
            );
            std::process::exit(70);
        }
    }
}

/// Waits for `req`, testing it without holding a core: a blocking MPI call
/// polls in a busy loop, which takes the core from the computing threads
/// when the exchange runs beside them. The first tests yield the core
/// between them; later ones sleep 20 µs.
fn patiently<'a, D: ?Sized, S: mpi::request::Scope<'a>>(
    mut req: mpi::request::Request<'a, D, S>,
) -> Status {
    let mut polls = 0u32;
    loop {
        match req.test() {
            Ok(status) => return status,
            Err(again) => req = again,
        }
        polls += 1;
        if polls < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

/// `n` values as MPI counts them (an int).
fn as_count(n: usize) -> Count {
    Count::try_from(n).unwrap_or_else(|_| {
        panic!("MpiCommunicator: {n} values in one message exceed MPI's int count")
    })
}

/// Counts and displacements as MPI takes them.
fn layout(counts: &[usize]) -> (Vec<Count>, Vec<Count>) {
    let mut displs = Vec::with_capacity(counts.len());
    let mut at = 0usize;
    for &c in counts {
        displs.push(as_count(at));
        at += c;
    }
    as_count(at);
    (counts.iter().map(|&c| as_count(c)).collect(), displs)
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_to_all_v(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) {
        let (sc, sd) = layout(send_counts);
        let (rc, rd) = layout(recv_counts);
        let patient = self.patient;
        self.call(|w| {
            let s = Partition::new(send, sc, sd);
            let mut r = PartitionMut::new(recv, rc, rd);
            if patient {
                mpi::request::scope(|scope| {
                    patiently(w.immediate_all_to_all_varcount_into(scope, &s, &mut r))
                });
            } else {
                w.all_to_all_varcount_into(&s, &mut r);
            }
        });
    }
    fn all_gather_v(&self, send: &[f32], recv: &mut [f32], counts: &[usize]) {
        let (c, d) = layout(counts);
        let patient = self.patient;
        self.call(|w| {
            let mut r = PartitionMut::new(recv, c, d);
            if patient {
                mpi::request::scope(|scope| {
                    patiently(w.immediate_all_gather_varcount_into(scope, send, &mut r))
                });
            } else {
                w.all_gather_varcount_into(send, &mut r);
            }
        });
    }
    fn all_gather_f64(&self, send: &[f64], recv: &mut [f64]) {
        let patient = self.patient;
        self.call(|w| {
            if patient {
                mpi::request::scope(|scope| {
                    patiently(w.immediate_all_gather_into(scope, send, recv))
                });
            } else {
                w.all_gather_into(send, recv);
            }
        });
    }
    /// Every receive is posted (`MPI_Irecv` into the caller's slice), then
    /// every send (`MPI_Isend` from the caller's slice), then each is waited
    /// for (polling with back-off on a channel): no value is copied in this
    /// process. A message shorter than its buffer ends every rank.
    fn exchange(&self, sends: &[(usize, &[f32])], recvs: &mut [(usize, &mut [f32])]) {
        let (me, size) = (self.rank, self.size);
        // Every message is checked before any is posted: a panic among
        // posted requests would end the process without this message.
        let check = |q: usize, len: usize| {
            check_peer("MpiCommunicator::exchange", me, size, q);
            as_count(len);
        };
        for &(q, v) in sends {
            check(q, v.len());
        }
        for (q, b) in recvs.iter() {
            check(*q, b.len());
        }
        // Checked above: ranks below `size`, which MPI counts in an int.
        let rank_of = |q: usize| q as mpi::Rank;
        let patient = self.patient;
        let short = self.call(|w| {
            mpi::request::scope(|scope| {
                let mut pending = Vec::with_capacity(recvs.len() + sends.len());
                for (q, buf) in recvs.iter_mut() {
                    let from = rank_of(*q);
                    let len = buf.len();
                    let req = w
                        .process_at_rank(from)
                        .immediate_receive_into(scope, &mut **buf);
                    pending.push((Some((*q, len)), req));
                }
                for &(q, v) in sends {
                    let to = rank_of(q);
                    pending.push((None, w.process_at_rank(to).immediate_send(scope, v)));
                }
                let mut short = None;
                for (recv, req) in pending {
                    let status = if patient { patiently(req) } else { req.wait() };
                    if let Some((q, len)) = recv {
                        let got = status.count(f32::equivalent_datatype());
                        if usize::try_from(got) != Ok(len) {
                            short = Some((q, got, len));
                        }
                    }
                }
                short
            })
        });
        if let Some((q, got, len)) = short {
            eprintln!(
                "backprop: rank {me}: a message from rank {q} held {got} values where {len} were \
                 expected (the ranks disagree on the exchange)"
            );
            self.abort(70);
        }
    }
    /// `MPI_Abort` on the world: every rank ends.
    fn abort(&self, code: i32) -> ! {
        let world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        world.0.abort(code)
    }
    fn shares_memory(&self) -> bool {
        self.shares
    }
    /// `MPI_Win_allocate_shared` over the world (every rank on this node),
    /// in a passive epoch on every rank (`MPI_Win_lock_all`), this rank's
    /// segment zeroed; every segment's address from `MPI_Win_shared_query`.
    fn shared_segments(&self, len: usize) -> Option<Arc<dyn SharedSegments>> {
        if !self.shares {
            return None;
        }
        let bytes = len
            .checked_mul(4)
            .and_then(|b| ffi::MPI_Aint::try_from(b).ok())
            .unwrap_or_else(|| panic!("MpiCommunicator: a segment of {len} floats is too large"));
        let comm = self.me.upgrade().expect("a communicator in use is alive");
        let (win, segs) = self.call(|w| {
            let mut base: *mut f32 = std::ptr::null_mut();
            let mut win = std::mem::MaybeUninit::<ffi::MPI_Win>::uninit();
            // SAFETY: a collective every rank makes at the same point (the
            // caller's contract) over the world, whose ranks all share this
            // node (`shares`); `base` and `win` are out-parameters of the
            // types MPI writes (the base address is written through a
            // pointer to the pointer, as MPI's `void *baseptr` means). The
            // default error handler aborts on failure, so every call
            // returns success.
            unsafe {
                ffi::MPI_Win_allocate_shared(
                    bytes,
                    4,
                    ffi::RSMPI_INFO_NULL,
                    w.as_raw(),
                    (&mut base as *mut *mut f32).cast(),
                    win.as_mut_ptr(),
                );
            }
            // SAFETY: MPI_Win_allocate_shared wrote the handle.
            let win = unsafe { win.assume_init() };
            // SAFETY: `win` is the window just made; `base` its segment of
            // this rank, `len` floats.
            unsafe {
                ffi::MPI_Win_lock_all(ffi::MPI_MODE_NOCHECK as std::os::raw::c_int, win);
                if len > 0 {
                    std::ptr::write_bytes(base, 0, len);
                }
            }
            let segs: Vec<(*mut f32, usize)> = (0..self.size)
                .map(|q| {
                    let mut size: ffi::MPI_Aint = 0;
                    let mut unit: std::os::raw::c_int = 0;
                    let mut ptr: *mut f32 = std::ptr::null_mut();
                    // SAFETY: `win` is the window made above; the
                    // out-parameters are of the types MPI writes.
                    unsafe {
                        ffi::MPI_Win_shared_query(
                            win,
                            q as std::os::raw::c_int,
                            &mut size,
                            &mut unit,
                            (&mut ptr as *mut *mut f32).cast(),
                        );
                    }
                    let floats = usize::try_from(size).unwrap_or(0) / 4;
                    (ptr, if ptr.is_null() { 0 } else { floats })
                })
                .collect();
            let number = self.windows.fetch_add(1, Ordering::Relaxed);
            (Window(win, number), segs)
        });
        let segments = MpiSegments {
            comm,
            win: Some(win),
            segs,
        };
        // Every rank's zeroes are in place before anyone reads them.
        segments.barrier();
        Some(Arc::new(segments))
    }
    /// `MPI_Comm_dup` of this communicator, under `MPI_THREAD_MULTIPLE`.
    fn channel(&self) -> Option<Arc<dyn Communicator>> {
        if !self.multiple {
            return None;
        }
        let dup = self.call(|w| w.duplicate());
        let comm =
            MpiCommunicator::over(dup, true, true, false, self.timeout, self.universe.clone())
                .unwrap_or_else(|e| {
                    eprintln!("backprop: rank {}: {e}", self.rank);
                    self.abort(70)
                });
        Some(comm)
    }
}

impl Drop for MpiCommunicator {
    /// Frees the shared windows in the order they were made: every rank
    /// has made the same windows, and dropped every segment (each holds the
    /// communicator), whatever order its objects went in. Watched by the
    /// watchdog like a collective.
    fn drop(&mut self) {
        let mut retired = std::mem::take(self.retired.get_mut().unwrap_or_else(|e| e.into_inner()));
        if retired.is_empty() {
            return;
        }
        retired.sort_by_key(|w| w.1);
        let _world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.start.elapsed().as_nanos() as u64;
        self.busy_since.store(now.max(1), Ordering::Relaxed);
        for mut w in retired {
            // SAFETY: a window made by `shared_segments` and in its passive
            // epoch; no segment of it is in use (the segments object that
            // held it was dropped). `MPI_Win_free` is a collective every
            // rank makes here, in the same order.
            unsafe {
                ffi::MPI_Win_unlock_all(w.0);
                ffi::MPI_Win_free(&mut w.0);
            }
        }
        self.busy_since.store(0, Ordering::Relaxed);
    }
}

/// Segments of an MPI shared-memory window, one per rank.
struct MpiSegments {
    comm: Arc<MpiCommunicator>,
    /// Handed to the communicator when dropped.
    win: Option<Window>,
    segs: Vec<(*mut f32, usize)>,
}

// SAFETY: the segments are memory of an MPI shared window, valid for every
// rank of the node until the window is freed, which happens only when the
// communicator (held here) is dropped; the window handle is used under the
// communicator's mutex.
unsafe impl Send for MpiSegments {}
// SAFETY: as for `Send`.
unsafe impl Sync for MpiSegments {}

// SAFETY: `MPI_Win_allocate_shared` gave every rank's segment of `len`
// floats, zeroed by its rank before the first barrier, 4-byte aligned: the
// window's base is aligned at least to the machine's largest type, and the
// segments follow one another in rank order, each a whole number of floats;
// each rank's `MPI_Win_shared_query` gives the address it sees. They stay
// mapped until `MPI_Win_free` in the communicator's drop, after this object
// is gone. The barrier is `MPI_Barrier` between two `MPI_Win_sync`s, which
// MPI's unified memory model (the shared-memory window) makes order every
// rank's stores before it with every load after it.
unsafe impl SharedSegments for MpiSegments {
    fn segment(&self, q: usize) -> (*mut f32, usize) {
        self.segs[q]
    }
    fn barrier(&self) {
        let win = self.win.as_ref().expect("the window lives until drop").0;
        self.comm.call(|w| {
            // SAFETY: `win` is live and in its passive epoch (see above).
            unsafe { ffi::MPI_Win_sync(win) };
            w.barrier();
            // SAFETY: as above.
            unsafe { ffi::MPI_Win_sync(win) };
        });
    }
}

impl Drop for MpiSegments {
    fn drop(&mut self) {
        if let Some(w) = self.win.take() {
            self.comm
                .retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(w);
        }
    }
}
