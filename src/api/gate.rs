//! The rollout gate: a yes/no for progressive-delivery controllers (Argo Rollouts `web` metrics,
//! Flagger webhooks) on whether a stage's traffic kept its tag over a recent window.
//!
//! No traffic is no evidence: a window in which no edge carried the stage fails unless the caller
//! says an empty window is fine (`allow_empty`).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::params::{self, Params};
use super::{ApiError, ApiState, ErrorBody};
use crate::aggregate::{ServiceGraph, StageStats};
use crate::intern::Symbols;
use crate::read::filter::{self, BadParam};
use crate::store::Window;
use crate::verify::Verdict;

/// What a gate asks.
#[derive(Clone, Debug)]
pub struct GateQuery {
    pub stage: String,
    pub window: Duration,
    /// Findings (first breaks) allowed in the window.
    pub max_findings: u64,
    /// The share of judged edges that must be `ok` or `absent`, if any.
    pub min_consistency: Option<f64>,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub allow_empty: bool,
}

impl GateQuery {
    /// Its parameters' names.
    pub const PARAMS: [&str; 7] = [
        "stage",
        "window",
        "max_findings",
        "min_consistency",
        "caller",
        "callee",
        "allow_empty",
    ];

    /// Reads a gate from string parameters (query string, or a Flagger webhook's `metadata`).
    pub fn parse(p: &impl filter::Params) -> Result<GateQuery, BadParam> {
        let stage = p
            .get("stage")
            .ok_or(BadParam {
                name: "stage",
                message: "is required (e.g. stage=canary)".to_string(),
            })?
            .to_string();
        let window = p
            .parse("window", "a duration like 5m", |w| {
                humantime::parse_duration(w).ok().filter(|d| !d.is_zero())
            })?
            .unwrap_or(Duration::from_secs(300));
        let max_findings = p
            .parse("max_findings", "a count", |v| v.parse().ok())?
            .unwrap_or(0);
        let min_consistency = p.parse("min_consistency", "a ratio from 0 to 1", |v| {
            v.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r))
        })?;
        let allow_empty = p
            .parse("allow_empty", "true or false", |v| v.parse().ok())?
            .unwrap_or(false);
        Ok(GateQuery {
            stage,
            window,
            max_findings,
            min_consistency,
            caller: p.get("caller").map(str::to_string),
            callee: p.get("callee").map(str::to_string),
            allow_empty,
        })
    }
}

/// The gate's answer; the same body for every endpoint and status.
#[derive(Serialize, Debug, ToSchema)]
pub struct GateResult {
    pub pass: bool,
    pub stage: String,
    /// The window judged, e.g. `5m`.
    pub window: String,
    /// Findings that were first breaks, in the window, for the stage.
    pub findings: u64,
    /// Judged span edges that carried the stage.
    pub edges_checked: u64,
    /// Share of those edges that were `ok` or `absent`; `null` without any.
    pub consistency: Option<f64>,
    /// Why it did not pass, one line per reason; the breaking edges are named.
    pub reasons: Vec<String>,
}

/// Judges `q` on the service graph of its window.
pub fn judge(q: &GateQuery, g: &ServiceGraph, sym: &Symbols) -> GateResult {
    let window = humantime::format_duration(q.window).to_string();
    let stage = sym.values.get(&q.stage);
    let mut total = StageStats::default();
    // (edge, findings, findings by kind)
    type Broken = (String, u64, Vec<(Verdict, u64)>);
    let mut broken: Vec<Broken> = Vec::new();
    if let Some(stage) = stage {
        for e in g.graph.edge_indices() {
            let (a, b) = g.graph.edge_endpoints(e).expect("index from the graph");
            let (caller, callee) = (g.graph[a].key.name(sym), g.graph[b].key.name(sym));
            if q.caller.as_deref().is_some_and(|c| c != &*caller)
                || q.callee.as_deref().is_some_and(|c| c != &*callee)
            {
                continue;
            }
            let st = g.graph[e].stats(Some(Some(stage)));
            total.merge(&st);
            if st.findings() > 0 {
                broken.push((format!("{caller} -> {callee}"), st.findings(), kinds(&st)));
            }
        }
        if q.caller.is_none() {
            for n in g.graph.node_indices() {
                let node = &g.graph[n];
                let name = node.key.name(sym);
                if q.callee.as_deref().is_some_and(|c| c != &*name) {
                    continue;
                }
                let st = node.own.stats(Some(Some(stage)));
                total.merge(&st);
                if st.findings() > 0 {
                    broken.push((format!("{name} (no caller)"), st.findings(), kinds(&st)));
                }
            }
        }
    }
    let judged = total.judged();
    let good = total.verdicts[Verdict::Ok as usize] + total.verdicts[Verdict::Absent as usize];
    let consistency = (judged > 0).then(|| good as f64 / judged as f64);
    let findings = total.findings();
    let mut reasons = Vec::new();
    if judged == 0 && !q.allow_empty {
        reasons.push(format!(
            "no edge carried stage '{}' in the last {window}: no traffic is no evidence (allow_empty=true to pass anyway)",
            q.stage
        ));
    }
    if findings > q.max_findings {
        reasons.push(format!(
            "{findings} findings for stage '{}' in the last {window}, more than max_findings={}",
            q.stage, q.max_findings
        ));
        broken.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (edge, n, by_kind) in &broken {
            let kinds: Vec<String> = by_kind
                .iter()
                .map(|(v, n)| format!("{} {n}", v.as_str()))
                .collect();
            reasons.push(format!("{edge}: {n} ({})", kinds.join(", ")));
        }
    }
    if let (Some(min), Some(c)) = (q.min_consistency, consistency)
        && c < min
    {
        reasons.push(format!(
            "consistency {c:.4} for stage '{}' is below min_consistency={min}",
            q.stage
        ));
    }
    GateResult {
        pass: reasons.is_empty(),
        stage: q.stage.clone(),
        window,
        findings,
        edges_checked: judged,
        consistency,
        reasons,
    }
}

fn kinds(s: &StageStats) -> Vec<(Verdict, u64)> {
    Verdict::ALL
        .iter()
        .filter(|v| v.is_finding() && s.first_breaks[**v as usize] > 0)
        .map(|&v| (v, s.first_breaks[v as usize]))
        .collect()
}

/// The gate's parameters, for the OpenAPI document.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct GateParams {
    /// The stage being rolled out, e.g. `canary`
    stage: String,
    /// How far back to look, e.g. `5m` (default 5m; whole minutes)
    window: Option<String>,
    /// Findings (first breaks) allowed (default 0)
    max_findings: Option<u64>,
    /// Share of judged edges that must be ok or absent, 0 to 1 (default: not checked)
    min_consistency: Option<f64>,
    /// Only edges from this service
    caller: Option<String>,
    /// Only edges to this service
    callee: Option<String>,
    /// Pass when no edge carried the stage (default false: no traffic is no evidence)
    allow_empty: Option<bool>,
}

async fn run(st: &ApiState, q: &GateQuery) -> Result<GateResult, ApiError> {
    let since = crate::wall_ms().saturating_sub(q.window.as_millis() as u64);
    let g = st
        .reader
        .graph(Window {
            since_ms: Some(since),
            until_ms: None,
        })
        .await?;
    Ok(judge(q, &g, st.reader.symbols()))
}

/// Whether a stage's traffic kept its tag over a recent window: for Argo Rollouts `web` metrics
/// (`successCondition: result.pass == true`). Always 200 with the verdict in `pass`.
#[utoipa::path(
    get,
    path = "/api/v1/gate",
    tag = "gate",
    params(GateParams),
    responses(
        (status = 200, description = "The verdict; `pass` says whether to promote", body = GateResult),
        (status = 400, description = "A bad parameter", body = ErrorBody),
    )
)]
pub async fn gate_get(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    params::only(&q, &GateQuery::PARAMS)?;
    let query = GateQuery::parse(&q.0)?;
    Ok(axum::Json(run(&st, &query).await?).into_response())
}

/// A Flagger webhook call; the gate's parameters come from its `metadata`.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)]
struct FlaggerWebhook {
    name: Option<String>,
    namespace: Option<String>,
    phase: Option<String>,
    /// The gate's parameters, as strings: `stage`, `window`, `max_findings`, ...
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// The gate as a Flagger webhook (`type: pre-rollout` or `rollout`): 200 when it passes, 412 with
/// the same body when it does not, so that Flagger halts the rollout.
#[utoipa::path(
    post,
    path = "/api/v1/gate/webhook",
    tag = "gate",
    request_body = FlaggerWebhook,
    responses(
        (status = 200, description = "Passed", body = GateResult),
        (status = 412, description = "Did not pass", body = GateResult),
        (status = 400, description = "Not a Flagger webhook payload, or bad metadata", body = ErrorBody),
    )
)]
pub async fn gate_webhook(
    State(st): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let hook: FlaggerWebhook = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("body", format!("not a Flagger webhook payload: {e}")))?;
    let query = GateQuery::parse(&hook.metadata).map_err(|e| {
        ApiError::BadParam(BadParam {
            message: format!("{} (in metadata)", e.message),
            ..e
        })
    })?;
    let result = run(&st, &query).await?;
    let status = if result.pass {
        StatusCode::OK
    } else {
        StatusCode::PRECONDITION_FAILED
    };
    Ok((status, axum::Json(result)).into_response())
}
