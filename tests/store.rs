//! The store through the binary, as an operator meets it: findings and service-graph counters in
//! a real SQLite file survive a graceful restart and a `kill -9`, and counting continues after; a
//! second process on the same directory is refused; a store that fails for a while loses nothing,
//! and one that fails for good neither wedges the process nor loses anything without saying so.
//! On PostgreSQL, several instances share one store: what one writes the others serve, an outage
//! is retried, the service instances one sees count for the others' `misrouted`, and a trace one
//! is still assembling is fetched from it through any other.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::binary::{Served, sum};

use serde_json::{Value, json};

/// A `grayscope serve` child process, with a runtime for talking to it from plain tests.
struct Server {
    served: Served,
    rt: tokio::runtime::Runtime,
}

/// Quick to finalise and to write, so that a test sees its findings stored within a second.
const QUICK: [&str; 4] = ["--trace-idle", "200ms", "--flush-interval", "200ms"];

impl Server {
    fn start(data: &Path) -> Server {
        Server::of(Served::start(data, &QUICK))
    }

    fn of(served: Served) -> Server {
        Server {
            served,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn metrics(&self) -> String {
        self.rt.block_on(self.served.metrics())
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
        self.served.signal(sig, Duration::from_secs(10))
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

/// Runs `cmd` to its end (at most 10 s): its exit code and its stderr.
fn run_to_exit(mut cmd: std::process::Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_process_on_the_same_directory_exits_2_and_the_first_keeps_storing() {
    let data = tempfile::tempdir().unwrap();
    let first = Server::start(data.path());
    let pid = first.served.child.id();

    // Same directory, other ports: the mistake of a copied unit file.
    let (code, stderr) = run_to_exit(Served::command(data.path(), &QUICK));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the data directory {} is in use by another grayscope process (pid {pid})",
            data.path().display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

    first.send(&traces(1, 20));
    first.wait_for_findings(20);
    assert_eq!(first.calls(), 20);
    assert_eq!(first.signal(libc::SIGKILL), None);

    // The kernel released the lock with the process: nothing stale to clean up, no waiting.
    let next = Server::start(data.path());
    next.wait_for_findings(20);
    next.send(&traces(100, 5));
    next.wait_for_findings(25);
    assert_eq!(next.signal(libc::SIGTERM), Some(0));
}

#[test]
fn a_file_that_is_not_a_database_is_named_with_its_cause_once() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("grayscope.db"), vec![b'x'; 8192]).unwrap();
    let (code, stderr) = run_to_exit(Served::command(data.path(), &QUICK));
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "grayscope: cannot open the store {}: file is not a database",
            data.path().join("grayscope.db").display()
        )
    );
}

/// Every span acknowledged is in exactly one place, and every trace finalised is written, set
/// aside or still queued for the store.
fn assert_accounted(m: &str) {
    let accounted = sum(m, "grayscope_spans_finalised_total")
        + sum(m, "grayscope_duplicate_spans_total")
        + sum(m, "grayscope_conflicting_spans_total")
        + sum(m, "grayscope_late_spans_total")
        + sum(m, "grayscope_buffered_spans")
        + sum(m, "grayscope_queued_spans");
    assert_eq!(
        accounted,
        sum(m, "grayscope_receiver_accepted_spans_total"),
        "every acknowledged span is accounted for"
    );
    assert_eq!(
        sum(m, "grayscope_traces_finalised_total"),
        sum(m, "grayscope_store_written_traces_total")
            + sum(m, "grayscope_store_dropped_traces_total")
            + sum(m, "grayscope_store_queued_traces"),
        "every finalised trace is written, dropped or queued"
    );
}

#[test]
fn a_store_locked_by_another_connection_for_a_while_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("stderr.log");
    let mut cmd = Served::command(data.path(), &QUICK);
    cmd.stderr(std::fs::File::create(&log).unwrap());
    let s = Server::of(Served::spawn(cmd));

    // A backup tool, say, holds the write lock: every write fails with SQLITE_BUSY until it ends.
    let other = rusqlite::Connection::open(data.path().join("grayscope.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    s.send(&traces(1, 30));
    let deadline = Instant::now() + Duration::from_secs(20);
    while sum(
        &s.metrics(),
        "grayscope_store_write_errors_total{reason=\"busy\"}",
    ) < 3
    {
        assert!(Instant::now() < deadline, "no busy write errors");
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = s.metrics();
    assert_eq!(sum(&m, "grayscope_store_written_traces_total"), 0);
    assert_eq!(sum(&m, "grayscope_store_queued_traces"), 30);
    assert!(sum(&m, "grayscope_store_lag_seconds") < 60);
    assert_accounted(&m);
    s.send(&traces(100, 10));
    other.execute_batch("COMMIT").unwrap();
    drop(other);

    s.wait_for_findings(40);
    assert_eq!(s.calls(), 40);
    let m = s.metrics();
    assert_eq!(sum(&m, "grayscope_store_written_traces_total"), 40);
    assert_eq!(sum(&m, "grayscope_store_written_findings_total"), 40);
    assert_eq!(sum(&m, "grayscope_store_dropped_traces_total"), 0);
    assert_eq!(sum(&m, "grayscope_store_queued_traces"), 0);
    assert_accounted(&m);
    assert_eq!(s.signal(libc::SIGTERM), Some(0));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        stderr.matches("writing to the store").count(),
        1,
        "one line for the whole run of failures: {stderr}"
    );
    assert!(stderr.contains("(busy)"), "{stderr}");
}

#[test]
fn a_store_that_fails_for_good_refuses_senders_and_sigterm_reports_what_was_lost() {
    use grayscope::loadgen::{RawClient, Template, Wire};
    use rand::SeedableRng;
    use std::os::unix::process::CommandExt;

    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("stderr.log");
    let mut cmd = Served::command(
        data.path(),
        &[
            "--trace-idle",
            "100ms",
            "--flush-interval",
            "100ms",
            "--shutdown-grace",
            "2s",
            "--workers",
            "1",
            "--queue-spans",
            "5000",
            "--store-queue-spans",
            "20000",
        ],
    );
    cmd.stderr(std::fs::File::create(&log).unwrap());
    // The disk fills up: no file of the process may grow past 2 MiB. Writes past it fail with
    // EFBIG (the signal that would otherwise kill the process is ignored, as a service manager's
    // LimitFSIZE= leaves it).
    // SAFETY: setrlimit and signal are async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 20,
                rlim_max: 2 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut s = Server::of(Served::spawn(cmd));

    // Traces with findings, whose spans are stored: the file grows until it cannot.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let templates: Vec<Template> = (0..4)
        .map(|_| Template::build(500, (0.5, &[]), Wire::Http, &mut rng))
        .collect();
    let client = RawClient::new(Wire::Http, s.served.http);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut accepted, mut n, mut refused_in_a_row) = (0u64, 0u64, 0);
    let refusal = s.rt.block_on(async {
        loop {
            assert!(
                Instant::now() < deadline,
                "not refused for good after {accepted} spans"
            );
            let t = &templates[n as usize % templates.len()];
            let r = client
                .send(t.instance(1, n, None).into(), false)
                .await
                .unwrap();
            if r.is_ok() {
                accepted += t.spans as u64;
                n += 1;
                refused_in_a_row = 0;
                continue;
            }
            // Verification falling behind refuses now and then; a store that cannot write
            // refuses everyone until it can.
            refused_in_a_row += 1;
            if refused_in_a_row == 20 {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Refused the way OTLP senders retry: the store's failure is not the sender's fault.
    assert!(refusal.is_retryable(), "{refusal:?}");
    assert_eq!(refusal.http, 503);
    assert!(refusal.headers.contains_key("retry-after"));

    let m = s.metrics();
    let errors = sum(&m, "grayscope_store_write_errors_total{reason=\"io\"}")
        + sum(&m, "grayscope_store_write_errors_total{reason=\"full\"}");
    assert!(errors >= 2, "{m}");
    assert_eq!(sum(&m, "grayscope_store_dropped_traces_total"), 0);
    let queued = sum(&m, "grayscope_store_queued_traces");
    assert!(queued > 0);
    assert!(sum(&m, "grayscope_store_queued_spans") > 15_000, "{m}");
    assert!(sum(&m, "grayscope_receiver_accepted_spans_total") >= accepted);
    eprintln!("{accepted} spans accepted, then refused; {queued} traces wait for the store");

    // SIGTERM ends it within the grace period (2 s, plus the interrupted write's second), with a
    // count of what could not be written.
    let t = Instant::now();
    assert_eq!(
        s.served.signal(libc::SIGTERM, Duration::from_secs(15)),
        Some(1)
    );
    let took = t.elapsed();
    let stderr = std::fs::read_to_string(&log).unwrap();
    eprintln!("stopped after {took:?}; its log:\n{stderr}");
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    let lost = stderr
        .lines()
        .find_map(|l| {
            let (n, rest) = l.split_once(" traces with ")?;
            rest.contains("could not be written to the store within --shutdown-grace")
                .then(|| n.rsplit(' ').next()?.parse::<u64>().ok())?
        })
        .unwrap_or_else(|| panic!("no count of what was lost: {stderr}"));
    assert!(lost >= queued, "{lost} lost, {queued} were queued");
    assert_eq!(
        stderr.matches("writing to the store").count(),
        1,
        "one line per reason: {stderr}"
    );
}

#[test]
fn a_postgres_store_that_cannot_be_reached_stops_the_start_with_exit_2() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://grayscope:secret@127.0.0.1:{port}/grayscope");
    let (code, stderr) = run_to_exit(Served::command(&url, &QUICK));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "grayscope: cannot open the store postgres://grayscope:***@127.0.0.1:{port}/grayscope: "
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_postgres_store_that_refuses_the_password_stops_the_start_with_exit_2() {
    let Some(admin) = common::postgres::server() else {
        return;
    };
    // The test server asks for passwords over TCP: the admin URL with another one.
    let (user, host) = admin
        .strip_prefix("postgres://")
        .and_then(|rest| rest.split_once('@'))
        .expect("postgres://USER:PASSWORD@HOST...");
    let (user, _) = user.split_once(':').expect(
        "GRAYSCOPE_TEST_POSTGRES: a server that asks for a password, as scripts/postgres.sh starts",
    );
    let url = format!("postgres://{user}:wrong-secret@{host}");
    let (code, stderr) = run_to_exit(Served::command(&url, &QUICK));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot open the store postgres://{user}:***@{host}: "
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-secret"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn findings_reach_a_postgres_store_and_survive_a_restart_of_every_instance() {
    let Some(admin) = common::postgres::server() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(common::postgres::fresh_database(&admin));
    // Two instances on one database: what one stores, the other serves.
    let a = Server::of(Served::start(&url, &QUICK));
    let b = Server::of(Served::start(&url, &QUICK));
    a.send(&traces(1, 20));
    b.send(&traces(100, 10));
    a.wait_for_findings(30);
    b.wait_for_findings(30);
    assert_eq!(a.calls(), 30);
    assert_eq!(b.calls(), 30, "counters of both writers add up");
    assert_eq!(a.signal(libc::SIGTERM), Some(0));
    assert_eq!(b.signal(libc::SIGKILL), None);
    let c = Server::of(Served::start(&url, &QUICK));
    c.wait_for_findings(30);
    assert_eq!(c.calls(), 30);
    let t = c.get(&format!("/api/v1/traces/{:032x}", 105));
    assert_eq!(t["findings"][0]["kind"], "missing", "{t}");
    assert_eq!(c.signal(libc::SIGTERM), Some(0));
}

/// Runs `scripts/postgres.sh` with these arguments; its output.
fn postgres_sh(args: &[&str]) -> String {
    let out = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh"),
    )
    .args(args)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "postgres.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_postgres_outage_is_retried_and_nothing_queued_is_lost() {
    // A server of its own, to take down: only where the test server exists (PostgreSQL installed).
    if common::postgres::server().is_none() {
        return;
    }
    let cluster = tempfile::tempdir().unwrap();
    let dir = cluster.path().join("pg");
    let dir = dir.to_str().unwrap();
    let admin = postgres_sh(&["start", dir]);
    // Stopped and removed however the test ends.
    struct Cluster<'a>(&'a str);
    impl Drop for Cluster<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh"),
            )
            .args(["stop", self.0])
            .output();
        }
    }
    let _cluster = Cluster(dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(common::postgres::fresh_database(&admin));
    let log = cluster.path().join("stderr.log");
    let mut cmd = Served::command(&url, &QUICK);
    cmd.stderr(std::fs::File::create(&log).unwrap());
    let s = Server::of(Served::spawn(cmd));
    s.send(&traces(1, 20));
    s.wait_for_findings(20);

    postgres_sh(&["pause", dir]);
    // Acknowledged while the database is down: queued, retried.
    s.send(&traces(100, 10));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = s.metrics();
        if sum(&m, "grayscope_store_write_errors_total{reason=\"io\"}") >= 2 {
            assert_eq!(sum(&m, "grayscope_store_failing"), 1, "{m}");
            assert_eq!(sum(&m, "grayscope_store_queued_traces"), 10);
            break;
        }
        assert!(Instant::now() < deadline, "no failed writes: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    postgres_sh(&["resume", dir]);

    // The pool reconnects by itself; everything queued is written.
    s.wait_for_findings(30);
    assert_eq!(s.calls(), 30);
    let m = s.metrics();
    assert_eq!(sum(&m, "grayscope_store_failing"), 0);
    assert_eq!(sum(&m, "grayscope_store_dropped_traces_total"), 0);
    assert_eq!(sum(&m, "grayscope_store_written_traces_total"), 30);
    assert_eq!(s.signal(libc::SIGTERM), Some(0));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        stderr.matches("writing to the store").count(),
        1,
        "one line for the outage: {stderr}"
    );
    assert!(stderr.contains("(io)"), "{stderr}");
}

/// One request, gateway -> orders, tagged `stage`, served by an orders instance of
/// `orders_stage`.
fn routed(trace: u64, stage: &str, orders_stage: &str) -> Value {
    let kv = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let id = |n: u64| format!("{:016x}", trace * 4 + n);
    let tagged = || json!([kv("x-release-stage", stage)]);
    let resource = |svc: &str, st: &str| json!({"attributes": [kv("service.name", svc), kv("deployment.stage", st)]});
    let trace = format!("{trace:032x}");
    json!({"resourceSpans": [
        {"resource": resource("gateway", "stable"), "scopeSpans": [{"spans": [
            {"traceId": trace, "spanId": id(1), "name": "GET /checkout", "kind": 2,
             "attributes": tagged()},
            {"traceId": trace, "spanId": id(2), "parentSpanId": id(1), "name": "POST /orders",
             "kind": 3, "attributes": tagged()},
        ]}]},
        {"resource": resource("orders", orders_stage), "scopeSpans": [{"spans": [
            {"traceId": trace, "spanId": id(3), "parentSpanId": id(2), "name": "POST /orders",
             "kind": 2, "attributes": tagged()},
        ]}]},
    ]})
}

#[test]
fn instances_on_one_postgres_store_share_sightings_and_the_traces_they_assemble() {
    let Some(admin) = common::postgres::server() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(common::postgres::fresh_database(&admin));
    let beat = ["--heartbeat-interval", "200ms"];
    // A holds traces open for a minute: what it receives stays in its memory.
    let a = Server::of(Served::start(
        &url,
        &[
            &beat[..],
            &["--trace-idle", "60s", "--flush-interval", "200ms"],
        ]
        .concat(),
    ));
    let b = Server::of(Served::start(&url, &[&QUICK[..], &beat[..]].concat()));

    // Canary requests served by the stable orders instance, while no instance anywhere has seen a
    // canary orders instance: nothing wrong with routing.
    b.send(&routed(1, "canary", "stable"));
    let calls = |s: &Server| {
        s.get("/api/v1/graph")["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["caller"] == "gateway" && e["callee"] == "orders")
            .map_or(0, |e| e["calls"].as_u64().unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls(&b) < 1 {
        assert!(Instant::now() < deadline, "B never counted its first call");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.wait_for_findings(0);

    // Only A sees the canary orders instance; B learns of it through the store, and the next
    // canary request B sees served by a stable instance is misrouted.
    a.send(&routed(0x200, "canary", "canary"));
    let mut trace = 2;
    let deadline = Instant::now() + Duration::from_secs(15);
    let found = loop {
        b.send(&routed(trace, "canary", "stable"));
        std::thread::sleep(Duration::from_millis(300));
        let f = b.get("/api/v1/findings?limit=1000")["findings"].clone();
        if let Some(first) = f.as_array().unwrap().first() {
            break first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "B never judged with A's sighting"
        );
        trace += 1;
    };
    assert_eq!(found["kind"], "misrouted", "{found}");
    assert_eq!(found["edge"]["caller"], "gateway", "{found}");
    assert_eq!(found["edge"]["callee"], "orders", "{found}");
    let m = b.metrics();
    assert_eq!(
        sum(
            &m,
            "grayscope_misrouted_total{callee=\"orders\",stage=\"canary\",instance_stage=\"stable\"}"
        ),
        1,
        "{m}"
    );

    // The trace A is still assembling: not in the store, so B asks A for it.
    let a_id = a.get("/api/v1/members")["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["this"] == true)
        .expect("A lists itself")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/traces/{:032x}", 0x200);
    let (status, member, body) = b.rt.block_on(async {
        let r = reqwest::get(format!("http://{}{path}", b.served.api))
            .await
            .unwrap();
        let member = r
            .headers()
            .get("x-grayscope-member")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status(), member, r.json::<Value>().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(member.as_deref(), Some(a_id.as_str()));
    assert_eq!(body["finalised"], false, "{body}");
    assert_eq!(body["spans"].as_array().unwrap().len(), 3, "{body}");
    // Asked for its own view only, B does not hold it.
    let local = b.rt.block_on(async {
        reqwest::get(format!("http://{}{path}?local=true", b.served.api))
            .await
            .unwrap()
            .status()
    });
    assert_eq!(local, 404);

    assert_eq!(a.signal(libc::SIGTERM), Some(0));
    assert_eq!(b.signal(libc::SIGTERM), Some(0));
}
