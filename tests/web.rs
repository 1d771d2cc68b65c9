//! The dashboard's pages over HTTP: what they show for faulty traffic, and that nothing a span
//! says is ever markup. (Browser-level behaviour is tested in Chromium.)

mod common;

use common::*;
use grayscope::app::Collector;
use grayscope::loadgen::{RawClient, Wire};
use grayscope::model::SpanKind;
use grayscope::testkit::RequestBuilder;
use prost::Message;

const EVIL: &str = "<img src=x onerror=alert(1)>";

async fn page(c: &Collector, path: &str) -> (u16, String, String) {
    let r = reqwest::get(format!("http://{}{path}", c.http))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let csp = r
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, csp, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_show_the_broken_hop_and_escape_everything_from_spans() {
    let c = spawn_collector(test_args()).await;
    // EVIL (canary) calls orders, which lost the stage; the stage value itself is hostile too.
    let mut b = RequestBuilder::new().resource(EVIL, Some("stable"));
    for t in 1..=3u128 {
        b = b
            .span(
                t,
                1,
                None,
                "GET </script>",
                SpanKind::Server,
                &[(STAGE, "canary")],
            )
            .span(
                t,
                2,
                Some(1),
                "call",
                SpanKind::Client,
                &[(STAGE, "canary")],
            );
    }
    b = b
        .span(
            9,
            1,
            None,
            "GET",
            SpanKind::Server,
            &[(STAGE, "</script><script>alert(2)</script>")],
        )
        .resource("orders", Some("stable"));
    for t in 1..=3u128 {
        b = b.span(t, 3, Some(2), "GET /o", SpanKind::Server, &[]);
    }
    let r = RawClient::new(Wire::Grpc, c.otlp_grpc)
        .send(b.build().encode_to_vec().into(), false)
        .await
        .unwrap();
    assert!(r.is_ok());
    c.flush().await;

    let (status, csp, html) = page(&c, "/").await;
    assert_eq!(status, 200);
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        html.contains(r#"data-health="bad""#),
        "the broken edge is red"
    );
    assert!(html.contains("100.0% missing"), "and labelled");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    for path in [
        "/",
        "/findings",
        &format!("/traces/{:032x}", 1),
        "/edges/orders/orders",
        "/fragments/overview?window=5m",
    ] {
        let (_, _, html) = page(&c, path).await;
        assert!(!html.contains("<img src=x"), "{path}: unescaped markup");
        assert!(
            !html.contains("</script><script>"),
            "{path}: unescaped script"
        );
        assert!(!html.contains("<script>alert"), "{path}");
    }
    let (_, _, trace) = page(&c, &format!("/traces/{:032x}", 1)).await;
    assert!(trace.contains("data-first-break=\"true\""), "{trace}");
    assert!(
        trace.contains("GET &#60;/script&#62;"),
        "the span name, as text"
    );
    let (_, _, findings) = page(&c, "/findings?kind=missing").await;
    assert_eq!(findings.matches("<tr class=\"first-break\">").count(), 3);
    let (status, _, _) = page(&c, "/traces/zzz").await;
    assert_eq!(status, 400);
    c.shutdown().await.unwrap();
}

/// A large graph opens on its broken part, with a way to see all of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_graph_opens_on_its_broken_part() {
    let c = spawn_collector(test_args()).await;
    // A chain of 60 services; svc-30 loses the stage on its call to svc-31.
    let mut b = RequestBuilder::new();
    for i in 0..59u64 {
        let t = u128::from(i) + 1;
        let attrs: &[(&str, &str)] = if i == 30 { &[] } else { &[(STAGE, "canary")] };
        b = b
            .resource(&format!("svc-{i:02}"), Some("stable"))
            .span(t, 1, None, "GET", SpanKind::Server, &[(STAGE, "canary")])
            .span(
                t,
                2,
                Some(1),
                "call",
                SpanKind::Client,
                &[(STAGE, "canary")],
            )
            .resource(&format!("svc-{:02}", i + 1), Some("stable"))
            .span(t, 3, Some(2), "GET", SpanKind::Server, attrs);
    }
    let r = RawClient::new(Wire::Grpc, c.otlp_grpc)
        .send(b.build().encode_to_vec().into(), false)
        .await
        .unwrap();
    assert!(r.is_ok());
    c.flush().await;
    let (_, _, html) = page(&c, "/?window=1h").await;
    assert_eq!(
        html.matches("class=\"edge-link\"").count(),
        3,
        "the broken call, the call into its caller and the call out of its callee"
    );
    assert!(html.contains(r#"data-caller="svc-30" data-callee="svc-31" data-health="bad""#));
    assert!(
        html.contains("60 services, 59 calls: showing 1 call broken and 2 calls around them; 56 calls are left out."),
        "{html}"
    );
    assert!(
        html.contains(r#"<a class="view-link" href="/?window=1h&#38;view=all">Whole graph</a>"#)
    );
    assert!(html.contains(r#"href="/edges?window=1h&#38;health=all">List every call</a>"#));
    // Only the broken edge is labelled: colour is not the only signal, and "ok" says nothing.
    assert_eq!(
        html.matches("</text></g></a>").count(),
        1 + 4,
        "one edge label, four nodes"
    );
    let (_, _, all) = page(&c, "/?window=1h&view=all").await;
    assert_eq!(all.matches("class=\"edge-link\"").count(), 59);
    // No span names a group: one box, and it says why.
    let (_, _, groups) = page(&c, "/?window=1h&view=groups").await;
    assert!(groups.contains("No service names a group"), "{groups}");
    assert_eq!(groups.matches("data-node=").count(), 1);
    // Focus on one service: its caller and its callee.
    let (_, _, focus) = page(&c, "/?window=1h&focus=svc-10").await;
    assert_eq!(focus.matches("class=\"edge-link\"").count(), 2, "{focus}");
    assert!(focus.contains(r#"class="node centre" data-node="svc-10""#));
    let (_, _, nobody) = page(&c, "/?window=1h&focus=nobody").await;
    assert!(
        nobody.contains("No service nobody in this window."),
        "{nobody}"
    );
    assert_eq!(
        nobody.matches("class=\"edge-link\"").count(),
        3,
        "the broken part"
    );

    // The service's page, and the list the search box lands on.
    let (status, _, svc) = page(&c, "/services/svc-30?window=1h").await;
    assert_eq!(status, 200);
    assert!(
        svc.contains("svc-29 &#8594; svc-30") || svc.contains("svc-29 &rarr; svc-30"),
        "{svc}"
    );
    assert!(
        svc.contains(r#"data-stage="canary" data-instance="stable">1</td>"#),
        "{svc}"
    );
    let r = reqwest::get(format!("http://{}/services?q=svc-30", c.http))
        .await
        .unwrap();
    assert_eq!(
        r.url().path(),
        "/services/svc%2D30",
        "an exact name opens its page"
    );
    let (_, _, list) = page(&c, "/services?q=svc-3").await;
    assert!(list.contains("<p>10 services match.</p>"), "{list}");
    let names: Vec<String> = reqwest::get(format!("http://{}/complete/services?q=SVC-5", c.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        names,
        (50..60).map(|i| format!("svc-{i}")).collect::<Vec<_>>()
    );
    // Every call, fifty to a page, the broken one first.
    let (_, _, first) = page(&c, "/edges?window=1h&health=all").await;
    assert_eq!(first.matches("<tr class=").count(), 50);
    assert!(
        first.find("svc-30 &rarr; svc-31").unwrap() < first.find("svc-00 &rarr; svc-01").unwrap()
    );
    assert!(
        first.contains(
            r#"class="next" href="/edges?window=1h&amp;health=all&amp;service=&amp;page=2""#
        ) || first.contains("page=2\">Next"),
        "{first}"
    );
    let (_, _, second) = page(&c, "/edges?window=1h&health=all&page=2").await;
    assert_eq!(second.matches("<tr class=").count(), 9);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_errors_are_pages_with_the_right_status_and_api_errors_are_json() {
    let c = spawn_collector(test_args()).await;
    let html = |path: &'static str| {
        let http = c.http;
        async move {
            let r = reqwest::get(format!("http://{http}{path}")).await.unwrap();
            let status = r.status().as_u16();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (status, ct, r.text().await.unwrap())
        }
    };
    for (path, status, says) in [
        ("/traces/nothex", 400, "&#39;nothex&#39; is not a trace id"),
        (
            "/traces/4bf92f3577b34da6a3ce929d0e0e4736",
            404,
            "trace 4bf92f3577b34da6a3ce929d0e0e4736 is unknown",
        ),
        (
            "/?window=custom&since=soon",
            400,
            "invalid parameter &#39;since&#39;",
        ),
        (
            "/edges/a/b?window=custom&until=yesterday-ish",
            400,
            "invalid parameter &#39;until&#39;",
        ),
        ("/edges/a/b", 404, "no edge a -&#62; b"),
        // The findings form comes back with what was wrong in it, as the JSON API says it.
        ("/findings?kind=ok", 400, "invalid parameter &#39;kind&#39;"),
        (
            "/findings?first_break=maybe",
            400,
            "invalid parameter &#39;first_break&#39;",
        ),
    ] {
        let (s, ct, body) = html(path).await;
        assert_eq!(s, status, "{path}: {body}");
        assert!(ct.starts_with("text/html"), "{path}: {ct}");
        assert!(body.contains(says), "{path}: {body}");
        assert!(body.contains("<a href=\"/\""), "{path}: a way back");
    }
    let (s, ct, body) = html("/api/v1/findings?first_break=maybe").await;
    assert_eq!(s, 400);
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(
        body,
        r#"{"error":"invalid parameter 'first_break': 'maybe' is not true or false"}"#
    );
    let (s, ct, body) = html("/no/such/page").await;
    assert_eq!(s, 404);
    assert!(ct.starts_with("application/json"), "{ct}");
    assert!(body.contains("no such endpoint"), "{body}");
    c.shutdown().await.unwrap();
}
