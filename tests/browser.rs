//! The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`), driven over
//! WebDriver: what a person running a canary sees and clicks. Screenshots are saved under
//! `target/tmp/browser/`.

mod common;

use std::time::{Duration, Instant};

use common::browser::{Browser, have_chromium};
use common::*;
use grayscope::app::Collector;
use grayscope::demo::{Demo, DemoOptions, Export, Protocol, parse_faults};
use grayscope::loadgen::{RawClient, Wire};
use grayscope::model::SpanKind;
use grayscope::testkit::RequestBuilder;
use prost::Message;

async fn demo(c: &Collector, faults: &[&str]) -> Demo {
    let export = Export::new(Protocol::Grpc, Some(&format!("http://{}", c.otlp_grpc))).unwrap();
    let specs: Vec<String> = faults.iter().map(|s| s.to_string()).collect();
    let mut o = DemoOptions::new(export, parse_faults(&specs).unwrap());
    o.rate = 20.0;
    o.batch_delay = Duration::from_millis(100);
    Demo::start(o).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_hop_is_red_on_the_graph_and_leads_to_its_first_break() {
    if !have_chromium() {
        return;
    }
    let c = spawn_collector(test_args()).await;
    let d = demo(&c, &["missing@orders->payments"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.flush().await;
    let b = Browser::start().await;
    let site = format!("http://{}", c.http);

    let t = Instant::now();
    b.go(&format!("{site}/?window=5m")).await;
    let edge = b
        .find(r#"a.edge-link[data-caller="orders"][data-callee="payments"][data-health="bad"]"#)
        .await;
    let first_paint = b
        .js("const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint'); return p ? p.startTime : null;")
        .await;
    eprintln!(
        "overview: loaded in {:?}, first contentful paint {first_paint} ms",
        t.elapsed()
    );
    for node in ["gateway", "users", "orders", "payments", "inventory"] {
        b.find(&format!(r#"g.node[data-node="{node}"]"#)).await;
    }
    let label = b.text(&edge).await;
    assert!(
        label.contains("missing"),
        "the red edge is labelled: {label}"
    );
    let ok = b
        .find(r#"a.edge-link[data-caller="gateway"][data-callee="users"]"#)
        .await;
    assert_eq!(
        b.text(&ok).await,
        "",
        "a healthy edge has no label: only findings are labelled"
    );
    // Red, by the stylesheet, not only by class.
    let stroke = b
        .js(r#"return getComputedStyle(document.querySelector('a.edge-link[data-health="bad"] path')).stroke;"#)
        .await;
    assert_eq!(stroke, "rgb(207, 34, 46)");
    b.screenshot("overview").await;

    // The page updates itself: new findings appear in it, and it is not reloaded.
    const MISSING: &str = "const a = [...document.querySelectorAll('.stat a')].find(a => a.textContent === 'missing'); return a ? Number(a.closest('.stat').querySelector('.n').textContent) : 0;";
    b.js("window.__grayscopeMarker = 1; return null;").await;
    let before = b.js(MISSING).await.as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        assert_eq!(
            b.js("return window.__grayscopeMarker;").await,
            1,
            "the page was reloaded"
        );
        let now = b.js(MISSING).await.as_u64().unwrap();
        if now > before {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "no new finding shown: still {now}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("live update: missing findings shown went from {before} to {after}");

    // The stage selector narrows the graph: stable traffic only.
    let all_title = b
        .js(r#"return document.querySelector('a.edge-link[data-caller="orders"][data-callee="payments"] title').textContent;"#)
        .await;
    b.js("const s = document.getElementById('stage'); s.value = 'stable'; s.dispatchEvent(new Event('change')); return null;")
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.url().await.contains("stage=stable") {
        assert!(Instant::now() < deadline, "the selector did not apply");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.find(r#"a.edge-link[data-caller="orders"][data-callee="payments"]"#)
        .await;
    let stable_title = b
        .js(r#"return document.querySelector('a.edge-link[data-caller="orders"][data-callee="payments"] title').textContent;"#)
        .await;
    assert_ne!(all_title, stable_title, "fewer calls for one stage");
    let selected = b.js("return document.getElementById('stage').value;").await;
    assert_eq!(selected, "stable", "the selection is kept");

    // One drawn edge per caller and callee, even when the callee is also known by peer.service:
    // two would lie on top of each other, and the one below could not be clicked.
    let drawn = b
        .js("return Array.from(document.querySelectorAll('a.edge-link')).map(a => a.dataset.caller + '>' + a.dataset.callee).join(' ');")
        .await;
    let drawn: Vec<&str> = drawn.as_str().unwrap().split(' ').collect();
    let distinct: std::collections::BTreeSet<&&str> = drawn.iter().collect();
    assert_eq!(
        distinct.len(),
        drawn.len(),
        "an edge drawn twice: {drawn:?}"
    );
    // Click the broken edge (its label), then an example trace: its first break is highlighted.
    b.click(r#"a.edge-link[data-caller="orders"][data-callee="payments"] text"#)
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.url().await.contains("/edges/orders/payments") {
        assert!(Instant::now() < deadline, "the edge link did not open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h1 = b.find("h1").await;
    assert_eq!(b.text(&h1).await, "orders → payments");
    b.screenshot("edge").await;
    b.click("ul.examples a").await;
    let row = b.find(r#"tr[data-first-break="true"]"#).await;
    let row_text = b.text(&row).await;
    assert!(row_text.contains("missing (in_process)"), "{row_text}");
    assert!(
        row_text.contains("without the request's context"),
        "{row_text}"
    );
    let bg = b
        .js(r#"return getComputedStyle(document.querySelector('tr[data-first-break="true"]')).backgroundColor;"#)
        .await;
    assert_eq!(bg, "rgb(255, 235, 233)", "highlighted");
    b.screenshot("trace").await;

    drop(b);
    d.stop().await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_names_are_text_and_open_no_dialog() {
    if !have_chromium() {
        return;
    }
    let c = spawn_collector(test_args()).await;
    let evil = "<img src=x onerror=alert(1)>";
    let mut req = RequestBuilder::new().resource(evil, Some("stable"));
    req = req
        .span(
            1,
            1,
            None,
            "GET",
            SpanKind::Server,
            &[(STAGE, "</script><script>alert(2)</script>")],
        )
        .span(1, 2, Some(1), "call", SpanKind::Client, &[]);
    let r = RawClient::new(Wire::Grpc, c.otlp_grpc)
        .send(req.build().encode_to_vec().into(), false)
        .await
        .unwrap();
    assert!(r.is_ok());
    c.flush().await;
    let b = Browser::start().await;
    let site = format!("http://{}", c.http);
    for path in [
        "/?window=5m".to_string(),
        format!("/traces/{:032x}", 1),
        "/findings".into(),
    ] {
        b.go(&format!("{site}{path}")).await;
        b.find("main").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!b.dialog_open().await, "{path}: a dialog opened");
        let imgs = b
            .js("return document.querySelectorAll('img').length;")
            .await;
        assert_eq!(imgs, 0, "{path}: markup from a span became an element");
        let body = b.js("return document.body.innerText;").await;
        assert!(
            body.as_str().unwrap().contains(evil),
            "{path}: shown as text"
        );
    }
    b.screenshot("hostile").await;
    drop(b);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn over_https_the_dashboard_asks_for_a_read_token_once_and_keeps_it_from_scripts() {
    if !have_chromium() {
        return;
    }
    let pki = common::pki::Pki::new();
    let mut args = test_args();
    args.security = grayscope::config::SecurityArgs {
        http_tls_cert: Some(pki.cert.clone()),
        http_tls_key: Some(pki.key.clone()),
        read_tokens: Some(pki.read_tokens.clone()),
        ..Default::default()
    };
    let c = spawn_collector(args).await;
    let demo = demo(&c, &["missing@orders->payments"]).await;
    let b = Browser::start().await;
    let site = format!("https://localhost:{}", c.http.port());

    b.go(&format!("{site}/findings?kind=missing")).await;
    assert_eq!(
        b.url().await,
        format!("{site}/login?next=%2Ffindings%3Fkind%3Dmissing")
    );
    b.type_into("#token", "not-the-token-0123456789").await;
    b.click("button[type=submit]").await;
    let refused = b.find("#refused").await;
    assert_eq!(b.text(&refused).await, "That token is not accepted.");
    b.screenshot("login-refused").await;

    b.type_into("#token", common::pki::READ_TOKEN).await;
    b.click("button[type=submit]").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !b.url().await.ends_with("/findings?kind=missing") {
        assert!(
            Instant::now() < deadline,
            "not sent back: {}",
            b.url().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.find("form.controls").await;
    let title = b.js("return document.title").await;
    assert!(title.as_str().unwrap().contains("indings"), "{title}");

    let cookies = b.cmd(reqwest::Method::GET, "/cookie", None).await;
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "grayscope_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["secure"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert_eq!(
        b.js("return document.cookie").await,
        "",
        "no script reads it"
    );

    // The session opens the rest of the site, the API the pages call included.
    b.go(&format!("{site}/")).await;
    b.find("svg").await;
    let status = b
        .js("const r = new XMLHttpRequest(); r.open('GET', '/api/v1/findings?limit=1', false); r.send(); return r.status")
        .await;
    assert_eq!(status, 200);
    b.screenshot("logged-in-overview").await;
    let m = c.telemetry.encode();
    assert!(
        m.contains("grayscope_auth_refused_total{listener=\"http\",reason=\"invalid\"} 1"),
        "the wrong token counted"
    );
    demo.stop().await;
    c.shutdown().await.unwrap();
}
