//! `grayscope probe` end to end: the binary against the demo mesh (real services instrumented
//! with the OpenTelemetry SDK, exporting real OTLP) and a real collector. Each demo fault fails the
//! probe naming exactly its hop and kind; a clean mesh passes, through the HTTP entry and through
//! a gRPC one; a canary no request reaches is caught only by `--expect-instance-stage`; a bad
//! answer at the entry is reported; no verdict (collector unreachable, traces not finalised in
//! time) exits 2.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use grayscope::app::Collector;
use grayscope::demo::{Demo, DemoOptions, Export, Protocol, parse_faults};
use prost::Message;
use serde_json::Value;

/// A collector quick to finalise and store, and the demo mesh exporting to it, sending nothing
/// by itself.
async fn rig(faults: &[&str]) -> (TestCollector, Demo) {
    rig_idle(faults, "300ms").await
}

/// [`rig`] with the collector's `--trace-idle`.
async fn rig_idle(faults: &[&str], trace_idle: &str) -> (TestCollector, Demo) {
    let mut args = test_args();
    args.flush_interval = Some("200ms".parse().unwrap());
    args.trace_idle = Some(trace_idle.parse().unwrap());
    let c = spawn_collector(args).await;
    let specs: Vec<String> = faults.iter().map(|s| s.to_string()).collect();
    let export = Export::new(Protocol::Grpc, Some(&format!("http://{}", c.otlp_grpc))).unwrap();
    let mut o = DemoOptions::new(export, parse_faults(&specs).unwrap());
    o.requests = Some(0);
    o.batch_delay = Duration::from_millis(100);
    let demo = Demo::start(o).await.expect("the demo mesh starts");
    (c, demo)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `grayscope probe` against collector `c` with `args`.
async fn probe(c: &Collector, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grayscope"));
    cmd.arg("probe")
        .args(["--collector", &format!("http://{}", c.http)])
        .args(["--otlp-endpoint", &format!("http://{}", c.otlp_grpc)])
        .args(args);
    run(cmd).await
}

async fn run(mut cmd: Command) -> Run {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn checkout(demo: &Demo) -> String {
    format!("{}/checkout?user=probe&item=sku-1", demo.gateway_url())
}

/// (kind, caller, callee, scope) of every first break of every stage.
fn first_breaks(report: &Value) -> BTreeSet<(String, String, String, String)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["first_breaks"].as_array().unwrap().iter())
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or("").to_string();
            (s("kind"), s("caller"), s("callee"), s("scope"))
        })
        .collect()
}

const ALL_SERVICES: &str = "gateway,users,orders,payments,inventory";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_demo_fault_fails_the_probe_on_exactly_its_hop() {
    for (fault, kind, scope) in [
        ("missing@orders->payments", "missing", "in_process"),
        ("changed@users->orders", "changed", "cross_service"),
        ("misroute@gateway->orders", "misrouted", "cross_service"),
        ("typo@orders->inventory", "key_mismatch", "cross_service"),
        (
            "lost-context@orders->inventory",
            "broken_trace",
            "in_process",
        ),
    ] {
        let (c, demo) = rig(&[fault]).await;
        let r = probe(
            &c,
            &[
                "--url",
                &checkout(&demo),
                "--requests",
                "3",
                "--stage",
                "canary",
                "--stage",
                "stable",
                "--format",
                "json",
            ],
        )
        .await;
        assert_eq!(r.code, Some(1), "{fault}: {}\n{}", r.stdout, r.stderr);
        let (caller, callee) = fault.split_once('@').unwrap().1.split_once("->").unwrap();
        let report = r.json();
        assert_eq!(report["outcome"], "fail");
        assert_eq!(
            first_breaks(&report),
            BTreeSet::from([(kind.into(), caller.into(), callee.into(), scope.into())]),
            "{fault}: {}",
            r.stdout
        );
        let canary = &report["stages"][0];
        assert_eq!(canary["passed"], false, "{fault}");
        assert_eq!(
            canary["first_breaks"][0]["requests"], 3,
            "{fault}: every canary request"
        );
        let link = canary["first_breaks"][0]["link"].as_str().unwrap();
        assert!(
            link.starts_with(&format!("http://{}/traces/", c.http)),
            "{link}"
        );
        demo.stop().await;
        c.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_mesh_passes_through_http_and_grpc_entries() {
    let (c, demo) = rig(&["none"]).await;
    let r = probe(
        &c,
        &[
            "--url",
            &checkout(&demo),
            "--requests",
            "4",
            "--stage",
            "canary",
            "--stage",
            "stable",
            "--expect-services",
            ALL_SERVICES,
            "--expect-instance-stage",
            "orders=canary",
            "--expect-instance-stage",
            "orders=stable",
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("stage canary: PASS (4 requests, 4 answered 2xx)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("orders=canary: met (served by canary 4)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("\nPASS in "), "{}", r.stdout);

    // JUnit: a suite per stage, a case per hop and per expectation, none failed.
    let r = probe(
        &c,
        &[
            "--url",
            &checkout(&demo),
            "--requests",
            "2",
            "--expect-services",
            "payments",
            "--format",
            "junit",
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("<?xml"), "{}", r.stdout);
    assert_eq!(r.stdout.matches("<testsuite ").count(), 1);
    assert!(
        r.stdout
            .contains(r#"<testcase name="orders -&gt; payments""#),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(r#"<testcase name="reaches payments""#),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(r#"<testcase name="entry answers 2xx""#),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("<failure"), "{}", r.stdout);

    // A gRPC entry: orders itself, with a PlaceOrder message as its protobuf bytes.
    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("place-order.bin");
    let req = grayscope::demo::proto::PlaceOrderRequest {
        user: "probe".into(),
        item: "sku-1".into(),
        quantity: 1,
    };
    std::fs::write(&msg, req.encode_to_vec()).unwrap();
    let r = probe(
        &c,
        &[
            "--grpc",
            &demo.orders_addr().to_string(),
            "--method",
            "grayscope.demo.v1.Orders/PlaceOrder",
            "--data",
            &format!("@{}", msg.display()),
            // The stable instance, asked directly: a canary request there would be misrouted.
            "--stage",
            "stable",
            "--requests",
            "3",
            "--expect-services",
            "orders,payments,inventory",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    let hops: BTreeSet<(String, String)> = report["stages"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["scope"] == "cross_service")
        .map(|h| {
            (
                h["caller"].as_str().unwrap().to_string(),
                h["callee"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        BTreeSet::from([
            ("grayscope-probe".into(), "orders".into()),
            ("orders".into(), "inventory".into()),
            ("orders".into(), "payments".into()),
        ])
    );
    assert_eq!(report["stages"][0]["entry"]["ok"], 3);
    demo.stop().await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_that_no_request_reaches_is_caught_only_by_the_instance_expectation() {
    // Both callers of orders route everything to the stable instance (a stale resolver cache):
    // the canary instance never serves, so no collector knows it is live.
    let (c, demo) = rig(&["misroute@users->orders", "misroute@gateway->orders"]).await;
    let args = [
        "--url",
        &checkout(&demo),
        "--requests",
        "3",
        "--format",
        "json",
    ];
    let without = probe(&c, &args).await;
    assert_eq!(
        without.code,
        Some(0),
        "{}\n{}",
        without.stdout,
        without.stderr
    );
    let mut with = args.to_vec();
    with.extend(["--expect-instance-stage", "orders=canary"]);
    let r = probe(&c, &with).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    let e = &report["stages"][0]["instance_stages"][0];
    assert_eq!(e["service"], "orders");
    assert_eq!(e["met"], false);
    assert_eq!(e["served_by"], serde_json::json!({"stable": 3}));
    assert!(
        first_breaks(&report).is_empty(),
        "no finding: only the expectation fails"
    );
    // In JUnit, the expectation's test case fails, with what served the requests.
    let junit: Vec<&str> = with
        .iter()
        .map(|a| if *a == "json" { "junit" } else { a })
        .collect();
    let r = probe(&c, &junit).await;
    assert_eq!(r.code, Some(1));
    let case = r
        .stdout
        .split("<testcase ")
        .find(|c| c.starts_with(r#"name="orders served by canary""#))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(
        case.contains(r#"<failure message="served by stable 3""#),
        "{case}"
    );
    assert_eq!(r.stdout.matches("<failure").count(), 1, "{}", r.stdout);
    demo.stop().await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_answering_500_is_reported_apart_from_propagation() {
    let c = spawn_collector(test_args()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/boom",
            axum::routing::get(|| async {
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom")
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    let r = probe(
        &c,
        &[
            "--url",
            &format!("http://{addr}/boom"),
            "--requests",
            "2",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let stage = &r.json()["stages"][0];
    assert_eq!(
        stage["entry"],
        serde_json::json!({"ok": 0, "failed": [{"status": "500", "error": null, "requests": 2}]})
    );
    // Nothing behind it reported a span: no hop was judged, and that is said too.
    assert_eq!(stage["unreached"][0]["service"], "(any service)");
    assert_eq!(stage["first_breaks"], serde_json::json!([]));
    server.abort();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_verdict_exits_2_saying_why() {
    // No collector: nothing is sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grayscope"));
    cmd.args(["probe", "--url", "http://127.0.0.1:1/x"])
        .args(["--collector", &format!("http://127.0.0.1:{port}")]);
    let r = run(cmd).await;
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.starts_with(&format!(
            "grayscope probe: the collector at http://127.0.0.1:{port} cannot be reached: "
        )),
        "{}",
        r.stderr
    );

    // A collector that holds traces longer than the probe waits.
    let (c, demo) = rig_idle(&["none"], "10m").await;
    let r = probe(
        &c,
        &[
            "--url",
            &checkout(&demo),
            "--requests",
            "2",
            "--timeout",
            "1s",
        ],
    )
    .await;
    assert_eq!(r.code, Some(2), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("2 of 2 traces were not finalised within --timeout 1s: "),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.matches("(assembling)").count(), 2, "{}", r.stderr);
    assert!(r.stdout.is_empty());

    // A usage error.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grayscope"));
    cmd.args([
        "probe",
        "--url",
        "http://x/",
        "--expect-instance-stage",
        "orders",
    ]);
    let r = run(cmd).await;
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("'orders' is not SERVICE=STAGE"),
        "{}",
        r.stderr
    );
    demo.stop().await;
    c.shutdown().await.unwrap();
}

/// The demo mesh exports over https with an ingest token, and the probe reads the collector's API
/// over https with a read token, exports its own spans with the ingest token, and reaches the same
/// verdict as against a plain collector. `grayscope demo` takes the same flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_and_the_probe_work_against_a_collector_with_tls_and_tokens() {
    let pki = common::pki::Pki::new();
    let mut args = test_args();
    args.flush_interval = Some("200ms".parse().unwrap());
    args.security = grayscope::config::SecurityArgs {
        tls_cert: Some(pki.cert.clone()),
        tls_key: Some(pki.key.clone()),
        ingest_tokens: Some(pki.ingest_tokens.clone()),
        read_tokens: Some(pki.read_tokens.clone()),
        ..Default::default()
    };
    let c = spawn_collector(args).await;
    let auth = grayscope::security::ClientAuthArgs {
        ca_file: Some(pki.ca.clone()),
        token_file: Some(pki.ingest_tokens.clone()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let export = Export::new(Protocol::Http, Some(&format!("https://{}", c.otlp_http)))
        .unwrap()
        .with_auth(auth);
    let mut o = DemoOptions::new(
        export,
        parse_faults(&["missing@orders->payments".into()]).unwrap(),
    );
    o.requests = Some(0);
    o.batch_delay = Duration::from_millis(100);
    let demo = Demo::start(o).await.expect("the demo mesh starts");

    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (collector, otlp) = (
        format!("https://localhost:{}", c.http.port()),
        format!("https://localhost:{}", c.otlp_grpc.port()),
    );
    // `grayscope COMMAND` with the CA, the ingest token and, if `read`, the read token.
    let grayscope = |command: &str, read: bool, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_grayscope"));
        cmd.arg(command)
            .args(["--ca-file", &path(&pki.ca)])
            .args(["--token-file", &path(&pki.ingest_tokens)])
            .args(args);
        if read {
            cmd.args(["--read-token-file", &path(&pki.read_tokens)]);
        }
        if command == "probe" {
            cmd.args(["--collector", &collector, "--otlp-endpoint", &otlp]);
        }
        cmd
    };
    let url = checkout(&demo);
    let r = run(grayscope(
        "probe",
        true,
        &["--url", &url, "--requests", "3", "--format", "json"],
    ))
    .await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        first_breaks(&r.json()),
        BTreeSet::from([(
            "missing".to_string(),
            "orders".to_string(),
            "payments".to_string(),
            "in_process".to_string()
        )])
    );

    // Without the read token the probe cannot get a verdict: exit 2, and it says why.
    let r = run(grayscope(
        "probe",
        false,
        &["--url", &url, "--requests", "1"],
    ))
    .await;
    assert_eq!(r.code, Some(2), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("401"), "{}", r.stderr);

    // `grayscope demo` over gRPC with TLS and the token: every span it sent was accepted.
    let demo_args = ["--otlp-endpoint", &otlp, "--rate", "50", "--fault", "none"];
    let r = run(grayscope(
        "demo",
        false,
        &[&demo_args[..], &["--requests", "5"]].concat(),
    ))
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    // A token that is not an ingest token: refused, and the demo says so with exit 1.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grayscope"));
    cmd.arg("demo")
        .args(["--ca-file", &path(&pki.ca)])
        .args(["--token-file", &path(&pki.read_tokens)])
        .args(demo_args)
        .args(["--requests", "2"]);
    let r = run(cmd).await;
    assert_eq!(r.code, Some(1), "refused\n{}\n{}", r.stdout, r.stderr);
    demo.stop().await;
    c.shutdown().await.unwrap();
}
