//! Assembly: spans in, finalised traces out. One [`Assembler`] per worker owns its traces outright
//! (no locks); the same type runs synchronously inside `grayscope check`.
//!
//! A trace is finalised when it has been idle for `trace_idle`, when buffered spans exceed the
//! worker's share of `--max-buffered-spans` (least recently active first, counted as early), or on
//! shutdown. A finalised trace is kept for its late spans ([`kept`]): a span that arrives while it
//! is kept reopens it, and what the span adds (its edges, and those of the spans that waited for
//! it as their parent) is judged then. Spans whose parent has not arrived wait for it
//! (`--orphan-wait`) before they are judged `broken_trace`. Finalised trace ids are also
//! remembered for a while (bounded), so that a span arriving after its trace is no longer kept is
//! counted as late instead of starting a new trace that would look broken.

mod buffer;
mod kept;
mod snapshot;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use foldhash::fast::RandomState;

pub use snapshot::TraceSnapshot;

use crate::instances::Instances;
use crate::model::{SpanBatch, SpanExtra, SpanRecord, StageMode, Sym, TraceId};
use crate::verify::{self, ConsumerHalf, Orphans, Policy, TraceOutcome, trace::FinaliseContext};
use buffer::{Insert, TraceBuffer};
use kept::{Kept, Left};

/// Why a trace was finalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Idle for `trace_idle`: the normal case.
    Idle,
    /// Forced by the memory bound before it went idle.
    Early,
    /// Forced by shutdown or an explicit flush.
    Flush,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Idle => "idle",
            Reason::Early => "memory",
            Reason::Flush => "shutdown",
        }
    }
}

/// A finalised trace on its way to the aggregate.
#[derive(Debug)]
pub struct Finalised {
    pub outcome: TraceOutcome,
    pub reason: Reason,
    /// The trace itself, kept for traces with findings (the ones users open) and a sample of clean
    /// ones.
    pub snapshot: Option<TraceSnapshot>,
}

#[derive(Clone, Debug)]
pub struct AssemblerConfig {
    pub idle_ms: u64,
    pub max_spans: usize,
    /// How many finalised trace ids to remember, and for how long.
    pub tombstones: usize,
    pub tombstone_ms: u64,
    /// Share of clean traces to keep a snapshot of (traces with findings always get one).
    pub sample_clean: f64,
    /// How long a span whose parent has not arrived waits for it after its trace is finalised;
    /// 0: it is judged when the trace is, and finalised traces are not kept for late spans.
    pub orphan_wait_ms: u64,
    /// How long a finalised trace without such spans is kept for late ones.
    pub keep_ms: u64,
    /// Weight of the skeletons kept for late spans, at most ([`kept::Skeleton::weight`]).
    pub max_kept: usize,
}

impl AssemblerConfig {
    /// One worker's share of a collector finalising traces after `idle` without new spans and
    /// holding at most `max_spans` over `workers` workers.
    ///
    /// Derived from them: a finalised trace's id is remembered for three idle times (a late retry
    /// of its spans is then counted as late, not judged as a new, broken trace), and one id for
    /// every eight spans a worker may hold, at least 4,096.
    ///
    /// Finalised traces are kept for late spans for three idle times too, and for `orphan_wait`
    /// when some of their spans wait for their parent, within the worker's share of `max_kept`.
    pub fn online(
        idle: Duration,
        max_spans: usize,
        workers: usize,
        sample_clean: f64,
        orphan_wait: Duration,
        max_kept: usize,
    ) -> Self {
        let idle_ms = (idle.as_millis() as u64).max(1);
        let max_spans = max_spans.div_ceil(workers.max(1)).max(1);
        let orphan_wait_ms = orphan_wait.as_millis() as u64;
        AssemblerConfig {
            idle_ms,
            max_spans,
            tombstones: (max_spans / 8).max(4096),
            tombstone_ms: idle_ms.saturating_mul(3),
            sample_clean,
            orphan_wait_ms,
            keep_ms: if orphan_wait_ms == 0 {
                0
            } else {
                idle_ms.saturating_mul(3)
            },
            max_kept: if orphan_wait_ms == 0 {
                0
            } else {
                max_kept.div_ceil(workers.max(1)).max(1)
            },
        }
    }

    /// How often a worker looks for idle traces: a quarter of the idle time, so a trace is
    /// finalised at most 25 % late, between 5 ms and 250 ms.
    pub fn tick(&self) -> Duration {
        Duration::from_millis((self.idle_ms / 4).clamp(5, 250))
    }

    /// Never finalises a trace on its own (no idle time, no memory bound, nothing remembered):
    /// the caller drains when all input is in. For `check` and benchmarks.
    pub fn offline() -> Self {
        AssemblerConfig {
            idle_ms: u64::MAX / 2,
            max_spans: usize::MAX,
            tombstones: 0,
            tombstone_ms: 0,
            sample_clean: 0.0,
            orphan_wait_ms: 0,
            keep_ms: 0,
            max_kept: 0,
        }
    }

    fn waits(&self) -> bool {
        self.orphan_wait_ms > 0
    }
}

/// Plain counters; the worker publishes them as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssembleStats {
    pub spans_added: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    /// Spans for a trace finalised recently and no longer kept: counted, not judged.
    pub late: u64,
    /// Spans added to a kept trace after it was finalised, once judged: like `spans_idle`, but
    /// of no new trace.
    pub spans_late: u64,
    /// Spans whose parent arrived after their trace was finalised: judged then.
    pub orphans_resolved: u64,
    /// Spans whose parent never arrived, judged when their wait ended (`wait`) or on an explicit
    /// flush (`flush`); or not judged, because memory (`memory`) or shutdown (`shutdown`) ended
    /// the wait first.
    pub orphans_expired_wait: u64,
    pub orphans_expired_flush: u64,
    pub orphans_expired_memory: u64,
    pub orphans_expired_shutdown: u64,
    /// Traces kept for late spans and forgotten early, to stay within `--max-kept-spans`.
    pub kept_evicted: u64,
    pub finalised_idle: u64,
    pub finalised_early: u64,
    pub finalised_flush: u64,
    /// Spans in the traces finalised for each reason: with duplicates, conflicts, late and still
    /// buffered spans they account for every span accepted.
    pub spans_idle: u64,
    pub spans_early: u64,
    pub spans_flush: u64,
}

pub struct Assembler {
    cfg: AssemblerConfig,
    policy: Arc<Policy>,
    instances: Arc<Instances>,
    ids: HashMap<TraceId, u32, RandomState>,
    slots: Vec<Option<TraceBuffer>>,
    free: Vec<u32>,
    /// (slot, stamp) in order of last activity; entries whose stamp no longer matches are stale.
    idle_queue: VecDeque<(u32, u32)>,
    stamp: u32,
    buffered: usize,
    /// What the messaging extras of buffered spans weigh, in spans ([`SpanExtra::weight`]):
    /// counted against the memory bound with `buffered`.
    extra_weight: usize,
    finished: Tombstones,
    stats: AssembleStats,
    /// Spans per trace in the batch being inserted (kept to reuse its memory).
    per_trace: HashMap<TraceId, u32, RandomState>,
    /// Consumer spans of finalised traces, from the batch being inserted.
    late_consumers: Vec<ConsumerHalf>,
    kept: Kept,
    /// How late (ms) each orphan's parent arrived, since it was last read.
    lateness_ms: Vec<u64>,
    /// Skeletons that left `kept` (reused).
    left: Vec<Left>,
}

impl Assembler {
    pub fn new(cfg: AssemblerConfig, policy: Arc<Policy>, instances: Arc<Instances>) -> Self {
        Assembler {
            finished: Tombstones::new(cfg.tombstones, cfg.tombstone_ms),
            kept: Kept::new(cfg.max_kept),
            lateness_ms: Vec::new(),
            left: Vec::new(),
            cfg,
            policy,
            instances,
            ids: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            idle_queue: VecDeque::new(),
            stamp: 0,
            buffered: 0,
            extra_weight: 0,
            stats: AssembleStats::default(),
            per_trace: HashMap::default(),
            late_consumers: Vec::new(),
        }
    }

    /// A consumer span of a trace finalised before it came: a consumer that lags behind its
    /// producer by more than `trace_idle` is normal, so its edge from its producer (its parent,
    /// or its links) is judged through the producers kept for links rather than dropped as late.
    fn late_consumer(&mut self, trace_id: TraceId, span: SpanRecord, extra: Option<&SpanExtra>) {
        if let Some(half) = ConsumerHalf::apart_from_parent(trace_id, &span, extra) {
            self.late_consumers.push(half);
        }
    }

    pub fn buffered_spans(&self) -> usize {
        self.buffered
    }

    pub fn buffered_traces(&self) -> usize {
        self.ids.len()
    }

    /// Finalised traces kept for late spans, and the weight of their skeletons.
    pub fn kept(&self) -> (usize, usize) {
        (self.kept.len(), self.kept.weight())
    }

    /// Spans waiting for their parent in kept traces.
    pub fn orphans_waiting(&self) -> usize {
        self.kept.waiting()
    }

    /// How late (ms) the parents of orphans arrived, since this was last called.
    pub fn take_lateness(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.lateness_ms)
    }

    /// Heap bytes held for buffered traces, estimated from capacities (what `--max-buffered-spans`
    /// costs).
    pub fn memory_bytes(&self) -> usize {
        let per_trace: usize = self.slots.iter().flatten().map(|b| b.heap_bytes()).sum();
        per_trace
            + self.kept.heap_bytes()
            + self.slots.capacity() * std::mem::size_of::<Option<TraceBuffer>>()
            + self.ids.capacity() * (std::mem::size_of::<(TraceId, u32)>() + 1)
            + self.idle_queue.capacity() * 8
    }

    pub fn stats(&self) -> AssembleStats {
        self.stats
    }

    /// Adds a batch; edges are judged as their spans meet. Traces pushed out by the memory bound are
    /// appended to `out`.
    pub fn insert(
        &mut self,
        batch: SpanBatch,
        now_ms: u64,
        wall_ms: u64,
        out: &mut Vec<Finalised>,
    ) {
        self.stamp = self.stamp.wrapping_add(1);
        let stamp = self.stamp;
        self.per_trace.clear();
        for (t, _) in &batch.spans {
            *self.per_trace.entry(*t).or_default() += 1;
        }
        let mut last: Option<(TraceId, u32)> = None;
        // `extras` is in the order of `spans`: the next one is this span's, if it has one.
        let mut extras = batch.extras.into_iter().peekable();
        for (trace_id, span) in batch.spans {
            let extra = extras
                .next_if(|(t, s, _)| *t == trace_id && *s == span.span_id)
                .map(|(_, _, e)| e);
            let slot = match last {
                Some((t, s)) if t == trace_id => s,
                _ => match self.slot_for(trace_id, now_ms) {
                    Some(s) => s,
                    None => {
                        self.stats.late += 1;
                        self.late_consumer(trace_id, span, extra.as_ref());
                        continue;
                    }
                },
            };
            last = Some((trace_id, slot));
            let buf = self.slots[slot as usize]
                .as_mut()
                .expect("slot of a live trace");
            if buf.stamp != stamp {
                buf.stamp = stamp;
                buf.last_touch_ms = now_ms;
                buf.reserve(self.per_trace.get(&trace_id).copied().unwrap_or(1) as usize);
                self.idle_queue.push_back((slot, stamp));
            }
            match buf.insert(span, &self.policy) {
                Insert::Added => {
                    self.buffered += 1;
                    self.stats.spans_added += 1;
                    if let Some(e) = extra {
                        self.extra_weight += buf.attach_last(e);
                    }
                    if buf.resolved > 0
                        && let Some(r) = &buf.reopened
                    {
                        let late = now_ms.saturating_sub(r.last_touch_ms);
                        self.lateness_ms
                            .extend(std::iter::repeat_n(late, buf.resolved as usize));
                        buf.resolved = 0;
                    }
                }
                Insert::Duplicate => self.stats.duplicates += 1,
                Insert::Conflict => self.stats.conflicts += 1,
            }
        }
        if !self.late_consumers.is_empty() {
            out.push(Finalised {
                outcome: TraceOutcome::joining(std::mem::take(&mut self.late_consumers), wall_ms),
                reason: Reason::Idle,
                snapshot: None,
            });
        }
        while self.buffered + self.extra_weight > self.cfg.max_spans {
            match self.pop_oldest() {
                Some(slot) => out.push(self.finalise(slot, Reason::Early, now_ms, wall_ms)),
                None => break,
            }
        }
    }

    /// Finalises every trace idle for `trace_idle`, and judges the orphans whose wait is over.
    pub fn expire(&mut self, now_ms: u64, wall_ms: u64, out: &mut Vec<Finalised>) {
        self.finished.expire(now_ms);
        let mut left = std::mem::take(&mut self.left);
        self.kept.expire(now_ms, &mut left);
        self.settle(&mut left, now_ms, wall_ms, out);
        self.left = left;
        while let Some(&(slot, stamp)) = self.idle_queue.front() {
            let Some(buf) = self.slots[slot as usize]
                .as_ref()
                .filter(|b| b.stamp == stamp)
            else {
                self.idle_queue.pop_front();
                continue;
            };
            if buf.last_touch_ms + self.cfg.idle_ms > now_ms {
                break;
            }
            self.idle_queue.pop_front();
            out.push(self.finalise(slot, Reason::Idle, now_ms, wall_ms));
        }
    }

    /// Finalises everything buffered and judges every waiting orphan: all input is in (`check`,
    /// an explicit flush).
    pub fn drain(&mut self, now_ms: u64, wall_ms: u64, out: &mut Vec<Finalised>) {
        while let Some(slot) = self.pop_oldest() {
            let buf = self.release(slot, now_ms);
            out.push(self.conclude(buf, Reason::Flush, Orphans::Judge, now_ms, wall_ms));
        }
        for k in self.kept.drain() {
            if k.waiting > 0 {
                self.stats.orphans_expired_flush += u64::from(k.waiting);
                let buf = TraceBuffer::reopen(k, now_ms, self.stamp, &self.policy);
                out.push(self.conclude(buf, Reason::Flush, Orphans::Judge, now_ms, wall_ms));
            }
        }
    }

    /// Finalises everything buffered at shutdown. Orphans are not judged: their parents may
    /// still be on their way (to this instance once restarted, or to another one), and a
    /// `broken_trace` that is only a restart would be false. They are counted instead.
    pub fn stop(&mut self, now_ms: u64, wall_ms: u64, out: &mut Vec<Finalised>) {
        let rule = if self.cfg.waits() {
            Orphans::Wait
        } else {
            Orphans::Judge
        };
        while let Some(slot) = self.pop_oldest() {
            let buf = self.release(slot, now_ms);
            out.push(self.conclude(buf, Reason::Flush, rule, now_ms, wall_ms));
        }
        for k in self.kept.drain() {
            self.stats.orphans_expired_shutdown += u64::from(k.waiting);
        }
    }

    /// The trace as it stands, if it is buffered here or kept with orphans waiting (then it is
    /// not final yet either).
    pub fn snapshot(&self, trace_id: TraceId) -> Option<TraceSnapshot> {
        if let Some(&slot) = self.ids.get(&trace_id) {
            let buf = self.slots[slot as usize].as_ref()?;
            return Some(TraceSnapshot::of(trace_id, &buf.graph, Vec::new(), false));
        }
        let k = self.kept.get(trace_id).filter(|k| k.waiting > 0)?;
        let mut snap = TraceSnapshot {
            trace_id,
            spans: k.spans.to_vec(),
            edges: Vec::new(),
            findings: Vec::new(),
            finalised: false,
            waiting: k.waiting,
        };
        let at: HashMap<_, _, RandomState> = k
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id, i as u32))
            .collect();
        for (c, s) in k.spans.iter().enumerate() {
            if let Some(&p) = s.parent.and_then(|p| at.get(&p)) {
                let parent = &k.spans[p as usize];
                snap.edges
                    .push((p, c as u32, verify::judge_edge(parent, s, &self.policy)));
            }
        }
        Some(snap)
    }

    fn slot_for(&mut self, trace_id: TraceId, now_ms: u64) -> Option<u32> {
        if let Some(&s) = self.ids.get(&trace_id) {
            return Some(s);
        }
        let buf = match self.kept.take(trace_id) {
            Some(k) => {
                let b = TraceBuffer::reopen(k, now_ms, self.stamp.wrapping_sub(1), &self.policy);
                self.extra_weight += b.extra_weight;
                b
            }
            None if self.finished.contains(trace_id) => return None,
            None => TraceBuffer::new(trace_id, now_ms, self.stamp.wrapping_sub(1)),
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(buf);
                s
            }
            None => {
                self.slots.push(Some(buf));
                (self.slots.len() - 1) as u32
            }
        };
        self.ids.insert(trace_id, slot);
        Some(slot)
    }

    fn pop_oldest(&mut self) -> Option<u32> {
        while let Some((slot, stamp)) = self.idle_queue.pop_front() {
            if self.slots[slot as usize]
                .as_ref()
                .is_some_and(|b| b.stamp == stamp)
            {
                return Some(slot);
            }
        }
        None
    }

    /// Finalises a buffered trace: judged as a whole, then kept for its late spans.
    fn finalise(&mut self, slot: u32, reason: Reason, now_ms: u64, wall_ms: u64) -> Finalised {
        let rule = match reason {
            _ if self.cfg.waits() => Orphans::Wait,
            Reason::Early => Orphans::Ignore,
            Reason::Idle | Reason::Flush => Orphans::Judge,
        };
        let buf = self.release(slot, now_ms);
        self.conclude(buf, reason, rule, now_ms, wall_ms)
    }

    /// Takes a trace out of the buffers.
    fn release(&mut self, slot: u32, now_ms: u64) -> TraceBuffer {
        let buf = self.slots[slot as usize]
            .take()
            .expect("finalising a live slot");
        self.free.push(slot);
        self.ids.remove(&buf.trace_id);
        self.buffered -= buf.len() - buf.settled;
        self.extra_weight -= buf.extra_weight;
        self.finished.insert(buf.trace_id, now_ms);
        buf
    }

    /// Judges a trace that left the buffers (or a kept one whose orphans' wait is over), and
    /// keeps its skeleton when `rule` lets its orphans wait.
    fn conclude(
        &mut self,
        mut buf: TraceBuffer,
        reason: Reason,
        rule: Orphans,
        now_ms: u64,
        wall_ms: u64,
    ) -> Finalised {
        let new_spans = (buf.len() - buf.settled) as u64;
        if buf.reopened.is_some() {
            // Part of a trace counted before: its spans are accounted for, not a new trace.
            self.stats.spans_late += new_spans;
        } else {
            let (traces, in_traces) = match reason {
                Reason::Idle => (&mut self.stats.finalised_idle, &mut self.stats.spans_idle),
                Reason::Early => (&mut self.stats.finalised_early, &mut self.stats.spans_early),
                Reason::Flush => (&mut self.stats.finalised_flush, &mut self.stats.spans_flush),
            };
            *traces += 1;
            *in_traces += new_spans;
        }
        let prior = buf.reopened;
        let unsettled =
            self.instances.unsettled(now_ms) || prior.is_some_and(|r| r.unsettled && r.waiting > 0);
        let first_wall_ms = prior.map_or(wall_ms, |r| r.first_wall_ms);
        // A span that reached its first finalisation longer after it ended than any trace is
        // buffered and kept may have missed its parent's trace altogether.
        let stale_before_ns = if self.cfg.waits() {
            let kept_for = self.cfg.idle_ms + self.cfg.orphan_wait_ms.max(self.cfg.keep_ms);
            first_wall_ms
                .saturating_sub(kept_for)
                .saturating_mul(1_000_000)
        } else {
            0
        };
        let instances = &self.instances;
        let is_live = |svc: Sym, stage: Sym| instances.is_live(svc, stage, now_ms);
        let is_receiver = |svc: Sym| instances.is_receiver(svc, now_ms);
        let stage_mode = |svc: Sym| instances.stage_mode(svc, now_ms);
        let cx = FinaliseContext {
            policy: &self.policy,
            is_live: &is_live,
            is_receiver: &is_receiver,
            stage_mode: instances
                .any_captured()
                .then_some(&stage_mode as &dyn Fn(Sym) -> StageMode),
            observed_at_ms: wall_ms,
            orphans: rule,
            settled: buf.settled,
            unsettled,
            stale_before_ns,
        };
        let mut outcome = verify::finalise(buf.trace_id, &mut buf.graph, &buf.extras, &cx);
        self.stats.orphans_resolved += u64::from(outcome.orphans.resolved);
        let earlier = std::mem::take(&mut outcome.earlier);
        let keep = outcome.is_broken()
            || !earlier.is_empty()
            || buf.trace_id.sampled(self.cfg.sample_clean)
            || buf.graph.node_weights().any(|s| s.probe());
        let snapshot = keep.then(|| {
            let mut findings = earlier;
            findings.extend(outcome.findings.iter().cloned());
            let mut snap = TraceSnapshot::of(buf.trace_id, &buf.graph, findings, true);
            snap.waiting = outcome.orphans.waiting;
            snap
        });
        if rule == Orphans::Wait && self.cfg.waits() {
            let o = outcome.orphans;
            let until = match prior {
                _ if o.waiting == 0 => now_ms + self.cfg.keep_ms,
                Some(r) if r.waiting > 0 && o.new_waiting == 0 => r.until_ms,
                _ => now_ms + self.cfg.orphan_wait_ms,
            };
            let mut left = std::mem::take(&mut self.left);
            let state = buffer::KeptState {
                last_touch_ms: buf.last_touch_ms,
                waiting: o.waiting,
                until_ms: until,
                unsettled,
                first_wall_ms,
            };
            self.kept.insert(buf.skeleton(state), &mut left);
            self.settle(&mut left, now_ms, wall_ms, &mut Vec::new());
            self.left = left;
        }
        Finalised {
            outcome,
            reason,
            snapshot,
        }
    }

    /// Deals with skeletons that left `kept`: orphans whose wait is over are judged (into `out`),
    /// and the ones pushed out by the bound are counted.
    fn settle(
        &mut self,
        left: &mut Vec<Left>,
        now_ms: u64,
        wall_ms: u64,
        out: &mut Vec<Finalised>,
    ) {
        for l in left.drain(..) {
            match l {
                Left::Waited(k) => {
                    self.stats.orphans_expired_wait += u64::from(k.waiting);
                    let buf = TraceBuffer::reopen(k, now_ms, self.stamp, &self.policy);
                    out.push(self.conclude(buf, Reason::Idle, Orphans::Judge, now_ms, wall_ms));
                }
                Left::Evicted(k) => {
                    self.stats.kept_evicted += 1;
                    self.stats.orphans_expired_memory += u64::from(k.waiting);
                }
            }
        }
    }
}

/// Recently finalised trace ids: bounded in count and in age.
struct Tombstones {
    order: VecDeque<(TraceId, u64)>,
    set: HashSet<TraceId, RandomState>,
    cap: usize,
    ttl_ms: u64,
}

impl Tombstones {
    fn new(cap: usize, ttl_ms: u64) -> Self {
        Tombstones {
            order: VecDeque::new(),
            set: HashSet::default(),
            cap,
            ttl_ms,
        }
    }

    fn insert(&mut self, id: TraceId, now_ms: u64) {
        if self.cap == 0 {
            return;
        }
        if self.order.len() >= self.cap
            && let Some((old, _)) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        if self.set.insert(id) {
            self.order.push_back((id, now_ms));
        }
    }

    fn contains(&self, id: TraceId) -> bool {
        self.set.contains(&id)
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(id, t)) = self.order.front() {
            if t + self.ttl_ms > now_ms {
                break;
            }
            self.order.pop_front();
            self.set.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests;
