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
use utoipa::ToSchema;

use super::error::Failed;
use super::params::{self, GateParams, Query};
use super::{ApiError, ApiState};
use crate::aggregate::{ServiceGraph, StageStats};
use crate::intern::Symbols;
use crate::read::param::{self as param, BadParam, Param, Params, Rule};
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

const STAGE: Param = Param::required(
    "stage",
    Rule::Text,
    "The stage being rolled out, e.g. `canary`",
);
const WINDOW: Param = Param::optional(
    "window",
    Rule::Duration,
    "How far back to look (default 5m; whole minutes)",
);
const MAX_FINDINGS: Param = Param::optional(
    "max_findings",
    Rule::Count {
        min: 0,
        max: 999_999_999,
    },
    "Findings (first breaks) allowed (default 0)",
);
const MIN_CONSISTENCY: Param = Param::optional(
    "min_consistency",
    Rule::Ratio,
    "Share of judged edges that must be ok or absent (default: not checked)",
);
const CALLER: Param = Param::optional("caller", Rule::Text, "Only edges from this service");
const CALLEE: Param = Param::optional("callee", Rule::Text, "Only edges to this service");
const ALLOW_EMPTY: Param = Param::optional(
    "allow_empty",
    Rule::Flag,
    "Pass when no edge carried the stage (default false: no traffic is no evidence)",
);

impl GateQuery {
    /// Its parameters.
    pub const PARAMS: [&Param; 7] = [
        &STAGE,
        &WINDOW,
        &MAX_FINDINGS,
        &MIN_CONSISTENCY,
        &CALLER,
        &CALLEE,
        &ALLOW_EMPTY,
    ];

    /// Reads a gate from string parameters (query string, or a Flagger webhook's `metadata`).
    pub fn parse(p: &impl Params) -> Result<GateQuery, BadParam> {
        Ok(GateQuery {
            stage: STAGE.need(STAGE.text(p))?.to_string(),
            window: WINDOW.duration(p)?.unwrap_or(Duration::from_secs(300)),
            max_findings: MAX_FINDINGS.count(p)?.unwrap_or(0),
            min_consistency: MIN_CONSISTENCY.ratio(p)?,
            caller: CALLER.text(p)?.map(str::to_string),
            callee: CALLEE.text(p)?.map(str::to_string),
            allow_empty: ALLOW_EMPTY.flag(p)?.unwrap_or(false),
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
        Failed,
    )
)]
pub async fn gate_get(State(st): State<ApiState>, q: Query) -> Result<Response, ApiError> {
    GateParams::SET.only(&q)?;
    let query = GateQuery::parse(&q.0)?;
    Ok(axum::Json(run(&st, &query).await?).into_response())
}

/// A Flagger webhook call; the gate's parameters come from its `metadata`. The canary's name,
/// namespace and phase are checked as the document says but not used; fields Flagger may add
/// later pass.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct FlaggerWebhook {
    name: Option<String>,
    namespace: Option<String>,
    phase: Option<String>,
    metadata: HashMap<String, String>,
}

impl utoipa::PartialSchema for FlaggerWebhook {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut metadata = serde_json::Map::new();
        for p in GateQuery::PARAMS {
            let mut schema = p.rule.schema(p.required, true);
            schema["description"] = p.description().into();
            metadata.insert(p.name.to_string(), schema);
        }
        let required: Vec<&str> = GateQuery::PARAMS
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name)
            .collect();
        let text = serde_json::json!({"type": ["string", "null"]});
        params::object_schema(serde_json::json!({
            "type": "object",
            "required": ["metadata"],
            "properties": {
                "name": text,
                "namespace": text,
                "phase": text,
                "metadata": {
                    "type": "object",
                    "description": "The gate's parameters, each written as a string",
                    "required": required,
                    "properties": metadata,
                    "additionalProperties": false,
                },
            },
        }))
    }
}

impl utoipa::ToSchema for FlaggerWebhook {}

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
        (status = 413, description = "The body is over 256 KiB", body = super::ErrorBody),
        Failed,
    )
)]
pub async fn gate_webhook(
    State(st): State<ApiState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = ApiError::body(body)?;
    let hook: FlaggerWebhook = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("body", format!("not a Flagger webhook payload: {e}")))?;
    let in_metadata = |e: BadParam| {
        ApiError::BadParam(BadParam {
            message: format!("{} (in metadata)", e.message),
            ..e
        })
    };
    param::only(hook.metadata.keys().map(String::as_str), &GateQuery::PARAMS)
        .map_err(in_metadata)?;
    let query = GateQuery::parse(&hook.metadata).map_err(in_metadata)?;
    let result = run(&st, &query).await?;
    let status = if result.pass {
        StatusCode::OK
    } else {
        StatusCode::PRECONDITION_FAILED
    };
    Ok((status, axum::Json(result)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::param::map;

    #[test]
    fn a_gate_reads_every_parameter() {
        let q = GateQuery::parse(&map(&[
            ("stage", "canary"),
            ("window", "1h30m"),
            ("max_findings", "3"),
            ("min_consistency", "0.99"),
            ("caller", "users"),
            ("callee", "orders"),
            ("allow_empty", "true"),
        ]))
        .unwrap();
        assert_eq!(q.stage, "canary");
        assert_eq!(q.window, Duration::from_secs(5400));
        assert_eq!(q.max_findings, 3);
        assert_eq!(q.min_consistency, Some(0.99));
        assert_eq!(q.caller.as_deref(), Some("users"));
        assert_eq!(q.callee.as_deref(), Some("orders"));
        assert!(q.allow_empty);
        let q = GateQuery::parse(&map(&[("stage", "canary")])).unwrap();
        assert_eq!((q.window, q.max_findings), (Duration::from_secs(300), 0));
        for (name, value) in [
            ("max_findings", "-1"),
            ("max_findings", "1000000000"),
            ("min_consistency", "1.5"),
            ("window", "5"),
            ("allow_empty", "yes"),
        ] {
            let e = GateQuery::parse(&map(&[("stage", "canary"), (name, value)])).unwrap_err();
            assert_eq!(e.name, name);
        }
    }
}
