//! The dashboard for a large mesh, in a real headless Chromium: 200 services and 1,000 calls from
//! the load generator's wide mesh. What is drawn must be legible (no label over a node or another
//! label, measured in the page), bounded (edges under the cap, the page under 1 MB), and complete
//! where it matters (every broken call drawn, in red); a service's page must say the same as the
//! API. Screenshots are saved under `target/tmp/browser/`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::browser::{Browser, have_chromium};
use common::*;
use grayscope::loadgen::{self, LoadgenArgs, Wire};

const SERVICES: usize = 200;
const EDGES: usize = 1000;
/// The overview's cap on edges drawn around the broken ones.
const CAP: usize = 80;

async fn json(c: &grayscope::app::Collector, path: &str) -> serde_json::Value {
    let r = reqwest::get(format!("http://{}{path}", c.http))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// Boxes of everything matching `css` in the page: [left, top, right, bottom] and its text.
const BOXES: &str = r#"return [...document.querySelectorAll(arguments[0])].map(e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom, e.textContent || '']; });"#;

async fn boxes(b: &Browser, css: &str) -> Vec<(f64, f64, f64, f64, String)> {
    let v = b
        .cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(serde_json::json!({"script": BOXES, "args": [css]})),
        )
        .await;
    v.as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|r| {
            let f = |i: usize| r[i].as_f64().unwrap();
            (f(0), f(1), f(2), f(3), r[4].as_str().unwrap().to_string())
        })
        .collect()
}

type Box4 = (f64, f64, f64, f64, String);

fn overlap(a: &Box4, b: &Box4) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// No node label over another, no edge label over a node or another edge label.
async fn assert_legible(b: &Browser, page: &str) -> (usize, usize) {
    let node_labels = boxes(b, "svg.graph g.node text").await;
    let nodes = boxes(b, "svg.graph g.node rect").await;
    let edge_labels = boxes(b, "svg.graph a.edge-link text").await;
    for (i, a) in node_labels.iter().enumerate() {
        for c in &node_labels[i + 1..] {
            assert!(
                !overlap(a, c),
                "{page}: node labels {a:?} and {c:?} overlap"
            );
        }
    }
    for (i, l) in edge_labels.iter().enumerate() {
        for n in &nodes {
            assert!(
                !overlap(l, n),
                "{page}: edge label {l:?} covers a node {n:?}"
            );
        }
        for c in &edge_labels[i + 1..] {
            assert!(
                !overlap(l, c),
                "{page}: edge labels {l:?} and {c:?} overlap"
            );
        }
    }
    (nodes.len(), edge_labels.len())
}

/// The page's first contentful paint and when its document had loaded, in ms from navigation;
/// headless Chromium reports the paint a moment after it happens.
async fn first_paint(b: &Browser) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = b
            .js("const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint'); const n = performance.getEntriesByType('navigation')[0]; return p ? [p.startTime, n.responseEnd, n.domContentLoadedEventEnd] : null;")
            .await;
        if !v.is_null() || Instant::now() > deadline {
            return match v.as_array() {
                Some(t) => format!(
                    "first contentful paint {:.0} ms (response end {:.0} ms, DOM loaded {:.0} ms)",
                    t[0].as_f64().unwrap_or(0.0),
                    t[1].as_f64().unwrap_or(0.0),
                    t[2].as_f64().unwrap_or(0.0)
                ),
                None => "no paint timing reported".into(),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_services_draw_legibly_with_every_broken_call_in_red() {
    if !have_chromium() {
        return;
    }
    let c = spawn_collector(test_args()).await;
    let mesh = loadgen::wide::WideMesh::new(SERVICES, EDGES, 8, 7);
    let summary = loadgen::generate(LoadgenArgs {
        protocol: Wire::Grpc,
        grpc: c.otlp_grpc,
        http: c.otlp_http,
        spans_per_request: 1000,
        concurrency: 2,
        duration: None,
        // Each template twice: its traces cross about 80 calls, 16 of them every call.
        requests: Some(32),
        fault_rate: 0.05,
        fault_kinds: Vec::new(),
        seed: 7,
        templates: 16,
        gzip: false,
        faults_out: None,
        server_pid: None,
        threads: 1,
        rate: None,
        tls: false,
        services: Some(SERVICES),
        edges: Some(EDGES),
        depth: Some(8),
        auth: Default::default(),
    })
    .await
    .unwrap();
    assert_eq!((summary.requests, summary.errors), (32, 0));
    c.flush().await;

    let graph = json(&c, "/api/v1/graph?since=1h").await;
    let services = graph["nodes"].as_array().unwrap().len();
    let calls = graph["edges"].as_array().unwrap();
    assert_eq!(services, SERVICES);
    assert_eq!(
        calls.len(),
        mesh.edges.len(),
        "every call of the mesh crossed"
    );
    assert!(
        mesh.edges.len() >= 990,
        "about {EDGES}: {}",
        mesh.edges.len()
    );
    let broken: BTreeMap<(String, String), f64> = calls
        .iter()
        .filter_map(|e| {
            let breaks: u64 = e["first_breaks"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            (breaks > 0).then(|| {
                (
                    (
                        e["caller"].as_str().unwrap().to_string(),
                        e["callee"].as_str().unwrap().to_string(),
                    ),
                    breaks as f64 / e["calls"].as_u64().unwrap() as f64,
                )
            })
        })
        .collect();
    let faulty: BTreeSet<(String, String)> = mesh
        .faulty()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let broke: BTreeSet<(String, String)> = broken.keys().cloned().collect();
    assert!(
        broke.is_subset(&faulty) && broke.len() * 2 >= faulty.len(),
        "the calls that broke are the faulty ones (faults are drawn at random): {broke:?} of {faulty:?}"
    );

    // The overview: its weight and server time, as a client sees them.
    let site = format!("http://{}", c.http);
    let mut times = Vec::new();
    let mut weight = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let body = reqwest::get(format!("{site}/?window=1h"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        times.push(t.elapsed());
        weight = body.len();
    }
    eprintln!("overview: {weight} bytes; server round trips {times:?} (debug build)");
    assert!(weight < 1 << 20, "the overview weighs {weight} bytes");

    let b = Browser::start().await;
    b.go(&format!("{site}/?window=1h")).await;
    b.find("svg.graph").await;
    eprintln!("overview: {} (debug build)", first_paint(&b).await);
    let drawn = b
        .js("return [...document.querySelectorAll('a.edge-link')].map(a => [a.dataset.caller, a.dataset.callee, a.dataset.health, getComputedStyle(a.querySelector('path')).stroke]);")
        .await;
    let drawn = drawn.as_array().unwrap();
    assert!(
        drawn.len() <= CAP,
        "{} edges drawn, over the cap",
        drawn.len()
    );
    for ((caller, callee), share) in &broken {
        let e = drawn
            .iter()
            .find(|e| e[0] == caller.as_str() && e[1] == callee.as_str())
            .unwrap_or_else(|| panic!("the broken call {caller} -> {callee} is not drawn"));
        // Under 5 % broken is amber, from 5 % red: the same rule as the label.
        let (health, colour) = if *share >= 0.05 {
            ("bad", "rgb(207, 34, 46)")
        } else {
            ("warn", "rgb(183, 121, 31)")
        };
        assert_eq!(
            (e[2].as_str(), e[3].as_str()),
            (Some(health), Some(colour)),
            "{e}"
        );
    }
    assert!(
        broken.values().any(|&s| s >= 0.05),
        "some call is red: {broken:?}"
    );
    let (nodes, labels) = assert_legible(&b, "overview").await;
    assert_eq!(
        labels,
        broken.len(),
        "only broken calls are labelled, all of them"
    );
    let note = b.text(&b.find("#picture-note").await).await;
    assert!(
        note.contains(&format!("{services} services, {} calls", calls.len()))
            && note.contains("calls are left out")
            && note.contains("List every call"),
        "the overview says what it left out: {note}"
    );
    eprintln!(
        "overview: {nodes} nodes, {} edges drawn; {note}",
        drawn.len()
    );
    b.screenshot("scale-overview").await;

    // By group: ten namespaces, one box each; a click opens one, still legible.
    b.go(&format!("{site}/?window=1h&view=groups")).await;
    b.find("svg.graph").await;
    let groups = b
        .js("return document.querySelectorAll('g.node.group').length;")
        .await;
    assert_eq!(groups, 10);
    assert_legible(&b, "groups").await;
    b.screenshot("scale-groups").await;
    b.click(r#"g.node[data-node="group:payments"]"#).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.url().await.contains("expand=payments") {
        assert!(Instant::now() < deadline, "the group did not open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.find("svg.graph").await;
    let open = b
        .js("return [document.querySelectorAll('g.node.group').length, document.querySelectorAll('g.node:not(.group)').length];")
        .await;
    assert_eq!(open[0], 9, "{open}");
    assert!(
        open[1].as_u64().unwrap() > 10,
        "payments' services drawn: {open}"
    );
    assert_legible(&b, "groups, payments open").await;
    b.screenshot("scale-groups-open").await;

    // A service with a canary instance: its page's matrix says what the API says.
    let canary = mesh
        .services
        .iter()
        .find(|s| {
            s.canary
                && calls.iter().any(|e| {
                    e["callee"] == s.name.as_str()
                        && e["routing"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|r| r["instance_stage"] == "canary")
                })
        })
        .expect("a canary service that served canary calls");
    let name = &canary.name;
    let api = json(&c, &format!("/api/v1/services/{name}?since=1h")).await;
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in api["served"].as_array().unwrap() {
        *want
            .entry((
                r["stage"].as_str().unwrap_or("none").into(),
                r["instance_stage"].as_str().unwrap_or("none").into(),
            ))
            .or_default() += r["calls"].as_u64().unwrap();
    }
    assert!(
        want.get(&("canary".into(), "canary".into()))
            .is_some_and(|&n| n > 0),
        "{want:?}"
    );
    b.go(&format!("{site}/services/{name}?window=1h")).await;
    b.find("#served table.matrix").await;
    eprintln!("service page: {} (debug build)", first_paint(&b).await);
    let cells = b
        .js("return [...document.querySelectorAll('#served td')].map(td => [td.dataset.stage, td.dataset.instance, Number(td.textContent)]);")
        .await;
    let shown: BTreeMap<(String, String), u64> = cells
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c[2].as_u64().unwrap() > 0)
        .map(|c| {
            (
                (
                    c[0].as_str().unwrap().to_string(),
                    c[1].as_str().unwrap().to_string(),
                ),
                c[2].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, want, "the page's matrix is the API's");
    let columns = b
        .js("return [...document.querySelectorAll('#served thead th')].slice(1).map(th => th.textContent);")
        .await;
    assert_eq!(columns, serde_json::json!(["canary", "stable"]));
    assert_legible(&b, "service page").await;
    b.screenshot("scale-service").await;
    // Two calls away: more of the mesh, still legible.
    b.go(&format!("{site}/services/{name}?window=1h&depth=2"))
        .await;
    b.find("svg.graph").await;
    assert_legible(&b, "service page, depth 2").await;

    // The search box completes names from any page and opens the service.
    let prefix: String = name.chars().take(name.len() - 1).collect();
    b.type_into("form.search input", &prefix).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let options = b
            .js("return [...document.querySelectorAll('#service-names option')].map(o => o.value);")
            .await;
        if options
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == name.as_str())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no completion for {prefix}: {options}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(b);
    c.shutdown().await.unwrap();
}
