//! The executor: how one layer's batch-wide work is spread over threads.
//!
//! The layers say *what* a minibatch computes (a GEMM over all rows, a weight
//! gradient summed over all rows); this module alone decides *how* it is cut,
//! as BLIS keeps the thread decomposition out of the algorithm. It is the only
//! place in `nn/` that holds `unsafe`.
//!
//! Every batch-wide call goes through [`Exec::run`], which is given
//! - the batch size,
//! - up to `N` **row-split outputs** (`batch × width` row-major buffers, each
//!   shard gets its own rows), and
//! - optionally one **reduced output** (a weight or bias gradient: each shard
//!   writes a partial of the same length, and the partials are summed).
//!
//! [`BatchParallelism::SplitGemm`] calls the work once over all rows with the
//! network's own GEMM options: each GEMM spreads its output tiles over the
//! threads and writes the reduced output directly. [`BatchParallelism::Shards`]
//! cuts the batch into `S` fixed row ranges (`k·B/S .. (k+1)·B/S`, set by the
//! batch size and `S` alone), runs each shard's work on one thread, and sums
//! the `S` partials **in shard order** ([`Exec::reduce`]). Neither choice
//! depends on the thread count, so both give bitwise the same result on any
//! number of threads; they differ from each other in the order of the sums.
//!
//! # Across processes
//! A shard's partial is complete before the reduction starts, and the
//! reduction is one function of `(S partials) → sum in shard order`. With a
//! [`Group`] (see [`crate::dist`]) a pass may cover only this rank's shards
//! of a minibatch ([`Exec::set_part`]): the pieces are those shards' rows,
//! and the reduction receives their partials and adds all `S` in the same
//! order across the ranks ([`Group::ordered_sum`]), so the bits are those of
//! one process. Parameter gradients ([`Exec::run_grad`]) are kept until the
//! backward pass ends and reduced together ([`Exec::flush`]). The other sums
//! over a minibatch (BatchNorm's statistics, LayerNorm's and the loss's)
//! go through the same two functions, so they too are per shard, then in
//! shard order, in shard mode.

use std::ops::Range;

use crate::dist::reducer::{Reducer, Staging};
use crate::dist::Group;
use crate::gemm::GemmOptions;
use crate::nn::StepError;
use crate::parallel::{self, SharedMut};
use crate::Threads;

/// A row-split output: `rows × width` row-major.
pub(crate) type RowsMut<'a> = Option<(&'a mut [f32], usize)>;

/// How the rows of a minibatch are spread over threads. Both give bitwise the
/// same result for any thread count; they differ from each other in the order
/// the batch is summed over for the weight and bias gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchParallelism {
    /// Every GEMM splits its own output over the threads (the weight gradient
    /// `Xᵀ·δ` over the rows/columns of `∂W`): no reduction buffers.
    SplitGemm,
    /// The minibatch is cut into this many fixed row shards (independent of
    /// the thread count); each shard's dense-layer GEMMs run on one thread,
    /// and the per-shard weight and bias gradients are summed in shard order.
    Shards(usize),
}

/// What one piece of work is handed by [`Exec::run`].
pub(crate) struct Piece<'s, const N: usize> {
    /// The batch rows this piece covers.
    pub rows: Range<usize>,
    /// The GEMM options for this piece (one thread in shard mode).
    pub options: GemmOptions,
    /// The piece's rows of each row-split output (`rows.len() × width`).
    pub outs: [Option<&'s mut [f32]>; N],
    /// Where the piece writes its partial of the reduced output (overwrite).
    pub partial: Option<&'s mut [f32]>,
}

/// The thread decomposition of a network's batch-wide work.
#[derive(Clone, Debug)]
pub(crate) struct Exec {
    /// GEMM options of the network (thread count, ISA).
    pub options: GemmOptions,
    /// How rows are spread.
    pub parallelism: BatchParallelism,
    /// Shard mode: `S` partials of one reduced output at a time; only grows.
    partials: Vec<f32>,
    /// The ranks this network trains with (shard mode only).
    group: Option<Group>,
    /// Set for a pass over this rank's part of a group's minibatch.
    part: Option<Part>,
    /// The group's reduction scratch.
    scratch: Vec<f32>,
    /// Per-shard loss values and their status: this pass's, then all.
    sums: Vec<f64>,
    /// The exchange of a group's parameter gradients (with the group).
    reducer: ReducerSlot,
    /// Whether `flush` all-gathers the summed gradient.
    full_grads: bool,
}

/// The executor's [`Reducer`]. A clone gets one that exchanges on the
/// calling thread: a background exchange needs a channel, and opening one is
/// a collective that only the ranks' matching calls of `set_group` may make.
#[derive(Debug, Default)]
struct ReducerSlot(Option<Reducer>);

impl Clone for ReducerSlot {
    fn clone(&self) -> ReducerSlot {
        ReducerSlot(self.0.as_ref().map(|r| Reducer::inline(r.group().clone())))
    }
}

/// This rank's part of a minibatch of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    /// Rows of the whole minibatch.
    pub batch: usize,
    /// The first of this rank's shards, and how many it has.
    pub first_shard: usize,
    pub shards: usize,
}

/// How the rows a pass was given sit in the minibatch: the shards over
/// them (shard mode) and their place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cut {
    /// Rows of the whole minibatch.
    pub batch: usize,
    /// Shards of the whole minibatch (1 outside shard mode).
    pub total_shards: usize,
    /// The first shard the pass covers, and how many.
    pub first_shard: usize,
    pub shards: usize,
}

impl Cut {
    /// Global rows of shard `k`.
    pub fn shard_rows(&self, k: usize) -> Range<usize> {
        k * self.batch / self.total_shards..(k + 1) * self.batch / self.total_shards
    }
    /// The global row of the pass's first row.
    pub fn first_row(&self) -> usize {
        self.shard_rows(self.first_shard).start
    }
    /// The pass's rows of its `j`-th shard, counted from its first row.
    pub fn local_rows(&self, j: usize) -> Range<usize> {
        let r = self.shard_rows(self.first_shard + j);
        let o = self.first_row();
        r.start - o..r.end - o
    }
}

impl Exec {
    /// An executor with no scratch yet.
    pub(crate) fn new(options: GemmOptions, parallelism: BatchParallelism) -> Exec {
        Exec {
            options,
            parallelism,
            partials: Vec::new(),
            group: None,
            part: None,
            scratch: Vec::new(),
            sums: Vec::new(),
            reducer: ReducerSlot::default(),
            full_grads: true,
        }
    }

    /// Trains with `group` (shard mode), or alone. With a group, a
    /// collective: every rank calls it at the same point (the gradient
    /// exchange may open a channel).
    pub(crate) fn set_group(&mut self, group: Option<Group>) {
        self.reducer = ReducerSlot(group.clone().map(Reducer::new));
        self.group = group;
    }
    /// Takes `old`'s group and gradient exchange as they are (no
    /// collective).
    pub(crate) fn take_group_from(&mut self, old: &mut Exec) {
        self.group = old.group.take();
        self.reducer = std::mem::take(&mut old.reducer);
    }
    /// The group, if any.
    pub(crate) fn group(&self) -> Option<&Group> {
        self.group.as_ref()
    }
    /// Marks the coming passes as over this rank's part of a minibatch of
    /// `batch` rows (`None`: the passes are over whole batches).
    ///
    /// # Panics
    /// Outside shard mode or without a group.
    pub(crate) fn set_part(&mut self, batch: Option<usize>) {
        self.part = batch.map(|batch| {
            let (group, BatchParallelism::Shards(s)) = (&self.group, self.parallelism) else {
                panic!(
                    "a network that trains with a group needs shard mode: do not change its \
                     parallelism after Trainer::with_group"
                );
            };
            let group = group
                .as_ref()
                .expect("exec: a part of a minibatch needs a group");
            let mine = group.shards_of(group.rank(), s);
            Part {
                batch,
                first_shard: mine.start,
                shards: mine.len(),
            }
        });
    }
    /// The rows this rank takes of a minibatch of `batch` rows, when the
    /// passes are parts of a group's minibatches.
    pub(crate) fn rows_of(&self, batch: usize) -> Range<usize> {
        match (&self.group, self.parallelism) {
            (Some(g), BatchParallelism::Shards(s)) => {
                let mine = g.shards_of(g.rank(), s);
                mine.start * batch / s..mine.end * batch / s
            }
            _ => 0..batch,
        }
    }

    /// How a pass over `rows` rows sits in its minibatch.
    pub(crate) fn cut(&self, rows: usize) -> Cut {
        match (self.part, self.parallelism) {
            (Some(p), BatchParallelism::Shards(s)) => Cut {
                batch: p.batch,
                total_shards: s,
                first_shard: p.first_shard,
                shards: p.shards,
            },
            (_, BatchParallelism::Shards(s)) => Cut {
                batch: rows,
                total_shards: s,
                first_shard: 0,
                shards: s,
            },
            (_, BatchParallelism::SplitGemm) => Cut {
                batch: rows,
                total_shards: 1,
                first_shard: 0,
                shards: 1,
            },
        }
    }

    /// `Σ_k f(rows of shard k)` over the shards of the pass's minibatch, in
    /// shard order, in `f64`: the loss of a minibatch from per-shard sums.
    /// Across the group when the pass is a part: every rank takes part even
    /// when its own shard fails, and every rank then fails alike (its own
    /// error, or [`StepError::Peer`] naming the first rank that failed).
    pub(crate) fn shard_sum(
        &mut self,
        cut: Cut,
        mut f: impl FnMut(Range<usize>) -> Result<f64, StepError>,
    ) -> Result<f64, StepError> {
        let s = cut.total_shards;
        let mut own = None;
        for j in 0..cut.shards {
            let (v, ok) = match f(cut.local_rows(j)) {
                Ok(v) => (v, 0.0),
                Err(e) => {
                    own.get_or_insert(e);
                    (f64::NAN, 1.0)
                }
            };
            self.sums[2 * j] = v;
            self.sums[2 * j + 1] = ok;
        }
        let (local, all) = self.sums.split_at_mut(2 * s);
        let all = &mut all[..2 * s];
        match (&self.group, self.part) {
            (Some(g), Some(_)) => g.gather_f64(&local[..2 * cut.shards], s, 2, all),
            _ => {
                if let Some(e) = own {
                    return Err(e);
                }
                all.copy_from_slice(local);
            }
        }
        if let Some(k) = (0..s).find(|&k| all[2 * k + 1] != 0.0) {
            return Err(match own {
                Some(e) => e,
                None => {
                    let g = self
                        .group
                        .as_ref()
                        .expect("failures elsewhere come from a group");
                    StepError::Peer {
                        rank: (0..g.size())
                            .find(|&q| g.shards_of(q, s).contains(&k))
                            .unwrap_or(0),
                    }
                }
            });
        }
        Ok((0..s).map(|k| all[2 * k]).fold(0.0, |t, v| t + v))
    }

    /// The ISA of the network's elementwise loops: the one the GEMM options
    /// force, else the active one.
    pub(crate) fn isa(&self) -> crate::Isa {
        self.options.isa.unwrap_or_else(crate::active_isa)
    }

    /// Sizes the scratch for reduced outputs of up to `len` values, so that
    /// steps allocate nothing. `None` if the size overflows or is refused.
    pub(crate) fn reserve(&mut self, len: usize) -> Option<()> {
        if let BatchParallelism::Shards(shards) = self.parallelism {
            let sums = shards.checked_mul(4)?;
            if sums > self.sums.len() {
                self.sums.try_reserve_exact(sums - self.sums.len()).ok()?;
                self.sums.resize(sums, 0.0);
            }
            let need = shards.checked_mul(len)?;
            if need > self.partials.len() {
                self.partials
                    .try_reserve_exact(need - self.partials.len())
                    .ok()?;
                self.partials.resize(need, 0.0);
            }
        }
        Some(())
    }

    /// Runs `work` over the batch as the parallelism says: once over all rows
    /// (split GEMM), or once per shard of rows on the team, each piece getting
    /// its rows of every output in `outs` and, when `reduced` is given, a
    /// partial that the executor sums into it in shard order. A shard with no
    /// rows gets no call; its partial counts as zero.
    ///
    /// # Panics
    /// If an output is shorter than `batch × width`.
    pub(crate) fn run<const N: usize, F>(
        &mut self,
        batch: usize,
        outs: [RowsMut<'_>; N],
        reduced: Option<&mut [f32]>,
        work: F,
    ) where
        F: Fn(Piece<'_, N>) + Sync,
    {
        self.run_into(batch, outs, reduced, None, work);
    }

    /// [`Exec::run`] whose reduced output is `grads[range]`, a parameter
    /// gradient nothing reads before the backward pass ends. Over a part of a
    /// group's minibatch its shard partials are kept, and [`Exec::flush`]
    /// reduces all of a pass's gradients in one exchange: the same sums, in
    /// the same order, with two collectives per step instead of two per
    /// tensor. Otherwise as `run` into `grads[range]` (none without a range).
    pub(crate) fn run_grad<const N: usize, F>(
        &mut self,
        batch: usize,
        outs: [RowsMut<'_>; N],
        grads: &mut [f32],
        range: Option<Range<usize>>,
        work: F,
    ) where
        F: Fn(Piece<'_, N>) + Sync,
    {
        let at = range.as_ref().map(|r| (r.start, grads.len()));
        let reduced = range.map(|r| &mut grads[r]);
        self.run_into(batch, outs, reduced, at, work);
    }

    /// Whether [`Exec::flush`] gives every rank the whole summed gradient
    /// (`true`, the default) or each rank only its owned slice
    /// ([`Group::owned_slice`]), for an update sharded over the ranks.
    pub(crate) fn set_full_grads(&mut self, full: bool) {
        self.full_grads = full;
    }

    /// Reduces the gradients [`Exec::run_grad`] kept (if any) into `grads`:
    /// the buckets not yet sent go, every bucket's reduce-scatter in shard
    /// order is waited for, each rank writes the sums of its owned slice,
    /// then (unless [`Exec::set_full_grads`] said otherwise) the slices are
    /// all-gathered.
    pub(crate) fn flush(&mut self, grads: &mut [f32]) {
        if let Some(r) = self.reducer.0.as_mut().filter(|r| r.pending()) {
            r.finish(grads, self.full_grads);
        }
    }

    fn run_into<const N: usize, F>(
        &mut self,
        batch: usize,
        outs: [RowsMut<'_>; N],
        reduced: Option<&mut [f32]>,
        grad_at: Option<(usize, usize)>,
        work: F,
    ) where
        F: Fn(Piece<'_, N>) + Sync,
    {
        let total = match self.parallelism {
            BatchParallelism::SplitGemm => {
                work(Piece {
                    rows: 0..batch,
                    options: self.options,
                    outs: outs.map(|o| o.map(|(s, w)| &mut s[..batch * w])),
                    partial: reduced,
                });
                return;
            }
            BatchParallelism::Shards(s) => s,
        };
        let widths = outs.each_ref().map(|o| o.as_ref().map_or(0, |(_, w)| *w));
        let shared = outs.map(|o| {
            o.map(|(s, w)| {
                assert!(s.len() >= batch * w, "exec: an output is too short");
                SharedMut::new(&mut s[..batch * w])
            })
        });
        let one = GemmOptions {
            threads: Threads::Fixed(1),
            ..self.options
        };
        let len = reduced.as_ref().map_or(0, |r| r.len());
        self.reserve(len)
            .expect("exec: partials reserved with the workspaces");
        let cut = self.cut(batch);
        let shards = cut.shards;
        debug_assert!(total >= shards);
        let has_partial = reduced.is_some();
        // A parameter gradient of a group's part is written straight into
        // the reducer's staged copies and exchanged from there; other sums
        // go through the partials.
        let keep = match (&self.group, self.part, grad_at) {
            (Some(_), Some(_), Some((at, arena))) => Some((at, arena)),
            _ => None,
        };
        let dest = match keep {
            Some((at, arena)) => Dest::Staged(
                self.reducer
                    .0
                    .as_mut()
                    .expect("exec: a group has a reducer")
                    .staging(arena, total, shards, at..at + len),
                at,
            ),
            None => Dest::Partials(SharedMut::new(&mut self.partials[..shards * len])),
        };
        parallel::for_each_piece(self.options.threads.count(), shards, |k| {
            let rows = cut.local_rows(k);
            let partial = match &dest {
                // SAFETY: shard k alone touches partial slot k.
                Dest::Partials(parts) => unsafe { parts.range(k * len..(k + 1) * len) },
                // SAFETY: shard k alone touches its copy of the tensor, which
                // is reported kept only after every piece returned.
                Dest::Staged(st, at) => unsafe { st.piece(k, *at..*at + len) },
            };
            if rows.is_empty() {
                partial.fill(0.0);
                return;
            }
            let mut i = 0;
            let outs = shared.each_ref().map(|s| {
                let w = widths[i];
                i += 1;
                // SAFETY: shards are disjoint row ranges, so their element
                // ranges of each output are disjoint.
                s.as_ref()
                    .map(|s| unsafe { s.range(rows.start * w..rows.end * w) })
            });
            work(Piece {
                rows,
                options: one,
                outs,
                partial: has_partial.then_some(partial),
            });
        });
        if let Some(out) = reduced {
            match (&self.group, self.part) {
                _ if keep.is_some() => {
                    let (at, _) = keep.expect("checked");
                    self.reducer
                        .0
                        .as_mut()
                        .expect("exec: a group has a reducer")
                        .kept(at..at + len);
                }
                (Some(g), Some(_)) => g.ordered_sum(
                    &self.partials[..shards * len],
                    total,
                    out,
                    &mut self.scratch,
                ),
                _ => reduce(&self.partials[..shards * len], shards, out),
            }
        }
    }
}

/// Where the pieces of [`Exec::run_into`] write their partials.
enum Dest<'a> {
    /// The executor's partials, `len` per shard.
    Partials(SharedMut<'a, f32>),
    /// The reducer's staged arena copies, at this offset.
    Staged(Staging<'a>, usize),
}

/// `out = parts[0] + parts[1] + … + parts[shards − 1]` (each `out.len()`
/// long), always added in shard order; the elements are spread over the team
/// (an elementwise cut, which changes no bit).
pub(crate) fn reduce(parts: &[f32], shards: usize, out: &mut [f32]) {
    let len = out.len();
    debug_assert_eq!(parts.len(), shards * len);
    let dst = SharedMut::new(out);
    parallel::for_each_range(len, |r| {
        // SAFETY: for_each_range hands out disjoint ranges of `out`.
        let d = unsafe { dst.range(r.clone()) };
        d.copy_from_slice(&parts[r.clone()]);
        for k in 1..shards {
            for (x, y) in d.iter_mut().zip(&parts[k * len + r.start..k * len + r.end]) {
                *x += y;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row pieces cover the batch once, in shard order, and the reduction is
    /// the shard-ordered sum, empty shards counting zero.
    #[test]
    fn shards_cover_rows_and_reduce_in_order() {
        for (batch, shards) in [(0, 3), (1, 4), (7, 3), (10, 10), (33, 8)] {
            let mut ex = Exec::new(GemmOptions::default(), BatchParallelism::Shards(shards));
            let mut rows = vec![f32::NAN; batch * 2];
            let mut sum = vec![f32::NAN; 3];
            ex.run(batch, [Some((&mut rows[..], 2))], Some(&mut sum), |p| {
                let [o] = p.outs;
                let o = o.unwrap();
                assert_eq!(o.len(), p.rows.len() * 2);
                for (i, r) in p.rows.clone().enumerate() {
                    o[2 * i] = r as f32;
                    o[2 * i + 1] = -(r as f32);
                }
                let part = p.partial.unwrap();
                part.fill(p.rows.len() as f32);
                assert_eq!(p.options.threads, Threads::Fixed(1));
            });
            for r in 0..batch {
                assert_eq!(rows[2 * r], r as f32);
                assert_eq!(rows[2 * r + 1], -(r as f32));
            }
            assert_eq!(sum, vec![batch as f32; 3], "batch {batch}, {shards} shards");
        }
    }

    #[test]
    fn split_gemm_runs_once_over_all_rows_into_the_reduced_output() {
        let mut ex = Exec::new(GemmOptions::default(), BatchParallelism::SplitGemm);
        let mut sum = [0.0f32; 2];
        let calls = std::sync::atomic::AtomicUsize::new(0);
        ex.run(5, [], Some(&mut sum), |p| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(p.rows, 0..5);
            p.partial.unwrap().fill(2.0);
        });
        assert_eq!(calls.into_inner(), 1);
        assert_eq!(sum, [2.0, 2.0]);
    }

    #[test]
    fn reduce_adds_in_shard_order() {
        // 1e8 + 1 − 1e8 is 0 in f32 in this order, 1 in another.
        let parts = [1e8f32, 1.0, -1e8];
        let mut out = [f32::NAN];
        reduce(&parts, 3, &mut out);
        assert_eq!(out, [(1e8f32 + 1.0) - 1e8]);
    }
}
