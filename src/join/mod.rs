//! Joining messaging hops across traces: consumer spans wait for the producer spans they link to.
//!
//! A consumer usually handles a message in a trace of its own (links-only consumers, batches) or
//! long after its producer's trace was finalised, so the two halves of a messaging hop are found
//! in different finalised traces, often on different workers. Finalised traces offer their
//! creation-context spans ([`ProducerHalf`]) here, kept for `--link-wait`; their consumer spans
//! with links ([`ConsumerHalf`]) look them up, and wait up to `--link-wait` for those not here
//! yet. A consumer is judged once all of its links are followed or given up on, so that a batch
//! is judged whole ([`judge_consumer`]).
//!
//! This sits after finalisation, once per batch of finalised traces: never on the span hot path.
//! Both sides are bounded in count; past a bound the oldest entry goes, counted.

mod metrics;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foldhash::fast::RandomState;

pub use metrics::JoinMetrics;

use crate::assemble::{Finalised, Reason};
use crate::instances::Instances;
use crate::model::{SpanId, Sym, TraceId};
use crate::verify::messaging::{LinkEnd, Unresolved, judge_consumer};
use crate::verify::{ConsumerHalf, Policy, ProducerHalf};

#[derive(Clone, Debug)]
pub struct JoinConfig {
    /// How long producer spans are kept for consumers, and how long consumers wait for them.
    pub wait_ms: u64,
    /// Producer spans kept at most; past it the oldest are dropped.
    pub max_producers: usize,
    /// Links of waiting consumers at most; past it the oldest waits end, unresolved.
    pub max_waiting_links: usize,
    /// Instances share a store: producer spans are also offered to the other instances (see
    /// [`Joins::take_shared`]), whose traces hold the consumers of about (N-1)/N of them.
    pub share: bool,
}

impl JoinConfig {
    pub fn new(wait: Duration, max_producers: usize, max_waiting_links: usize) -> Self {
        JoinConfig {
            wait_ms: wait.as_millis() as u64,
            max_producers: max_producers.max(1),
            max_waiting_links: max_waiting_links.max(1),
            share: false,
        }
    }

    /// The same, sharing producer spans with the other instances of a cluster.
    pub fn shared(mut self, share: bool) -> Self {
        self.share = share;
        self
    }

    /// Everything is in when the caller drains: nothing expires on its own. For `check`.
    pub fn offline() -> Self {
        JoinConfig {
            wait_ms: u64::MAX / 4,
            max_producers: usize::MAX,
            max_waiting_links: usize::MAX,
            share: false,
        }
    }
}

/// Counters and sizes, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JoinStats {
    pub producers: usize,
    pub waiting_consumers: usize,
    pub waiting_links: usize,
    /// Links followed to their producer span.
    pub resolved: u64,
    /// Links given up on, by [`Unresolved`] reason (in the order of `Unresolved::ALL`).
    pub unresolved: [u64; 4],
    /// Producer spans dropped before `--link-wait` by the memory bound.
    pub producers_evicted: u64,
}

/// Bytes per kept producer span, from the sizes of what holds it: its hash table entry (with the
/// control byte) and its place in the order queue, both of which grow by doubling and may be up
/// to half empty.
pub const PRODUCER_BYTES: usize =
    2 * (std::mem::size_of::<(Key, ProducerHalf)>() + 1) + 2 * std::mem::size_of::<(Key, u64)>();
/// Bytes per waiting link, when every waiting consumer has a single link (the most per link):
/// the link and its end, its entry in the by-link table (with its list's smallest allocation),
/// the wait and its deadline; tables and queues that grow by doubling may be up to half empty.
pub const WAITING_LINK_BYTES: usize = std::mem::size_of::<crate::model::Link>()
    + std::mem::size_of::<Option<LinkEnd>>()
    + 2 * (std::mem::size_of::<(Key, Vec<u32>)>() + 1)
    + 16
    + 2 * std::mem::size_of::<Option<Waiter>>()
    + 2 * std::mem::size_of::<(u32, u64, u32)>();

type Key = (TraceId, SpanId);

pub struct Joins {
    cfg: JoinConfig,
    policy: Arc<Policy>,
    instances: Arc<Instances>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    producers: HashMap<Key, ProducerHalf, RandomState>,
    /// Producer keys in the order they came, with when.
    producer_order: VecDeque<(Key, u64)>,
    waiters: Vec<Option<Waiter>>,
    free: Vec<u32>,
    /// Waiting consumers by the producer span they wait for.
    by_link: HashMap<Key, Vec<u32>, RandomState>,
    /// (waiter, deadline, generation) in deadline order; entries of ended waits are stale.
    deadlines: VecDeque<(u32, u64, u32)>,
    generation: u32,
    stats: JoinStats,
    /// Producer spans finalised here, not yet offered to the other instances.
    outbox: Vec<ProducerHalf>,
}

struct Waiter {
    half: ConsumerHalf,
    /// `ends[i]` for `half.links[i]`; `None` while waiting.
    ends: Vec<Option<LinkEnd>>,
    open: usize,
    generation: u32,
}

impl Joins {
    pub fn new(cfg: JoinConfig, policy: Arc<Policy>, instances: Arc<Instances>) -> Self {
        Joins {
            cfg,
            policy,
            instances,
            state: Mutex::new(State::default()),
        }
    }

    pub fn stats(&self) -> JoinStats {
        let st = self.lock();
        JoinStats {
            producers: st.producers.len(),
            waiting_consumers: st.waiters.len() - st.free.len(),
            ..st.stats
        }
    }

    /// Takes the producer and consumer halves out of finalised traces, and appends what they
    /// complete (and what has waited too long) to `batch` as joined outcomes.
    pub fn absorb(&self, batch: &mut Vec<Finalised>, now_ms: u64, wall_ms: u64) {
        let mut producers = Vec::new();
        let mut consumers = Vec::new();
        for f in batch.iter_mut() {
            producers.append(&mut f.outcome.producers);
            consumers.append(&mut f.outcome.consumers);
        }
        let mut done = Vec::new();
        {
            let mut st = self.lock();
            // Producers first: a consumer finalised in the same batch, or in the same trace,
            // finds them at once.
            if self.cfg.share {
                // Bounded like the index: what the cluster task has not taken in time is dropped.
                let room = self.cfg.max_producers.saturating_sub(st.outbox.len());
                st.outbox.extend(producers.iter().take(room).copied());
            }
            for p in producers {
                st.add_producer(p, now_ms, &self.cfg, &mut done);
            }
            for c in consumers {
                st.add_consumer(c, now_ms, &self.cfg, &mut done);
            }
            st.expire(now_ms, &self.cfg, &mut done);
        }
        self.judge(done, now_ms, wall_ms, batch);
    }

    /// Ends every wait (shutdown, or the end of `check`'s input): their open links are
    /// `reason`.
    pub fn drain(&self, reason: Unresolved, now_ms: u64, wall_ms: u64, batch: &mut Vec<Finalised>) {
        let mut done = Vec::new();
        {
            let mut st = self.lock();
            while let Some((id, _, generation)) = st.deadlines.pop_front() {
                if st.is_live(id, generation) {
                    done.push(st.end(id, reason));
                }
            }
        }
        self.judge(done, now_ms, wall_ms, batch);
    }

    /// The producer spans finalised here since the last call, to offer to the other instances.
    pub fn take_shared(&self) -> Vec<ProducerHalf> {
        std::mem::take(&mut self.lock().outbox)
    }

    /// The producer spans that waiting consumers link to, longest waiting first, at most `limit`:
    /// what to look for among the other instances' producers.
    pub fn wanted(&self, limit: usize) -> Vec<(TraceId, SpanId)> {
        let st = self.lock();
        let mut out = Vec::new();
        let mut seen: std::collections::HashSet<Key, RandomState> = Default::default();
        for &(id, _, generation) in &st.deadlines {
            if out.len() >= limit {
                break;
            }
            let Some(w) = st.waiters[id as usize]
                .as_ref()
                .filter(|w| w.generation == generation)
            else {
                continue;
            };
            for (l, e) in w.half.links.iter().zip(&w.ends) {
                let key = (l.trace_id, l.span_id);
                if e.is_none() && out.len() < limit && seen.insert(key) {
                    out.push(key);
                }
            }
        }
        out
    }

    /// Producer spans another instance finalised: the waits they complete are judged into
    /// `batch`.
    pub fn offer(
        &self,
        producers: Vec<ProducerHalf>,
        now_ms: u64,
        wall_ms: u64,
        batch: &mut Vec<Finalised>,
    ) {
        let mut done = Vec::new();
        {
            let mut st = self.lock();
            for p in producers {
                st.add_producer(p, now_ms, &self.cfg, &mut done);
            }
        }
        self.judge(done, now_ms, wall_ms, batch);
    }

    fn judge(
        &self,
        done: Vec<(ConsumerHalf, Vec<LinkEnd>)>,
        now_ms: u64,
        wall_ms: u64,
        batch: &mut Vec<Finalised>,
    ) {
        let instances = &self.instances;
        let is_live = |svc: Sym, stage: Sym| instances.is_live(svc, stage, now_ms);
        for (half, ends) in done {
            batch.push(Finalised {
                outcome: judge_consumer(&half, &ends, &self.policy, &is_live, wall_ms),
                reason: Reason::Idle,
                snapshot: None,
            });
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn add_producer(
        &mut self,
        p: ProducerHalf,
        now_ms: u64,
        cfg: &JoinConfig,
        done: &mut Vec<(ConsumerHalf, Vec<LinkEnd>)>,
    ) {
        let key = (p.trace_id, p.span.span_id);
        if self.producers.contains_key(&key) {
            return;
        }
        while self.producers.len() >= cfg.max_producers {
            let Some((old, _)) = self.producer_order.pop_front() else {
                break;
            };
            if self.producers.remove(&old).is_some() {
                self.stats.producers_evicted += 1;
            }
        }
        self.producers.insert(key, p);
        self.producer_order.push_back((key, now_ms));
        for id in self.by_link.remove(&key).unwrap_or_default() {
            let Some(w) = self.waiters[id as usize].as_mut() else {
                continue;
            };
            for (i, l) in w.half.links.iter().enumerate() {
                if (l.trace_id, l.span_id) == key && w.ends[i].is_none() {
                    w.ends[i] = Some(Ok(p));
                    w.open -= 1;
                    self.stats.waiting_links -= 1;
                    self.stats.resolved += 1;
                }
            }
            if w.open == 0 {
                done.push(self.end(id, Unresolved::Expired));
            }
        }
    }

    fn add_consumer(
        &mut self,
        half: ConsumerHalf,
        now_ms: u64,
        cfg: &JoinConfig,
        done: &mut Vec<(ConsumerHalf, Vec<LinkEnd>)>,
    ) {
        let mut open = 0;
        let ends: Vec<Option<LinkEnd>> = half
            .links
            .iter()
            .map(|l| {
                if !l.sampled {
                    self.stats.unresolved[0] += 1;
                    Some(Err(Unresolved::Unsampled))
                } else if let Some(p) = self.producers.get(&(l.trace_id, l.span_id)) {
                    self.stats.resolved += 1;
                    Some(Ok(*p))
                } else {
                    open += 1;
                    None
                }
            })
            .collect();
        if open == 0 {
            done.push((half, ends.into_iter().flatten().collect()));
            return;
        }
        while self.stats.waiting_links + open > cfg.max_waiting_links {
            let Some((id, _, generation)) = self.deadlines.pop_front() else {
                break;
            };
            if self.is_live(id, generation) {
                done.push(self.end(id, Unresolved::Evicted));
            }
        }
        if self.stats.waiting_links + open > cfg.max_waiting_links {
            // Larger than the whole bound: judged now with what is known.
            let ends = ends
                .into_iter()
                .map(|e| {
                    e.unwrap_or_else(|| {
                        self.stats.unresolved[2] += 1;
                        Err(Unresolved::Evicted)
                    })
                })
                .collect();
            done.push((half, ends));
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.waiters.push(None);
                (self.waiters.len() - 1) as u32
            }
        };
        for (l, e) in half.links.iter().zip(&ends) {
            if e.is_none() {
                self.by_link
                    .entry((l.trace_id, l.span_id))
                    .or_default()
                    .push(id);
            }
        }
        self.stats.waiting_links += open;
        self.waiters[id as usize] = Some(Waiter {
            half,
            ends,
            open,
            generation,
        });
        self.deadlines
            .push_back((id, now_ms.saturating_add(cfg.wait_ms), generation));
    }

    fn expire(
        &mut self,
        now_ms: u64,
        cfg: &JoinConfig,
        done: &mut Vec<(ConsumerHalf, Vec<LinkEnd>)>,
    ) {
        while let Some(&(key, at)) = self.producer_order.front() {
            if at.saturating_add(cfg.wait_ms) > now_ms {
                break;
            }
            self.producer_order.pop_front();
            self.producers.remove(&key);
        }
        while let Some(&(id, deadline, generation)) = self.deadlines.front() {
            if !self.is_live(id, generation) {
                self.deadlines.pop_front();
                continue;
            }
            if deadline > now_ms {
                break;
            }
            self.deadlines.pop_front();
            done.push(self.end(id, Unresolved::Expired));
        }
    }

    fn is_live(&self, id: u32, generation: u32) -> bool {
        self.waiters
            .get(id as usize)
            .and_then(Option::as_ref)
            .is_some_and(|w| w.generation == generation)
    }

    /// Ends a wait: its links still open are `reason`.
    fn end(&mut self, id: u32, reason: Unresolved) -> (ConsumerHalf, Vec<LinkEnd>) {
        let w = self.waiters[id as usize]
            .take()
            .expect("ending a live wait");
        self.free.push(id);
        let mut ends = Vec::with_capacity(w.ends.len());
        for (l, e) in w.half.links.iter().zip(w.ends) {
            match e {
                Some(e) => ends.push(e),
                None => {
                    let key = (l.trace_id, l.span_id);
                    if let Some(ids) = self.by_link.get_mut(&key) {
                        ids.retain(|&x| x != id);
                        if ids.is_empty() {
                            self.by_link.remove(&key);
                        }
                    }
                    self.stats.waiting_links -= 1;
                    let i = Unresolved::ALL
                        .iter()
                        .position(|r| *r == reason)
                        .expect("a reason of ALL");
                    self.stats.unresolved[i] += 1;
                    ends.push(Err(reason));
                }
            }
        }
        (w.half, ends)
    }
}

#[cfg(test)]
mod tests;
