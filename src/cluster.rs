//! Taking part in a cluster of instances that share a store: heartbeat, watch the members behind
//! the load balancer, and share the service instances each one sees.
//!
//! Every `--heartbeat-interval` this instance renews its registration and reads the members back.
//! An active member is one receiving spans; when the set of active members changes (one joins,
//! leaves, is killed or stops being routed to), traces in flight may be split between two
//! instances, so for `--rebalance-window` a span whose parent never arrived is `unverifiable`
//! (see [`crate::instances::Instances::rebalancing`]). The service instances this instance saw
//! go to the store and the cluster's come back, so `misrouted` is judged on what every member saw.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::instances::{Clock, Instances};
use crate::intern::Symbols;
use crate::membership::Membership;
use crate::store::{SharedStore, Sighting};

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub heartbeat: Duration,
    /// How long after a membership change orphans are `unverifiable`.
    pub rebalance_window: Duration,
    /// How long service instances count as live (`--instance-ttl`): sightings older are not shared.
    pub instance_ttl: Duration,
}

impl ClusterConfig {
    /// A member whose heartbeat is older than this has gone.
    pub fn expiry(&self) -> Duration {
        self.heartbeat * 3
    }
}

pub struct Cluster {
    pub cfg: ClusterConfig,
    pub store: SharedStore,
    pub membership: Arc<Membership>,
    pub instances: Arc<Instances>,
    pub symbols: Arc<Symbols>,
    pub clock: Clock,
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
    /// The active members at the last beat; `None` before the first.
    active: Option<Vec<String>>,
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
        let mut active: Vec<String> = members
            .iter()
            .filter(|m| m.is_active(now, self.membership.active_within_ms()))
            .map(|m| m.id.clone())
            .collect();
        active.sort();
        self.membership.set_members(members);
        let changed = match &state.active {
            // Joining a shared store: the others' traces in flight may be split with this one.
            None => self.store.shared(),
            Some(before) => *before != active,
        };
        if changed {
            let until = self.clock.now_ms() + self.cfg.rebalance_window.as_millis() as u64;
            self.instances.rebalancing(until);
            tracing::info!(
                "members behind the load balancer changed ({} receiving spans: {}); spans whose parent never arrives are unverifiable for {:?}",
                active.len(),
                active.join(", "),
                self.cfg.rebalance_window
            );
        }
        state.active = Some(active);
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
