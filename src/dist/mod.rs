//! Data-parallel training over several processes, bitwise equal to one.
//!
//! # The semantics
//! A minibatch of `B` rows is cut into a fixed number `S` of logical shards,
//! `k·B/S .. (k+1)·B/S`, the same cut as
//! [`BatchParallelism::Shards`](crate::nn::BatchParallelism::Shards). With `R`
//! processes (ranks), rank `r` owns the contiguous shards `S·r/R .. S·(r+1)/R`
//! and gathers only their rows. Everything a step computes from one row stays
//! on the rank that has it; everything summed over the batch is summed **per
//! shard, then over the shards in shard order**:
//! * the weight and bias gradients (each shard's `Xᵀ·δ`, `Σ δ`),
//! * BatchNorm's batch statistics (mean, then variance) and its backward
//!   sums (synchronised BatchNorm: the statistics are the whole minibatch's),
//! * LayerNorm's `∂γ`, `∂β`, and the loss value.
//!
//! One process running the same `S` shards does exactly these sums in
//! exactly this order, so the trained weights are bitwise identical for any
//! number of ranks, and equal to one process with `Shards(S)`. Dropout masks
//! are keyed by the global row. The optimizer's update is elementwise, so
//! each rank applies it to the slice of the parameters it owns and the
//! slices are exchanged: the same bits as one full update.
//!
//! # The communication scheme
//! A reduction of `S` partials of length `n` (one per shard) is a
//! **reduce-scatter in shard order, then an all-gather**:
//! 1. element range `o·n/R .. (o+1)·n/R` belongs to rank `o`. Each rank sends
//!    to each owner its shards' partials of the owner's range;
//! 2. each owner now holds all `S` partials of its range, in shard order
//!    (ranks own shards in rank order), and adds them left to right: the
//!    same additions in the same order as one process;
//! 3. every owner sends its range of the sum to every other rank.
//!
//! Both steps go through [`Communicator::exchange`]: under MPI, point-to-point
//! messages sent straight from the partials and the arena and received
//! straight into their places, so no value is copied within a process on its
//! way (an all-to-all or all-gather call would copy each rank's own block and
//! need contiguous send buffers). An owner reads its own shards' partials
//! where they are and adds the first two shards in one pass.
//!
//! A rank sends `(S/R)·n·(R − 1)/R` values in step 1 and `n·(R − 1)/R` in
//! step 3; with one shard per rank (`S = R`) that is `2·n·(R − 1)/R`, what a
//! ring all-reduce sends, and the additions are spread over the ranks. A
//! tree or ring all-reduce would send as little but add in an order that
//! depends on `R`, which is exactly what this crate refuses. Summing each
//! rank's own shards first would send less for `S > R` but group the sums by
//! rank, again depending on `R`.
//!
//! A training step's parameter gradients go in **buckets, started while the
//! backward pass goes on**: the pass writes each tensor's shard partials
//! aside, and once adjacent tensors hold at least
//! [`Group::with_bucket_values`] values (default 2¹⁸, 1 MiB) a thread beside
//! the computing one runs their reduce-scatter (steps 1–2, over the owned
//! slices of the whole arena) on a second communicator
//! ([`Communicator::channel`]), while the pass computes the layers below.
//! The buckets are cut by the network alone, so every rank sends the same
//! ones in the same order, and every element is still summed over its `S`
//! shards in shard order by its owner: buckets change the time, never the
//! bits. The pass's last bucket goes on the computing thread, which then
//! waits for the others ([`CommStats`] counts that wait as blocked time and
//! the exchange thread's own as background time).
//! [`Group::with_overlap`]`(false)`, or a transport without a channel (MPI
//! without `MPI_THREAD_MULTIPLE`), exchanges every bucket on the computing
//! thread, as it closes. Every rank must use the same overlap and bucket
//! settings (checked when the trainer joins the group).
//!
//! Then, rather than all-gathering the gradient (step 3) and updating
//! every parameter on every rank, each rank updates the parameters of its
//! own slice ([`Optimizer::step_range`](crate::optim::Optimizer::step_range),
//! elementwise, so the same bits) and the *parameters* are all-gathered:
//! the same traffic as step 3, and the update's work split over the ranks
//! (Adam reads and writes 28 bytes per parameter and takes a square root
//! and a division for each).
//! Each rank holds the optimizer state of its own slice only (ZeRO-1,
//! [`Optimizer::keep_state`](crate::optim::Optimizer::keep_state): `1/R` of
//! Adam's 8 bytes per parameter);
//! [`Trainer::sync_optimizer`](crate::train::Trainer::sync_optimizer)
//! gathers the whole state on every rank before a checkpoint, and the next
//! step frees the rest again. With gradient clipping, whose
//! global norm would have to be summed in an `R`-independent order, the
//! gradient is all-gathered and every rank updates everything.
//!
//! The overlap hides the exchange of the top layers behind the backward
//! pass of the lower ones; the bottom layer's gradient comes last and its
//! exchange is not hidden. The exchange thread needs a core: where every
//! core already computes (two ranks of one thread on two cores), it
//! competes with the computing threads, and the gain is small.
//!
//! # On one node: shared memory
//! When the ranks share memory ([`Communicator::shares_memory`]: threads of
//! a [`LocalGroup`], or MPI ranks that all run on one node) and
//! [`Group::with_shared_memory`] is on (the default), no parameter gradient
//! or parameter value of a training step travels in a message (a copy of a
//! network, whose group's reducer belongs to the original, still exchanges
//! its gradients in messages). Each rank's shard partials are
//! written by the backward pass straight into its segment of a shared
//! window ([`Communicator::shared_segments`]; under MPI an
//! `MPI_Win_allocate_shared` window). When the pass ends, after a barrier,
//! every owner adds the `S` partials of its slice in shard order, reading
//! each where its rank wrote it, into its gradient; a second barrier keeps
//! the next pass from overwriting a partial still being read. The updated
//! parameters go the same way: each owner copies its slice into its
//! segment, and after a barrier every rank copies the others' slices into
//! its arena (two halves used in turn, so one barrier per gather). The
//! additions are the same, in the same order, so the bits are those of the
//! message exchange and of one process; what goes is every copy into and
//! out of the transport (a message between processes is copied at least
//! once by the kernel or the MPI library, a rendezvous in between) and the
//! buckets and background thread that only hid that time, so
//! [`Group::with_overlap`] and [`Group::with_bucket_values`] matter only
//! for messages. The sums BatchNorm and LayerNorm take over the minibatch
//! are all-gathered through the segments too; the `f64` collectives (the
//! loss, BatchNorm's statistics, the verdicts) stay messages.
//!
//! On the 2-core Zen 4 machine (MNIST 784-512-512-10, Adam, batch 128, two
//! ranks of one thread, two shards; seven alternating rounds of
//! `scripts/dist_bench.sh`), an epoch took 1.16× as long as one process
//! with two threads through the shared window (0.15 s of it blocked on the
//! barriers) and 1.44× in messages over shared memory (0.38 s blocked,
//! plus the background exchange). Ranks on several
//! nodes use messages (every rank sees that the world does not fit on one
//! node, so all of them do); [`Group::with_shared_memory`]`(false)` forces
//! messages on one node too, which is how the tests exercise that path.
//!
//! # Communicators
//! [`Communicator`] is the transport: point-to-point messages of `f32`
//! ([`Communicator::exchange`], which carries every gradient and parameter
//! value between nodes), collectives on `f32` with variable counts (the
//! default exchange runs through the all-to-all) and one on `f64` (losses,
//! BatchNorm's sums, verdicts), and, where the ranks share memory,
//! [`SharedSegments`] with their barrier. [`LocalGroup`] runs the ranks as threads of one
//! process (for tests and for trying a configuration); with the feature
//! `mpi`, `MpiCommunicator` runs them over MPI.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

#[cfg(feature = "mpi")]
mod mpi_comm;
pub(crate) mod reducer;
#[cfg(feature = "mpi")]
pub use mpi_comm::MpiCommunicator;

/// The transport between the ranks of a group: collectives that every rank
/// calls in the same order with matching counts. A failure to communicate
/// ends the process with a message naming the rank (never a return that the
/// other ranks would wait on forever).
pub trait Communicator: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// All-to-all with variable counts: `send` holds, in rank order,
    /// `send_counts[q]` values for each rank `q`; on return `recv` holds, in
    /// rank order, the `recv_counts[q]` values rank `q` sent to this rank.
    fn all_to_all_v(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    );
    /// All-gather with variable counts: `send` (`counts[rank]` values) from
    /// every rank, concatenated in rank order into `recv`.
    fn all_gather_v(&self, send: &[f32], recv: &mut [f32], counts: &[usize]);
    /// Point-to-point messages, called by every rank at the same point: each
    /// `(q, values)` of `sends` goes to rank `q`, each `(q, buffer)` of
    /// `recvs` is filled by a message from rank `q`. The messages from one
    /// rank to another match in list order and have equal lengths on both
    /// sides; no rank sends to itself.
    ///
    /// The default runs through [`Communicator::all_to_all_v`], copying the
    /// messages into one contiguous buffer and out of another. A transport
    /// with point-to-point messages (MPI) overrides it to send straight from
    /// and receive straight into the caller's slices: the gradient exchange
    /// uses it so that no value is copied locally on its way.
    ///
    /// # Panics
    /// If a message goes to this rank itself or to a rank `≥ size()`.
    fn exchange(&self, sends: &[(usize, &[f32])], recvs: &mut [(usize, &mut [f32])]) {
        let (me, size) = (self.rank(), self.size());
        let check = |q: usize| check_peer("Communicator::exchange", me, size, q);
        let mut send_counts = vec![0usize; size];
        for &(q, v) in sends {
            check(q);
            send_counts[q] += v.len();
        }
        let mut send = Vec::with_capacity(send_counts.iter().sum());
        for q in 0..size {
            for &(_, v) in sends.iter().filter(|(d, _)| *d == q) {
                send.extend_from_slice(v);
            }
        }
        let mut recv_counts = vec![0usize; size];
        for (q, b) in recvs.iter() {
            check(*q);
            recv_counts[*q] += b.len();
        }
        let mut recv = vec![0.0f32; recv_counts.iter().sum()];
        self.all_to_all_v(&send, &send_counts, &mut recv, &recv_counts);
        // Each rank's block starts after the blocks of the ranks before it.
        let mut at: Vec<usize> = recv_counts
            .iter()
            .scan(0, |acc, &c| {
                let start = *acc;
                *acc += c;
                Some(start)
            })
            .collect();
        for (q, b) in recvs.iter_mut() {
            let len = b.len();
            b.copy_from_slice(&recv[at[*q]..at[*q] + len]);
            at[*q] += len;
        }
    }
    /// All-gather of `f64`s with equal counts: `recv` is `size()` times
    /// `send.len()` values, rank order.
    fn all_gather_f64(&self, send: &[f64], recv: &mut [f64]);
    /// Ends every rank of the group with exit status `code`: for a failure
    /// the other ranks cannot know of (they would wait for this one). By
    /// default, this process exits.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    /// A second communicator over the same ranks whose collectives may run
    /// on another thread at the same time as this one's (the gradient
    /// exchange overlapping the backward pass). A collective call itself:
    /// every rank calls it at the same point. `None` (the default) when the
    /// transport cannot run two collectives at once; training then
    /// exchanges gradients on the calling thread.
    fn channel(&self) -> Option<Arc<dyn Communicator>> {
        None
    }
    /// Whether every rank of the group can read the others' memory in place
    /// ([`Communicator::shared_segments`] gives segments): ranks that are
    /// threads of one process, or MPI processes that all run on one node.
    /// The same answer on every rank. `false` by default.
    fn shares_memory(&self) -> bool {
        false
    }
    /// `len` floats (zeroed) for this rank that every rank of the group
    /// reads and writes in place, and every other rank's segment: a
    /// collective (every rank calls it at the same point, each with its own
    /// `len`). `None` (the default, and whenever
    /// [`Communicator::shares_memory`] says no) on every rank alike. The
    /// segments stay valid as long as the returned object; a transport may
    /// keep the memory until the communicator itself is dropped.
    fn shared_segments(&self, len: usize) -> Option<Arc<dyn SharedSegments>> {
        let _ = len;
        None
    }
}

/// Memory shared by the ranks of a group: one segment of `f32` per rank,
/// each read and written in place by every rank, and a barrier that orders
/// those accesses (see [`Communicator::shared_segments`]). Training uses it,
/// where the ranks share a node, to sum the shard partials of the gradient
/// and to exchange the updated parameters without sending a message.
///
/// # Safety
/// An implementation guarantees that for every rank `q` of the group,
/// `segment(q)` gives a pointer to `len` initialised `f32`s, aligned for
/// `f32`, valid for reads and writes by every rank of the group (a thread or
/// a process of the same node, at whatever address it sees them) for as long
/// as the object lives; and that [`SharedSegments::barrier`] returns on no
/// rank before every rank has called it, with every write any rank made to
/// any segment before its call visible to every read any rank makes after
/// its return. What the ranks write between two barriers is theirs to keep
/// apart.
pub unsafe trait SharedSegments: Send + Sync {
    /// Rank `q`'s segment: its first element and its length.
    ///
    /// # Panics
    /// If `q` is not a rank of the group.
    fn segment(&self, q: usize) -> (*mut f32, usize);
    /// Waits for every rank of the group (a collective), ordering the
    /// segments' accesses as the trait's contract says. A rank that fails
    /// ends every rank with a message naming it, as the communicator's
    /// collectives do, rather than leaving the others waiting.
    fn barrier(&self);
}

/// What a group's collectives cost a rank so far: for the benchmark's
/// bytes per step and the time spent communicating.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommStats {
    /// Bytes this rank sent to other ranks.
    pub bytes_sent: u64,
    /// Wall time the calling (computing) thread was blocked on
    /// communication: inside collectives, or waiting for the gradient
    /// exchange that runs beside the backward pass to finish.
    pub seconds: f64,
    /// Wall time the background exchange thread spent inside collectives,
    /// overlapped with the backward pass (the part not hidden behind it is
    /// in `seconds`). 0 without overlap.
    pub background_seconds: f64,
    /// Collective calls.
    pub calls: u64,
}

/// A communicator and the bookkeeping of the shard sums over it.
#[derive(Clone)]
pub struct Group {
    comm: Arc<dyn Communicator>,
    sent: Arc<AtomicU64>,
    nanos: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
    /// Nanoseconds the background exchange spent in collectives.
    background: Arc<AtomicU64>,
    overlap: bool,
    bucket: usize,
    /// Whether the exchange reads the other ranks' memory in place where
    /// the transport allows it ([`Group::with_shared_memory`]).
    shared: bool,
    /// The segments [`Group::all_gather_slices`] exchanges through in
    /// shared memory, made on first use.
    gather: Arc<Mutex<Option<Gather>>>,
}

/// Shared segments for [`Group::all_gather_slices`]: two halves of `cap`
/// floats per rank, used in turn.
struct Gather {
    seg: Arc<dyn SharedSegments>,
    cap: usize,
    /// The half the next all-gather writes.
    half: usize,
}

/// The least room, in floats per rank and half, of the all-gather's shared
/// segments: small gathers (BatchNorm's sums) share one allocation.
const GATHER_MIN: usize = 4096;

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

impl Group {
    /// A group over `comm`.
    pub fn new(comm: Arc<dyn Communicator>) -> Group {
        Group {
            comm,
            sent: Arc::new(AtomicU64::new(0)),
            nanos: Arc::new(AtomicU64::new(0)),
            calls: Arc::new(AtomicU64::new(0)),
            background: Arc::new(AtomicU64::new(0)),
            overlap: true,
            bucket: reducer::BUCKET_VALUES,
            shared: true,
            gather: Arc::new(Mutex::new(None)),
        }
    }
    /// Whether training exchanges a step's gradients in the background while
    /// the backward pass goes on (`true`, the default, where the transport
    /// offers a [`Communicator::channel`]) or on the computing thread, each
    /// bucket as it closes. The bits are the same either way: only the time
    /// changes. Set it alike on every rank, before
    /// [`Trainer::with_group`](crate::train::Trainer::with_group).
    pub fn with_overlap(mut self, overlap: bool) -> Group {
        self.overlap = overlap;
        self
    }
    /// Whether [`Group::with_overlap`] asked for the background exchange.
    pub fn overlap(&self) -> bool {
        self.overlap
    }
    /// The gradient exchange's bucket size: adjacent parameter gradients
    /// are sent together once they hold at least `values` values (default
    /// 2¹⁸, 1 MiB). Smaller buckets start the exchange earlier in the
    /// backward pass and pay a collective's fixed cost more often. Like
    /// overlap, it changes the time and not the bits. Set it alike on every
    /// rank.
    ///
    /// # Panics
    /// If `values` is 0.
    pub fn with_bucket_values(mut self, values: usize) -> Group {
        assert!(
            values > 0,
            "Group::with_bucket_values: a bucket holds at least one value"
        );
        self.bucket = values;
        self
    }
    /// The bucket size ([`Group::with_bucket_values`]).
    pub fn bucket_values(&self) -> usize {
        self.bucket
    }
    /// Whether the gradient and parameter exchange goes through memory the
    /// ranks share (`true`, the default) where the transport offers it
    /// ([`Communicator::shares_memory`]: threads of one process, or MPI
    /// ranks that all run on one node), rather than through messages. In
    /// shared memory each owner adds the other ranks' shard partials where
    /// they were written, and each updated parameter slice is copied by its
    /// owner into its segment and from there by every other rank into its
    /// arena: no message, no copy by the kernel or the MPI library. Like
    /// overlap, it changes the
    /// time and not the bits; set it alike on every rank. With it, the
    /// gradients are summed when the backward pass ends, without buckets or
    /// the background exchange.
    pub fn with_shared_memory(mut self, shared: bool) -> Group {
        self.shared = shared;
        self
    }
    /// Whether [`Group::with_shared_memory`] asked for shared memory.
    pub fn shared_memory(&self) -> bool {
        self.shared
    }
    /// Whether the exchange runs in shared memory: asked for, more than one
    /// rank, and offered by the transport. The same on every rank.
    pub(crate) fn in_shared_memory(&self) -> bool {
        self.shared && self.size() > 1 && self.comm.shares_memory()
    }
    /// Shared segments of `len` floats for this rank
    /// ([`Communicator::shared_segments`]; a collective). Only when
    /// [`Group::in_shared_memory`].
    ///
    /// # Panics
    /// If the transport that said it shares memory gives no segments.
    pub(crate) fn shared_segments(&self, len: usize) -> Arc<dyn SharedSegments> {
        debug_assert!(self.in_shared_memory());
        self.comm.shared_segments(len).unwrap_or_else(|| {
            panic!(
                "dist: rank {}: the transport shares memory but gave no shared segments",
                self.rank()
            )
        })
    }
    /// [`SharedSegments::barrier`] on `seg`, counted as time blocked on
    /// communication, with `bytes` (this rank's values the others read)
    /// counted as sent.
    pub(crate) fn shared_barrier(&self, seg: &dyn SharedSegments, bytes: usize) {
        self.timed(bytes, || seg.barrier());
    }
    /// The group over the communicator's [`Communicator::channel`], for a
    /// thread beside the computing one: its bytes and calls count into this
    /// group's statistics, its time into `background_seconds`.
    pub(crate) fn channel(&self) -> Option<Group> {
        Some(Group {
            comm: self.comm.channel()?,
            sent: self.sent.clone(),
            nanos: self.background.clone(),
            calls: self.calls.clone(),
            background: self.background.clone(),
            overlap: false,
            bucket: self.bucket,
            shared: false,
            gather: Arc::new(Mutex::new(None)),
        })
    }
    /// Counts `d`, a wait of the computing thread for the background
    /// exchange, as time blocked on communication.
    pub(crate) fn add_wait(&self, d: std::time::Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
    /// Ends every rank ([`Communicator::abort`]).
    pub fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }
    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.comm.size()
    }
    /// The communication so far.
    pub fn stats(&self) -> CommStats {
        CommStats {
            bytes_sent: self.sent.load(Ordering::Relaxed),
            seconds: self.nanos.load(Ordering::Relaxed) as f64 * 1e-9,
            background_seconds: self.background.load(Ordering::Relaxed) as f64 * 1e-9,
            calls: self.calls.load(Ordering::Relaxed),
        }
    }

    fn timed<T>(&self, bytes: usize, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// The shards rank `rank` owns of `shards`.
    pub(crate) fn shards_of(&self, rank: usize, shards: usize) -> Range<usize> {
        owned(rank, self.size(), shards)
    }

    /// The elements of a length-`n` vector that rank `o` owns in a
    /// reduction: `o·n/R .. (o+1)·n/R`.
    pub fn owned_slice(&self, o: usize, n: usize) -> Range<usize> {
        let size = self.size();
        o * n / size..(o + 1) * n / size
    }

    /// `out = Σ_k parts_k` over all `shards` shards, added left to right in
    /// shard order, on every rank; `local` holds this rank's shards' partials
    /// (each `out.len()` long, in shard order). `scratch` is reused.
    pub(crate) fn ordered_sum(
        &self,
        local: &[f32],
        shards: usize,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let n = out.len();
        let own = self.owned_slice(self.rank(), n);
        let piece = |j: usize| &local[j * n..(j + 1) * n];
        self.reduce_scatter(piece, shards, n, 0..n, &mut out[own], scratch);
        self.all_gather_slices(out);
    }

    /// The first half of [`Group::ordered_sum`], over the elements `range`
    /// of a length-`n` vector: `sum` (this rank's owned part of `range`,
    /// `range ∩ owned_slice(rank, n)`) gets `Σ_k parts_k` there, added left
    /// to right in shard order. `piece(j)` is this rank's `j`-th shard's
    /// partial over `range`.
    pub(crate) fn reduce_scatter<'a>(
        &self,
        piece: impl Fn(usize) -> &'a [f32],
        shards: usize,
        n: usize,
        range: Range<usize>,
        sum: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let (r, size) = (self.rank(), self.size());
        let mine = self.shards_of(r, shards);
        // The part of `range` rank `o` owns, relative to `range.start`.
        let part = |o: usize| {
            let s = self.owned_slice(o, n);
            let at = |x: usize| x.clamp(range.start, range.end) - range.start;
            at(s.start)..at(s.end)
        };
        let w = part(r).len();
        debug_assert_eq!(sum.len(), w);
        // Step 1: each of this rank's shards' pieces of owner o's part goes
        // to o straight from the piece; the other ranks' shards' pieces of
        // this rank's part arrive in `scratch`, shard by shard in shard
        // order (a rank's shards are consecutive, ranks in rank order). This
        // rank's own shards are read where they are, so nothing is copied
        // on its way.
        let mut sends: Vec<(usize, &[f32])> = Vec::new();
        for o in (0..size).filter(|&o| o != r && !part(o).is_empty()) {
            sends.extend((0..mine.len()).map(|k| (o, &piece(k)[part(o)])));
        }
        let others = shards - mine.len();
        if scratch.len() < others * w {
            scratch.resize(others * w, 0.0);
        }
        let received = &mut scratch[..others * w];
        let bytes = sends.iter().map(|(_, v)| v.len() * 4).sum();
        // Nothing comes in when this rank owns none of `range` (the senders
        // skip an empty part alike).
        let mut recvs: Vec<(usize, &mut [f32])> = Vec::with_capacity(others);
        if w > 0 {
            let mut slots = received.chunks_exact_mut(w);
            for q in (0..size).filter(|&q| q != r) {
                for _ in self.shards_of(q, shards) {
                    let slot = slots.next().expect("one slot per other rank's shard");
                    recvs.push((q, slot));
                }
            }
        }
        self.timed(bytes, || self.comm.exchange(&sends, &mut recvs));
        // Step 2: the owner adds the S pieces of its part in shard order,
        // the first two in one pass (what copying s₀ and then adding s₁
        // gives, bit for bit, without the copy).
        let received = &scratch[..others * w];
        let shard = |j: usize| -> &[f32] {
            if mine.contains(&j) {
                &piece(j - mine.start)[part(r)]
            } else {
                let slot = if j < mine.start { j } else { j - mine.len() };
                &received[slot * w..(slot + 1) * w]
            }
        };
        add_in_shard_order(sum, shards, shard);
    }

    /// Every rank's owned slice of `data` (as [`Group::owned_slice`] cuts
    /// it) to every rank: on entry this rank's slice is filled in, on return
    /// all are. Sent from and received into `data` itself.
    pub(crate) fn all_gather_slices(&self, data: &mut [f32]) {
        if self.in_shared_memory() {
            return self.all_gather_shared(data);
        }
        let (r, size, n) = (self.rank(), self.size(), data.len());
        let own = self.owned_slice(r, n);
        let (before, rest) = data.split_at_mut(own.start);
        let (mine, mut after) = rest.split_at_mut(own.len());
        let mine: &[f32] = mine;
        let sends: Vec<(usize, &[f32])> = if mine.is_empty() {
            Vec::new()
        } else {
            (0..size).filter(|&o| o != r).map(|o| (o, mine)).collect()
        };
        // The other ranks' slices, cut off the front of `before` and `after`
        // in rank order (the slices are consecutive and cover `data`).
        let mut recvs: Vec<(usize, &mut [f32])> = Vec::with_capacity(size);
        let mut before = before;
        for q in (0..size).filter(|&q| q != r) {
            let len = self.owned_slice(q, n).len();
            let side = if q < r { &mut before } else { &mut after };
            let (slot, rest) = std::mem::take(side).split_at_mut(len);
            *side = rest;
            if len > 0 {
                recvs.push((q, slot));
            }
        }
        self.timed(own.len() * 4 * (size - 1), || {
            self.comm.exchange(&sends, &mut recvs)
        });
    }

    /// [`Group::all_gather_slices`] in shared memory: this rank copies its
    /// slice into its segment, and after a barrier every rank copies the
    /// others' slices out of theirs. The segments have two halves used in
    /// turn, so no second barrier is needed: a rank writes a half again only
    /// after the barrier of the next gather, which every rank reaches only
    /// once it has read the half.
    fn all_gather_shared(&self, data: &mut [f32]) {
        let (r, size, n) = (self.rank(), self.size(), data.len());
        let own = self.owned_slice(r, n);
        self.timed(own.len() * 4 * (size - 1), || {
            self.gather_through_segments(data, own)
        });
    }

    /// The copies and the barrier of `Group::all_gather_shared`, this
    /// rank's slice being `own`.
    fn gather_through_segments(&self, data: &mut [f32], own: Range<usize>) {
        let (r, size, n) = (self.rank(), self.size(), data.len());
        let mut gather = self.gather.lock().unwrap_or_else(|e| e.into_inner());
        // The longest owned slice; every rank computes the same, so every
        // rank makes new segments at the same call.
        let need = n.div_ceil(size).max(GATHER_MIN);
        if gather.as_ref().is_none_or(|g| g.cap < need) {
            if let Some(old) = gather.take() {
                // No rank reads the old segments past this point.
                old.seg.barrier();
            }
            *gather = Some(Gather {
                seg: self.shared_segments(2 * need),
                cap: need,
                half: 0,
            });
        }
        let g = gather.as_mut().expect("made above");
        let at = g.half * g.cap;
        g.half ^= 1;
        let (mine, len) = g.seg.segment(r);
        assert!(at + own.len() <= len, "dist: a gather segment is too short");
        // SAFETY: the segment holds `len` floats (the trait's contract) and
        // `at + own.len() ≤ len`; no rank reads this half until the barrier
        // below, and none still reads it from the gather before last (the
        // same half), since every rank passed the last gather's barrier after
        // reading it (see above).
        unsafe {
            std::ptr::copy_nonoverlapping(data[own.clone()].as_ptr(), mine.add(at), own.len())
        };
        g.seg.barrier();
        for q in (0..size).filter(|&q| q != r) {
            let slice = self.owned_slice(q, n);
            let (theirs, len) = g.seg.segment(q);
            assert!(
                at + slice.len() <= len,
                "dist: a gather segment is too short"
            );
            // SAFETY: rank q wrote these floats of its segment before the
            // barrier and writes them again only after the next gather's
            // barrier, which this rank reaches after this copy; `data` is
            // this rank's own memory, not a segment.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    theirs.add(at),
                    data[slice.clone()].as_mut_ptr(),
                    slice.len(),
                )
            };
        }
    }

    /// Every rank's `send` (the same length on all), in rank order, into
    /// `recv`.
    pub(crate) fn gather_all_f64(&self, send: &[f64], recv: &mut [f64]) {
        self.timed(send.len() * 8 * (self.size() - 1), || {
            self.comm.all_gather_f64(send, recv)
        });
    }

    /// Whether every rank says `ok` (one small exchange).
    pub(crate) fn all_agree(&self, ok: bool) -> bool {
        let mut all = vec![0.0f64; self.size()];
        self.gather_all_f64(&[f64::from(u8::from(ok))], &mut all);
        all.iter().all(|&v| v == 1.0)
    }

    /// The `shards` per-shard `f64` values of all ranks, in shard order
    /// (`local` holds this rank's, `per` values each, `out` gets
    /// `shards × per`). Ranks pad to the largest shard count.
    pub(crate) fn gather_f64(&self, local: &[f64], shards: usize, per: usize, out: &mut [f64]) {
        let size = self.size();
        let most = (0..size)
            .map(|q| self.shards_of(q, shards).len())
            .max()
            .unwrap_or(0);
        let mut send = vec![0.0f64; most * per];
        send[..local.len()].copy_from_slice(local);
        let mut recv = vec![0.0f64; size * most * per];
        self.timed(send.len() * 8 * (size - 1), || {
            self.comm.all_gather_f64(&send, &mut recv)
        });
        let mut at = 0;
        for q in 0..size {
            let n = self.shards_of(q, shards).len() * per;
            out[at..at + n].copy_from_slice(&recv[q * most * per..q * most * per + n]);
            at += n;
        }
    }
}

/// The MPI world as a group when this process was started by an MPI
/// launcher (`mpirun`, `mpiexec`: Open MPI's `OMPI_COMM_WORLD_SIZE`, or the
/// `PMI_SIZE` / `PMIX_RANK` of MPICH-style and PMIx launchers); `None` when
/// it runs alone.
///
/// # Errors
/// A message if a launcher started it but MPI cannot start, or the build
/// has no feature `mpi`.
pub fn world() -> Result<Option<Group>, String> {
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !launched {
        return Ok(None);
    }
    #[cfg(feature = "mpi")]
    {
        Ok(Some(Group::new(MpiCommunicator::init()?)))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Err(
            "started by an MPI launcher, but this build has no MPI: build it with --features mpi"
                .into(),
        )
    }
}

/// `sum = Σ_k shard(k)` over `shards` partials, added left to right in shard
/// order, the first two in one pass (what copying the first and then adding
/// the second gives, bit for bit, without the copy).
pub(crate) fn add_in_shard_order<'a>(
    sum: &mut [f32],
    shards: usize,
    shard: impl Fn(usize) -> &'a [f32],
) {
    match shards {
        0 => sum.fill(0.0),
        1 => sum.copy_from_slice(shard(0)),
        _ => {
            for ((x, a), b) in sum.iter_mut().zip(shard(0)).zip(shard(1)) {
                *x = a + b;
            }
            for k in 2..shards {
                for (x, y) in sum.iter_mut().zip(shard(k)) {
                    *x += y;
                }
            }
        }
    }
}

/// Panics (naming `who`) unless rank `me` of `size` may exchange messages
/// with rank `q`: a rank below `size` other than itself.
#[track_caller]
pub(crate) fn check_peer(who: &str, me: usize, size: usize, q: usize) {
    assert!(
        q < size && q != me,
        "{who}: rank {me} of {size} cannot exchange with rank {q}"
    );
}

/// The shards of `shards` that rank `rank` of `size` owns: an even,
/// contiguous cut, in rank order.
pub(crate) fn owned(rank: usize, size: usize, shards: usize) -> Range<usize> {
    rank * shards / size..(rank + 1) * shards / size
}

/// `size` ranks as threads of one process: [`LocalGroup::ranks`] gives one
/// communicator per rank, to hand to one thread each. Every collective is
/// a rendezvous of all the threads (they must all call it).
///
/// ```
/// use std::sync::Arc;
/// use backprop::dist::{Communicator, LocalGroup};
/// let ranks = LocalGroup::ranks(3);
/// let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
///     let handles: Vec<_> = ranks.into_iter().map(|c| s.spawn(move || {
///         let mut all = vec![0.0f32; 3];
///         c.all_gather_v(&[c.rank() as f32], &mut all, &[1, 1, 1]);
///         all
///     })).collect();
///     handles.into_iter().map(|h| h.join().unwrap()).collect()
/// });
/// assert!(sums.iter().all(|v| v == &[0.0, 1.0, 2.0]));
/// ```
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Shared>,
    /// Channels this rank has opened: its `i`-th call joins `channels[i]`.
    opened: AtomicUsize,
    /// Shared segments this rank has made: its `i`-th call joins
    /// `segments[i]`.
    made: AtomicUsize,
}

struct Shared {
    size: usize,
    state: Mutex<Rendezvous>,
    turn: Condvar,
    /// The groups [`Communicator::channel`] opened, in the order opened.
    channels: Mutex<Vec<Arc<Shared>>>,
    /// The segments [`Communicator::shared_segments`] made, in the order
    /// made: each rank's buffer, and the rendezvous of their barrier.
    segments: Mutex<Vec<SegSlot>>,
}

/// The rendezvous of a set of segments' barrier, and each rank's buffer once
/// it has posted it.
type SegSlot = (Arc<Shared>, Vec<Option<Arc<SegBuf>>>);

impl Shared {
    fn new(size: usize) -> Arc<Shared> {
        Arc::new(Shared {
            size,
            state: Mutex::new(Rendezvous {
                posted: vec![Vec::new(); size],
                arrived: 0,
                generation: 0,
                failed: None,
            }),
            turn: Condvar::new(),
            channels: Mutex::new(Vec::new()),
            segments: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Rendezvous> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rank `rank` waits until every rank has arrived (or panics, naming
    /// the rank that failed, if one did).
    fn barrier<'a>(
        &'a self,
        rank: usize,
        mut st: MutexGuard<'a, Rendezvous>,
    ) -> MutexGuard<'a, Rendezvous> {
        let fail = |r: usize| -> ! {
            panic!(
                "LocalGroup rank {rank}: rank {r} failed or left the group, so this collective \
                 cannot finish"
            )
        };
        if let Some(r) = st.failed {
            fail(r);
        }
        let generation = st.generation;
        st.arrived += 1;
        if st.arrived == self.size {
            st.arrived = 0;
            st.generation += 1;
            self.turn.notify_all();
            return st;
        }
        while st.generation == generation {
            if let Some(r) = st.failed {
                fail(r);
            }
            st = self.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st
    }

    /// Rank `rank` is gone: every wait fails from now on.
    fn leave(&self, rank: usize) {
        let mut st = self.lock();
        st.failed.get_or_insert(rank);
        self.turn.notify_all();
    }
}

/// One rank's shared segment in a [`LocalGroup`]: plain memory of the
/// process, written through the `UnsafeCell`s by any thread.
struct SegBuf(Box<[std::cell::UnsafeCell<f32>]>);

// SAFETY: the buffer is plain memory; the threads that share it order their
// accesses with the segments' barrier, as `SharedSegments` asks of its users.
unsafe impl Send for SegBuf {}
// SAFETY: as for `Send`.
unsafe impl Sync for SegBuf {}

/// A rank's view of the segments of a [`LocalGroup`].
struct LocalSegments {
    rank: usize,
    sync: Arc<Shared>,
    segs: Vec<Arc<SegBuf>>,
}

// SAFETY: every segment is a live, zeroed allocation of `len` f32s held by
// this object's `Arc`s, in this process, so valid for every thread (rank) of
// the group; the barrier is the group's rendezvous under a mutex, whose
// lock and unlock order every write before it to every read after it.
unsafe impl SharedSegments for LocalSegments {
    fn segment(&self, q: usize) -> (*mut f32, usize) {
        let b = &self.segs[q].0;
        // UnsafeCell<f32> has f32's layout: the cells are the floats.
        (b.as_ptr() as *mut f32, b.len())
    }
    fn barrier(&self) {
        drop(self.sync.barrier(self.rank, self.sync.lock()));
    }
}

impl Drop for LocalSegments {
    /// As a [`LocalGroup`] rank that is gone: the others' barriers fail
    /// rather than hang.
    fn drop(&mut self) {
        self.sync.leave(self.rank);
    }
}

/// The collective in progress.
struct Rendezvous {
    /// What each rank posted for it.
    posted: Vec<Vec<f64>>,
    /// Ranks that reached the current barrier, and how many barriers have
    /// completed.
    arrived: usize,
    generation: u64,
    /// A rank that is gone (its thread panicked, or it dropped its
    /// communicator): every wait fails from then on, so no rank waits
    /// forever for it.
    failed: Option<usize>,
}

impl LocalGroup {
    /// `size` communicators (≥ 1), rank `i` at index `i`.
    ///
    /// # Panics
    /// If `size` is 0.
    pub fn ranks(size: usize) -> Vec<Arc<dyn Communicator>> {
        assert!(size > 0, "LocalGroup: at least one rank");
        let shared = Shared::new(size);
        (0..size)
            .map(|rank| {
                Arc::new(LocalGroup {
                    rank,
                    shared: shared.clone(),
                    opened: AtomicUsize::new(0),
                    made: AtomicUsize::new(0),
                }) as Arc<dyn Communicator>
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Rendezvous> {
        self.shared.lock()
    }

    /// Waits until every rank has arrived (or panics, naming the rank that
    /// failed, if one did).
    fn barrier<'a>(&'a self, st: MutexGuard<'a, Rendezvous>) -> MutexGuard<'a, Rendezvous> {
        self.shared.barrier(self.rank, st)
    }

    /// Posts `values`, waits for every rank, hands `read` all posts, and
    /// waits again so no post is replaced while another rank reads it.
    fn rendezvous(&self, values: Vec<f64>, read: impl FnOnce(&[Vec<f64>])) {
        let mut st = self.lock();
        st.posted[self.rank] = values;
        let st = self.barrier(st);
        read(&st.posted);
        let st = self.barrier(st);
        drop(st);
    }
}

impl Drop for LocalGroup {
    /// A rank that is gone (its thread unwound, or its last handle was
    /// dropped) takes part in no more collectives: the others' waits for it
    /// fail rather than hang. Collectives every rank finished are not
    /// affected.
    fn drop(&mut self) {
        self.shared.leave(self.rank);
    }
}

impl Communicator for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn all_to_all_v(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) {
        let me = self.rank;
        let size = self.shared.size;
        // The post: the counts for each rank, then the values.
        let post: Vec<f64> = (send_counts.iter().map(|&c| c as f64))
            .chain(send.iter().map(|&v| f64::from(v)))
            .collect();
        self.rendezvous(post, |posts| {
            let mut at = 0;
            for (q, post) in posts.iter().enumerate() {
                let start = size + post[..me].iter().map(|&c| c as usize).sum::<usize>();
                let n = recv_counts[q];
                assert_eq!(
                    post[me] as usize, n,
                    "LocalGroup: rank {q} sends {} values to rank {me}, which expects {n}",
                    post[me]
                );
                for (d, &v) in recv[at..at + n].iter_mut().zip(&post[start..start + n]) {
                    *d = v as f32;
                }
                at += n;
            }
        });
    }
    fn all_gather_v(&self, send: &[f32], recv: &mut [f32], counts: &[usize]) {
        self.rendezvous(send.iter().map(|&v| f64::from(v)).collect(), |posts| {
            let mut at = 0;
            for (q, post) in posts.iter().enumerate() {
                for (d, &v) in recv[at..at + counts[q]].iter_mut().zip(post) {
                    *d = v as f32;
                }
                at += counts[q];
            }
        });
    }
    fn all_gather_f64(&self, send: &[f64], recv: &mut [f64]) {
        self.rendezvous(send.to_vec(), |posts| {
            for (q, post) in posts.iter().enumerate() {
                recv[q * send.len()..(q + 1) * send.len()].copy_from_slice(post);
            }
        });
    }
    fn channel(&self) -> Option<Arc<dyn Communicator>> {
        let i = self.opened.fetch_add(1, Ordering::Relaxed);
        let mut channels = self
            .shared
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while channels.len() <= i {
            channels.push(Shared::new(self.shared.size));
        }
        Some(Arc::new(LocalGroup {
            rank: self.rank,
            shared: channels[i].clone(),
            opened: AtomicUsize::new(0),
            made: AtomicUsize::new(0),
        }))
    }
    /// The ranks are threads of one process.
    fn shares_memory(&self) -> bool {
        true
    }
    /// Each rank allocates its segment and posts it in the group's `i`-th
    /// slot for its `i`-th call; after a rendezvous every rank takes all of
    /// them. The slots keep the buffers until the group is dropped.
    fn shared_segments(&self, len: usize) -> Option<Arc<dyn SharedSegments>> {
        let i = self.made.fetch_add(1, Ordering::Relaxed);
        let size = self.shared.size;
        let lock = || {
            self.shared
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        {
            let mut slots = lock();
            while slots.len() <= i {
                slots.push((Shared::new(size), vec![None; size]));
            }
            let buf = (0..len)
                .map(|_| std::cell::UnsafeCell::new(0.0f32))
                .collect();
            slots[i].1[self.rank] = Some(Arc::new(SegBuf(buf)));
        }
        self.rendezvous(Vec::new(), |_| {});
        let slots = lock();
        let (sync, bufs) = &slots[i];
        let segs = bufs
            .iter()
            .map(|b| b.clone().expect("every rank posted before the rendezvous"))
            .collect();
        Some(Arc::new(LocalSegments {
            rank: self.rank,
            sync: sync.clone(),
            segs,
        }))
    }
}
