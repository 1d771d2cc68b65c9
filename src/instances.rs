//! Which deployment stages each service is running, for judging `misrouted`; and whether the
//! grayscope instances behind the load balancer are changing, for judging orphans `unverifiable`.
//!
//! A canary request served by a stable instance is only a routing bug if a canary instance existed to
//! serve it. Receivers record every (service, instance stage) pair they see, once per resource per
//! request; verification asks whether a stage was live within `--instance-ttl`. Instances declared in
//! the config are live always (a canary that has not served a span yet still counts).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use foldhash::fast::RandomState;

use crate::model::{SpanRecord, StageMode, Sym};

/// The resource attribute whose value groups services on the dashboard, unless `--group-key`
/// names another.
pub const DEFAULT_GROUP_KEY: &str = "service.namespace";

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
    /// What each service was seen doing, and when last.
    services: RwLock<HashMap<Sym, ServiceSeen, RandomState>>,
    /// `--stage-modes`: services whose mode is configured, not learned.
    stage_modes: HashMap<Sym, StageMode, RandomState>,
    /// `--stage-modes *=MODE`: the mode of every service not named, not learned.
    stage_mode_default: Option<StageMode>,
    /// Whether any service may be in [`StageMode::Captured`]: configured so, or a captured stage
    /// seen since the start. Never cleared, so that finalisation can skip the question for good
    /// until then.
    any_captured: AtomicBool,
    /// Until when (on the [`Clock`]) traces may be split between grayscope instances, because
    /// the load balancer's members changed; 0 when they never did.
    rebalancing_until_ms: AtomicU64,
}

/// What a service was seen doing: when last (on the [`Clock`], plus one; 0 is never).
#[derive(Default)]
struct ServiceSeen {
    receives: AtomicU64,
    every_span: AtomicU64,
    captured: AtomicU64,
    /// The latest group (`--group-key`) its resources named, as a [`Sym`] of the values; 0 for
    /// none yet.
    group: AtomicU32,
}

/// What one span says about which of its service's spans carry the stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageSighting {
    /// The stage as an attribute of a span that did not receive a request (a CLIENT, INTERNAL
    /// or database span): a span processor copies it onto every span.
    EverySpan,
    /// The stage captured from a request's header or metadata.
    Captured,
}

impl StageSighting {
    pub fn of(span: &SpanRecord) -> Option<StageSighting> {
        match span.stage_from? {
            s if s.is_captured() => Some(StageSighting::Captured),
            crate::model::StageSource::Attribute if !span.is_inbound() => {
                Some(StageSighting::EverySpan)
            }
            _ => None,
        }
    }
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
            services: RwLock::new(HashMap::default()),
            stage_modes: HashMap::default(),
            stage_mode_default: None,
            any_captured: AtomicBool::new(false),
        }
    }

    /// Services whose stage mode is configured (`--stage-modes`) instead of learned; `default`
    /// (`*=MODE`) configures every other service too.
    #[must_use]
    pub fn with_stage_modes(
        mut self,
        modes: impl IntoIterator<Item = (Sym, StageMode)>,
        default: Option<StageMode>,
    ) -> Self {
        self.stage_modes = modes.into_iter().collect();
        self.stage_mode_default = default;
        let captured = default == Some(StageMode::Captured)
            || self.stage_modes.values().any(|&m| m == StageMode::Captured);
        self.any_captured.store(captured, Ordering::Relaxed);
        self
    }

    /// Records, for `service`, that `what` happened at `now_ms`.
    fn saw(&self, service: Sym, now_ms: u64, what: impl Fn(&ServiceSeen) -> &AtomicU64) {
        // Stored plus one: 0 is "never".
        let at = now_ms + 1;
        self.update(service, |s| {
            what(s).fetch_max(at, Ordering::Relaxed);
        });
    }

    /// Applies `f` to `service`'s entry, made if there is room.
    fn update(&self, service: Sym, f: impl Fn(&ServiceSeen)) {
        {
            let seen = self.services.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = seen.get(&service) {
                f(s);
                return;
            }
        }
        let mut seen = self.services.write().unwrap_or_else(|e| e.into_inner());
        if seen.len() < MAX_PAIRS || seen.contains_key(&service) {
            f(seen.entry(service).or_default());
        }
    }

    /// `service`'s resources name `group` (the `--group-key` attribute's value).
    pub fn grouped(&self, service: Sym, group: Sym) {
        self.update(service, |s| s.group.store(group.0.get(), Ordering::Relaxed));
    }

    /// The group `service`'s resources named last; `None` when they named none since the start.
    /// Kept in memory like the stage modes: every instance of a cluster sees every busy service.
    pub fn group(&self, service: Sym) -> Option<Sym> {
        let seen = self.services.read().unwrap_or_else(|e| e.into_inner());
        let g = seen.get(&service)?.group.load(Ordering::Relaxed);
        std::num::NonZeroU32::new(g).map(Sym)
    }

    /// Whether `what` of `service` happened within the TTL.
    fn recently(
        &self,
        service: Sym,
        now_ms: u64,
        what: impl Fn(&ServiceSeen) -> &AtomicU64,
    ) -> bool {
        let seen = self.services.read().unwrap_or_else(|e| e.into_inner());
        seen.get(&service).is_some_and(|s| {
            let t = what(s).load(Ordering::Relaxed);
            t > 0 && t - 1 + self.ttl_ms >= now_ms
        })
    }

    /// `service` received a call (a SERVER or CONSUMER span of it arrived).
    pub fn receives(&self, service: Sym, now_ms: u64) {
        self.saw(service, now_ms, |s| &s.receives);
    }

    /// Whether `service` received a call within the TTL: a service that serves requests, as
    /// opposed to a job or a client that only starts traces. Each instance of a cluster sees
    /// every busy service: traces are spread over the instances by trace id.
    pub fn is_receiver(&self, service: Sym, now_ms: u64) -> bool {
        self.recently(service, now_ms, |s| &s.receives)
    }

    /// A span of `service` showed where it carries the stage.
    pub fn stage_seen(&self, service: Sym, sighting: StageSighting, now_ms: u64) {
        match sighting {
            StageSighting::EverySpan => self.saw(service, now_ms, |s| &s.every_span),
            StageSighting::Captured => {
                self.any_captured.store(true, Ordering::Relaxed);
                self.saw(service, now_ms, |s| &s.captured);
            }
        }
    }

    /// Whether any service may be judged in [`StageMode::Captured`]: see `any_captured`.
    pub fn any_captured(&self) -> bool {
        self.any_captured.load(Ordering::Relaxed)
    }

    /// Which of `service`'s spans can carry the stage: as configured, else as learned from
    /// its spans within the TTL. The stage as an attribute of a span that did not receive the
    /// request means every span carries it, and wins; else the stage only ever captured from
    /// requests means only the spans that received one do. A service that showed neither is
    /// judged on every span: with no stage anywhere there is nothing to lose.
    pub fn stage_mode(&self, service: Sym, now_ms: u64) -> StageMode {
        self.stage_mode_of(Some(service), now_ms).0
    }

    /// [`Instances::stage_mode`] of a service (`None`: one never seen), and whether it is
    /// configured rather than learned.
    pub fn stage_mode_of(&self, service: Option<Sym>, now_ms: u64) -> (StageMode, bool) {
        let configured = service
            .and_then(|s| self.stage_modes.get(&s).copied())
            .or(self.stage_mode_default);
        match (configured, service) {
            (Some(m), _) => (m, true),
            (None, Some(s)) => (self.learned_mode(s, now_ms), false),
            (None, None) => (StageMode::default(), false),
        }
    }

    fn learned_mode(&self, service: Sym, now_ms: u64) -> StageMode {
        if self.recently(service, now_ms, |s| &s.every_span) {
            StageMode::EverySpan
        } else if self.recently(service, now_ms, |s| &s.captured) {
            StageMode::Captured
        } else {
            StageMode::EverySpan
        }
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

    #[test]
    fn stage_modes_are_learned_within_the_ttl_unless_configured() {
        use StageSighting::{Captured, EverySpan};
        let i = Instances::new([], 1000).with_stage_modes([(sym(5), StageMode::Captured)], None);
        assert_eq!(
            i.stage_mode(sym(1), 0),
            StageMode::EverySpan,
            "nothing seen"
        );
        i.stage_seen(sym(1), Captured, 100);
        assert_eq!(i.stage_mode(sym(1), 1100), StageMode::Captured);
        // The stage on a span that received no request: every span carries it, whatever else.
        i.stage_seen(sym(1), EverySpan, 500);
        assert_eq!(i.stage_mode(sym(1), 1100), StageMode::EverySpan);
        assert_eq!(
            i.stage_mode(sym(1), 1501),
            StageMode::EverySpan,
            "nothing recent"
        );
        i.stage_seen(sym(1), Captured, 1400);
        assert_eq!(i.stage_mode(sym(1), 1501), StageMode::Captured);
        // Configured: never learned.
        i.stage_seen(sym(5), EverySpan, 0);
        assert_eq!(i.stage_mode(sym(5), 0), StageMode::Captured);
        let all = Instances::new([], 1000).with_stage_modes([], Some(StageMode::Captured));
        all.stage_seen(sym(1), EverySpan, 0);
        assert_eq!(all.stage_mode(sym(1), 0), StageMode::Captured);
        // Receiving calls is remembered apart, from the same time on.
        assert!(!i.is_receiver(sym(1), 0));
        i.receives(sym(1), 0);
        assert!(i.is_receiver(sym(1), 1000) && !i.is_receiver(sym(1), 1001));
    }
}
