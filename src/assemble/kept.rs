//! Finalised traces, kept for the spans that arrive after them.
//!
//! A trace is finalised once it has been idle for `trace_idle`, but its spans do not all arrive by
//! then: a parent span is exported only when it ends, after all of its children, plus the
//! exporter's batch delay, and an exporter that was refused backs off for seconds to a minute
//! before it resends. So a finalised trace is kept as a skeleton (its span records, without the
//! tables of a trace being assembled) for as long as a late span may still matter: three
//! `trace_idle`s for any trace, so that a late child is judged against its parent, and
//! `--orphan-wait` for a trace with spans whose parent has not arrived, which are judged
//! `broken_trace` only when that wait is over. A late span reopens the trace (see
//! [`super::Assembler`]).
//!
//! Skeletons are bounded in spans (`--max-kept-spans`): past the bound, those without orphans go
//! first, then the waits that end soonest, counted; nothing is forgotten silently.

use std::collections::{BTreeMap, HashMap, VecDeque};

use foldhash::fast::RandomState;

use crate::model::{SpanExtra, SpanRecord, TraceId};

/// A finalised trace's spans, kept for late ones.
#[derive(Debug)]
pub(super) struct Skeleton {
    pub trace_id: TraceId,
    /// In the order of the trace's graph: span `i` was node `i`.
    pub spans: Box<[SpanRecord]>,
    /// Messaging attributes and links, by index into `spans`.
    pub extras: Vec<(u32, SpanExtra)>,
    /// Monotonic ms at which the trace last received a span before it was finalised: how late a
    /// late span is, is measured from it.
    pub last_touch_ms: u64,
    /// Spans waiting for their parent.
    pub waiting: u32,
    /// Monotonic ms at which the wait of its orphans ends, or, without orphans, at which it is
    /// forgotten.
    pub until_ms: u64,
    /// The instances behind the load balancer were changing while its orphans waited: a parent
    /// that never came may have gone to another instance.
    pub unsettled: bool,
    /// Unix ms of the trace's first finalisation.
    pub first_wall_ms: u64,
}

impl Skeleton {
    /// What it weighs against `--max-kept-spans`: its spans, its messaging extras, and one for
    /// its own bookkeeping.
    pub fn weight(&self) -> usize {
        self.spans.len() + self.extras.iter().map(|(_, e)| e.weight()).sum::<usize>() + 1
    }

    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val::<[SpanRecord]>(&self.spans)
            + self.extras.capacity() * std::mem::size_of::<(u32, SpanExtra)>()
            + self
                .extras
                .iter()
                .map(|(_, e)| e.links.capacity() * std::mem::size_of::<crate::model::Link>())
                .sum::<usize>()
    }
}

/// Why a kept trace left before its time, or how its orphans' wait ended.
#[derive(Debug)]
pub(super) enum Left {
    /// Its orphans' wait is over: judge them.
    Waited(Skeleton),
    /// Pushed out by `--max-kept-spans`.
    Evicted(Skeleton),
}

/// The kept skeletons of one worker.
#[derive(Debug)]
pub(super) struct Kept {
    by_id: HashMap<TraceId, (u32, Skeleton), RandomState>,
    /// Skeletons without orphans, in the order they are forgotten (a fixed time after
    /// finalisation, so insertion order). Entries whose generation no longer matches are stale.
    plain: VecDeque<(u64, u32, TraceId)>,
    /// Skeletons with orphans, by the end of their wait.
    orphaned: BTreeMap<(u64, u32), TraceId>,
    weight: usize,
    waiting: usize,
    cap: usize,
    generation: u32,
}

impl Kept {
    /// At most `cap` in weight ([`Skeleton::weight`]); 0 keeps nothing.
    pub fn new(cap: usize) -> Self {
        Kept {
            by_id: HashMap::default(),
            plain: VecDeque::new(),
            orphaned: BTreeMap::new(),
            weight: 0,
            waiting: 0,
            cap,
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Spans held, with their bookkeeping ([`Skeleton::weight`]).
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// Spans waiting for their parent.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    pub fn get(&self, id: TraceId) -> Option<&Skeleton> {
        self.by_id.get(&id).map(|(_, s)| s)
    }

    pub fn heap_bytes(&self) -> usize {
        self.by_id
            .values()
            .map(|(_, s)| s.heap_bytes())
            .sum::<usize>()
            + self.by_id.capacity() * (std::mem::size_of::<(TraceId, (u32, Skeleton))>() + 1)
            + self.plain.capacity() * std::mem::size_of::<(u64, u32, TraceId)>()
            + self.orphaned.len() * 64
    }

    /// Keeps `s`, and returns the skeletons pushed out to stay within the bound. A skeleton
    /// heavier than an eighth of the bound is not kept at all: every late span reopens its trace
    /// at the cost of its size, and one huge trace reopened batch after batch must not cost
    /// every batch that much.
    pub fn insert(&mut self, s: Skeleton, out: &mut Vec<Left>) {
        if s.weight() > self.cap / 8 {
            out.push(Left::Evicted(s));
            return;
        }
        // Callers take a skeleton out before keeping it again; were it still here, its entries
        // would go stale.
        self.take(s.trace_id);
        self.generation = self.generation.wrapping_add(1);
        let g = self.generation;
        if s.waiting > 0 {
            self.orphaned.insert((s.until_ms, g), s.trace_id);
        } else {
            self.plain.push_back((s.until_ms, g, s.trace_id));
        }
        self.weight += s.weight();
        self.waiting += s.waiting as usize;
        self.by_id.insert(s.trace_id, (g, s));
        while self.weight > self.cap {
            match self.pop_first() {
                Some(s) => out.push(Left::Evicted(s)),
                None => break,
            }
        }
    }

    /// Takes a skeleton out (a late span reopens its trace).
    pub fn take(&mut self, id: TraceId) -> Option<Skeleton> {
        let (g, s) = self.by_id.remove(&id)?;
        if s.waiting > 0 {
            self.orphaned.remove(&(s.until_ms, g));
        }
        self.forget(&s);
        Some(s)
    }

    /// Forgets the skeletons whose time is up, and returns those whose orphans' wait is over.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<Left>) {
        while let Some(&(until, g, id)) = self.plain.front() {
            if until > now_ms {
                break;
            }
            self.plain.pop_front();
            if self.by_id.get(&id).is_some_and(|(gen_, _)| *gen_ == g) {
                let (_, s) = self.by_id.remove(&id).expect("just seen");
                self.forget(&s);
            }
        }
        while let Some((&(until, _), _)) = self.orphaned.first_key_value() {
            if until > now_ms {
                break;
            }
            if let Some(s) = self.pop_orphaned() {
                out.push(Left::Waited(s));
            }
        }
    }

    /// Empties it: every skeleton, whatever its time.
    pub fn drain(&mut self) -> Vec<Skeleton> {
        self.plain.clear();
        self.orphaned.clear();
        self.weight = 0;
        self.waiting = 0;
        self.by_id.drain().map(|(_, (_, s))| s).collect()
    }

    fn forget(&mut self, s: &Skeleton) {
        self.weight -= s.weight();
        self.waiting -= s.waiting as usize;
    }

    /// The skeleton to give up first: the oldest without orphans, else the wait that ends
    /// soonest.
    fn pop_first(&mut self) -> Option<Skeleton> {
        while let Some((_, g, id)) = self.plain.pop_front() {
            if self.by_id.get(&id).is_some_and(|(gen_, _)| *gen_ == g) {
                let (_, s) = self.by_id.remove(&id).expect("just seen");
                self.forget(&s);
                return Some(s);
            }
        }
        while !self.orphaned.is_empty() {
            if let Some(s) = self.pop_orphaned() {
                return Some(s);
            }
        }
        None
    }

    /// The skeleton whose orphans' wait ends first (`None` for a stale entry, which is dropped).
    fn pop_orphaned(&mut self) -> Option<Skeleton> {
        let ((_, g), id) = self.orphaned.pop_first()?;
        if self.by_id.get(&id).is_none_or(|(gen_, _)| *gen_ != g) {
            return None;
        }
        let (_, s) = self.by_id.remove(&id).expect("just seen");
        self.forget(&s);
        Some(s)
    }
}
