//! Several grayscope instances behind a real OpenTelemetry Collector's load balancer
//! (`load_balancing` exporter, `routing_key: traceID`, static resolver; built from the official
//! modules by `tests/otelcol/build.sh`), sharing one PostgreSQL store:
//!
//! - the seeded faults of the load generator are exactly the stored first breaks;
//! - every instance gives the same findings, graph and gate answer;
//! - the verdict totals of the cluster equal those of one instance fed the same load;
//! - the collector restarted with two of the three backends (its ring changes) while the demo
//!   mesh sends split-able traffic: no broken trace that was not seeded, every seeded fault found,
//!   and the unverifiable spans no more than the traces in flight at the change;
//! - `kill -9` of an instance: the others keep serving, and everything written is there.
//!
//! Needs Go (to build the Collector once) and `GRAYSCOPE_TEST_POSTGRES`; without them it passes
//! without running, except under `CI=true`, where it fails.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::binary::{Served, sum};
use serde_json::Value;

/// Short times, so that the test takes seconds: spans of a trace finalised 3 s after its last one,
/// a span whose parent never comes judged 4 s later, members noticed within 2 s, orphans
/// unverifiable for 5 s after a change, written within 200 ms.
const ARGS: [&str; 12] = [
    "--trace-idle",
    "3s",
    "--orphan-wait",
    "4s",
    "--flush-interval",
    "200ms",
    "--heartbeat-interval",
    "500ms",
    "--rebalance-window",
    "5s",
    "--sample-clean",
    "0",
];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_grayscope")
}

/// Builds the Collector (once; cached under target/) and returns its path.
fn otelcol() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let go = Command::new("go").arg("version").output().is_ok();
    if !go {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Go is required in CI to build the OpenTelemetry Collector"
        );
        eprintln!("Go is not installed: skipping the scale-out test");
        return None;
    }
    let status = Command::new(root.join("tests/otelcol/build.sh"))
        .status()
        .expect("tests/otelcol/build.sh runs");
    assert!(status.success(), "building the Collector failed");
    Some(root.join("target/otelcol/grayscope-otelcol"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running Collector; stopped with SIGTERM (it drains its queues) or killed when dropped.
struct Otelcol {
    child: Child,
}

impl Otelcol {
    fn start(bin: &Path, dir: &Path, port: u16, backends: &[String]) -> Otelcol {
        let config = dir.join(format!("otelcol-{}.yaml", backends.len()));
        std::fs::write(
            &config,
            format!(
                "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  load_balancing:
    routing_key: traceID
    protocol:
      otlp:
        tls:
          insecure: true
    resolver:
      static:
        hostnames: [{}]
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [load_balancing]
",
                backends.join(", ")
            ),
        )
        .unwrap();
        let log =
            std::fs::File::create(dir.join(format!("otelcol-{}.log", backends.len()))).unwrap();
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Ready when its port answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the Collector did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Otelcol { child }
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the Collector did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Otelcol {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Instance {
    served: Served,
}

impl Instance {
    fn get(&self, rt: &tokio::runtime::Runtime, path: &str) -> Value {
        rt.block_on(async {
            reqwest::get(format!("http://{}{path}", self.served.api))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }

    fn metrics(&self, rt: &tokio::runtime::Runtime) -> String {
        rt.block_on(self.served.metrics())
    }
}

/// (trace id, kind, caller, callee) of every first break the store holds.
fn first_breaks(
    i: &Instance,
    rt: &tokio::runtime::Runtime,
) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let page = i.get(
            rt,
            &format!("/api/v1/findings?first_break=true&limit=1000{cursor}"),
        );
        for f in page["findings"].as_array().unwrap() {
            out.insert((
                f["trace_id"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
                f["edge"]["caller"].as_str().unwrap_or("-").to_string(),
                f["edge"]["callee"].as_str().unwrap().to_string(),
            ));
        }
        match page["next"].as_str() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => return out,
        }
    }
}

/// The faults a `grayscope loadgen --faults-out` run injected.
fn seeded(path: &Path) -> BTreeSet<(String, String, String, String)> {
    let faults: Vec<Value> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    faults
        .iter()
        .map(|e| {
            (
                e["trace_id"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
                e["caller"].as_str().unwrap_or("-").to_string(),
                e["callee"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `grayscope loadgen` to `grpc`: 40 requests of 11 traces, a fifth of them with a fault.
fn loadgen(grpc: &str, faults: &Path, seed: u64) {
    let out = Command::new(bin())
        .args(["loadgen", "--protocol", "grpc", "--grpc", grpc])
        .args([
            "--requests",
            "40",
            "--spans-per-request",
            "99",
            "--concurrency",
            "2",
        ])
        .args(["--fault-rate", "0.2", "--seed", &seed.to_string()])
        .arg("--faults-out")
        .arg(faults)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `f` holds, at most `secs` seconds.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until no instance has a membership change's window open.
fn settled(cluster: &[Instance], rt: &tokio::runtime::Runtime) {
    wait_for(30, "the rebalance window to close", || {
        cluster
            .iter()
            .all(|i| sum(&i.metrics(rt), "grayscope_rebalancing") == 0)
    });
}

/// Judged span edges by verdict, over these instances' `/metrics`.
fn verdicts(text: &[String]) -> BTreeSet<(String, u64)> {
    [
        "ok",
        "absent",
        "missing",
        "changed",
        "appeared",
        "key_mismatch",
        "invalid_value",
        "misrouted",
        "broken_trace",
        "unverifiable",
    ]
    .iter()
    .map(|v| {
        let total = text
            .iter()
            .map(|m| {
                m.lines()
                    .filter(|l| {
                        l.starts_with("grayscope_edges_total{")
                            && l.contains(&format!("verdict=\"{v}\""))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>() as u64
            })
            .sum();
        (v.to_string(), total)
    })
    .collect()
}

#[test]
fn three_instances_behind_the_collectors_load_balancer_answer_as_one() {
    let Some(admin) = common::postgres::server() else {
        return;
    };
    let Some(otelcol_bin) = otelcol() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = rt.block_on(common::postgres::fresh_database(&admin));

    // Three instances on the shared store, and one on its own, to compare with.
    let cluster: Vec<Instance> = (0..3)
        .map(|_| Instance {
            served: Served::start(&url, &ARGS),
        })
        .collect();
    let single = Instance {
        served: Served::start(dir.path().join("single"), &ARGS),
    };
    let backends: Vec<String> = cluster.iter().map(|i| i.served.grpc.to_string()).collect();
    let port = free_port();
    let grpc = format!("127.0.0.1:{port}");
    let collector = Otelcol::start(&otelcol_bin, dir.path(), port, &backends);
    wait_for(10, "three members", || {
        cluster[0].get(&rt, "/api/v1/members")["members"]
            .as_array()
            .unwrap()
            .len()
            == 3
    });
    // Joining opened a window in which orphans are unverifiable: the seeded faults come after.
    settled(&cluster, &rt);

    // Seeded faults, through the load balancer and straight into the single instance.
    let f1 = dir.path().join("faults-1.json");
    loadgen(&grpc, &f1, 7);
    let f_single = dir.path().join("faults-single.json");
    loadgen(&single.served.grpc.to_string(), &f_single, 7);
    let expected = seeded(&f1);
    assert!(expected.len() > 40, "{} faults", expected.len());
    wait_for(30, "the seeded faults to be stored", || {
        first_breaks(&cluster[1], &rt).len() >= expected.len()
    });
    // Wait for the single instance too, and for every instance's counters to be written.
    wait_for(30, "the single instance", || {
        first_breaks(&single, &rt).len() >= seeded(&f_single).len()
    });
    std::thread::sleep(Duration::from_millis(500));

    // (a) The stored first breaks are exactly the seeded faults.
    assert_eq!(first_breaks(&cluster[0], &rt), expected);
    // (b) Any instance gives the same answers: they read the shared store.
    for path in [
        "/api/v1/findings?limit=1000",
        "/api/v1/graph",
        "/api/v1/gate?stage=canary&window=1h",
        "/api/v1/services",
    ] {
        assert_eq!(
            cluster[0].get(&rt, path),
            cluster[2].get(&rt, path),
            "{path} differs between instances"
        );
    }
    // (c) The cluster counted what one instance counts for the same load.
    let cluster_metrics: Vec<String> = cluster.iter().map(|i| i.metrics(&rt)).collect();
    let single_metrics = vec![single.metrics(&rt)];
    assert_eq!(verdicts(&cluster_metrics), verdicts(&single_metrics));
    // Every instance had a share of the traffic.
    for m in &cluster_metrics {
        assert!(sum(m, "grayscope_receiver_accepted_spans_total") > 0);
    }

    // A rebalance: the demo mesh sends traces whose spans arrive from several services in several
    // requests (so they can be split), and the Collector restarts with two of the three backends.
    let mut demo = Command::new(bin())
        .args(["demo", "--otlp-endpoint", &format!("http://{grpc}")])
        .args(["--fault", "none", "--rate", "20", "--duration", "25s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let demo_started = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    collector.stop();
    let restarted = Instant::now();
    let collector = Otelcol::start(&otelcol_bin, dir.path(), port, &backends[..2]);
    let restart_took = restarted.elapsed();
    // The members changed (the third no longer receives): a window opens, and closes; the seeded
    // faults of the second run come after it, while the demo's traffic goes on.
    wait_for(10, "the change to be noticed", || {
        cluster
            .iter()
            .all(|i| sum(&i.metrics(&rt), "grayscope_rebalancing") == 1)
    });
    settled(&cluster, &rt);
    let f2 = dir.path().join("faults-2.json");
    loadgen(&grpc, &f2, 11);
    let status = demo.wait().unwrap();
    let demo_ran = demo_started.elapsed();
    assert!(
        status.success() || status.code() == Some(1),
        "demo: {status:?}"
    );
    let expected: BTreeSet<_> = expected.union(&seeded(&f2)).cloned().collect();
    // Everything finalised: past the trace idle time, and the window closed.
    wait_for(60, "every seeded fault after the rebalance", || {
        first_breaks(&cluster[0], &rt).len() >= expected.len()
    });
    std::thread::sleep(Duration::from_secs(5));
    let stored = first_breaks(&cluster[0], &rt);
    let unseeded: Vec<_> = stored.difference(&expected).collect();
    assert!(
        unseeded.is_empty(),
        "findings nobody seeded (a false alarm of the rebalance): {unseeded:?}"
    );
    assert_eq!(stored, expected, "every seeded fault found");
    let cluster_metrics: Vec<String> = cluster.iter().map(|i| i.metrics(&rt)).collect();
    let unverifiable = verdicts(&cluster_metrics)
        .into_iter()
        .find(|(v, _)| v == "unverifiable")
        .map_or(0, |(_, n)| n);
    // In flight at the change: the demo's requests (one trace each) from a trace idle time before
    // the Collector stopped until it was back.
    let in_flight = (20.0 * (3.0 + restart_took.as_secs_f64() + 1.0)).ceil() as u64;
    eprintln!(
        "rebalance: Collector back after {restart_took:?}, demo ran {demo_ran:?}; {unverifiable} unverifiable spans, at most {in_flight} traces in flight"
    );
    assert!(
        unverifiable <= in_flight,
        "{unverifiable} unverifiable, {in_flight} in flight"
    );

    // kill -9 of an instance: the others keep serving, and what was written is all there.
    let before = first_breaks(&cluster[2], &rt);
    let mut cluster = cluster;
    let killed = cluster.remove(1);
    let mut served = killed.served;
    assert_eq!(served.signal(libc::SIGKILL, Duration::from_secs(5)), None);
    assert_eq!(first_breaks(&cluster[0], &rt), before);
    assert_eq!(first_breaks(&cluster[1], &rt), before);
    wait_for(10, "the killed member to be gone", || {
        cluster[0].get(&rt, "/api/v1/members")["members"]
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    drop(collector);
}
