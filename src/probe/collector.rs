//! The collector's JSON API, as the probe uses it: health, the verdicts of its traces (polled
//! until every one is finalised), and findings of other traces that started inside them.
//!
//! The shapes here mirror the API's documented JSON (`/api/v1/openapi.json`), and only the
//! fields the probe reads: the probe is a client like any other.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::ProbeError;
use crate::security::ClientAuth;

/// Most trace ids asked about in one request (the API's limit).
const BATCH: usize = 1000;
/// Most findings of other traces looked at for calls that left a probe's trace.
const MAX_DETACHED: usize = 200;

#[derive(Deserialize, Debug)]
struct VerdictsPage {
    trace_idle_ms: u64,
    flush_interval_ms: u64,
    traces: Vec<Traced>,
}

/// One trace's state and verdicts.
#[derive(Deserialize, Debug, Clone)]
pub struct Traced {
    pub trace_id: String,
    pub state: String,
    pub member: Option<String>,
    pub hops: Vec<Hop>,
    pub served: Vec<Served>,
    pub findings: Vec<Finding>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Hop {
    pub caller: String,
    pub callee: String,
    pub scope: String,
    pub verdict: String,
    pub instance_stage: Option<String>,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub service: String,
    pub instance_stage: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Finding {
    pub trace_id: String,
    pub kind: String,
    pub scope: String,
    pub first_break: bool,
    pub callee: SpanRef,
    pub edge: Edge,
    pub detail: String,
}

#[derive(Deserialize, Debug, Clone)]
pub struct SpanRef {
    pub service: String,
    pub span_id: String,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Edge {
    pub caller: Option<String>,
    pub callee: String,
}

#[derive(Deserialize, Debug)]
struct FindingsPage {
    findings: Vec<Finding>,
}

#[derive(Deserialize, Debug)]
struct TraceSpans {
    spans: Vec<Span>,
}

#[derive(Deserialize, Debug)]
struct Span {
    span_id: String,
    parent_span_id: Option<String>,
    service: String,
    start_unix_nano: String,
    end_unix_nano: String,
}

impl Span {
    fn window(&self) -> (u64, u64) {
        (
            self.start_unix_nano.parse().unwrap_or(0),
            self.end_unix_nano.parse().unwrap_or(0),
        )
    }
}

/// How long the collector takes, as it says.
pub struct Timing {
    pub trace_idle: Duration,
    pub flush_interval: Duration,
}

/// A finding of another trace, whose first span started inside a span of a probe trace in the
/// same service: a call made without the request's context, which started a new trace.
#[derive(Debug, Clone)]
pub struct Detached {
    /// The probe trace it started inside.
    pub inside: String,
    pub finding: Finding,
}

pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// `auth`: the CA and client certificate for an https collector, and the read token.
    pub fn new(base: &str, auth: &ClientAuth) -> Result<Self, ProbeError> {
        let usage = |m: String| ProbeError::Usage(m);
        let mut headers = http::HeaderMap::new();
        if let Some(a) = &auth.authorization {
            let mut v = http::HeaderValue::from_str(a)
                .map_err(|_| usage("the read token is not a valid header value".into()))?;
            v.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, v);
        }
        let client = auth
            .reqwest()
            .map_err(|e| usage(e.to_string()))?
            .timeout(Duration::from_secs(10))
            .default_headers(headers)
            .build()
            .map_err(|e| usage(format!("cannot build the API client: {e}")))?;
        Ok(Api {
            base: base.to_string(),
            client,
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> ProbeError {
        let mut cause = e.to_string();
        let mut s = std::error::Error::source(&e);
        while let Some(c) = s {
            cause.push_str(": ");
            cause.push_str(&c.to_string());
            s = c.source();
        }
        ProbeError::Unreachable {
            url: self.base.clone(),
            cause,
        }
    }

    async fn answer<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        r: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, ProbeError> {
        let r = r.map_err(|e| self.unreachable(e))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| self.unreachable(e))?;
        let bad = |body: String| ProbeError::Collector {
            url: self.base.clone(),
            path: path.to_string(),
            status: status.as_u16(),
            body,
        };
        if !status.is_success() {
            return Err(bad(String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect()));
        }
        serde_json::from_slice(&body).map_err(|e| {
            bad(format!(
                "not the answer of a grayscope collector ({e}); is --collector its API address?"
            ))
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ProbeError> {
        let r = self.client.get(format!("{}{path}", self.base)).send().await;
        self.answer(path, r).await
    }

    /// Checked before any request is sent: a probe whose verdicts cannot be read sends nothing.
    pub async fn health(&self) -> Result<(), ProbeError> {
        let r = self
            .client
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(ProbeError::Collector {
                url: self.base.clone(),
                path: "/healthz".into(),
                status: r.status().as_u16(),
                body: r.text().await.unwrap_or_default(),
            })
        }
    }

    async fn verdicts(&self, ids: &[&str]) -> Result<VerdictsPage, ProbeError> {
        let path = "/api/v1/traces/verdicts";
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&serde_json::json!({ "trace_ids": ids }))
            .send()
            .await;
        self.answer(path, r).await
    }

    /// Polls until every trace is finalised, or `deadline`; a poll every tenth of the collector's
    /// `--trace-idle` (between 50 ms and 1 s), so the wait ends about when the last trace is.
    pub async fn wait_finalised(
        &self,
        ids: &[&str],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(Vec<Traced>, Timing), ProbeError> {
        let mut done: HashMap<String, Traced> = HashMap::new();
        loop {
            let waiting: Vec<&str> = ids
                .iter()
                .copied()
                .filter(|id| !done.contains_key(*id))
                .collect();
            let mut timing = None;
            let mut open = Vec::new();
            for chunk in waiting.chunks(BATCH) {
                let page = self.verdicts(chunk).await?;
                timing = Some(Timing {
                    trace_idle: Duration::from_millis(page.trace_idle_ms),
                    flush_interval: Duration::from_millis(page.flush_interval_ms),
                });
                for t in page.traces {
                    if t.state == "finalised" {
                        done.insert(t.trace_id.clone(), t);
                    } else {
                        open.push(t);
                    }
                }
            }
            let timing = match timing {
                Some(t) => t,
                // Nothing was waiting: ask once for the collector's timing.
                None => {
                    let page = self.verdicts(&[]).await?;
                    Timing {
                        trace_idle: Duration::from_millis(page.trace_idle_ms),
                        flush_interval: Duration::from_millis(page.flush_interval_ms),
                    }
                }
            };
            if open.is_empty() {
                let traces = ids.iter().filter_map(|id| done.remove(*id)).collect();
                return Ok((traces, timing));
            }
            if Instant::now() >= deadline {
                return Err(ProbeError::Incomplete {
                    total: ids.len(),
                    timeout: humantime::format_duration(timeout).to_string(),
                    waiting: open
                        .iter()
                        .map(|t| match (&*t.state, &t.member) {
                            ("unknown", _) => format!("{} (no span arrived)", t.trace_id),
                            ("waiting", _) => format!(
                                "{} (finalised, but spans wait for their parent: --orphan-wait)",
                                t.trace_id
                            ),
                            (_, Some(m)) => format!("{} (assembling on {m})", t.trace_id),
                            (s, None) => format!("{} ({s})", t.trace_id),
                        })
                        .collect(),
                });
            }
            let pause =
                (timing.trace_idle / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Broken traces found since `since_ms` whose root span started inside a span of a probe
    /// trace, in the same service: the calls that left the probe's traces. Asked once the
    /// findings of traces finalised with the probe's have been stored (`flush_interval`).
    pub async fn detached(
        &self,
        traces: &[Traced],
        since_ms: u64,
        flush_interval: Duration,
    ) -> Result<Vec<Detached>, ProbeError> {
        tokio::time::sleep(flush_interval + Duration::from_millis(100)).await;
        let since = crate::view::rfc3339(since_ms);
        let path = format!(
            "/api/v1/findings?kind=broken_trace&first_break=true&limit=1000&since={}",
            percent_encoding::utf8_percent_encode(&since, percent_encoding::NON_ALPHANUMERIC)
        );
        let page: FindingsPage = self.get(&path).await?;
        let ours: HashSet<&str> = traces.iter().map(|t| t.trace_id.as_str()).collect();
        let reached: HashSet<&str> = traces
            .iter()
            .flat_map(|t| t.served.iter().map(|s| s.service.as_str()))
            .collect();
        let candidates: Vec<&Finding> = page
            .findings
            .iter()
            .filter(|f| !ours.contains(f.trace_id.as_str()))
            // A root span: its trace began there (not a span whose parent went missing).
            .filter(|f| reached.contains(f.callee.service.as_str()))
            .take(MAX_DETACHED)
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // The probe traces' spans, by service, with their time windows.
        let mut windows: HashMap<String, Vec<(u64, u64, String)>> = HashMap::new();
        for t in traces {
            let spans: TraceSpans = self.get(&format!("/api/v1/traces/{}", t.trace_id)).await?;
            for s in spans.spans {
                let (a, b) = s.window();
                windows
                    .entry(s.service)
                    .or_default()
                    .push((a, b, t.trace_id.clone()));
            }
        }
        let mut out = Vec::new();
        for f in candidates {
            let other: TraceSpans = match self.get(&format!("/api/v1/traces/{}", f.trace_id)).await
            {
                Ok(t) => t,
                // Past retention since, or never kept: nothing to correlate.
                Err(ProbeError::Collector { status: 404, .. }) => continue,
                Err(e) => return Err(e),
            };
            let Some(root) = other
                .spans
                .iter()
                .find(|s| s.span_id == f.callee.span_id && s.parent_span_id.is_none())
            else {
                continue;
            };
            let (start, _) = root.window();
            let inside = windows.get(&root.service).and_then(|w| {
                w.iter()
                    .find(|(a, b, _)| *a <= start && start <= *b)
                    .map(|(_, _, id)| id.clone())
            });
            if let Some(inside) = inside {
                out.push(Detached {
                    inside,
                    finding: f.clone(),
                });
            }
        }
        Ok(out)
    }
}
