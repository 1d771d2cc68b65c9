//! A real broker hop with an official OpenTelemetry instrumentation on both sides: Python services
//! using the OpenTelemetry SDK and `opentelemetry-instrumentation-pika` publish to and consume
//! from Debian's RabbitMQ, exporting OTLP/HTTP with the SDK's batch processor to a collector.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::python::venv;
use common::rabbitmq::Broker;
use common::*;
use grayscope::app::Collector;

const MESSAGES: usize = 4;

struct Rig {
    python: std::path::PathBuf,
    broker: Broker,
}

impl Rig {
    fn start() -> Option<Rig> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
        let python = venv(&dir.join("requirements.txt"))?;
        let broker = Broker::start()?;
        Some(Rig { python, broker })
    }

    fn service(&self, c: &Collector, role: &str, queue: &str, extra: &[&str]) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/pika_service.py");
        let mut cmd = Command::new(&self.python);
        cmd.arg(script)
            .arg(role)
            .args(["--amqp-port", &self.broker.amqp_port.to_string()])
            .args(["--otlp", &format!("http://{}", c.otlp_http)])
            .args(["--queue", queue])
            .args(["--count", &MESSAGES.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    }

    /// A consumer (instance stage `consumer_stage`) and a producer (`producer` options) exchange
    /// [`MESSAGES`] messages on `queue`; both flush their spans on exit.
    async fn exchange(&self, c: &Collector, queue: &str, consumer_stage: &str, producer: &[&str]) {
        let mut consumer = self
            .service(c, "consume", queue, &["--instance-stage", consumer_stage])
            .spawn()
            .expect("the consumer starts");
        // Its queue is declared and it is consuming before anything is published.
        let mut out = consumer.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = [0u8; 10];
            out.read_exact(&mut buf).map(|_| buf)
        });
        let ready = tokio::time::timeout(Duration::from_secs(90), ready)
            .await
            .expect("the consumer is ready within 90 s");
        assert_eq!(&ready.unwrap().unwrap(), b"consuming\n");
        let mut producer = self.service(c, "produce", queue, producer);
        let status = tokio::task::spawn_blocking(move || producer.status())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "producer: {status}");
        let status = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || consumer.wait()),
        )
        .await
        .expect("the consumer handles every message within 60 s")
        .unwrap()
        .unwrap();
        assert!(status.success(), "consumer: {status}");
        // Both exported on exit; spans are finalised after trace-idle.
        tokio::time::sleep(Duration::from_millis(800)).await;
        c.flush().await;
    }
}

fn edges(text: &str, verdict: &str) -> f64 {
    let sample = format!(
        "grayscope_edges_total{{caller=\"orders\",callee=\"billing\",stage=\"canary\",verdict=\"{verdict}\"}}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&sample))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn metrics(c: &Collector) -> String {
    reqwest::get(format!("http://{}/metrics", c.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pika_over_rabbitmq_clean_then_each_fault_gives_exactly_its_finding() {
    let Some(rig) = Rig::start() else { return };

    // Clean: the stage travels as baggage in the message headers.
    let mut args = test_args();
    args.verify.declared_instances = Some(vec!["billing=canary".into()]);
    let c = spawn_collector(args.clone()).await;
    rig.exchange(&c, "clean", "canary", &[]).await;
    assert_eq!(findings(&c).await, vec![]);
    let m = metrics(&c).await;
    // Each message: orders' request -> its publish, and the publish -> billing's handling.
    assert_eq!(edges(&m, "ok"), 2.0 * MESSAGES as f64, "{m}");
    c.shutdown().await.unwrap();

    // A producer whose propagator is TraceContext only: the baggage never reaches the message.
    let c = spawn_collector(args.clone()).await;
    rig.exchange(
        &c,
        "tracecontext",
        "canary",
        &["--propagators", "tracecontext"],
    )
    .await;
    assert_eq!(
        findings(&c).await,
        vec![f("missing", "messaging", "orders", "billing", true); MESSAGES]
    );
    let v = get_json(&c, "/api/v1/findings?limit=1").await;
    let detail = v["findings"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("'tracecontext'"), "{detail}");
    c.shutdown().await.unwrap();

    // A canary message handled by billing's stable consumer while its canary consumer is live.
    let c = spawn_collector(args).await;
    rig.exchange(&c, "misrouted", "stable", &[]).await;
    assert_eq!(
        findings(&c).await,
        vec![f("misrouted", "messaging", "orders", "billing", true); MESSAGES]
    );
    c.shutdown().await.unwrap();
}
