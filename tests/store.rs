//! The store through the binary, as an operator meets it: findings and service-graph counters in
//! a real SQLite file survive a graceful restart and a `kill -9`, and counting continues after.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::binary::Served;

use serde_json::{Value, json};

/// A `grayscope serve` child process, with a runtime for talking to it from plain tests.
struct Server {
    served: Served,
    rt: tokio::runtime::Runtime,
}

impl Server {
    fn start(data: &Path) -> Server {
        Server {
            served: Served::start(
                data,
                &["--trace-idle", "200ms", "--flush-interval", "200ms"],
            ),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn send(&self, body: &Value) {
        let status = self.rt.block_on(async {
            reqwest::Client::new()
                .post(format!("http://{}/v1/traces", self.served.http))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
        });
        assert_eq!(status, 200);
    }

    fn get(&self, path: &str) -> Value {
        self.rt.block_on(async {
            reqwest::get(format!("http://{}{path}", self.served.api))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }

    /// Waits until the store answers with `n` findings.
    fn wait_for_findings(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.get("/api/v1/findings?limit=1000")["findings"]
                .as_array()
                .unwrap()
                .len();
            if found == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{found} findings, waiting for {n}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Calls counted on users -> orders, from the store.
    fn calls(&self) -> u64 {
        let g = self.get("/api/v1/graph");
        g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["caller"] == "users" && e["callee"] == "orders")
            .map_or(0, |e| e["calls"].as_u64().unwrap())
    }

    fn signal(mut self, sig: i32) -> Option<i32> {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
        assert_eq!(unsafe { libc::kill(self.served.child.id() as i32, sig) }, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.served.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running after signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `n` traces (ids from `first`), each users -> orders where orders lost the canary stage: one
/// `missing` finding per trace.
fn traces(first: u64, n: u64) -> Value {
    let kv = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let mut users = Vec::new();
    let mut orders = Vec::new();
    for i in first..first + n {
        let trace = format!("{:032x}", i);
        users.push(
            json!({"traceId": trace, "spanId": format!("{:016x}", i * 4 + 1), "name": "GET /u",
            "kind": 2, "attributes": [kv("x-release-stage", "canary")]}),
        );
        users.push(
            json!({"traceId": trace, "spanId": format!("{:016x}", i * 4 + 2),
            "parentSpanId": format!("{:016x}", i * 4 + 1), "name": "call orders", "kind": 3,
            "attributes": [kv("x-release-stage", "canary")]}),
        );
        orders.push(
            json!({"traceId": trace, "spanId": format!("{:016x}", i * 4 + 3),
            "parentSpanId": format!("{:016x}", i * 4 + 2), "name": "POST /orders", "kind": 2}),
        );
    }
    let resource = |svc: &str| json!({"attributes": [kv("service.name", svc), kv("deployment.stage", "stable")]});
    json!({"resourceSpans": [
        {"resource": resource("users"), "scopeSpans": [{"spans": users}]},
        {"resource": resource("orders"), "scopeSpans": [{"spans": orders}]},
    ]})
}

#[test]
fn findings_and_counters_survive_a_graceful_restart() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path());
    s.send(&traces(1, 40));
    s.wait_for_findings(40);
    assert_eq!(s.calls(), 40);
    assert_eq!(s.signal(libc::SIGTERM), Some(0));

    let s = Server::start(data.path());
    s.wait_for_findings(40);
    assert_eq!(s.calls(), 40, "counters are where they were");
    let t = s.get(&format!("/api/v1/traces/{:032x}", 7));
    assert_eq!(t["findings"][0]["kind"], "missing", "{t}");
    assert_eq!(t["spans"].as_array().unwrap().len(), 3);
    s.send(&traces(100, 10));
    s.wait_for_findings(50);
    assert_eq!(s.calls(), 50, "and continue");
    assert_eq!(s.signal(libc::SIGTERM), Some(0));
}

#[test]
fn findings_older_than_the_flush_interval_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path());
    s.send(&traces(1, 25));
    // Visible in the API means committed: the API reads the store.
    s.wait_for_findings(25);
    // Past another flush interval, so the edge counters written with them are committed too.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(s.calls(), 25);
    assert_eq!(s.signal(libc::SIGKILL), None, "killed, no exit code");

    let s = Server::start(data.path());
    s.wait_for_findings(25);
    assert_eq!(s.calls(), 25);
    s.send(&traces(200, 5));
    s.wait_for_findings(30);
    assert_eq!(s.calls(), 30);
    assert_eq!(s.signal(libc::SIGTERM), Some(0));
}
