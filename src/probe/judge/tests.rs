use clap::Parser;

use super::*;
use crate::probe::collector::{Edge, Finding, Hop, Served, SpanRef};
use crate::probe::entry::Answer;

fn plan(extra: &[&str]) -> Plan {
    let mut args = vec![
        "grayscope",
        "probe",
        "--url",
        "http://gw:8080/checkout",
        "--collector",
        "http://c:8080",
        "--stage",
        "canary",
        "--stage",
        "stable",
        "--requests",
        "2",
    ];
    args.extend_from_slice(extra);
    match crate::cli::Cli::try_parse_from(args).unwrap().command {
        crate::cli::Command::Probe(p) => p.plan().unwrap(),
        other => panic!("{other:?}"),
    }
}

fn hop(caller: &str, callee: &str, scope: &str, verdict: &str, served: Option<&str>) -> Hop {
    Hop {
        caller: caller.into(),
        callee: callee.into(),
        scope: scope.into(),
        verdict: verdict.into(),
        instance_stage: served.map(str::to_string),
    }
}

/// grayscope-probe -> gateway -> orders, orders served by `orders_stage`.
fn trace(id: &str, orders_stage: &str, verdict: &str) -> Traced {
    Traced {
        trace_id: id.into(),
        state: "finalised".into(),
        member: None,
        hops: vec![
            hop(
                "gateway",
                "orders",
                "cross_service",
                verdict,
                Some(orders_stage),
            ),
            hop(
                "grayscope-probe",
                "gateway",
                "cross_service",
                "ok",
                Some("stable"),
            ),
            hop("gateway", "orders", "in_process", "ok", None),
        ],
        served: vec![
            Served {
                service: "gateway".into(),
                instance_stage: Some("stable".into()),
            },
            Served {
                service: "grayscope-probe".into(),
                instance_stage: None,
            },
            Served {
                service: "orders".into(),
                instance_stage: Some(orders_stage.into()),
            },
        ],
        findings: Vec::new(),
    }
}

fn finding(trace: &str, kind: &str, caller: &str, callee: &str) -> Finding {
    Finding {
        trace_id: trace.into(),
        kind: kind.into(),
        scope: "cross_service".into(),
        first_break: true,
        callee: SpanRef {
            service: callee.into(),
            span_id: "0000000000000003".into(),
        },
        edge: Edge {
            caller: Some(caller.into()),
            callee: callee.into(),
        },
        detail: format!("{kind} on {caller} -> {callee}"),
    }
}

fn sent(stage: &str, id: &str, status: &str) -> Sent {
    Sent {
        stage: stage.into(),
        trace_id: id.into(),
        answer: Answer {
            status: Some(status.into()),
            ok: status.starts_with('2'),
            error: None,
        },
    }
}

fn timing() -> Timing {
    Timing {
        total: Duration::from_secs(3),
        trace_idle: Duration::from_secs(2),
    }
}

#[test]
fn a_clean_run_passes_with_hops_in_call_order() {
    let p = plan(&[
        "--expect-services",
        "gateway,orders",
        "--expect-instance-stage",
        "orders=canary",
    ]);
    let sent = [
        sent("canary", "a1", "200"),
        sent("canary", "a2", "200"),
        sent("stable", "b1", "200"),
        sent("stable", "b2", "204"),
    ];
    let traces = [
        trace("a1", "canary", "ok"),
        trace("a2", "canary", "ok"),
        trace("b1", "stable", "ok"),
        trace("b2", "stable", "ok"),
    ];
    let r = judge(&p, &sent, &traces, &[], timing());
    assert_eq!(r.outcome, Outcome::Pass, "{r:#?}");
    let canary = &r.stages[0];
    let order: Vec<(&str, &str, &str)> = canary
        .hops
        .iter()
        .map(|h| (h.caller.as_str(), h.callee.as_str(), h.scope.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("grayscope-probe", "gateway", "cross_service"),
            ("gateway", "orders", "in_process"),
            ("gateway", "orders", "cross_service"),
        ]
    );
    assert_eq!(canary.hops[2].calls, 2);
    assert_eq!(canary.hops[2].instance_stages["canary"], 2);
    assert!(canary.instance_stages[0].met);
    // The expectation is about canary requests only.
    assert!(r.stages[1].instance_stages.is_empty());
}

#[test]
fn breaks_unmet_expectations_and_bad_answers_fail_their_stage_only() {
    let p = plan(&[
        "--expect-services",
        "gateway,orders,payments",
        "--expect-instance-stage",
        "orders=canary",
    ]);
    let sent = [
        sent("canary", "a1", "200"),
        sent("canary", "a2", "500"),
        sent("stable", "b1", "200"),
        sent("stable", "b2", "200"),
    ];
    let mut a1 = trace("a1", "stable", "changed");
    a1.findings
        .push(finding("a1", "changed", "gateway", "orders"));
    let mut a2 = trace("a2", "stable", "changed");
    a2.findings
        .push(finding("a2", "changed", "gateway", "orders"));
    let traces = [
        a1,
        a2,
        trace("b1", "stable", "ok"),
        trace("b2", "stable", "ok"),
    ];
    let r = judge(&p, &sent, &traces, &[], timing());
    assert_eq!(r.outcome, Outcome::Fail);
    let canary = &r.stages[0];
    assert!(!canary.passed);
    assert_eq!(
        canary.first_breaks.len(),
        1,
        "one break, counted per request"
    );
    let b = &canary.first_breaks[0];
    assert_eq!((b.kind.as_str(), b.requests), ("changed", 2));
    assert_eq!(b.link, "http://c:8080/traces/a1");
    assert_eq!(canary.entry.ok, 1);
    assert_eq!(
        canary.entry.failed,
        [EntryFailure {
            status: Some("500".into()),
            error: None,
            requests: 1
        }]
    );
    assert_eq!(canary.unreached[0].service, "payments");
    assert_eq!(canary.unreached[0].requests, 2);
    let e = &canary.instance_stages[0];
    assert!(!e.met);
    assert_eq!(e.served_by["stable"], 2);
    // Stable requests miss payments too, but nothing else.
    let stable = &r.stages[1];
    assert!(!stable.passed);
    assert!(stable.first_breaks.is_empty() && stable.entry.failed.is_empty());
    assert_eq!(stable.unreached.len(), 1);
}

#[test]
fn a_call_that_left_the_trace_is_a_break_of_the_request_it_left() {
    let p = plan(&[]);
    let sent = [
        sent("canary", "a1", "200"),
        sent("canary", "a2", "200"),
        sent("stable", "b1", "200"),
        sent("stable", "b2", "200"),
    ];
    let traces = ["a1", "a2", "b1", "b2"].map(|id| trace(id, "canary", "ok"));
    let orphan = Detached {
        inside: "b2".into(),
        finding: finding("ff", "broken_trace", "orders", "inventory"),
    };
    let r = judge(&p, &sent, &traces, &[orphan], timing());
    assert!(r.stages[0].passed);
    let stable = &r.stages[1];
    assert!(!stable.passed);
    let b = &stable.first_breaks[0];
    assert!(b.detached);
    assert_eq!((b.callee.as_str(), b.requests), ("inventory", 1));
    assert_eq!(b.link, "http://c:8080/traces/ff");
}

#[test]
fn a_request_no_service_reported_is_not_a_pass() {
    let p = plan(&[]);
    let sent = [sent("canary", "a1", "200")];
    let mut only_probe = trace("a1", "canary", "ok");
    only_probe.hops.clear();
    only_probe.served.retain(|s| s.service == PROBE_SERVICE);
    let r = judge(&p, &sent, &[only_probe], &[], timing());
    assert_eq!(r.outcome, Outcome::Fail);
    assert_eq!(r.stages[0].unreached[0].service, "(any service)");
}
