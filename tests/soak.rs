//! A short soak through the binary: steady traffic well below capacity, paced by the load generator,
//! must be accepted in full with flat resident memory, and every span accounted for. The full
//! length (10 minutes at half the release build's capacity) is `scripts/soak.sh`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use grayscope::loadgen::{self, LoadgenArgs, Wire};

const SECONDS: u64 = 24;
const RATE: f64 = 30_000.0;

struct Server {
    child: Child,
    http: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
    api: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args([
            "serve",
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
        ])
        .args([
            "--http",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--trace-idle",
            "2s",
        ])
        .arg("--data")
        .arg(data.path())
        .env_remove("GRAYSCOPE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = |after: &str| -> String {
        let rest = &line[line.find(after).expect(&line) + after.len()..];
        rest.split([',', '\n']).next().unwrap().trim().to_string()
    };
    Server {
        grpc: addr("OTLP/gRPC on ").parse().unwrap(),
        http: addr("OTLP/HTTP on ").parse().unwrap(),
        api: addr("metrics on http://"),
        child,
        _data: data,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn metrics(api: &str) -> String {
    reqwest::get(format!("http://{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_keeps_memory_flat() {
    let server = start();
    let pid = server.child.id();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        for _ in 0..SECONDS {
            tokio::time::sleep(Duration::from_secs(1)).await;
            samples.push(rss_kib(pid));
        }
        samples
    });
    let summary = loadgen::generate(LoadgenArgs {
        protocol: Wire::Http,
        grpc: server.grpc,
        http: server.http,
        spans_per_request: 1000,
        concurrency: 4,
        duration: Some(grayscope::config::Dur(Duration::from_secs(SECONDS))),
        requests: None,
        fault_rate: 0.01,
        seed: 5,
        templates: 16,
        gzip: false,
        faults_out: None,
        server_pid: None,
        threads: 1,
        rate: Some(RATE),
    })
    .await
    .unwrap();
    let samples = sampler.await.unwrap();
    eprintln!(
        "soak: {:.0} spans/s accepted, RSS each second (MiB): {:?}",
        summary.spans_per_second,
        samples.iter().map(|k| k >> 10).collect::<Vec<_>>()
    );

    // Paced, below capacity: everything accepted at the asked rate, nothing refused.
    assert_eq!((summary.errors, summary.refused), (0, 0), "{summary:?}");
    assert!(
        (summary.spans_per_second - RATE).abs() < RATE / 10.0,
        "{summary:?}"
    );
    // Flat: once traces start finishing (the first third), memory stops growing.
    let third = samples.len() / 3;
    let middle = *samples[third..2 * third].iter().max().unwrap();
    let last = *samples[2 * third..].iter().max().unwrap();
    assert!(
        last <= middle + middle / 10 + 8 * 1024,
        "RSS grew from {middle} KiB to {last} KiB at a steady rate"
    );
    // Every accepted span ends in a finalised trace, once the last ones have gone idle.
    let mut m = metrics(&server.api).await;
    for _ in 0..100 {
        if sum(&m, "grayscope_buffered_spans") + sum(&m, "grayscope_queued_spans") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = metrics(&server.api).await;
    }
    let accepted = sum(&m, "grayscope_receiver_accepted_spans_total");
    assert_eq!(accepted, summary.spans);
    let accounted = sum(&m, "grayscope_spans_finalised_total")
        + sum(&m, "grayscope_duplicate_spans_total")
        + sum(&m, "grayscope_conflicting_spans_total")
        + sum(&m, "grayscope_late_spans_total")
        + sum(&m, "grayscope_buffered_spans")
        + sum(&m, "grayscope_queued_spans");
    assert_eq!(accounted, accepted);
    assert_eq!(
        sum(&m, "grayscope_spans_finalised_total{reason=\"memory\"}"),
        0,
        "below capacity, nothing is finalised early"
    );
}
