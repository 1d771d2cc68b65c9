//! The probe's report as a person reads it (a table per stage), as JSON, or as JUnit XML for CI
//! systems (a test suite per stage, a test case per hop and per expectation).

use std::fmt::Write;

use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};

use super::Format;
use super::judge::{Outcome, Report, StageReport};

pub fn render(r: &Report, format: Format) -> String {
    match format {
        Format::Text => text(r),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(r).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Junit => junit(r),
    }
}

fn counts(m: &std::collections::BTreeMap<String, u32>) -> String {
    m.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn hop_name(caller: &str, callee: &str, scope: &str) -> String {
    if scope == "in_process" {
        format!("{caller} -> {callee} (in process)")
    } else {
        format!("{caller} -> {callee}")
    }
}

fn text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "grayscope probe: {}, {} requests per stage; verdicts from {}",
        r.target, r.requests_per_stage, r.collector
    );
    for s in &r.stages {
        let _ = writeln!(
            out,
            "\nstage {}: {} ({} requests, {} answered {})",
            s.stage,
            if s.passed { "PASS" } else { "FAIL" },
            s.requests,
            s.entry.ok,
            r.success
        );
        for f in &s.entry.failed {
            let _ = writeln!(
                out,
                "  entry answered {} to {} requests{}",
                f.status.as_deref().unwrap_or("nothing"),
                f.requests,
                f.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        let rows: Vec<[String; 4]> = s
            .hops
            .iter()
            .map(|h| {
                [
                    hop_name(&h.caller, &h.callee, &h.scope),
                    h.calls.to_string(),
                    counts(&h.verdicts),
                    counts(&h.instance_stages),
                ]
            })
            .collect();
        let header = ["hop", "calls", "verdicts", "served by"].map(str::to_string);
        let widths: Vec<usize> = (0..4)
            .map(|i| {
                rows.iter()
                    .chain(std::iter::once(&header))
                    .map(|r| r[i].len())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&header).chain(rows.iter()) {
            let line = format!(
                "  {:<w0$}  {:>w1$}  {:<w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if s.hops.is_empty() {
            out.push_str("  (no hop was judged)\n");
        }
        for b in &s.first_breaks {
            let _ = writeln!(
                out,
                "  first break: {} on {}, {} of {} requests\n    {}\n    {}",
                b.kind,
                hop_name(b.caller.as_deref().unwrap_or("?"), &b.callee, &b.scope),
                b.requests,
                s.requests,
                b.detail,
                b.link
            );
        }
        for u in &s.unreached {
            let _ = writeln!(
                out,
                "  not reached: {} by {} of {} requests",
                u.service, u.requests, s.requests
            );
        }
        for e in &s.instance_stages {
            let _ = writeln!(
                out,
                "  {}={}: {} (served by {})",
                e.service,
                e.stage,
                if e.met { "met" } else { "NOT MET" },
                counts(&e.served_by)
            );
        }
    }
    let failed: Vec<&str> = r
        .stages
        .iter()
        .filter(|s| !s.passed)
        .map(|s| s.stage.as_str())
        .collect();
    let _ = writeln!(
        out,
        "\n{} in {:.1} s (collector --trace-idle {:.1} s)",
        match r.outcome {
            Outcome::Pass => "PASS".to_string(),
            Outcome::Fail => format!("FAIL: {}", failed.join(", ")),
        },
        r.elapsed_ms as f64 / 1000.0,
        r.trace_idle_ms as f64 / 1000.0
    );
    out
}

fn case(name: String, class: &str, failure: Option<(String, String)>) -> TestCase {
    let status = match failure {
        None => TestCaseStatus::success(),
        Some((message, description)) => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(message).set_description(description);
            s
        }
    };
    let mut c = TestCase::new(name, status);
    c.set_classname(class.to_string());
    c
}

fn suite(s: &StageReport, success: &str) -> TestSuite {
    let class = format!("grayscope.probe.{}", s.stage);
    let mut suite = TestSuite::new(format!("stage {}", s.stage));
    let entry_failure = (!s.entry.failed.is_empty()).then(|| {
        let lines: Vec<String> = s
            .entry
            .failed
            .iter()
            .map(|f| {
                format!(
                    "{} requests: {}{}",
                    f.requests,
                    f.status.as_deref().unwrap_or("no answer"),
                    f.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        (
            format!(
                "{} of {} requests not answered {success}",
                s.requests - s.entry.ok,
                s.requests
            ),
            lines.join("\n"),
        )
    });
    suite.add_test_case(case(
        format!("entry answers {success}"),
        &class,
        entry_failure,
    ));
    for h in &s.hops {
        let breaks: Vec<String> = s
            .first_breaks
            .iter()
            .filter(|b| {
                b.caller.as_deref() == Some(h.caller.as_str())
                    && b.callee == h.callee
                    && b.scope == h.scope
            })
            .map(|b| format!("{}: {}\n{}", b.kind, b.detail, b.link))
            .collect();
        let failure = (!h.ok).then(|| {
            (
                format!("verdicts {}", counts(&h.verdicts)),
                breaks.join("\n\n"),
            )
        });
        suite.add_test_case(case(
            hop_name(&h.caller, &h.callee, &h.scope),
            &class,
            failure,
        ));
    }
    // Breaks on no judged hop of the request's own trace: orphans, calls that left it.
    for b in &s.first_breaks {
        let on_hop = s.hops.iter().any(|h| {
            b.caller.as_deref() == Some(h.caller.as_str())
                && b.callee == h.callee
                && b.scope == h.scope
        });
        if !on_hop {
            let name = hop_name(b.caller.as_deref().unwrap_or("?"), &b.callee, &b.scope);
            suite.add_test_case(case(
                name,
                &class,
                Some((
                    format!("{} in {} of {} requests", b.kind, b.requests, s.requests),
                    format!("{}\n{}", b.detail, b.link),
                )),
            ));
        }
    }
    let expected = s.expected_services.iter().map(String::as_str);
    let unexpected = s
        .unreached
        .iter()
        .map(|u| u.service.as_str())
        .filter(|u| !s.expected_services.iter().any(|e| e == u));
    for service in expected.chain(unexpected) {
        let unreached = s.unreached.iter().find(|u| u.service == service);
        suite.add_test_case(case(
            format!("reaches {service}"),
            &class,
            unreached.map(|u| {
                (
                    format!("not reached by {} of {} requests", u.requests, s.requests),
                    String::new(),
                )
            }),
        ));
    }
    for e in &s.instance_stages {
        suite.add_test_case(case(
            format!("{} served by {}", e.service, e.stage),
            &class,
            (!e.met).then(|| (format!("served by {}", counts(&e.served_by)), String::new())),
        ));
    }
    suite
}

fn junit(r: &Report) -> String {
    let mut report = quick_junit::Report::new("grayscope probe");
    report.set_time(std::time::Duration::from_millis(r.elapsed_ms));
    for s in &r.stages {
        report.add_test_suite(suite(s, r.success));
    }
    report.to_string().unwrap_or_default()
}
