//! The exchange of a training pass's parameter gradients, started as the
//! backward pass produces them.
//!
//! The backward pass writes each parameter tensor's shard partials into a
//! shard-major copy of the gradient arena (`staged`) and tells the
//! [`Reducer`] the tensor is complete ([`Reducer::kept`]). Adjacent tensors
//! gather into a *bucket* (the backward pass of a dense network produces
//! them from the top of the arena down, so a bucket is one range) until it
//! holds at least [`Group::bucket_values`] values or the next tensor is not
//! adjacent. When the next tensor arrives (so the pass goes on), the bucket
//! is handed to a thread beside the computing one, which reduces it
//! ([`Group::reduce_scatter`]) on the group's second communicator
//! ([`Group::channel`]) while the backward pass goes on with the layers
//! below. [`Reducer::finish`] exchanges the last bucket on the computing
//! thread (nothing is left to hide it behind, and that thread would only
//! wait), waits for the others, and writes this rank's owned sums into the
//! gradient arena.
//!
//! Buckets do not change the bits: every element is still the sum of its
//! `S` shard partials in shard order, added by the rank that owns it; the
//! buckets are cut by the network alone, so every rank sends the same ones
//! in the same order.
//!
//! # The buffers' protocol
//! `staged` and `summed` are shared by the two threads without a lock. The
//! computing thread writes a tensor's ranges of `staged` before it reports
//! the tensor kept, and never again in the pass; the exchange thread reads
//! only the ranges of buckets it was sent (after the send, which orders the
//! writes before its reads) and writes only those buckets' owned parts of
//! `summed`, which the computing thread reads after the exchange thread said
//! it is done (again through a channel). Buckets of one pass are disjoint
//! ranges ([`Reducer::kept`] checks it). The buffers are replaced, never
//! resized, and only while no bucket is out.

use std::ops::Range;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::kernel::subnormal::{fp_control, UseFpControl};

use super::{Group, SharedSegments};

/// By default a bucket is sent once it holds this many values (1 MiB of
/// `f32`; [`Group::with_bucket_values`] sets another): big
/// enough that a collective's fixed cost (tens of µs over TCP) is small
/// against its transfer, small enough that a network of a few layers
/// already overlaps its top layers' exchange with the bottom ones' work.
pub(crate) const BUCKET_VALUES: usize = 1 << 18;

/// A heap buffer two threads share, each touching its own ranges; or this
/// rank's shared segment, which the other ranks read.
struct RawBuf {
    ptr: *mut f32,
    len: usize,
    /// The segments the buffer lies in (then it is not freed here).
    segments: Option<Arc<dyn SharedSegments>>,
}

// SAFETY: the buffer is a plain heap allocation of f32, or this rank's
// segment of shared memory (kept alive by `segments`); the threads (and, in
// a segment, the other ranks) that share it touch disjoint ranges or only
// read, as the module's protocol and `Reducer::finish`'s barriers say and
// the `unsafe` accessors require.
unsafe impl Send for RawBuf {}
// SAFETY: as for `Send`.
unsafe impl Sync for RawBuf {}

impl RawBuf {
    fn new(len: usize) -> RawBuf {
        let b: Box<[f32]> = vec![0.0f32; len].into_boxed_slice();
        RawBuf {
            len: b.len(),
            ptr: Box::into_raw(b).cast::<f32>(),
            segments: None,
        }
    }

    /// The first `len` floats of this rank's segment of `segments`.
    ///
    /// # Panics
    /// If the segment is shorter.
    fn in_segment(segments: Arc<dyn SharedSegments>, rank: usize, len: usize) -> RawBuf {
        let (ptr, have) = segments.segment(rank);
        assert!(
            have >= len,
            "reducer: a shared segment holds {have} of {len} floats"
        );
        RawBuf {
            ptr,
            len,
            segments: Some(segments),
        }
    }

    /// # Safety
    /// No thread writes the elements `r` while the slice lives.
    unsafe fn slice(&self, r: Range<usize>) -> &[f32] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "reducer: {r:?} out of 0..{}",
            self.len
        );
        // SAFETY: in bounds (checked), allocated and initialised by `new` (or
        // a zeroed shared segment at least `len` long, `in_segment`),
        // and not written meanwhile (caller).
        unsafe { std::slice::from_raw_parts(self.ptr.add(r.start), r.len()) }
    }

    /// # Safety
    /// No other thread or live slice touches the elements `r` while the
    /// slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, r: Range<usize>) -> &mut [f32] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "reducer: {r:?} out of 0..{}",
            self.len
        );
        // SAFETY: in bounds (checked), allocated by `new` or `in_segment`,
        // exclusive (caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.len()) }
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        if self.segments.is_some() {
            return;
        }
        // SAFETY: `ptr`/`len` came from `Box::into_raw` of a boxed slice of
        // this length in `new`, and are freed only here.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

/// The pass's shape: the arena length `n`, the minibatch's shards, this
/// rank's shard count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    n: usize,
    shards: usize,
    mine: usize,
}

struct Buffers {
    /// `mine` copies of the arena, shard-major: shard `j`'s partial of
    /// element `x` at `j·n + x`.
    staged: RawBuf,
    /// This rank's owned slice of the sums: element `x` at `x − own.start`.
    summed: RawBuf,
}

/// One bucket for the exchange thread.
struct Job {
    range: Range<usize>,
    layout: Layout,
    bufs: Arc<Buffers>,
    /// The queuing thread's floating-point control setting, under which the
    /// bucket's sums are added (the same bits as adding them on that thread).
    fp_control: u32,
}

/// The exchange thread: buckets in, a token per finished bucket out.
struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    /// In a mutex only to make the network `Sync` (it is shared by
    /// inference threads); reached through `&mut` alone, so never locked.
    done: Mutex<mpsc::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Where the backward pass writes a kept tensor's shard partials: the
/// `staged` arena copies, to the pieces of [`crate::nn`]'s executor.
#[derive(Clone, Copy)]
pub(crate) struct Staging<'a> {
    bufs: &'a Buffers,
    n: usize,
}

impl Staging<'_> {
    /// Shard `j`'s partial of the arena range `r`.
    ///
    /// # Safety
    /// `r` belongs to a tensor not yet reported kept in this pass, and no
    /// other live slice covers the same shard and elements. (In shared
    /// memory the other ranks read this rank's partials between the two
    /// barriers of [`Reducer::finish`]; a pass writes them only before the
    /// first, and the next pass only after the second.)
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn piece(&self, j: usize, r: Range<usize>) -> &mut [f32] {
        // SAFETY: a tensor not yet kept belongs to no bucket, so the
        // exchange thread does not touch it; exclusivity is the caller's.
        unsafe {
            self.bufs
                .staged
                .slice_mut(j * self.n + r.start..j * self.n + r.end)
        }
    }
}

/// A group's gradient exchange for the passes of one network.
pub(crate) struct Reducer {
    group: Group,
    worker: Option<Worker>,
    bufs: Arc<Buffers>,
    layout: Layout,
    /// The bucket being gathered.
    open: Option<Range<usize>>,
    /// The tensors kept this pass.
    kept: Vec<Range<usize>>,
    /// Buckets sent and not yet done.
    out: usize,
    scratch: Vec<f32>,
    /// The exchange runs in shared memory ([`Group::in_shared_memory`]):
    /// `staged` is this rank's segment, and the owners add the partials
    /// where the ranks wrote them when the pass ends.
    shared: bool,
}

impl std::fmt::Debug for Reducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reducer")
            .field("layout", &self.layout)
            .field("background", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

impl Reducer {
    /// A reducer over `group`, with the exchange thread when the group has
    /// more than one rank, asks for overlap and its transport offers a
    /// channel. A collective: every rank calls it at the same point, and
    /// the ranks' [`Group::with_overlap`] and [`Group::with_bucket_values`]
    /// must agree (checked: they decide which collectives run).
    ///
    /// # Panics
    /// If the ranks' settings differ (on every rank).
    pub(crate) fn new(group: Group) -> Reducer {
        let mine = [
            f64::from(u8::from(group.overlap())),
            group.bucket_values() as f64,
            f64::from(u8::from(group.shared_memory())),
        ];
        let mut all = vec![0.0f64; 3 * group.size()];
        group.gather_all_f64(&mine, &mut all);
        if let Some(q) = (0..group.size()).find(|&q| all[3 * q..3 * q + 3] != mine) {
            panic!(
                "dist: rank {} trains with overlap {}, buckets of {} values and shared memory \
                 {}, rank {q} with overlap {}, buckets of {} and shared memory {}: every rank \
                 needs the same settings",
                group.rank(),
                group.overlap(),
                group.bucket_values(),
                group.shared_memory(),
                all[3 * q] != 0.0,
                all[3 * q + 1],
                all[3 * q + 2] != 0.0
            );
        }
        let shared = group.in_shared_memory();
        let worker = (group.size() > 1 && group.overlap() && !shared)
            .then(|| group.channel())
            .flatten()
            .map(spawn);
        let mut r = Reducer::inline(group);
        r.worker = worker;
        r.shared = shared;
        r
    }

    /// A reducer that exchanges on the calling thread (no collective: for a
    /// copy of a network, whose group already has its reducer).
    pub(crate) fn inline(group: Group) -> Reducer {
        Reducer {
            group,
            worker: None,
            bufs: Arc::new(Buffers {
                staged: RawBuf::new(0),
                summed: RawBuf::new(0),
            }),
            layout: Layout {
                n: 0,
                shards: 0,
                mine: 0,
            },
            open: None,
            kept: Vec::new(),
            out: 0,
            scratch: Vec::new(),
            shared: false,
        }
    }

    /// The group it exchanges over.
    pub(crate) fn group(&self) -> &Group {
        &self.group
    }

    /// Readies a pass over an arena of `n` values, `shards` shards of which
    /// `mine` are this rank's, and gives where to write the partials of the
    /// tensor at `r` (reported with [`Reducer::kept`] once written).
    ///
    /// # Panics
    /// If `r` overlaps a tensor kept earlier in the pass (checked before
    /// anything is written: the exchange thread may be reading it).
    pub(crate) fn staging(
        &mut self,
        n: usize,
        shards: usize,
        mine: usize,
        r: Range<usize>,
    ) -> Staging<'_> {
        assert!(
            r.is_empty()
                || self
                    .kept
                    .iter()
                    .all(|k| k.end <= r.start || r.end <= k.start),
            "reducer: gradient range {r:?} kept twice in one pass"
        );
        let layout = Layout { n, shards, mine };
        if layout != self.layout {
            assert!(
                self.out == 0 && self.kept.is_empty(),
                "reducer: the pass's shape changed with gradients kept"
            );
            let own = self.group.owned_slice(self.group.rank(), n);
            let staged = mine
                .checked_mul(n)
                .expect("reducer: the staged gradient copies overflow usize");
            self.bufs = Arc::new(if self.shared {
                // A collective: every rank's pass reaches its first tensor,
                // and a new shape, at the same point.
                let segments = self.group.shared_segments(staged);
                Buffers {
                    staged: RawBuf::in_segment(segments, self.group.rank(), staged),
                    summed: RawBuf::new(0),
                }
            } else {
                Buffers {
                    staged: RawBuf::new(staged),
                    summed: RawBuf::new(own.len()),
                }
            });
            self.layout = layout;
        }
        Staging {
            bufs: &self.bufs,
            n,
        }
    }

    /// Reports the tensor at `r` (given to [`Reducer::staging`]) complete in
    /// `staged`, every shard: it joins the open bucket when that is adjacent
    /// and not full; otherwise the open bucket is sent and `r` opens the
    /// next. An empty `r` is nothing to exchange.
    pub(crate) fn kept(&mut self, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        self.kept.push(r.clone());
        if self.shared {
            // Summed in place when the pass ends.
            return;
        }
        let limit = self.group.bucket_values();
        self.open = match self.open.take() {
            Some(o) if o.len() < limit && r.end == o.start => Some(r.start..o.end),
            Some(o) if o.len() < limit && o.end == r.start => Some(o.start..r.end),
            Some(o) => {
                self.send(o);
                Some(r)
            }
            None => Some(r),
        };
    }

    /// Whether tensors were kept in this pass.
    pub(crate) fn pending(&self) -> bool {
        !self.kept.is_empty()
    }

    fn send(&mut self, range: Range<usize>) {
        let layout = self.layout;
        match &self.worker {
            Some(w) => {
                let job = Job {
                    range,
                    layout,
                    bufs: self.bufs.clone(),
                    fp_control: fp_control(),
                };
                w.jobs
                    .as_ref()
                    .expect("the job channel lives as long as the worker")
                    .send(job)
                    .unwrap_or_else(|_| panic!("{GONE}"));
                self.out += 1;
            }
            None => exchange(&self.group, &self.bufs, layout, range, &mut self.scratch),
        }
    }

    /// Exchanges the last bucket on this thread, waits for every bucket,
    /// and writes this rank's sums of the kept tensors into `grads` (the
    /// arena; elements outside the kept tensors are left alone), then, when
    /// `full`, all-gathers the slices so every rank has the whole summed
    /// gradient.
    pub(crate) fn finish(&mut self, grads: &mut [f32], full: bool) {
        if self.shared {
            return self.finish_shared(grads, full);
        }
        if let Some(o) = self.open.take() {
            // Nothing is left to overlap with, and this thread would only
            // wait: it exchanges the bucket itself, on the group's own
            // communicator (the exchange thread's buckets may still be out
            // on the channel; the two sequences are independent, and each
            // is the same on every rank).
            exchange(&self.group, &self.bufs, self.layout, o, &mut self.scratch);
        }
        if self.out > 0 {
            let w = self
                .worker
                .as_mut()
                .expect("buckets out only with a worker");
            let done = w.done.get_mut().unwrap_or_else(|e| e.into_inner());
            let t = Instant::now();
            for _ in 0..self.out {
                done.recv().unwrap_or_else(|_| panic!("{GONE}"));
            }
            self.out = 0;
            self.group.add_wait(t.elapsed());
        }
        let own = self.group.owned_slice(self.group.rank(), self.layout.n);
        debug_assert_eq!(grads.len(), self.layout.n);
        for r in self.kept.drain(..) {
            let (lo, hi) = (r.start.max(own.start), r.end.min(own.end));
            if lo < hi {
                // SAFETY: every bucket is done, so the exchange thread
                // touches nothing; this is the only live slice.
                let sums = unsafe { self.bufs.summed.slice(lo - own.start..hi - own.start) };
                grads[lo..hi].copy_from_slice(sums);
            }
        }
        if full {
            self.group.all_gather_slices(grads);
        }
    }
}

impl Reducer {
    /// [`Reducer::finish`] in shared memory: after a barrier (every rank's
    /// partials are written), this rank adds, for its owned part of each
    /// kept tensor, the `S` shard partials in shard order, reading each
    /// where its rank wrote it; a second barrier keeps every rank's next
    /// pass from writing its partials while another still reads them.
    fn finish_shared(&mut self, grads: &mut [f32], full: bool) {
        let Layout { n, shards, mine } = self.layout;
        let g = &self.group;
        let (rank, size) = (g.rank(), g.size());
        let own = g.owned_slice(rank, n);
        debug_assert_eq!(grads.len(), n);
        let segments = self
            .bufs
            .staged
            .segments
            .clone()
            .expect("reducer: a shared pass stages in a shared segment");
        // What the other owners read of this rank's partials (for the
        // statistics: the traffic of the message exchange).
        let foreign: usize = self
            .kept
            .iter()
            .map(|r| r.len() - r.end.min(own.end).saturating_sub(r.start.max(own.start)))
            .sum();
        g.shared_barrier(&*segments, foreign * mine * 4);
        // Shard k's partial of the arena starts at this address: in the
        // segment of the rank that owns the shard, after that rank's
        // earlier shards.
        let starts: Vec<*const f32> = (0..size)
            .flat_map(|q| {
                let (ptr, len) = segments.segment(q);
                let theirs = g.shards_of(q, shards);
                assert!(
                    len >= theirs.len() * n,
                    "reducer: rank {q}'s shared segment holds {len} floats, its {} shards need {}",
                    theirs.len(),
                    theirs.len() * n
                );
                (0..theirs.len()).map(move |j| ptr.wrapping_add(j * n).cast_const())
            })
            .collect();
        debug_assert_eq!(starts.len(), shards);
        for r in self.kept.drain(..) {
            let (lo, hi) = (r.start.max(own.start), r.end.min(own.end));
            if lo >= hi {
                continue;
            }
            let shard = |k: usize| -> &[f32] {
                // SAFETY: shard k's partial lies in its rank's segment (its
                // length checked above) at `starts[k]`, `n` floats, of which
                // `lo..hi` is inside; every rank wrote its partials of the
                // pass before the barrier above, and writes them again only
                // after the barrier below.
                unsafe { std::slice::from_raw_parts(starts[k].add(lo), hi - lo) }
            };
            super::add_in_shard_order(&mut grads[lo..hi], shards, shard);
        }
        g.shared_barrier(&*segments, 0);
        if full {
            g.all_gather_slices(grads);
        }
    }
}

const GONE: &str = "the gradient exchange thread ended: a rank of the group failed";

impl Drop for Reducer {
    fn drop(&mut self) {
        if let Some(mut w) = self.worker.take() {
            drop(w.jobs.take());
            if let Some(t) = w.thread.take() {
                // The thread ends once its jobs are done and the channel is
                // closed; a panic there was reported by the thread itself.
                let _ = t.join();
            }
        }
    }
}

/// Starts the exchange thread on `channel`.
fn spawn(channel: Group) -> Worker {
    let (jobs, rx) = mpsc::channel::<Job>();
    let (tx, done) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("backprop-grad-exchange".into())
        .spawn(move || {
            let mut scratch = Vec::new();
            while let Ok(job) = rx.recv() {
                let fp = UseFpControl::new(job.fp_control);
                exchange(
                    &channel,
                    &job.bufs,
                    job.layout,
                    job.range.clone(),
                    &mut scratch,
                );
                drop((fp, job));
                if tx.send(()).is_err() {
                    break;
                }
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the gradient exchange thread: {e}"));
    Worker {
        jobs: Some(jobs),
        done: Mutex::new(done),
        thread: Some(thread),
    }
}

/// Reduces the bucket `range` of `bufs.staged` into this rank's part of
/// `bufs.summed`.
fn exchange(
    group: &Group,
    bufs: &Buffers,
    layout: Layout,
    range: Range<usize>,
    scratch: &mut Vec<f32>,
) {
    let Layout { n, shards, mine } = layout;
    let own = group.owned_slice(group.rank(), n);
    let (lo, hi) = (range.start.max(own.start), range.end.min(own.end));
    let part = if lo < hi {
        lo - own.start..hi - own.start
    } else {
        0..0
    };
    // SAFETY: the bucket's owned part of `summed` is written by this call
    // alone (buckets are disjoint) and read only after it is done.
    let sum = unsafe { bufs.summed.slice_mut(part) };
    let piece = |j: usize| {
        debug_assert!(j < mine);
        // SAFETY: the bucket's tensors are complete and no longer written
        // (the protocol), so reading them is race-free.
        unsafe { bufs.staged.slice(j * n + range.start..j * n + range.end) }
    };
    group.reduce_scatter(piece, shards, n, range.clone(), sum, scratch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::LocalGroup;

    /// Shard `k`'s partial of element `x`: values whose sum depends on the
    /// order of the additions.
    fn partial(k: usize, x: usize) -> f32 {
        let v = ((k * 31 + x * 17) % 23) as f32 - 11.0;
        v * [1e7, 1.0, 3e-3, 0.5][k % 4]
    }

    /// `f` on each of `size` ranks as threads (each given its group), the
    /// outcomes in rank order: a rank that panicked gives `Err`.
    fn each_rank<T: Send>(
        size: usize,
        f: impl Fn(Group) -> T + Sync,
    ) -> Vec<std::thread::Result<T>> {
        let f = &f;
        std::thread::scope(|s| {
            let hs: Vec<_> = LocalGroup::ranks(size)
                .into_iter()
                .map(|c| s.spawn(move || f(Group::new(c))))
                .collect();
            hs.into_iter().map(|h| h.join()).collect()
        })
    }

    /// Every rank stages its shards' partials of `tensors` (in that order),
    /// keeps them and finishes; the whole sums, on every rank.
    fn run(
        size: usize,
        shards: usize,
        n: usize,
        tensors: &[Range<usize>],
        (overlap, bucket, shared): (bool, usize, bool),
    ) -> Vec<Vec<f32>> {
        let runs = each_rank(size, |g| {
            let g = g
                .with_overlap(overlap)
                .with_bucket_values(bucket)
                .with_shared_memory(shared);
            let mine = g.shards_of(g.rank(), shards);
            let mut r = Reducer::new(g);
            let mut grads = vec![f32::NAN; n];
            for _pass in 0..2 {
                for t in tensors {
                    let st = r.staging(n, shards, mine.len(), t.clone());
                    for (j, k) in mine.clone().enumerate() {
                        // SAFETY: one thread, each piece once.
                        let p = unsafe { st.piece(j, t.clone()) };
                        for (v, x) in p.iter_mut().zip(t.clone()) {
                            *v = partial(k, x);
                        }
                    }
                    r.kept(t.clone());
                }
                r.finish(&mut grads, true);
            }
            grads
        });
        runs.into_iter().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn buckets_sum_every_element_in_shard_order() {
        let n = 50;
        let want: Vec<f32> = (0..n)
            .map(|x| (1..4).fold(partial(0, x), |t, k| t + partial(k, x)))
            .collect();
        let orders: [&[Range<usize>]; 2] = [
            &[40..50, 30..40, 0..30],         // top down, adjacent: one bucket
            &[20..30, 0..10, 10..20, 30..50], // jumps: several
        ];
        for size in 1..=3 {
            for tensors in orders {
                for ex in [
                    (true, 1, false),
                    (true, 7, false),
                    (true, 1 << 18, false),
                    (false, 7, false),
                    (true, 7, true),
                ] {
                    for got in run(size, 4, n, tensors, ex) {
                        assert_eq!(
                            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "{size} ranks, {tensors:?}, (overlap, bucket, shared memory) {ex:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_rank_that_is_gone_ends_the_other_ranks_exchange() {
        for shared in [false, true] {
            a_rank_that_is_gone_ends_the_exchange(shared);
        }
    }

    fn a_rank_that_is_gone_ends_the_exchange(shared: bool) {
        let outcomes: Vec<bool> = each_rank(2, |g| {
            let g = g.with_bucket_values(4).with_shared_memory(shared);
            let rank = g.rank();
            let mut r = Reducer::new(g);
            if rank == 1 {
                panic!("rank 1 fails before its exchange");
            }
            let st = r.staging(8, 2, 1, 0..8);
            // SAFETY: one thread, one piece.
            unsafe { st.piece(0, 0..8) }.fill(1.0);
            r.kept(0..8);
            r.finish(&mut [0.0; 8], true);
        })
        .iter()
        .map(Result::is_err)
        .collect();
        assert_eq!(
            outcomes,
            [true, true],
            "both ranks end, neither waits forever (shared memory {shared})"
        );
    }

    #[test]
    #[should_panic(expected = "kept twice")]
    fn a_range_kept_twice_in_a_pass_is_refused() {
        let mut r = Reducer::new(Group::new(LocalGroup::ranks(1).remove(0)));
        r.staging(8, 1, 1, 0..4);
        r.kept(0..4);
        r.staging(8, 1, 1, 2..6);
    }
}
