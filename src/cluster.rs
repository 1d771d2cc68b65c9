//! Taking part in a cluster of instances that share a store: heartbeat, watch the members behind
//! the load balancer, and share the service instances each one sees.
//!
//! Every `--heartbeat-interval` this instance renews its registration and reads the members back.
//! An active member is one receiving spans. When traffic moves between members (one starts
//! receiving while others do, or stops while others go on: it joined, left, was killed or the load
//! balancer's ring changed), traces in flight may be split between two instances, so for
//! `--rebalance-window` a span whose parent never arrived is `unverifiable` (see
//! [`crate::instances::Instances::rebalancing`]). Traffic starting, or pausing everywhere, splits
//! nothing: the set compared is the last one that received anything. The service instances this instance saw
//! go to the store and the cluster's come back, so `misrouted` is judged on what every member saw.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::aggregate::Aggregate;
use crate::instances::{Clock, Instances};
use crate::intern::Symbols;
use crate::join::Joins;
use crate::membership::{Member, Membership};
use crate::store::{SharedStore, Sighting};
use crate::telemetry::Registry;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub heartbeat: Duration,
    /// How long after a membership change orphans are `unverifiable`.
    pub rebalance_window: Duration,
    /// How long service instances count as live (`--instance-ttl`): sightings older are not shared.
    pub instance_ttl: Duration,
    /// How long producer spans are kept for consumers (`--link-wait`): offered ones older are
    /// forgotten.
    pub link_wait: Duration,
}

/// Producer spans looked for in the store per heartbeat, at most.
const MAX_WANTED: usize = 5_000;

impl ClusterConfig {
    /// A member whose heartbeat is older than this has gone.
    pub fn expiry(&self) -> Duration {
        self.heartbeat * 3
    }
}

/// `grayscope_cluster_members`, `grayscope_cluster_receiving_members` and
/// `grayscope_rebalancing`, set at every heartbeat.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    members: Gauge,
    receiving: Gauge,
    rebalancing: Gauge,
}

impl ClusterMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = ClusterMetrics::default();
        r.register(
            "cluster_members",
            "Instances sharing the store with a live heartbeat, this one included",
            m.members.clone(),
        );
        r.register(
            "cluster_receiving_members",
            "Members receiving spans: the load balancer's ring as grayscope sees it",
            m.receiving.clone(),
        );
        r.register(
            "rebalancing",
            "1 while the members receiving spans changed within --rebalance-window: orphans are unverifiable",
            m.rebalancing.clone(),
        );
        m
    }
}

pub struct Cluster {
    pub cfg: ClusterConfig,
    pub metrics: ClusterMetrics,
    pub store: SharedStore,
    pub membership: Arc<Membership>,
    pub instances: Arc<Instances>,
    pub symbols: Arc<Symbols>,
    pub clock: Clock,
    pub joins: Arc<Joins>,
    pub aggregate: Arc<Aggregate>,
}

/// Runs until `stop`, then leaves the cluster.
pub fn spawn(c: Cluster, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(c.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut state = State::default();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => c.beat(&mut state).await,
            }
        }
        if let Err(e) = c.store.leave(c.membership.id()).await {
            tracing::warn!("leaving the cluster: {e}");
        }
    })
}

#[derive(Default)]
struct State {
    /// The last non-empty set of active members; `None` before any member received spans.
    active: Option<Vec<Member>>,
    /// Sightings pushed, with the time pushed.
    pushed: HashMap<(String, String), u64>,
    failing: bool,
}

impl Cluster {
    async fn beat(&self, state: &mut State) {
        let result = self.members(state).await;
        let result = match result {
            Ok(()) => self.sightings(state).await,
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(()) => self.links().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) if state.failing => {
                state.failing = false;
                tracing::info!("the cluster's registry in the store answers again");
            }
            Ok(()) => {}
            Err(e) if !state.failing => {
                state.failing = true;
                tracing::warn!(
                    "the cluster's registry in the store cannot be read: {e}; members and sightings are as last seen"
                );
            }
            Err(_) => {}
        }
    }

    async fn members(&self, state: &mut State) -> Result<(), crate::store::StoreError> {
        let me = self.membership.me();
        let members = self
            .store
            .heartbeat(&me, self.cfg.expiry().as_millis() as u64)
            .await?;
        let now = crate::wall_ms();
        self.metrics.members.set(members.len() as i64);
        let mut active: Vec<Member> = members
            .iter()
            .filter(|m| m.is_active(now, self.membership.active_within_ms()))
            .cloned()
            .collect();
        active.sort_by(|a, b| a.id.cmp(&b.id));
        self.membership.set_members(members);
        let changed = match &state.active {
            Some(before) if !active.is_empty() => {
                moved(before, &active, self.cfg.heartbeat.as_millis() as u64)
            }
            _ => false,
        };
        if changed {
            let until = self.clock.now_ms() + self.cfg.rebalance_window.as_millis() as u64;
            self.instances.rebalancing(until);
            tracing::info!(
                "members behind the load balancer changed ({} receiving spans: {}); spans whose parent never arrives are unverifiable for {:?}",
                active.len(),
                active
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.cfg.rebalance_window
            );
        }
        self.metrics.receiving.set(active.len() as i64);
        self.metrics
            .rebalancing
            .set(i64::from(self.instances.unsettled(self.clock.now_ms())));
        if !active.is_empty() {
            state.active = Some(active);
        }
        Ok(())
    }

    async fn sightings(&self, state: &mut State) -> Result<(), crate::store::StoreError> {
        if !self.store.shared() {
            return Ok(());
        }
        let (now_clock, now_wall) = (self.clock.now_ms(), crate::wall_ms());
        let to_wall = |clock_ms: u64| now_wall.saturating_sub(now_clock.saturating_sub(clock_ms));
        let mut fresh: Vec<Sighting> = Vec::new();
        for s in self.instances.snapshot() {
            let Some(seen) = s.last_seen_ms else { continue };
            let key = (
                self.symbols.services.resolve(s.service).to_string(),
                self.symbols.values.resolve(s.stage).to_string(),
            );
            let wall = to_wall(seen);
            if state.pushed.get(&key).is_none_or(|&at| wall > at + 1_000) {
                state.pushed.insert(key.clone(), wall);
                fresh.push((key.0, key.1, wall));
            }
        }
        let since = now_wall.saturating_sub(self.cfg.instance_ttl.as_millis() as u64);
        for (service, stage, wall) in self.store.share_sightings(fresh, since).await? {
            let clock_ms = now_clock.saturating_sub(now_wall.saturating_sub(wall));
            self.instances.touch(
                self.symbols.services.intern(&service),
                self.symbols.values.intern(&stage),
                clock_ms,
            );
        }
        Ok(())
    }
}

impl Cluster {
    /// Messaging hops whose producer and consumer traces went to different instances (traces are
    /// spread by trace id, and a link crosses traces): this instance's producer spans go to the
    /// store, and the producer spans its waiting consumers link to come back from it.
    async fn links(&self) -> Result<(), crate::store::StoreError> {
        if !self.store.shared() {
            return Ok(());
        }
        let now_wall = crate::wall_ms();
        let forget = now_wall.saturating_sub(self.cfg.link_wait.as_millis() as u64);
        self.store
            .share_producers(&self.joins.take_shared(), now_wall, forget)
            .await?;
        let wanted = self.joins.wanted(MAX_WANTED);
        if wanted.is_empty() {
            return Ok(());
        }
        let found = self.store.find_producers(&wanted).await?;
        if found.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        self.joins
            .offer(found, self.clock.now_ms(), now_wall, &mut out);
        if !out.is_empty() {
            self.aggregate.absorb(&out);
            self.store.submit(out).await?;
        }
        Ok(())
    }
}

/// Whether traffic moved between members from `before` to `now` (both receiving something): a
/// member stopped receiving while others went on, or one started receiving noticeably later
/// (more than `grain_ms`, the heartbeat) than a member that kept receiving. Members that started
/// receiving together (traffic starting) moved nothing.
fn moved(before: &[Member], now: &[Member], grain_ms: u64) -> bool {
    let had = |set: &[Member], id: &str| set.iter().any(|m| m.id == id);
    if before.iter().any(|m| !had(now, &m.id)) {
        return true;
    }
    let survivors: Vec<&Member> = now.iter().filter(|m| had(before, &m.id)).collect();
    now.iter().filter(|m| !had(before, &m.id)).any(|added| {
        survivors
            .iter()
            .any(|s| added.receiving_since_ms > s.receiving_since_ms + grain_ms)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, since: u64) -> Member {
        Member {
            id: id.into(),
            address: String::new(),
            started_ms: 0,
            heartbeat_ms: 0,
            last_span_ms: since,
            receiving_since_ms: since,
        }
    }

    #[test]
    fn traffic_moves_when_a_member_leaves_or_joins_running_traffic() {
        let (a, b, c) = (member("a", 1000), member("b", 1010), member("c", 1020));
        // Traffic starting: b and c were seen a beat after a, but began with it.
        assert!(!moved(
            std::slice::from_ref(&a),
            &[a.clone(), b.clone(), c.clone()],
            500
        ));
        // c left the ring; the others go on.
        assert!(moved(
            &[a.clone(), b.clone(), c.clone()],
            &[a.clone(), b.clone()],
            500
        ));
        // d joined a minute into the traffic.
        let d = member("d", 61_000);
        assert!(moved(
            &[a.clone(), b.clone()],
            &[a.clone(), b.clone(), d.clone()],
            500
        ));
        // Nothing changed.
        assert!(!moved(
            &[a.clone(), b.clone()],
            &[a.clone(), b.clone()],
            500
        ));
        // Everyone replaced: the old ones left.
        assert!(moved(&[a, b], &[d], 500));
    }
}
