//! The rollout gate: a yes/no for progressive-delivery controllers (Argo Rollouts `web` metrics,
//! Flagger webhooks) on whether a stage's traffic kept its tag over a recent window.
//!
//! No traffic is no evidence: a window in which no edge carried the stage fails unless the caller
//! says an empty window is fine (`allow_empty`).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::aggregate::{ServiceGraph, StageStats};
use crate::intern::Symbols;
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
    /// Reads a gate from string parameters (query string, or a Flagger webhook's `metadata`).
    pub fn parse(p: &HashMap<String, String>) -> Result<GateQuery, (&'static str, String)> {
        let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let stage = get("stage")
            .ok_or(("stage", "is required (e.g. stage=canary)".to_string()))?
            .to_string();
        let window = match get("window") {
            None => Duration::from_secs(300),
            Some(w) => humantime::parse_duration(w)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or(("window", format!("'{w}' is not a duration like 5m")))?,
        };
        let max_findings = match get("max_findings") {
            None => 0,
            Some(v) => v
                .parse()
                .map_err(|_| ("max_findings", format!("'{v}' is not a count")))?,
        };
        let min_consistency = match get("min_consistency") {
            None => None,
            Some(v) => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or((
                        "min_consistency",
                        format!("'{v}' is not a ratio from 0 to 1"),
                    ))?,
            ),
        };
        let allow_empty = match get("allow_empty") {
            None => false,
            Some(v) => v
                .parse()
                .map_err(|_| ("allow_empty", format!("'{v}' is not true or false")))?,
        };
        Ok(GateQuery {
            stage,
            window,
            max_findings,
            min_consistency,
            caller: get("caller").map(str::to_string),
            callee: get("callee").map(str::to_string),
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
    let judged: u64 = total.verdicts.iter().sum();
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
