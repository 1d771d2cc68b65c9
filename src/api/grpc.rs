//! The gRPC query API (`proto/grayscope/v1/query.proto`), on the OTLP/gRPC address: the same
//! questions as the JSON API, answered from the same views, plus a stream of new findings.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::read::filter::{self, DEFAULT_LIMIT, FindingFilter, MAX_LIMIT};
use crate::read::param::{BadParam, Form, Segment};
use crate::read::{Found, Reader};
use crate::store::{FindingQuery, StoreError, Window};
use crate::verify::Finding;
use crate::view::{FindingView, GraphView, SpanRef, StatsView, TraceView};

pub mod pb {
    tonic::include_proto!("grayscope.v1");
}

pub use pb::query_server::QueryServer;

/// Findings queued for one watcher's connection; a watcher that lets it fill is too slow.
const WATCH_QUEUE: usize = 256;
/// How long a too-slow watcher gets to read the status that ends its stream.
const WATCH_GOODBYE: Duration = Duration::from_secs(10);

pub struct QueryService {
    reader: Reader,
    stop: CancellationToken,
}

/// The query service; `stop` ends every open watch (at shutdown).
pub fn service(reader: Reader, stop: CancellationToken) -> QueryServer<QueryService> {
    QueryServer::new(QueryService { reader, stop })
}

/// As the JSON API answers it: a store that cannot answer now is `UNAVAILABLE` (retry), one
/// that holds what cannot be read is `INTERNAL`.
fn internal(e: StoreError) -> Status {
    if matches!(e, StoreError::Decode(_)) {
        tracing::error!("query API: {e}");
        Status::internal(e.to_string())
    } else {
        tracing::warn!("query API: {e}");
        Status::unavailable(e.to_string())
    }
}

fn bad(field: &str, value: &str, expected: &str) -> Status {
    Status::invalid_argument(format!("{field}: '{value}' is not {expected}"))
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The request's filter, read with the same rules as the JSON API's query string.
struct FilterParams(pb::FindingFilter);

impl filter::Params for FilterParams {
    fn get(&self, name: &str) -> Option<&str> {
        let f = &self.0;
        let v = match name {
            "kind" => &f.kind,
            "stage" => &f.stage,
            "caller" => &f.caller,
            "callee" => &f.callee,
            "trace_id" => &f.trace_id,
            "scope" => &f.scope,
            "first_break" => return f.first_break.map(|b| if b { "true" } else { "false" }),
            _ => return None,
        };
        opt(v)
    }
}

fn parse_filter(f: Option<pb::FindingFilter>) -> Result<FindingFilter, Status> {
    FindingFilter::parse(&FilterParams(f.unwrap_or_default()))
        .map_err(|e| Status::invalid_argument(format!("filter.{}: {}", e.name, e.message)))
}

fn invalid(e: BadParam) -> Status {
    Status::invalid_argument(format!("{}: {}", e.name, e.message))
}

fn window(since: i64, until: i64) -> Result<Window, Status> {
    let ms = |name: &str, v: i64| match v {
        0 => Ok(None),
        v if v > 0 => Ok(Some(v as u64)),
        v => Err(bad(name, &v.to_string(), "Unix milliseconds")),
    };
    Ok(Window {
        since_ms: ms("since_unix_ms", since)?,
        until_ms: ms("until_unix_ms", until)?,
    })
}

/// The JSON name of an enum value, so both APIs spell it the same.
fn label<T: serde::Serialize>(v: T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn unix_ms(rfc3339: &str) -> i64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

fn span_ref(s: &SpanRef) -> pb::SpanRef {
    pb::SpanRef {
        service: s.service.to_string(),
        span_id: s.span_id.to_string(),
        span_name: s.span_name.to_string(),
        kind: s.kind.to_string(),
        stage: s.stage.as_ref().map(|v| v.to_string()),
        instance_stage: s.instance_stage.as_ref().map(|v| v.to_string()),
    }
}

fn finding(f: &FindingView) -> pb::Finding {
    pb::Finding {
        trace_id: f.trace_id.to_string(),
        kind: f.kind.as_str().to_string(),
        scope: f.scope.as_str().to_string(),
        first_break: f.first_break,
        severity: label(f.severity),
        caller: f.caller.as_ref().map(span_ref),
        callee: Some(span_ref(&f.callee)),
        edge_caller: f.edge.caller.as_deref().unwrap_or_default().to_string(),
        edge_callee: f.edge.callee.to_string(),
        detail: f.detail.clone(),
        observed_unix_ms: unix_ms(&f.observed_at),
        messaging: f.messaging.as_ref().map(|m| {
            let s = |v: &Option<std::sync::Arc<str>>| v.as_deref().unwrap_or_default().to_string();
            pb::Messaging {
                system: s(&m.system),
                destination: s(&m.destination),
                consumer_group: s(&m.consumer_group),
            }
        }),
    }
}

fn stats(s: &StatsView) -> pb::Stats {
    let map = |m: &std::collections::BTreeMap<&'static str, u64>| {
        m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    pb::Stats {
        calls: s.calls,
        verdicts: map(&s.verdicts),
        first_breaks: map(&s.first_breaks),
        consistency: s.consistency,
    }
}

fn trace(t: &TraceView) -> pb::Trace {
    pb::Trace {
        trace_id: t.trace_id.to_string(),
        finalised: t.finalised,
        waiting_spans: t.waiting_spans,
        spans: t
            .spans
            .iter()
            .map(|s| pb::Span {
                span_id: s.span_id.to_string(),
                parent_span_id: s.parent_span_id.map(|p| p.to_string()).unwrap_or_default(),
                service: s.service.to_string(),
                name: s.name.to_string(),
                kind: s.kind.as_str().to_string(),
                stage: s.stage.as_ref().map(|v| v.to_string()),
                stage_source: s.stage_source.map(|f| f.as_str().to_string()),
                instance_stage: s.instance_stage.as_ref().map(|v| v.to_string()),
                start_unix_nano: s.start_unix_nano.parse().unwrap_or_default(),
                end_unix_nano: s.end_unix_nano.parse().unwrap_or_default(),
                status: label(s.status),
            })
            .collect(),
        edges: t
            .edges
            .iter()
            .map(|e| pb::TraceEdge {
                parent_span_id: e.parent_span_id.to_string(),
                span_id: e.span_id.to_string(),
                verdict: e.verdict.as_str().to_string(),
                scope: e.scope.as_str().to_string(),
            })
            .collect(),
        findings: t.findings.iter().map(finding).collect(),
    }
}

fn graph(g: &GraphView) -> pb::ServiceGraph {
    pb::ServiceGraph {
        nodes: g
            .nodes
            .iter()
            .map(|n| pb::Node {
                name: n.name.to_string(),
                is_virtual: n.is_virtual,
                own: Some(stats(&n.own)),
                group: n.group.as_deref().map(str::to_string),
            })
            .collect(),
        edges: g
            .edges
            .iter()
            .map(|e| pb::Edge {
                caller: e.caller.to_string(),
                callee: e.callee.to_string(),
                totals: Some(stats(&e.totals)),
                stages: e
                    .stages
                    .iter()
                    .map(|(k, v)| (k.clone(), stats(v)))
                    .collect(),
                routing: e
                    .routing
                    .iter()
                    .map(|r| pb::Routing {
                        stage: r.stage.as_ref().map(|v| v.to_string()),
                        instance_stage: r.instance_stage.as_ref().map(|v| v.to_string()),
                        calls: r.calls,
                    })
                    .collect(),
                last_seen_unix_ms: unix_ms(&e.last_seen),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::query_server::Query for QueryService {
    async fn list_findings(
        &self,
        req: Request<pb::ListFindingsRequest>,
    ) -> Result<Response<pb::ListFindingsResponse>, Status> {
        let r = req.into_inner();
        let f = parse_filter(r.filter)?;
        let w = window(r.since_unix_ms, r.until_unix_ms)?;
        let limit = match r.limit as usize {
            0 => DEFAULT_LIMIT,
            n if n <= MAX_LIMIT => n,
            n => return Err(bad("limit", &n.to_string(), "from 1 to 1000")),
        };
        let before = filter::cursor(&Form(&Segment(&r.cursor))).map_err(invalid)?;
        let page = self
            .reader
            .findings(FindingQuery {
                filter: f,
                window: w,
                before,
                limit,
            })
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListFindingsResponse {
            findings: page.findings.iter().map(finding).collect(),
            next_cursor: page.next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_trace(
        &self,
        req: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::Trace>, Status> {
        let id = req.into_inner().trace_id;
        let param = &super::params::TRACE_ID;
        let trace_id = param
            .need(param.trace_id(&Form(&Segment(&id))))
            .map_err(invalid)?;
        match self
            .reader
            .find_trace(trace_id, true)
            .await
            .map_err(internal)?
        {
            Found::Here(view) => Ok(Response::new(trace(&view))),
            Found::Elsewhere { member, .. } => Err(Status::not_found(format!(
                "trace {trace_id} is still being assembled by grayscope instance {} at {}: ask it, or \
                 here once it is finalised (within --trace-idle)",
                member.id, member.address
            ))),
            Found::Nowhere => Err(Status::not_found(format!("trace {trace_id} is unknown"))),
        }
    }

    async fn get_service_graph(
        &self,
        req: Request<pb::GetServiceGraphRequest>,
    ) -> Result<Response<pb::ServiceGraph>, Status> {
        let r = req.into_inner();
        let w = window(r.since_unix_ms, r.until_unix_ms)?;
        let g = self.reader.graph(w).await.map_err(internal)?;
        let view = self.reader.graph_view(&g, opt(&r.stage));
        Ok(Response::new(graph(&view)))
    }

    type WatchFindingsStream = ReceiverStream<Result<pb::Finding, Status>>;

    async fn watch_findings(
        &self,
        req: Request<pb::WatchFindingsRequest>,
    ) -> Result<Response<Self::WatchFindingsStream>, Status> {
        let filter = parse_filter(req.into_inner().filter)?;
        let rx = self.reader.watch();
        let (tx, out) = mpsc::channel(WATCH_QUEUE);
        let sym = self.reader.symbols().clone();
        tokio::spawn(watch(rx, tx, filter, sym, self.stop.clone()));
        Ok(Response::new(ReceiverStream::new(out)))
    }
}

/// Feeds one watcher until it goes away, falls behind, or grayscope stops.
async fn watch(
    mut rx: broadcast::Receiver<Arc<Finding>>,
    tx: mpsc::Sender<Result<pb::Finding, Status>>,
    filter: FindingFilter,
    sym: Arc<crate::intern::Symbols>,
    stop: CancellationToken,
) {
    let too_slow = |dropped: u64| {
        Status::resource_exhausted(format!(
            "this watch read too slowly and {dropped} findings were dropped for it; catch up with ListFindings, then watch again"
        ))
    };
    let end = loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break Status::unavailable("grayscope is shutting down"),
            _ = tx.closed() => return,
            r = rx.recv() => r,
        };
        match next {
            Ok(f) => {
                let view = FindingView::of(&f, &sym);
                if !filter.matches(&view) {
                    continue;
                }
                match tx.try_send(Ok(finding(&view))) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => break too_slow(1),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => break too_slow(n),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    };
    // The status goes after what is queued; a client that never reads again is let go.
    let _ = tokio::time::timeout(WATCH_GOODBYE, tx.send(Err(end))).await;
}
