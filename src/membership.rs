//! Which grayscope instances share the store, as this instance last saw them.
//!
//! Each instance heartbeats into the shared store and reads the others back (`cluster`); an
//! instance is an *active* member while it receives spans. Behind the OpenTelemetry Collector's
//! load balancer, the active members are the ring: when one joins, leaves or stops receiving, the
//! traces in flight are split between two instances for a while, and orphans then are
//! `unverifiable`. With a store of its own (SQLite) an instance is the only member.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// One instance, as it registers itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// Where its API answers (`--advertise`).
    pub address: String,
    /// Unix ms.
    pub started_ms: u64,
    pub heartbeat_ms: u64,
    /// When it last accepted a span (Unix ms); 0 when it never did.
    pub last_span_ms: u64,
    /// When its current stretch of receiving spans began (Unix ms): telling a member the load
    /// balancer added to running traffic from one that started receiving with everyone else.
    pub receiving_since_ms: u64,
}

impl Member {
    /// Receiving spans within `timeout_ms` of `now_ms`: in the load balancer's ring.
    pub fn is_active(&self, now_ms: u64, timeout_ms: u64) -> bool {
        self.last_span_ms > 0 && self.last_span_ms + timeout_ms >= now_ms
    }
}

/// This instance's view of the cluster: shared by the receivers (which note when spans arrive),
/// the cluster task (which heartbeats and reads the members) and the API (which lists them).
pub struct Membership {
    me: Member,
    /// A member is active while it received spans this recently.
    active_within_ms: u64,
    last_span_ms: AtomicU64,
    receiving_since_ms: AtomicU64,
    members: RwLock<Vec<Member>>,
}

impl Membership {
    pub fn new(id: String, address: String, active_within_ms: u64) -> Self {
        let now = crate::wall_ms();
        let me = Member {
            id,
            address,
            started_ms: now,
            heartbeat_ms: now,
            last_span_ms: 0,
            receiving_since_ms: 0,
        };
        Membership {
            members: RwLock::new(vec![me.clone()]),
            me,
            active_within_ms,
            last_span_ms: AtomicU64::new(0),
            receiving_since_ms: AtomicU64::new(0),
        }
    }

    /// A new random instance id: 16 hex digits.
    pub fn new_id() -> String {
        format!("{:016x}", rand::random::<u64>())
    }

    pub fn id(&self) -> &str {
        &self.me.id
    }

    pub fn active_within_ms(&self) -> u64 {
        self.active_within_ms
    }

    /// Spans were accepted now: once per request, on the receivers' path.
    pub fn spans_arrived(&self) {
        let now = crate::wall_ms();
        let before = self.last_span_ms.swap(now, Ordering::Relaxed);
        if now.saturating_sub(before) > self.active_within_ms {
            self.receiving_since_ms.store(now, Ordering::Relaxed);
        }
    }

    /// This instance as it registers itself now.
    pub fn me(&self) -> Member {
        Member {
            heartbeat_ms: crate::wall_ms(),
            last_span_ms: self.last_span_ms.load(Ordering::Relaxed),
            receiving_since_ms: self.receiving_since_ms.load(Ordering::Relaxed),
            ..self.me.clone()
        }
    }

    /// The members the store returned.
    pub fn set_members(&self, mut members: Vec<Member>) {
        members.sort_by(|a, b| a.id.cmp(&b.id));
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = members;
    }

    pub fn members(&self) -> Vec<Member> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The other members, which may hold a trace this one does not.
    pub fn peers(&self) -> Vec<Member> {
        self.members()
            .into_iter()
            .filter(|m| m.id != self.me.id)
            .collect()
    }
}
