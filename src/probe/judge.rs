//! The probe's verdict, from its requests and their finalised traces: per stage, every hop with
//! its verdicts and the instance stages that served it, each first break once with how many
//! requests it broke, the expected services not reached, the instance-stage expectations not met,
//! and the entry's answers. Pure: no I/O.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use super::Plan;
use super::collector::{Detached, Traced};
use super::entry::{PROBE_SERVICE, Sent};

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every hop `ok`, every expectation met, every entry request answered 2xx.
    Pass,
    Fail,
}

pub struct Timing {
    pub total: Duration,
    pub trace_idle: Duration,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub target: String,
    /// What a successful entry answer is: `2xx`, or gRPC `OK`.
    pub success: &'static str,
    pub collector: String,
    pub requests_per_stage: u32,
    /// From the first request to the verdict.
    pub elapsed_ms: u64,
    /// The collector's `--trace-idle`: most of the wait.
    pub trace_idle_ms: u64,
    pub stages: Vec<StageReport>,
}

#[derive(Serialize, Debug)]
pub struct StageReport {
    pub stage: String,
    pub passed: bool,
    pub requests: u32,
    pub entry: EntryReport,
    pub hops: Vec<HopReport>,
    pub first_breaks: Vec<BreakReport>,
    /// `--expect-services`, met or not.
    pub expected_services: Vec<String>,
    /// Expected services some requests did not reach.
    pub unreached: Vec<Unreached>,
    pub instance_stages: Vec<InstanceExpectation>,
}

#[derive(Serialize, Debug, Default)]
pub struct EntryReport {
    /// Answered 2xx (gRPC: OK).
    pub ok: u32,
    pub failed: Vec<EntryFailure>,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct EntryFailure {
    /// The HTTP status or gRPC code; none when nothing came back.
    pub status: Option<String>,
    pub error: Option<String>,
    pub requests: u32,
}

#[derive(Serialize, Debug)]
pub struct HopReport {
    pub caller: String,
    pub callee: String,
    pub scope: String,
    /// Edges judged on this hop, over the stage's requests.
    pub calls: u32,
    pub verdicts: BTreeMap<String, u32>,
    /// Which deployments served the calls (`none`: no instance stage on the resource).
    pub instance_stages: BTreeMap<String, u32>,
    pub ok: bool,
}

#[derive(Serialize, Debug)]
pub struct BreakReport {
    pub kind: String,
    pub caller: Option<String>,
    pub callee: String,
    pub scope: String,
    /// Requests of the stage it broke.
    pub requests: u32,
    pub detail: String,
    pub example_trace: String,
    /// The example on the collector's dashboard.
    pub link: String,
    /// Found in another trace, one that a call made inside the request started: the call left
    /// the request's trace.
    pub detached: bool,
}

#[derive(Serialize, Debug)]
pub struct Unreached {
    /// `(any service)`: no instrumented service reported a span of the request.
    pub service: String,
    pub requests: u32,
}

#[derive(Serialize, Debug)]
pub struct InstanceExpectation {
    pub service: String,
    pub stage: String,
    pub met: bool,
    /// Requests by the instance stages that served them at the service (`not reached`, `none`).
    pub served_by: BTreeMap<String, u32>,
}

/// Judges every stage of the run.
pub fn judge(
    plan: &Plan,
    sent: &[Sent],
    traces: &[Traced],
    detached: &[Detached],
    timing: Timing,
) -> Report {
    let by_id: HashMap<&str, &Traced> = traces.iter().map(|t| (t.trace_id.as_str(), t)).collect();
    let stages: Vec<StageReport> = plan
        .stages
        .iter()
        .map(|stage| {
            let requests: Vec<(&Sent, Option<&Traced>)> = sent
                .iter()
                .filter(|s| &s.stage == stage)
                .map(|s| (s, by_id.get(s.trace_id.as_str()).copied()))
                .collect();
            judge_stage(plan, stage, &requests, detached)
        })
        .collect();
    let outcome = if stages.iter().all(|s| s.passed) {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    Report {
        outcome,
        target: plan.target.describe(),
        success: plan.target.success(),
        collector: plan.collector.clone(),
        requests_per_stage: plan.requests,
        elapsed_ms: timing.total.as_millis() as u64,
        trace_idle_ms: timing.trace_idle.as_millis() as u64,
        stages,
    }
}

fn judge_stage(
    plan: &Plan,
    stage: &str,
    requests: &[(&Sent, Option<&Traced>)],
    detached: &[Detached],
) -> StageReport {
    let mut entry = EntryReport::default();
    for (s, _) in requests {
        if s.answer.ok {
            entry.ok += 1;
            continue;
        }
        match entry
            .failed
            .iter_mut()
            .find(|f| f.status == s.answer.status && f.error == s.answer.error)
        {
            Some(f) => f.requests += 1,
            None => entry.failed.push(EntryFailure {
                status: s.answer.status.clone(),
                error: s.answer.error.clone(),
                requests: 1,
            }),
        }
    }
    let traces: Vec<&Traced> = requests.iter().filter_map(|(_, t)| *t).collect();

    let mut hops: BTreeMap<(String, String, String), HopReport> = BTreeMap::new();
    for h in traces.iter().flat_map(|t| &t.hops) {
        let r = hops
            .entry((h.caller.clone(), h.callee.clone(), h.scope.clone()))
            .or_insert_with(|| HopReport {
                caller: h.caller.clone(),
                callee: h.callee.clone(),
                scope: h.scope.clone(),
                calls: 0,
                verdicts: BTreeMap::new(),
                instance_stages: BTreeMap::new(),
                ok: true,
            });
        r.calls += 1;
        *r.verdicts.entry(h.verdict.clone()).or_default() += 1;
        r.ok &= h.verdict == "ok";
        if h.scope == "cross_service" {
            let served = h.instance_stage.as_deref().unwrap_or("none");
            *r.instance_stages.entry(served.to_string()).or_default() += 1;
        }
    }

    // Each first break once, with the requests it broke.
    let mut breaks: Vec<BreakReport> = Vec::new();
    let mut add = |kind: &str,
                   caller: &Option<String>,
                   callee: &str,
                   scope: &str,
                   detail: &str,
                   example: &str,
                   detached: bool| {
        match breaks.iter_mut().find(|b| {
            b.kind == kind
                && &b.caller == caller
                && b.callee == callee
                && b.scope == scope
                && b.detached == detached
        }) {
            Some(b) => b.requests += 1,
            None => breaks.push(BreakReport {
                kind: kind.to_string(),
                caller: caller.clone(),
                callee: callee.to_string(),
                scope: scope.to_string(),
                requests: 1,
                detail: detail.to_string(),
                example_trace: example.to_string(),
                link: format!("{}/traces/{example}", plan.collector),
                detached,
            }),
        }
    };
    for t in &traces {
        for f in t.findings.iter().filter(|f| f.first_break) {
            add(
                &f.kind,
                &f.edge.caller,
                &f.edge.callee,
                &f.scope,
                &f.detail,
                &t.trace_id,
                false,
            );
        }
        for d in detached.iter().filter(|d| d.inside == t.trace_id) {
            let f = &d.finding;
            let detail = format!(
                "trace {} began in {} while it served this request (correlated by time): {}",
                f.trace_id, f.callee.service, f.detail
            );
            add(
                &f.kind,
                &f.edge.caller,
                &f.edge.callee,
                &f.scope,
                &detail,
                &f.trace_id,
                true,
            );
        }
    }

    let reaches = |t: &Traced, svc: &str| t.served.iter().any(|s| s.service == svc);
    let mut unreached: Vec<Unreached> = plan
        .expect_services
        .iter()
        .map(|svc| Unreached {
            service: svc.clone(),
            requests: requests
                .iter()
                .filter(|(_, t)| !t.is_some_and(|t| reaches(t, svc)))
                .count() as u32,
        })
        .filter(|u| u.requests > 0)
        .collect();
    let nowhere = traces
        .iter()
        .filter(|t| t.served.iter().all(|s| s.service == PROBE_SERVICE))
        .count() as u32;
    if nowhere > 0 {
        unreached.push(Unreached {
            service: "(any service)".into(),
            requests: nowhere,
        });
    }

    let instance_stages: Vec<InstanceExpectation> = plan
        .expect_instance_stages
        .iter()
        .filter(|(_, st)| st == stage)
        .map(|(svc, st)| {
            let mut served_by: BTreeMap<String, u32> = BTreeMap::new();
            let mut met = true;
            for (_, t) in requests {
                let mut at: Vec<&str> = t
                    .iter()
                    .flat_map(|t| &t.served)
                    .filter(|s| &s.service == svc)
                    .map(|s| s.instance_stage.as_deref().unwrap_or("none"))
                    .collect();
                at.sort_unstable();
                at.dedup();
                met &= at == [st.as_str()];
                let key = if at.is_empty() {
                    "not reached".to_string()
                } else {
                    at.join("+")
                };
                *served_by.entry(key).or_default() += 1;
            }
            InstanceExpectation {
                service: svc.clone(),
                stage: st.clone(),
                met,
                served_by,
            }
        })
        .collect();

    let hops = in_call_order(hops.into_values().collect());
    let passed = entry.failed.is_empty()
        && hops.iter().all(|h| h.ok)
        && breaks.is_empty()
        && traces.iter().all(|t| t.findings.is_empty())
        && unreached.is_empty()
        && instance_stages.iter().all(|e| e.met);
    StageReport {
        stage: stage.to_string(),
        passed,
        requests: requests.len() as u32,
        entry,
        hops,
        first_breaks: breaks,
        expected_services: plan.expect_services.clone(),
        unreached,
        instance_stages,
    }
}

/// Hops in the order a request makes them: by how many calls from the probe their caller is,
/// and within a caller, each call's in-process edge before the call itself.
fn in_call_order(hops: Vec<HopReport>) -> Vec<HopReport> {
    let mut depth: HashMap<&str, usize> = HashMap::from([(PROBE_SERVICE, 0)]);
    let mut frontier = vec![PROBE_SERVICE];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for caller in frontier {
            let d = depth[caller] + 1;
            for h in hops
                .iter()
                .filter(|h| h.caller == caller && h.scope == "cross_service")
            {
                if !depth.contains_key(h.callee.as_str()) {
                    depth.insert(&h.callee, d);
                    next.push(h.callee.as_str());
                }
            }
        }
        frontier = next;
    }
    let depth: HashMap<String, usize> =
        depth.into_iter().map(|(k, d)| (k.to_string(), d)).collect();
    let mut keyed: Vec<((usize, String, String, bool), HopReport)> = hops
        .into_iter()
        .map(|h| {
            let d = depth.get(&h.caller).copied().unwrap_or(usize::MAX);
            (
                (
                    d,
                    h.caller.clone(),
                    h.callee.clone(),
                    h.scope == "cross_service",
                ),
                h,
            )
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, h)| h).collect()
}

#[cfg(test)]
mod tests;
