//! A gray release hand-built in Python, judged from what its instrumentation can show: Flask and
//! requests services, instrumented with the official OpenTelemetry Python SDK and its Flask,
//! requests and sqlite3 instrumentations, forward `X-Release-Stage` by hand and capture it only
//! as a request header on SERVER spans (no baggage, no baggage processor). They export OTLP/HTTP
//! with the SDK's batch processor to a collector that learns each service's stage mode.
//!
//! frontend -> orders (SQLite, an INTERNAL span) -> payments (a stable and a canary instance,
//! chosen by the stage).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::python::venv;
use common::*;
use grayscope::app::Collector;

/// Requests of each stage sent through the shop per case.
const PER_STAGE: usize = 3;

/// The shop's four processes, stopped (and their spans flushed) by [`Shop::stop`].
struct Shop {
    children: Vec<Child>,
    frontend: String,
}

fn service(python: &Path, c: &Collector, args: &[&str]) -> (Child, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/flask_service.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .args(["--otlp", &format!("http://{}", c.otlp_http)])
        .env(
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
            "x-release-stage",
        )
        // Batches every 200 ms instead of 5 s; everything is flushed on exit anyway.
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("NO_PROXY", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the service says where it listens");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("{args:?}: unexpected first line {line:?}"));
    (child, format!("http://127.0.0.1:{port}"))
}

impl Shop {
    fn start(python: &Path, c: &Collector, fault: Option<&str>) -> Shop {
        let mut children = Vec::new();
        let mut start = |args: &[&str]| {
            let (child, url) = service(python, c, args);
            children.push(child);
            url
        };
        let stable = start(&["payments", "--instance-stage", "stable"]);
        let canary = start(&["payments", "--instance-stage", "canary"]);
        let mut orders = vec![
            "orders",
            "--payments-stable",
            &stable,
            "--payments-canary",
            &canary,
        ];
        if let Some(f) = fault {
            orders.extend(["--fault", f]);
        }
        let orders = start(&orders);
        let frontend = start(&["frontend", "--orders", &orders]);
        Shop { children, frontend }
    }

    /// [`PER_STAGE`] checkouts tagged canary and as many tagged stable, each answered.
    async fn checkouts(&self) {
        let http = reqwest::Client::new();
        for stage in ["canary", "stable"] {
            for _ in 0..PER_STAGE {
                let r = http
                    .get(format!("{}/checkout?item=book", self.frontend))
                    .header("X-Release-Stage", stage)
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await
                    .expect("the frontend answers");
                assert!(r.status().is_success(), "{}", r.status());
            }
        }
    }

    /// Ends every service (end of input), which flushes its spans, within 30 s.
    async fn stop(self) {
        tokio::task::spawn_blocking(move || {
            for mut child in self.children {
                drop(child.stdin.take());
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    match child.try_wait().unwrap() {
                        Some(status) => {
                            assert!(status.success(), "a service failed: {status}");
                            break;
                        }
                        None if std::time::Instant::now() > deadline => {
                            let _ = child.kill();
                            let _ = child.wait();
                            panic!("a service did not stop within 30 s");
                        }
                        None => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        })
        .await
        .unwrap();
    }
}

/// Runs the shop with `fault` against a fresh collector and returns it, every span judged.
async fn judged(python: &Path, fault: Option<&str>) -> TestCollector {
    let mut args = test_args();
    // Live from the start: a misrouted canary request never reaches the canary payments.
    args.verify.declared_instances = Some(vec!["payments=canary".into()]);
    args.sample_clean = Some(1.0);
    let c = spawn_collector(args).await;
    let shop = tokio::task::block_in_place(|| Shop::start(python, &c, fault));
    shop.checkouts().await;
    shop.stop().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.flush().await;
    c
}

fn edges(metrics: &str, caller: &str, callee: &str, stage: &str, verdict: &str) -> u64 {
    let sample = format!(
        "grayscope_edges_total{{caller=\"{caller}\",callee=\"{callee}\",stage=\"{stage}\",verdict=\"{verdict}\"}}"
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&sample))
        .map_or(0.0, |v| v.trim().parse::<f64>().unwrap()) as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn flask_services_capturing_the_header_are_judged_hop_by_hop() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let Some(python) = venv(&dir.join("requirements.txt")) else {
        return;
    };
    let n = PER_STAGE as u64;

    // Clean: no finding at all, though the database calls and the INTERNAL spans carry no stage.
    let c = judged(&python, None).await;
    assert_eq!(findings(&c).await, vec![]);
    let m = scrape(&c).await;
    for (caller, callee) in [("frontend", "orders"), ("orders", "payments")] {
        for stage in ["canary", "stable"] {
            assert_eq!(
                edges(&m, caller, callee, stage, "ok"),
                n,
                "{caller}->{callee}\n{m}"
            );
        }
    }
    // The database is a virtual node; the call to it is not judged.
    let db: u64 = ["canary", "stable"]
        .iter()
        .map(|s| edges(&m, "orders", "sqlite", s, "not_applicable"))
        .sum();
    assert_eq!(db, 2 * n, "{m}");
    let graph = get_json(&c, "/api/v1/graph").await;
    assert!(
        graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "sqlite" && v["virtual"] == true),
        "{graph}"
    );
    // Each span says where its stage came from.
    let hop = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == "orders" && e["callee"] == "payments")
        .unwrap();
    let id = hop["examples"]["ok"][0].as_str().unwrap().to_string();
    let t = get_json(&c, &format!("/api/v1/traces/{id}")).await;
    for s in t["spans"].as_array().unwrap() {
        let want = match s["kind"].as_str().unwrap() {
            "SERVER" => "http_header",
            _ => "inbound",
        };
        assert_eq!(s["stage_source"], want, "{s}");
    }
    c.shutdown().await.unwrap();

    // Orders does not forward the header: exactly one `missing` per request, on the hop.
    let c = judged(&python, Some("missing")).await;
    assert_eq!(
        findings(&c).await,
        vec![f("missing", "cross_service", "orders", "payments", true); 2 * PER_STAGE]
    );
    c.shutdown().await.unwrap();

    // Orders forwards `stable` whatever it received: `changed`, on canary requests.
    let c = judged(&python, Some("changed")).await;
    assert_eq!(
        findings(&c).await,
        vec![f("changed", "cross_service", "orders", "payments", true); PER_STAGE]
    );
    c.shutdown().await.unwrap();

    // Orders sends canary requests to the stable payments: `misrouted`.
    let c = judged(&python, Some("misroute")).await;
    assert_eq!(
        findings(&c).await,
        vec![f("misrouted", "cross_service", "orders", "payments", true); PER_STAGE]
    );
    c.shutdown().await.unwrap();
}
