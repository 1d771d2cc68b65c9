//! The `grayscope` binary as users run it: `check` on the files in `tests/data/` (written for this
//! project), configuration precedence through real environment variables, and `serve` shutting down
//! on SIGTERM without losing what it accepted.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn grayscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("GRAYSCOPE_CONFIG")
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_passes_a_consistent_trace() {
    let o = grayscope(&["check", "tests/data/clean.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "1 trace, 5 spans: stage propagation is consistent on every edge\n"
    );
}

#[test]
fn check_reports_the_hop_and_exits_1() {
    let o = grayscope(&["check", "tests/data/missing-in-process.json"]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.starts_with("trace 0af7651916cd43dd8448eb211c80319c\n"),
        "{out}"
    );
    assert!(
        out.contains("FIRST BREAK missing       users -> orders  (in_process)"),
        "{out}"
    );
    assert!(
        out.contains("users made an outgoing call without the request's context"),
        "{out}"
    );
    assert!(
        out.ends_with("1 trace, 5 spans: 1 finding (1 first break) in 1 trace\n"),
        "{out}"
    );

    let o = grayscope(&[
        "check",
        "--format",
        "json",
        "tests/data/missing-in-process.json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["traces"], 1);
    let f = &v["findings"][0];
    assert_eq!(f["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(f["kind"], "missing");
    assert_eq!(f["scope"], "in_process");
    assert_eq!(f["first_break"], true);
    assert_eq!(f["caller"]["span_id"], "a000000000000003");
    assert_eq!(f["callee"]["span_name"], "POST /orders");
    assert_eq!(f["callee"]["stage"], serde_json::Value::Null);
    assert_eq!(
        (f["edge"]["caller"].as_str(), f["edge"]["callee"].as_str()),
        (Some("users"), Some("orders"))
    );
}

#[test]
fn check_follows_span_links_from_a_consumer_to_its_producer_in_another_trace() {
    let o = grayscope(&[
        "check",
        "--format",
        "json",
        "tests/data/messaging-links-only.json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Two traces: the joined hop is not a trace of its own.
    assert_eq!(v["traces"], 2);
    let f = v["findings"].as_array().unwrap();
    assert_eq!(f.len(), 1, "{v}");
    assert_eq!(
        (f[0]["kind"].as_str(), f[0]["scope"].as_str()),
        (Some("missing"), Some("messaging"))
    );
    assert_eq!(f[0]["trace_id"], "2bf0000000000000000000000000000b");
    assert_eq!(f[0]["caller"]["span_name"], "orders.placed publish");
    assert_eq!(f[0]["messaging"]["destination"], "orders.placed");
    assert_eq!(f[0]["messaging"]["consumer_group"], "ledger");
}

#[test]
fn check_joins_traces_split_across_json_lines_files() {
    let o = grayscope(&[
        "check",
        "tests/data/split-a.jsonl",
        "tests/data/split-b.jsonl",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("trace 4bf92f3577b34da6a3ce929d0e0e4736\n  FIRST BREAK changed       users -> orders  (cross_service)"), "{out}");
    assert!(out.contains("trace 7d2b9c11e04f4a6b9f3e2a1c5d6e7f80\n  FIRST BREAK misrouted     users -> orders  (cross_service)"), "{out}");
    assert!(
        out.ends_with("3 traces, 15 spans: 2 findings (2 first breaks) in 2 traces\n"),
        "{out}"
    );
    // Either file alone leaves the trace incomplete: its other half is a broken trace.
    let o = grayscope(&["check", "tests/data/split-a.jsonl"]);
    assert!(
        text(&o.stdout).contains("broken_trace"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn check_applies_verification_flags() {
    let o = grayscope(&["check", "tests/data/invalid-value.json"]);
    assert_eq!(o.status.code(), Some(0), "any value is allowed by default");
    let o = grayscope(&[
        "check",
        "--allowed-stages",
        "stable,canary",
        "tests/data/invalid-value.json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.contains("FIRST BREAK invalid_value (unknown caller) -> gateway"),
        "{out}"
    );
    assert!(
        out.contains("carries stage 'canry', which is not an allowed value"),
        "{out}"
    );
}

#[test]
fn check_exits_2_naming_the_file_and_the_problem() {
    for (file, message) in [
        (
            "tests/data/not-json.json",
            "tests/data/not-json.json: invalid OTLP/JSON ExportTraceServiceRequest: EOF while parsing",
        ),
        (
            "tests/data/bad-line.jsonl",
            "tests/data/bad-line.jsonl:2: invalid OTLP/JSON ExportTraceServiceRequest: invalid type",
        ),
        (
            "tests/data/zero-trace-id.json",
            "tests/data/zero-trace-id.json: rejected 5 of 5 spans: resource_spans[0].scope_spans[0].spans[0]: trace_id is all zeroes",
        ),
        (
            "tests/data/nonexistent.json",
            "tests/data/nonexistent.json: cannot read: No such file or directory",
        ),
    ] {
        let o = grayscope(&["check", "tests/data/clean.json", file]);
        assert_eq!(o.status.code(), Some(2), "{file}");
        assert!(
            text(&o.stderr).contains(message),
            "{file}: {}",
            text(&o.stderr)
        );
        assert!(o.stdout.is_empty(), "no report for unreadable input");
    }
}

#[test]
fn config_precedence_is_flag_then_environment_then_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grayscope.toml");
    std::fs::write(
        &file,
        "trace-idle = \"3s\"\nworkers = 3\nsample-clean = 0.5\nstage-keys = [\"from-file\"]\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args(["serve", "--print-config", "--workers", "5"])
        .env("GRAYSCOPE_CONFIG", &file)
        .env("GRAYSCOPE_WORKERS", "4")
        .env("GRAYSCOPE_TRACE_IDLE", "2s")
        .env("GRAYSCOPE_STAGE_KEYS", "a,b")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let cfg: toml::Table = toml::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(
        cfg["workers"].as_integer(),
        Some(5),
        "flag beats environment"
    );
    assert_eq!(
        cfg["trace-idle"].as_str(),
        Some("2s"),
        "environment beats file"
    );
    assert_eq!(
        cfg["sample-clean"].as_float(),
        Some(0.5),
        "file beats default"
    );
    assert_eq!(cfg["stage-keys"].as_array().unwrap().len(), 2);
    assert_eq!(
        cfg["otlp-grpc"].as_str(),
        Some("127.0.0.1:4317"),
        "defaults fill the rest"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args(["serve", "--print-config"])
        .env("GRAYSCOPE_TRACE_IDLE", "soon")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("'soon' is not a duration"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn serve_finalises_everything_it_accepted_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut child = common::binary::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_grayscope"))
            .args([
                "serve",
                "--otlp-grpc",
                "127.0.0.1:0",
                "--otlp-http",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(data.path())
            .args([
                "--trace-idle",
                "10m",
                "--shutdown-grace",
                "300ms",
                "--log",
                "info",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // "grayscope: OTLP/gRPC on A, OTLP/HTTP on B, API and metrics on http://C"
    let addr = |after: &str| -> String {
        let rest = &line[line.find(after).unwrap() + after.len()..];
        rest.split([',', '\n']).next().unwrap().trim().to_string()
    };
    let http = addr("OTLP/HTTP on ");
    let api = addr("metrics on http://");
    assert!(!http.ends_with(":0") && !api.ends_with(":0"), "{line}");

    let body = serde_json::json!({"resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "users"}}]},
    "scopeSpans": [{"spans": [
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": "GET /u", "kind": 2,
         "attributes": [{"key": "x-release-stage", "value": {"stringValue": "canary"}}]},
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b8", "parentSpanId": "00f067aa0ba902b7",
         "name": "call orders", "kind": 3}
    ]}]}]});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{http}/v1/traces"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);

    // A client that sends half a request and never the rest must not hold the shutdown.
    let mut stalled = std::net::TcpStream::connect(&http).unwrap();
    std::io::Write::write_all(
        &mut stalled,
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"resou",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains(
            "still had requests in flight after 150ms (half of --shutdown-grace); closing it"
        ),
        "{log}"
    );
    assert!(
        log.contains("finalised at shutdown: 1 traces, 1 findings"),
        "{log}"
    );
    drop(stalled);
}

#[test]
fn serve_refuses_an_unprotected_listener_off_loopback_before_binding_anything() {
    let o = Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args(["serve", "--http", "0.0.0.0:0", "--otlp-grpc", "127.0.0.1:0"])
        .args(["--otlp-http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("http: refusing to listen on 0.0.0.0:0 with neither TLS nor tokens"),
        "{err}"
    );
    assert!(err.contains("--allow-insecure-listen"), "{err}");

    // The security settings print as the flags that give them, and read back from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grayscope.toml");
    std::fs::write(
        &file,
        "http = \"0.0.0.0:0\"\nallow-insecure-listen = true\ntls-cert = \"/c.pem\"\ntls-key = \"/c.key\"\nread-tokens = \"/read\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args(["serve", "--print-config", "--http-tls-cert", "/api.pem"])
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let cfg: toml::Table = toml::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(cfg["allow-insecure-listen"].as_bool(), Some(true));
    assert_eq!(cfg["otlp-grpc-tls-cert"].as_str(), Some("/c.pem"));
    assert_eq!(cfg["http-tls-cert"].as_str(), Some("/api.pem"));
    assert_eq!(cfg["http-tls-key"].as_str(), Some("/c.key"));
    assert_eq!(cfg["read-tokens"].as_str(), Some("/read"));
    assert!(!cfg.contains_key("tls-cert"), "printed per listener");
}

/// A service that forwards the stage by hand and captures it only as a request header on its
/// SERVER spans: its database call, INTERNAL span and CLIENT span carry none, and that is no
/// finding; a header it does not forward is `missing` on the hop to the next service.
#[test]
fn check_judges_a_captured_header_from_service_to_service() {
    let o = grayscope(&["check", "tests/data/captured-headers.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert_eq!(
        text(&o.stdout),
        "1 trace, 5 spans: stage propagation is consistent on every edge\n"
    );
    let o = grayscope(&["check", "tests/data/captured-headers-not-forwarded.json"]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.contains("FIRST BREAK missing       orders -> payments  (cross_service)"),
        "{out}"
    );
    assert!(
        out.contains("'canary' is the stage orders received"),
        "{out}"
    );
    assert!(
        out.ends_with("1 trace, 5 spans: 1 finding (1 first break) in 1 trace\n"),
        "{out}"
    );
    // Judged as if every span carried the stage, the same services are red on every request.
    let o = grayscope(&[
        "check",
        "--stage-modes",
        "*=every-span",
        "tests/data/captured-headers.json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("missing       orders -> orders  (in_process)"));
}
