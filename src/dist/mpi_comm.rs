//! [`Communicator`] over MPI (feature `mpi`, through the `mpi` crate and the
//! system's MPI library, e.g. Open MPI).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use mpi::datatype::{Equivalence, Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::point_to_point::{Destination as _, Source as _, Status};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives as _};
use mpi::Count;

use super::{check_peer, Communicator};

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
pub struct MpiCommunicator {
    world: Mutex<World>,
    rank: usize,
    size: usize,
    /// Whether MPI gave `MPI_THREAD_MULTIPLE`.
    multiple: bool,
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
        let timeout = std::env::var("BACKPROP_MPI_TIMEOUT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(300.0);
        MpiCommunicator::over(
            world,
            level == mpi::Threading::Multiple,
            false,
            timeout,
            Arc::new(Finaliser(universe)),
        )
    }

    /// A communicator over `comm`, with its watchdog.
    fn over(
        comm: SimpleCommunicator,
        multiple: bool,
        patient: bool,
        timeout: f64,
        universe: Arc<Finaliser>,
    ) -> Result<Arc<MpiCommunicator>, String> {
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        let comm = Arc::new(MpiCommunicator {
            world: Mutex::new(World(comm)),
            rank,
            size,
            multiple,
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
    /// `MPI_Comm_dup` of this communicator, under `MPI_THREAD_MULTIPLE`.
    fn channel(&self) -> Option<Arc<dyn Communicator>> {
        if !self.multiple {
            return None;
        }
        let dup = self.call(|w| w.duplicate());
        let comm = MpiCommunicator::over(dup, true, true, self.timeout, self.universe.clone())
            .unwrap_or_else(|e| {
                eprintln!("backprop: rank {}: {e}", self.rank);
                self.abort(70)
            });
        Some(comm)
    }
}
