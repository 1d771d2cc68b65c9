//! The read side's facade: every question the front ends (the JSON API, the gRPC query API, the
//! dashboard) ask, answered in the read model's types ([`crate::view`]) from wherever the answer
//! is: traces still being assembled (the workers), just finalised (the aggregate), or stored.
//! The front ends only turn these answers into JSON, protobuf or HTML, and [`filter`] reads their
//! parameters with one set of rules.

pub mod filter;
pub mod param;
mod peers;
pub mod subgraph;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::aggregate::{Aggregate, ServiceGraph};
use crate::instances::{Clock, Instances};
use crate::intern::Symbols;
use crate::membership::{Member, Membership};
use crate::model::TraceId;
use crate::security::PeerAuth;
use crate::shard::Shards;
use crate::store::{FindingPage, FindingQuery, SharedStore, StageTraces, StoreError, Window};
use crate::verify::Finding;
use crate::view::{
    EdgeSeriesView, EdgeView, GraphView, RoutingView, ServiceDetailView, ServiceView,
    TraceVerdicts, TraceView,
};

/// Calls a service's graph holds at most: past it, the nearest and busiest.
pub const SERVICE_GRAPH_EDGES: usize = 120;

/// Findings a service's page and API answer show; the findings page has the rest.
pub const SERVICE_FINDINGS: usize = 20;

/// Where a trace was found.
pub enum Found {
    Here(TraceView),
    /// Another instance is assembling it; its answer, as JSON.
    Elsewhere {
        member: Member,
        json: bytes::Bytes,
    },
    Nowhere,
}

/// A handle on everything the read side reads; cheap to clone.
#[derive(Clone)]
pub struct Reader {
    aggregate: Arc<Aggregate>,
    shards: Shards,
    store: SharedStore,
    membership: Arc<Membership>,
    peers: PeerAuth,
    /// What verification knows of each service: its stage mode.
    instances: Arc<Instances>,
    clock: Clock,
}

impl Reader {
    pub fn new(
        aggregate: Arc<Aggregate>,
        shards: Shards,
        store: SharedStore,
        membership: Arc<Membership>,
        peers: PeerAuth,
        instances: (Arc<Instances>, Clock),
    ) -> Self {
        Reader {
            aggregate,
            shards,
            store,
            membership,
            peers,
            instances: instances.0,
            clock: instances.1,
        }
    }

    /// The instances sharing the store, this one among them.
    pub fn members(&self) -> Vec<Member> {
        self.membership.members()
    }

    pub fn me(&self) -> &str {
        self.membership.id()
    }

    /// How recently a member must have received spans to be active.
    pub fn active_within_ms(&self) -> u64 {
        self.membership.active_within_ms()
    }

    pub fn symbols(&self) -> &Arc<Symbols> {
        self.aggregate.symbols()
    }

    /// A trace wherever it is: here (being assembled, just finalised, or in the store), or being
    /// assembled by another instance of the cluster (`ask_peers`: not when a peer is asking).
    pub async fn find_trace(&self, id: TraceId, ask_peers: bool) -> Result<Found, StoreError> {
        if let Some(view) = self.trace(id).await? {
            return Ok(Found::Here(view));
        }
        if ask_peers
            && let Some((member, json)) =
                peers::find(&self.peers, self.membership.peers(), id).await
        {
            return Ok(Found::Elsewhere { member, json });
        }
        Ok(Found::Nowhere)
    }

    /// A trace's state and verdicts, wherever it is (`ask_peers` as for [`Reader::find_trace`]).
    /// A trace another instance holds is reported as assembling there: once finalised it is in
    /// the shared store, and its verdicts are read from there.
    pub async fn verdicts(
        &self,
        id: TraceId,
        ask_peers: bool,
    ) -> Result<TraceVerdicts, StoreError> {
        Ok(match self.find_trace(id, ask_peers).await? {
            Found::Here(view) => TraceVerdicts::of(view),
            Found::Elsewhere { member, .. } => TraceVerdicts::elsewhere(id, Some(member.id)),
            Found::Nowhere => TraceVerdicts::elsewhere(id, None),
        })
    }

    /// A trace here: being assembled, just finalised, or in the store.
    pub async fn trace(&self, id: TraceId) -> Result<Option<TraceView>, StoreError> {
        let live = match self.shards.snapshot(id).await {
            Some(s) => Some(s),
            None => self.aggregate.trace(id),
        };
        match live {
            Some(s) => Ok(Some(TraceView::of(&s, self.symbols()))),
            None => self.store.trace(id).await,
        }
    }

    pub async fn findings(&self, q: FindingQuery) -> Result<FindingPage, StoreError> {
        self.store.findings(q).await
    }

    /// Findings as they are judged, before they are stored.
    pub fn watch(&self) -> broadcast::Receiver<Arc<Finding>> {
        self.aggregate.watch()
    }

    /// The service graph counted within `w`.
    pub async fn graph(&self, w: Window) -> Result<ServiceGraph, StoreError> {
        self.store.graph(w).await
    }

    /// `g` as the API and the dashboard show it: every stage, or only `stage` (`none`: calls
    /// without one). A stage never seen has an empty graph.
    pub fn graph_view(&self, g: &ServiceGraph, stage: Option<&str>) -> GraphView {
        let mut view = self.stage_view(g, stage);
        for n in &mut view.nodes {
            n.group = self.group_of(&n.name);
        }
        view
    }

    /// The `--group-key` value `service`'s spans carry, as this instance saw them.
    fn group_of(&self, service: &str) -> Option<Arc<str>> {
        let sym = self.symbols();
        let g = self.instances.group(sym.services.get(service)?)?;
        Some(sym.values.resolve(g))
    }

    fn stage_view(&self, g: &ServiceGraph, stage: Option<&str>) -> GraphView {
        let sym = self.symbols();
        match stage {
            None => GraphView::of(g, None, None, sym),
            Some("none") => GraphView::of(g, Some(None), Some("none".into()), sym),
            Some(s) => match sym.values.get(s) {
                Some(v) => GraphView::of(g, Some(Some(v)), Some(s.into()), sym),
                None => GraphView {
                    stage: Some(s.into()),
                    nodes: Vec::new(),
                    edges: Vec::new(),
                },
            },
        }
    }

    /// Every service the store knows, with the stage mode verification judges it in.
    pub async fn services(&self) -> Result<Vec<ServiceView>, StoreError> {
        let mut services = self.store.services().await?;
        let now = self.clock.now_ms();
        for s in &mut services {
            let (mode, configured) = self
                .instances
                .stage_mode_of(self.symbols().services.get(&s.name), now);
            s.stage_mode = mode;
            s.stage_mode_configured = configured;
            s.group = self.group_of(&s.name);
        }
        Ok(services)
    }

    /// One service within `w` (and `stage`): its callers and callees up to `depth` calls away
    /// (at most [`SERVICE_GRAPH_EDGES`] calls), the stages of the calls it served, its newest findings.
    /// `None` when the store knows no such service.
    pub async fn service_detail(
        &self,
        name: &str,
        w: Window,
        stage: Option<&str>,
        depth: usize,
    ) -> Result<Option<ServiceDetailView>, StoreError> {
        let Some(service) = self
            .services()
            .await?
            .into_iter()
            .find(|s| &*s.name == name)
        else {
            return Ok(None);
        };
        let view = self.graph_view(&self.graph(w).await?, stage);
        let part = subgraph::around(&view, name, depth, SERVICE_GRAPH_EDGES);
        let callers: Vec<EdgeView> = view
            .edges
            .iter()
            .filter(|e| &*e.callee == name)
            .cloned()
            .collect();
        let callees = view
            .edges
            .iter()
            .filter(|e| &*e.caller == name)
            .cloned()
            .collect();
        // (request stage, instance stage) -> calls
        type Cell = (Option<Arc<str>>, Option<Arc<str>>);
        let mut served: BTreeMap<Cell, u64> = BTreeMap::new();
        for r in callers.iter().flat_map(|e| &e.routing) {
            *served
                .entry((r.stage.clone(), r.instance_stage.clone()))
                .or_default() += r.calls;
        }
        let instance_stages = service
            .instances
            .iter()
            .map(|i| i.stage.as_deref().unwrap_or("none").to_string())
            .collect();
        // Newest first, as caller or as callee.
        let mut findings = Vec::new();
        for side in ["caller", "callee"] {
            let mut filter = filter::FindingFilter::default();
            match side {
                "caller" => filter.caller = Some(name.to_string()),
                _ => filter.callee = Some(name.to_string()),
            }
            filter.stage = stage.map(str::to_string);
            let page = self
                .findings(FindingQuery {
                    filter,
                    window: w,
                    before: None,
                    limit: SERVICE_FINDINGS,
                })
                .await?;
            findings.extend(page.findings);
        }
        findings.sort_by(|a, b| b.observed_at.cmp(&a.observed_at));
        findings.truncate(SERVICE_FINDINGS);
        let (graph, left_out_edges) = match part {
            Some(p) => (p.graph, p.left_out),
            None => (
                GraphView {
                    stage: view.stage.clone(),
                    nodes: Vec::new(),
                    edges: Vec::new(),
                },
                0,
            ),
        };
        Ok(Some(ServiceDetailView {
            service,
            depth,
            graph,
            left_out_edges,
            callers,
            callees,
            served: served
                .into_iter()
                .map(|((stage, instance_stage), calls)| RoutingView {
                    stage,
                    instance_stage,
                    calls,
                })
                .collect(),
            instance_stages,
            findings,
        }))
    }

    /// One edge over time; `None` when either end is unknown.
    pub async fn edge_series(
        &self,
        caller: String,
        callee: String,
        stage: Option<String>,
        w: Window,
    ) -> Result<Option<EdgeSeriesView>, StoreError> {
        self.store.edge_series(caller, callee, stage, w).await
    }

    /// Finalised traces in `w` by root stage: (stage, consistent, broken).
    pub async fn trace_counts(&self, w: Window) -> Result<Vec<StageTraces>, StoreError> {
        self.store.trace_counts(w).await
    }
}
