//! Which deployment stages each service is running, for judging `misrouted`; and whether the
//! grayscope instances behind the load balancer are changing, for judging orphans `unverifiable`.
//!
//! A canary request served by a stable instance is only a routing bug if a canary instance existed to
//! serve it. Receivers record every (service, instance stage) pair they see, once per resource per
//! request; verification asks whether a stage was live within `--instance-ttl`. Instances declared in
//! the config are live always (a canary that has not served a span yet still counts).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use foldhash::fast::RandomState;

use crate::model::Sym;

/// Distinct (service, stage) pairs remembered; the interner caps make reaching it unlikely, and past
/// it new pairs are simply not recorded (they cannot make a misroute verdict, only miss one).
const MAX_PAIRS: usize = 100_000;

/// Milliseconds since the collector started, monotonic. Workers and receivers share one.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Instances {
    seen: RwLock<HashMap<(Sym, Sym), AtomicU64, RandomState>>,
    declared: HashSet<(Sym, Sym), RandomState>,
    ttl_ms: u64,
    /// Services seen receiving calls (SERVER or CONSUMER spans), and when last.
    receivers: RwLock<HashMap<Sym, AtomicU64, RandomState>>,
    /// Until when (on the [`Clock`]) traces may be split between grayscope instances, because
    /// the load balancer's members changed; 0 when they never did.
    rebalancing_until_ms: AtomicU64,
}

/// One row of [`Instances::snapshot`].
#[derive(Clone, Debug)]
pub struct InstanceSeen {
    pub service: Sym,
    pub stage: Sym,
    /// Milliseconds on the collector's [`Clock`]; `None` for declared instances never seen.
    pub last_seen_ms: Option<u64>,
    pub declared: bool,
}

impl Instances {
    pub fn new(declared: impl IntoIterator<Item = (Sym, Sym)>, ttl_ms: u64) -> Self {
        Instances {
            seen: RwLock::new(HashMap::default()),
            declared: declared.into_iter().collect(),
            ttl_ms,
            rebalancing_until_ms: AtomicU64::new(0),
            receivers: RwLock::new(HashMap::default()),
        }
    }

    /// `service` received a call (a SERVER or CONSUMER span of it arrived).
    pub fn receives(&self, service: Sym, now_ms: u64) {
        {
            let seen = self.receivers.read().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = seen.get(&service) {
                t.fetch_max(now_ms, Ordering::Relaxed);
                return;
            }
        }
        let mut seen = self.receivers.write().unwrap_or_else(|e| e.into_inner());
        if seen.len() < MAX_PAIRS {
            seen.entry(service)
                .or_insert_with(|| AtomicU64::new(0))
                .fetch_max(now_ms, Ordering::Relaxed);
        }
    }

    /// Whether `service` received a call within the TTL: a service that serves requests, as
    /// opposed to a job or a client that only starts traces. Each instance of a cluster sees
    /// every busy service: traces are spread over the instances by trace id.
    pub fn is_receiver(&self, service: Sym, now_ms: u64) -> bool {
        let seen = self.receivers.read().unwrap_or_else(|e| e.into_inner());
        seen.get(&service)
            .is_some_and(|t| t.load(Ordering::Relaxed) + self.ttl_ms >= now_ms)
    }

    /// The grayscope instances behind the load balancer changed: until `until_ms`, a span whose
    /// parent never arrived may have had it routed to another instance.
    pub fn rebalancing(&self, until_ms: u64) {
        self.rebalancing_until_ms
            .fetch_max(until_ms, Ordering::Relaxed);
    }

    /// Whether a membership change's window is open at `now_ms`.
    pub fn unsettled(&self, now_ms: u64) -> bool {
        now_ms < self.rebalancing_until_ms.load(Ordering::Relaxed)
    }

    pub fn touch(&self, service: Sym, stage: Sym, now_ms: u64) {
        {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = seen.get(&(service, stage)) {
                t.fetch_max(now_ms, Ordering::Relaxed);
                return;
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if seen.len() < MAX_PAIRS {
            seen.entry((service, stage))
                .or_insert_with(|| AtomicU64::new(0))
                .fetch_max(now_ms, Ordering::Relaxed);
        }
    }

    /// True if `service` has an instance of `stage` that is declared or was seen within the TTL.
    pub fn is_live(&self, service: Sym, stage: Sym, now_ms: u64) -> bool {
        if self.declared.contains(&(service, stage)) {
            return true;
        }
        let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
        seen.get(&(service, stage))
            .is_some_and(|t| t.load(Ordering::Relaxed) + self.ttl_ms >= now_ms)
    }

    pub fn snapshot(&self) -> Vec<InstanceSeen> {
        let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<InstanceSeen> = seen
            .iter()
            .map(|(&(service, stage), t)| InstanceSeen {
                service,
                stage,
                last_seen_ms: Some(t.load(Ordering::Relaxed)),
                declared: self.declared.contains(&(service, stage)),
            })
            .collect();
        for &(service, stage) in &self.declared {
            if !seen.contains_key(&(service, stage)) {
                out.push(InstanceSeen {
                    service,
                    stage,
                    last_seen_ms: None,
                    declared: true,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn sym(n: u32) -> Sym {
        Sym(NonZeroU32::new(n).unwrap())
    }

    #[test]
    fn live_within_ttl_or_declared() {
        let i = Instances::new([(sym(1), sym(9))], 1000);
        i.touch(sym(1), sym(2), 500);
        assert!(i.is_live(sym(1), sym(2), 1500));
        assert!(!i.is_live(sym(1), sym(2), 1501));
        assert!(
            i.is_live(sym(1), sym(9), 1_000_000),
            "declared never expires"
        );
        assert!(!i.is_live(sym(3), sym(2), 0));
        i.touch(sym(1), sym(2), 100); // older report does not move time back
        assert!(i.is_live(sym(1), sym(2), 1500));
        assert_eq!(i.snapshot().len(), 2);
    }
}
