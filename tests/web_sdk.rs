//! A web front end that starts traces: a page instrumented with the OpenTelemetry web SDK (its
//! fetch instrumentation and OTLP/HTTP exporter, installed from the npm registry and bundled with
//! esbuild at test time), loaded in a real headless Chromium, calls the demo mesh's gateway with
//! `traceparent` and `baggage` and exports its spans to grayscope across origins. Its root CLIENT
//! spans start the traces: no finding on a clean chain, exactly the seeded one otherwise.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::browser::{Browser, have_chromium};
use common::*;
use grayscope::demo::{Demo, DemoOptions, Export, Protocol, parse_faults};

/// The page and its bundle, built once per test run under `target/web-sdk`: `npm ci` from the
/// committed lock file (skipped when the lock file is unchanged), then esbuild.
fn bundle() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../web-sdk");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::read(src.join("package-lock.json")).unwrap();
    let installed = std::fs::read(dir.join("package-lock.json")).ok();
    if installed.as_deref() != Some(&lock[..]) || !dir.join("node_modules").exists() {
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("npm runs (Node.js is required)");
        assert!(
            out.status.success(),
            "npm ci: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for f in ["app.js", "index.html"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let out = Command::new(dir.join("node_modules/.bin/esbuild"))
        .args([
            "app.js",
            "--bundle",
            "--format=iife",
            "--outfile=app.bundle.js",
        ])
        .current_dir(&dir)
        .output()
        .expect("esbuild runs");
    assert!(
        out.status.success(),
        "esbuild: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Serves the page's directory on a loopback port: its own origin, as a web front end has.
async fn serve_page(dir: PathBuf) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/{file}",
        axum::routing::get(
            move |axum::extract::Path(file): axum::extract::Path<String>| {
                let dir = dir.clone();
                async move {
                    let kind = if file.ends_with(".js") {
                        "text/javascript"
                    } else {
                        "text/html"
                    };
                    match file.as_str() {
                        "index.html" | "app.bundle.js" => (
                            [(axum::http::header::CONTENT_TYPE, kind)],
                            std::fs::read(dir.join(&file)).unwrap(),
                        )
                            .into_response(),
                        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                    }
                }
            },
        ),
    );
    use axum::response::IntoResponse;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The page's checkouts through the demo mesh with `faults`: the findings grayscope reports.
async fn checkouts(faults: &[&str]) -> Vec<(String, String, String, String, bool)> {
    let dir = tokio::task::spawn_blocking(bundle).await.unwrap();
    let page = serve_page(dir).await;
    let origin = format!("http://{page}");
    let c = spawn_collector(grayscope::config::ServeArgs {
        otlp_http_cors_origins: Some(vec![origin.clone()]),
        ..test_args()
    })
    .await;
    let export = Export::new(Protocol::Grpc, Some(&format!("http://{}", c.otlp_grpc))).unwrap();
    let specs: Vec<String> = faults.iter().map(|s| s.to_string()).collect();
    let mut o = DemoOptions::new(export, parse_faults(&specs).unwrap());
    // Only the page's requests.
    o.requests = Some(0);
    o.batch_delay = Duration::from_millis(100);
    let demo = Demo::start(o).await.unwrap();

    let b = Browser::start().await;
    b.go(&format!(
        "{origin}/index.html?gateway={}&otlp=http://{}",
        demo.gateway_url(),
        c.otlp_http
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.js("return window.ready === true").await != true {
        assert!(
            Instant::now() < deadline,
            "the page never loaded its bundle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for stage in ["canary", "stable"] {
        let statuses = b
            .js_async(&format!(
                "const done = arguments[0]; window.checkout('{stage}', 3).then(done, e => done(String(e)));"
            ))
            .await;
        assert_eq!(statuses, serde_json::json!([200, 200, 200]), "{stage}");
    }
    let flushed = b
        .js_async("const done = arguments[0]; window.flushSpans().then(() => done('ok'), e => done(String(e)));")
        .await;
    assert_eq!(flushed, "ok");
    drop(b);
    demo.stop().await;
    // The page's spans reach grayscope across origins (its exporter's requests may still be on
    // their way), and every trace is judged once idle.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let g = get_json(&c, "/api/v1/graph").await;
        let starts = g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "web-app")
            .map(|n| n["starts"].clone());
        if starts == Some(serde_json::json!({"canary": 3, "stable": 3})) {
            break;
        }
        assert!(Instant::now() < deadline, "the page's traces: {g}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let found = findings(&c).await;
    c.shutdown().await.unwrap();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_web_front_end_starts_traces_and_is_no_broken_trace() {
    if !have_chromium() {
        return;
    }
    assert_eq!(checkouts(&["none"]).await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_a_web_front_end_the_seeded_hop_is_the_one_finding() {
    if !have_chromium() {
        return;
    }
    let found = checkouts(&["missing@orders->payments"]).await;
    let mut distinct = found.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        vec![f("missing", "in_process", "orders", "payments", true)],
        "{found:?}"
    );
}
