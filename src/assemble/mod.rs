//! Assembly: spans in, finalised traces out. One [`Assembler`] per worker owns its traces outright
//! (no locks); the same type runs synchronously inside `grayscope check`.
//!
//! A trace is finalised when it has been idle for `trace_idle`, when buffered spans exceed the
//! worker's share of `--max-buffered-spans` (least recently active first, counted as early), or on
//! shutdown. Finalised trace ids are remembered for a while (bounded), so that a retry arriving after
//! finalisation is counted as late instead of starting a new trace that would look broken.

mod buffer;
mod snapshot;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use foldhash::fast::RandomState;

pub use snapshot::TraceSnapshot;

use crate::instances::Instances;
use crate::model::{SpanBatch, SpanExtra, SpanRecord, Sym, TraceId};
use crate::verify::{self, ConsumerHalf, Policy, TraceOutcome, trace::FinaliseContext};
use buffer::{Insert, TraceBuffer};

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
}

impl AssemblerConfig {
    /// One worker's share of a collector finalising traces after `idle` without new spans and
    /// holding at most `max_spans` over `workers` workers.
    ///
    /// Derived from them: a finalised trace's id is remembered for three idle times (a late retry
    /// of its spans is then counted as late, not judged as a new, broken trace), and one id for
    /// every eight spans a worker may hold, at least 4,096.
    pub fn online(idle: Duration, max_spans: usize, workers: usize, sample_clean: f64) -> Self {
        let idle_ms = (idle.as_millis() as u64).max(1);
        let max_spans = max_spans.div_ceil(workers.max(1)).max(1);
        AssemblerConfig {
            idle_ms,
            max_spans,
            tombstones: (max_spans / 8).max(4096),
            tombstone_ms: idle_ms.saturating_mul(3),
            sample_clean,
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
        }
    }
}

/// Plain counters; the worker publishes them as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssembleStats {
    pub spans_added: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    /// Spans for a trace finalised recently: counted, not judged.
    pub late: u64,
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
}

impl Assembler {
    pub fn new(cfg: AssemblerConfig, policy: Arc<Policy>, instances: Arc<Instances>) -> Self {
        Assembler {
            finished: Tombstones::new(cfg.tombstones, cfg.tombstone_ms),
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

    /// Heap bytes held for buffered traces, estimated from capacities (what `--max-buffered-spans`
    /// costs).
    pub fn memory_bytes(&self) -> usize {
        let per_trace: usize = self.slots.iter().flatten().map(|b| b.heap_bytes()).sum();
        per_trace
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

    /// Finalises every trace idle for `trace_idle`.
    pub fn expire(&mut self, now_ms: u64, wall_ms: u64, out: &mut Vec<Finalised>) {
        self.finished.expire(now_ms);
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

    /// Finalises everything buffered (shutdown, `check`).
    pub fn drain(&mut self, now_ms: u64, wall_ms: u64, out: &mut Vec<Finalised>) {
        while let Some(slot) = self.pop_oldest() {
            out.push(self.finalise(slot, Reason::Flush, now_ms, wall_ms));
        }
    }

    /// The trace as it stands, if it is buffered here.
    pub fn snapshot(&self, trace_id: TraceId) -> Option<TraceSnapshot> {
        let slot = *self.ids.get(&trace_id)?;
        let buf = self.slots[slot as usize].as_ref()?;
        Some(TraceSnapshot::of(trace_id, &buf.graph, Vec::new(), false))
    }

    fn slot_for(&mut self, trace_id: TraceId, now_ms: u64) -> Option<u32> {
        if let Some(&s) = self.ids.get(&trace_id) {
            return Some(s);
        }
        if self.finished.contains(trace_id) {
            return None;
        }
        let buf = TraceBuffer::new(trace_id, now_ms, self.stamp.wrapping_sub(1));
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

    fn finalise(&mut self, slot: u32, reason: Reason, now_ms: u64, wall_ms: u64) -> Finalised {
        let mut buf = self.slots[slot as usize]
            .take()
            .expect("finalising a live slot");
        self.free.push(slot);
        self.ids.remove(&buf.trace_id);
        self.buffered -= buf.len();
        self.extra_weight -= buf.extra_weight;
        self.finished.insert(buf.trace_id, now_ms);
        let spans = buf.len() as u64;
        let (traces, in_traces) = match reason {
            Reason::Idle => (&mut self.stats.finalised_idle, &mut self.stats.spans_idle),
            Reason::Early => (&mut self.stats.finalised_early, &mut self.stats.spans_early),
            Reason::Flush => (&mut self.stats.finalised_flush, &mut self.stats.spans_flush),
        };
        *traces += 1;
        *in_traces += spans;
        let instances = &self.instances;
        let is_live = |svc: Sym, stage: Sym| instances.is_live(svc, stage, now_ms);
        let cx = FinaliseContext {
            policy: &self.policy,
            is_live: &is_live,
            observed_at_ms: wall_ms,
            early: reason == Reason::Early,
            unsettled: instances.unsettled(now_ms),
        };
        let outcome = verify::finalise(buf.trace_id, &mut buf.graph, &buf.extras, &cx);
        let keep = outcome.is_broken()
            || buf.trace_id.sampled(self.cfg.sample_clean)
            || buf.graph.node_weights().any(|s| s.probe);
        let snapshot = keep
            .then(|| TraceSnapshot::of(buf.trace_id, &buf.graph, outcome.findings.clone(), true));
        Finalised {
            outcome,
            reason,
            snapshot,
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
