//! Alerting end to end: a real Prometheus (Debian's `prometheus`) scrapes a collector fed by the
//! demo mesh's SDK-instrumented services, evaluates the shipped rules, and fires exactly the
//! alerts of the injected bugs; every query of the shipped Grafana dashboard runs on it and
//! returns data.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use grayscope::demo::{Demo, DemoOptions, Export, Protocol, parse_faults};
use serde_json::Value;

fn have_prometheus() -> bool {
    let found = Command::new("prometheus").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prometheus is required in CI (Debian package 'prometheus'; .ci/run installs it)"
        );
        eprintln!("prometheus not installed: skipping (install Debian's 'prometheus')");
    }
    found
}

/// A Prometheus child process; killed (by its PID) when dropped.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` every second with the shipped rules, their `for:` shortened to 0s so the
    /// test does not wait minutes; thresholds and windows are the shipped ones.
    fn start(dir: &Path, target: &str) -> Prometheus {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let rules = std::fs::read_to_string(root.join("dashboards/prometheus/grayscope-rules.yml"))
            .unwrap();
        let fast: String = rules
            .lines()
            .map(|l| match l.trim_start().strip_prefix("for: ") {
                Some(_) => l.replace(l.trim_start(), "for: 0s"),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("rules.yml"), fast).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n\
                 scrape_configs:\n  - job_name: grayscope\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // Prometheus cannot report a port it chose, so the OS picks one and it is handed over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn ready(&self) -> bool {
        reqwest::get(format!("{}/-/ready", self.url))
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let r = reqwest::get(format!("{}{path}", self.url)).await.ok()?;
        r.status().is_success().then_some(())?;
        r.json().await.ok()
    }

    async fn query(&self, expr: &str) -> Value {
        let q = percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC);
        let r = reqwest::get(format!("{}/api/v1/query?query={q}", self.url))
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v
    }

    /// (alertname, caller or callee label) of the firing alerts.
    async fn firing(&self) -> Vec<(String, String)> {
        let Some(v) = self.get("/api/v1/alerts").await else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                let l = &a["labels"];
                let edge = format!(
                    "{}->{}",
                    l["caller"].as_str().unwrap_or("-"),
                    l["callee"].as_str().unwrap_or("-")
                );
                (l["alertname"].as_str().unwrap().to_string(), edge)
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_rules_fire_on_the_injected_bugs_only_and_every_panel_has_data() {
    if !have_prometheus() {
        return;
    }
    let c = spawn_collector(test_args()).await;
    let dir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(dir.path(), &c.http.to_string());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !prom.ready().await {
        assert!(Instant::now() < deadline, "prometheus not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let export = Export::new(Protocol::Grpc, Some(&format!("http://{}", c.otlp_grpc))).unwrap();
    let faults = parse_faults(&[
        "missing@orders->payments".into(),
        "misroute@gateway->orders".into(),
    ])
    .unwrap();
    let mut o = DemoOptions::new(export, faults);
    o.rate = 30.0;
    o.batch_delay = Duration::from_millis(100);
    let demo = Demo::start(o).await.unwrap();
    // One malformed span, so the ingest panels have a rejection to show.
    let bad = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "00", "spanId": "0000000000000001", "name": "bad"}]}]}]});
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", c.otlp_http))
        .header("content-type", "application/json")
        .body(bad.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "partial success");

    let want = vec![
        (
            "GrayscopeCanaryMisrouted".to_string(),
            "-->orders".to_string(),
        ),
        (
            "GrayscopeStageMissing".to_string(),
            "orders->payments".to_string(),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut firing = Vec::new();
    while Instant::now() < deadline {
        firing = prom.firing().await;
        if want.iter().all(|w| firing.contains(w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Exactly the bugs injected: nothing about changed stages, key mismatches, broken traces,
    // ingest or grayscope being down.
    assert_eq!(firing, want);

    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/grafana/grayscope.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
                .replace("$stage", ".*");
            let v = prom.query(&expr).await;
            let result = v["data"]["result"].as_array().unwrap();
            assert!(
                !result.is_empty(),
                "panel '{}' query has no data: {expr}",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 14);
    let stages = prom.query("count by (stage) (grayscope_edges_total)").await;
    assert!(stages["data"]["result"].as_array().unwrap().len() >= 2);

    demo.stop().await;
    drop(prom);
    c.shutdown().await.unwrap();
}
