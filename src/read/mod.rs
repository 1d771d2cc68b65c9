//! The read side's facade: every question the front ends (the JSON API, the gRPC query API, the
//! dashboard) ask, answered in the read model's types ([`crate::view`]) from wherever the answer
//! is: traces still being assembled (the workers), just finalised (the aggregate), or stored.
//! The front ends only turn these answers into JSON, protobuf or HTML, and [`filter`] reads their
//! parameters with one set of rules.

pub mod filter;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::aggregate::{Aggregate, ServiceGraph};
use crate::intern::Symbols;
use crate::model::TraceId;
use crate::shard::Shards;
use crate::store::{FindingPage, FindingQuery, SharedStore, StageTraces, StoreError, Window};
use crate::verify::Finding;
use crate::view::{EdgeSeriesView, GraphView, ServiceView, TraceView};

/// A handle on everything the read side reads; cheap to clone.
#[derive(Clone)]
pub struct Reader {
    aggregate: Arc<Aggregate>,
    shards: Shards,
    store: SharedStore,
}

impl Reader {
    pub fn new(aggregate: Arc<Aggregate>, shards: Shards, store: SharedStore) -> Self {
        Reader {
            aggregate,
            shards,
            store,
        }
    }

    pub fn symbols(&self) -> &Arc<Symbols> {
        self.aggregate.symbols()
    }

    /// A trace wherever it is: being assembled, just finalised, or in the store.
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

    pub async fn services(&self) -> Result<Vec<ServiceView>, StoreError> {
        self.store.services().await
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
