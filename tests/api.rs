//! The JSON API over HTTP: traces live and finalised, filters, and errors that name what is wrong.

mod common;

use common::*;
use grayscope::app::Collector;
use grayscope::loadgen::{RawClient, Wire};
use grayscope::model::SpanKind;
use grayscope::testkit::RequestBuilder;
use prost::Message;

const BROKEN: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
const CLEAN: u128 = 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c;

/// users SERVER (canary) -> users CLIENT (no stage) -> orders SERVER, and a clean twin.
async fn send(c: &Collector) {
    let req = RequestBuilder::new()
        .resource("users", Some("stable"))
        .span(
            BROKEN,
            1,
            None,
            "GET /u",
            SpanKind::Server,
            &[(STAGE, "canary")],
        )
        .span(BROKEN, 2, Some(1), "call orders", SpanKind::Client, &[])
        .span(
            CLEAN,
            1,
            None,
            "GET /u",
            SpanKind::Server,
            &[(STAGE, "canary")],
        )
        .span(
            CLEAN,
            2,
            Some(1),
            "call orders",
            SpanKind::Client,
            &[(STAGE, "canary")],
        )
        .resource("orders", Some("canary"))
        .span(BROKEN, 3, Some(2), "GET /o", SpanKind::Server, &[])
        .span(
            CLEAN,
            3,
            Some(2),
            "GET /o",
            SpanKind::Server,
            &[(STAGE, "canary")],
        )
        .build();
    let r = RawClient::new(Wire::Http, c.otlp_http)
        .send(req.encode_to_vec().into(), false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}

async fn get(c: &Collector, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{}{}", c.http, path))
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/json", "{path}");
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_is_readable_while_assembled_and_after_finalisation() {
    let mut args = test_args();
    args.trace_idle = Some("10m".parse().unwrap());
    let c = spawn_collector(args).await;
    send(&c).await;
    let id = format!("{BROKEN:032x}");

    let (status, live) = get(&c, &format!("/api/v1/traces/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(live["finalised"], false);
    assert_eq!(live["spans"].as_array().unwrap().len(), 3);
    assert_eq!(
        live["findings"].as_array().unwrap().len(),
        0,
        "first breaks are judged at finalisation"
    );

    c.flush().await;
    let (status, t) = get(&c, &format!("/api/v1/traces/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(t["trace_id"], id);
    assert_eq!(t["finalised"], true);
    let spans = t["spans"].as_array().unwrap();
    assert_eq!(spans[0]["service"], "users");
    assert_eq!(spans[0]["kind"], "SERVER");
    assert_eq!(spans[0]["stage"], "canary");
    assert_eq!(spans[0]["parent_span_id"], serde_json::Value::Null);
    assert_eq!(spans[2]["instance_stage"], "canary");
    assert_eq!(spans[2]["parent_span_id"], "0000000000000002");
    let mut verdicts: Vec<_> = t["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["verdict"].as_str().unwrap(), e["scope"].as_str().unwrap()))
        .collect();
    verdicts.sort();
    assert_eq!(
        verdicts,
        vec![("absent", "cross_service"), ("missing", "in_process")]
    );
    assert_eq!(t["findings"][0]["kind"], "missing");

    // A clean trace is not kept once finalised.
    let (status, e) = get(&c, &format!("/api/v1/traces/{CLEAN:032x}")).await;
    assert_eq!(status, 404);
    assert!(e["error"].as_str().unwrap().contains("is unknown"));
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_narrow_the_findings() {
    let c = spawn_collector(test_args()).await;
    send(&c).await;
    c.flush().await;
    let count = |v: &serde_json::Value| v["findings"].as_array().unwrap().len();
    for (query, n) in [
        ("", 1),
        ("?kind=missing", 1),
        ("?kind=changed", 0),
        ("?caller=users&callee=orders", 1),
        ("?callee=users", 0),
        ("?stage=canary&scope=in_process&first_break=true", 1),
        ("?stage=stable", 0),
        ("?stage=none", 0),
        ("?first_break=false", 0),
        (&format!("?trace_id={BROKEN:032x}"), 1),
        (&format!("?trace_id={CLEAN:032x}"), 0),
        ("?limit=1", 1),
        ("?since=1h", 1),
        ("?since=2000-01-01T00:00:00Z&until=1h", 0),
        ("?until=2100-01-01T00:00:00Z", 1),
        ("?until=2100-01-01T01:00:00%2B01:00&since=1h30m", 1),
        ("?since=2099-12-31T23:00:00-01:00", 0),
    ] {
        let (status, v) = get(&c, &format!("/api/v1/findings{query}")).await;
        assert_eq!((status, count(&v)), (200, n), "{query}");
    }
    let (_, g) = get(&c, "/api/v1/graph?stage=canary").await;
    assert_eq!(g["stage"], "canary");
    assert_eq!(g["edges"][0]["first_breaks"]["missing"], 1);
    let (_, g) = get(&c, "/api/v1/graph?stage=purple").await;
    assert_eq!(g["edges"].as_array().unwrap().len(), 0);
    let (_, g) = get(
        &c,
        "/api/v1/graph?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z",
    )
    .await;
    assert_eq!(g["edges"].as_array().unwrap().len(), 0);

    let (status, s) = get(&c, "/api/v1/services").await;
    assert_eq!(status, 200);
    let services: Vec<(&str, Vec<&str>)> = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let stages = s["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["stage"].as_str().unwrap())
                .collect();
            (s["name"].as_str().unwrap(), stages)
        })
        .collect();
    assert_eq!(
        services,
        vec![("orders", vec!["canary"]), ("users", vec!["stable"])]
    );

    let (status, e) = get(&c, "/api/v1/edges/users/orders?since=10m").await;
    assert_eq!(status, 200);
    let minutes = e["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 1);
    assert_eq!(minutes[0]["calls"], 2);
    assert_eq!(minutes[0]["first_breaks"]["missing"], 1);
    assert_eq!(e["examples"]["missing"][0], format!("{BROKEN:032x}"));
    let (_, e) = get(&c, "/api/v1/edges/users/orders?stage=stable").await;
    assert_eq!(e["minutes"].as_array().unwrap().len(), 0);
    let (status, e) = get(&c, "/api/v1/edges/users/nobody").await;
    assert_eq!(status, 404);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("no edge users -> nobody")
    );
    c.shutdown().await.unwrap();
}

/// Pages through `/api/v1/findings` with `cursor` while new findings keep arriving: every finding
/// that existed when paging began is seen exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn cursor_pages_have_no_gaps_or_duplicates_while_findings_arrive() {
    let c = spawn_collector(test_args()).await;
    let broken = |t: u128| {
        RequestBuilder::new()
            .resource("users", Some("stable"))
            .span(t, 1, None, "GET /u", SpanKind::Server, &[(STAGE, "canary")])
            .span(t, 2, Some(1), "call orders", SpanKind::Client, &[])
            .build()
    };
    let client = RawClient::new(Wire::Http, c.otlp_http);
    for t in 1..=23u128 {
        let r = client
            .send(broken(t).encode_to_vec().into(), false)
            .await
            .unwrap();
        assert!(r.is_ok());
    }
    c.flush().await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/findings?limit=5".to_string();
    loop {
        let (status, page) = get(&c, &path).await;
        assert_eq!(status, 200);
        for f in page["findings"].as_array().unwrap() {
            seen.push(u128::from_str_radix(f["trace_id"].as_str().unwrap(), 16).unwrap());
        }
        let late = 1000 + seen.len() as u128;
        client
            .send(broken(late).encode_to_vec().into(), false)
            .await
            .unwrap();
        c.flush().await;
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/findings?limit=5&cursor={next}"),
            None => break,
        }
    }
    let mut want: Vec<u128> = (1..=23).collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_json_and_name_the_parameter() {
    let c = spawn_collector(test_args()).await;
    for (path, status, needle) in [
        (
            "/api/v1/findings?kind=ok",
            400,
            "invalid parameter 'kind': 'ok' is not one of missing, changed",
        ),
        (
            "/api/v1/findings?limit=5000",
            400,
            "invalid parameter 'limit': '5000' is not a whole number from 1 to 1000",
        ),
        ("/api/v1/findings?limit=0", 400, "'limit'"),
        // Empty is a value in the API (a form's empty field is absent on the dashboard).
        ("/api/v1/findings?limit=", 400, "'' is not a whole number"),
        ("/api/v1/services/orders?depth=", 400, "'depth'"),
        ("/api/v1/services/orders?depth=3", 400, "from 1 to 2"),
        (
            "/api/v1/findings?first_break=yes",
            400,
            "'first_break': 'yes' is not true or false",
        ),
        ("/api/v1/findings?scope=galaxy", 400, "'scope'"),
        (
            "/api/v1/findings?trace_id=xyz",
            400,
            "'trace_id': 'xyz' is not a trace id: 32 lowercase hex digits",
        ),
        (
            "/api/v1/traces/4BF92F3577B34DA6A3CE929D0E0E4736",
            400,
            "32 lowercase hex digits",
        ),
        (
            "/api/v1/findings?since=2026-11-24T10:00:00",
            400,
            "'since': '2026-11-24T10:00:00' is not an RFC 3339 time",
        ),
        ("/api/v1/gate", 400, "'stage': is required"),
        ("/api/v1/gate?stage=", 400, "'stage': is required"),
        (
            "/api/v1/gate?stage=canary&min_consistency=1e-3",
            400,
            "'min_consistency': '1e-3' is not a ratio from 0 to 1",
        ),
        ("/api/v1/gate?stage=canary&window=5 m", 400, "'window'"),
        (
            "/api/v1/findings?colour=red",
            400,
            "unknown parameter 'colour'",
        ),
        ("/api/v1/traces/xyz", 400, "'trace_id'"),
        (
            "/api/v1/findings?since=yesterday",
            400,
            "invalid parameter 'since': 'yesterday' is not an RFC 3339 time",
        ),
        ("/api/v1/findings?cursor=abc", 400, "'cursor'"),
        ("/api/v1/graph?until=soon", 400, "'until'"),
        (
            "/api/v1/graph?colour=red",
            400,
            "unknown parameter 'colour'",
        ),
        ("/api/v1/edges/a/b?since=x", 400, "'since'"),
        (
            "/api/v1/traces/00000000000000000000000000000001",
            404,
            "is unknown",
        ),
        // Not a valid trace id, but a fair question with a plain answer.
        (
            "/api/v1/traces/00000000000000000000000000000000",
            404,
            "is unknown",
        ),
        ("/api/v1/nothing", 404, "no such endpoint"),
    ] {
        let (s, v) = get(&c, path).await;
        assert_eq!(s, status, "{path}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{path}: {v}");
    }
    let (s, v) = get(&c, "/healthz").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let m = reqwest::get(format!("http://{}/metrics", c.http))
        .await
        .unwrap();
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(m.text().await.unwrap().ends_with("# EOF\n"));
    c.shutdown().await.unwrap();
}

/// `/api/v1/openapi.json` documents every route that is served, each documented route answers,
/// and the findings parameters it lists are the ones the handler accepts.
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_covers_every_route() {
    let c = spawn_collector(test_args()).await;
    send(&c).await;
    c.flush().await;
    let (status, doc) = get(&c, "/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "/api/v1/edges/{caller}/{callee}",
        "/api/v1/findings",
        "/api/v1/gate",
        "/api/v1/gate/webhook",
        "/api/v1/graph",
        "/api/v1/members",
        "/api/v1/openapi.json",
        "/api/v1/services",
        "/api/v1/services/{name}",
        "/api/v1/traces/verdicts",
        "/api/v1/traces/{trace_id}",
        "/api/v1/traces/{trace_id}/verdicts",
        "/healthz",
        "/metrics",
    ];
    want.sort();
    let mut got = paths.clone();
    got.sort();
    assert_eq!(got, want);
    for p in &paths {
        let url = p
            .replace("{caller}", "users")
            .replace("{callee}", "orders")
            .replace("{name}", "orders")
            .replace("{trace_id}", &format!("{BROKEN:032x}"))
            .replace("/gate", "/gate?stage=canary");
        let client = reqwest::Client::new();
        let (method, r) = if doc["paths"][p]["get"].is_object() {
            ("get", client.get(format!("http://{}{url}", c.http)))
        } else {
            let body = if p.ends_with("/verdicts") {
                serde_json::json!({"trace_ids": [format!("{BROKEN:032x}")]})
            } else {
                serde_json::json!({"metadata": {"stage": "canary"}})
            };
            let url = url.replace("?stage=canary", "");
            (
                "post",
                client.post(format!("http://{}{url}", c.http)).json(&body),
            )
        };
        let r = r.send().await.unwrap();
        assert!(
            [200, 412].contains(&r.status().as_u16()),
            "{url}: {}",
            r.status()
        );
        assert!(
            doc["paths"][p][method]["responses"]["200"].is_object(),
            "{p}"
        );
    }
    let params: Vec<&str> = doc["paths"]["/api/v1/findings"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params.len(), 11);
    for name in params {
        let value = match name {
            "kind" => "missing",
            "scope" => "in_process",
            "first_break" => "true",
            "trace_id" => "4bf92f3577b34da6a3ce929d0e0e4736",
            "since" | "until" => "1h",
            "limit" | "cursor" => "5",
            _ => "users",
        };
        let (status, v) = get(&c, &format!("/api/v1/findings?{name}={value}")).await;
        assert_eq!(status, 200, "{name}: {v}");
    }
    // Each parameter carries the rule the handler enforces.
    let param = |path: &str, method: &str, name: &str| -> serde_json::Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} {name}"))
            .clone()
    };
    let limit = param("/api/v1/findings", "get", "limit");
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&serde_json::json!(1), &serde_json::json!(1000))
    );
    let kind = param("/api/v1/findings", "get", "kind")["schema"]["enum"].clone();
    assert!(
        kind.as_array().unwrap().contains(&"misrouted".into()),
        "{kind}"
    );
    assert!(!kind.as_array().unwrap().contains(&"ok".into()), "{kind}");
    let scope = param("/api/v1/findings", "get", "scope")["schema"]["enum"].clone();
    assert_eq!(
        scope,
        serde_json::json!(["cross_service", "in_process", "messaging"])
    );
    let since = param("/api/v1/graph", "get", "since")["schema"]["anyOf"].clone();
    assert_eq!(since[0]["format"], "date-time", "{since}");
    assert!(since[1]["pattern"].is_string(), "{since}");
    for (path, name) in [
        ("/api/v1/traces/{trace_id}", "trace_id"),
        ("/api/v1/findings", "trace_id"),
    ] {
        assert_eq!(
            param(path, "get", name)["schema"]["pattern"],
            "^[0-9a-f]{32}$"
        );
    }
    let stage = param("/api/v1/gate", "get", "stage");
    assert_eq!(stage["required"], true);
    assert_eq!(stage["schema"]["minLength"], 1);
    let webhook = &doc["paths"]["/api/v1/gate/webhook"]["post"];
    let body = &doc["components"]["schemas"]["FlaggerWebhook"];
    assert!(webhook["requestBody"]["content"]["application/json"].is_object());
    assert_eq!(
        body["properties"]["metadata"]["required"],
        serde_json::json!(["stage"])
    );
    assert_eq!(
        body["properties"]["metadata"]["additionalProperties"],
        false
    );
    assert_eq!(
        body["properties"]["metadata"]["properties"]["max_findings"]["pattern"],
        "^[0-9]{1,9}$"
    );
    assert!(webhook["responses"]["412"].is_object());
    let ids = &doc["components"]["schemas"]["TraceIds"]["properties"]["trace_ids"];
    assert_eq!(ids["maxItems"], 1000);
    assert_eq!(ids["items"]["pattern"], "^[0-9a-f]{32}$");
    // Errors as the handlers give them; no token needed here, so no 401.
    for (path, method) in [
        ("/api/v1/findings", "get"),
        ("/api/v1/gate/webhook", "post"),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for status in ["400", "500", "503"] {
            assert_eq!(
                responses[status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{path} {status}"
            );
        }
        assert!(responses["401"].is_null(), "{path}");
    }
    assert!(doc["security"].is_null());
    for schema in [
        "FindingsPage",
        "FindingView",
        "GraphView",
        "TraceView",
        "ErrorBody",
        "Verdict",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    c.shutdown().await.unwrap();
}

const PROBED: u128 = 0x11;
const PROBED_CLEAN: u128 = 0x12;

/// Two probe traces: grayscope-probe CLIENT -> users SERVER -> users CLIENT -> orders SERVER, all
/// canary, except that orders lost the stage in `PROBED`.
async fn send_probed(c: &Collector) {
    let mut req = RequestBuilder::new()
        .resource("grayscope-probe", None)
        .probe();
    for t in [PROBED, PROBED_CLEAN] {
        req = req.span(t, 1, None, "GET /", SpanKind::Client, &[(STAGE, "canary")]);
    }
    req = req.resource("users", Some("stable"));
    for t in [PROBED, PROBED_CLEAN] {
        req = req
            .span(
                t,
                2,
                Some(1),
                "GET /",
                SpanKind::Server,
                &[(STAGE, "canary")],
            )
            .span(
                t,
                3,
                Some(2),
                "call",
                SpanKind::Client,
                &[(STAGE, "canary")],
            );
    }
    let req = req
        .resource("orders", Some("canary"))
        .span(PROBED, 4, Some(3), "call", SpanKind::Server, &[])
        .span(
            PROBED_CLEAN,
            4,
            Some(3),
            "call",
            SpanKind::Server,
            &[(STAGE, "canary")],
        )
        .build();
    let r = RawClient::new(Wire::Http, c.otlp_http)
        .send(req.encode_to_vec().into(), false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}

async fn post(c: &Collector, path: &str, body: String) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}{}", c.http, path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// (caller, callee, scope, verdict, first break) of every hop.
fn hops(t: &serde_json::Value) -> Vec<(String, String, String, String, bool)> {
    let mut h: Vec<_> = t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let s = |k: &str| h[k].as_str().unwrap().to_string();
            (
                s("caller"),
                s("callee"),
                s("scope"),
                s("verdict"),
                h["first_break"].as_bool().unwrap(),
            )
        })
        .collect();
    h.sort();
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_say_where_each_trace_is_and_judge_its_hops() {
    let mut args = test_args();
    args.trace_idle = Some("10m".parse().unwrap());
    let c = spawn_collector(args).await;
    send_probed(&c).await;
    let ids = [PROBED, PROBED_CLEAN, 0x99].map(|t| format!("{t:032x}"));
    let ask = serde_json::json!({ "trace_ids": ids }).to_string();

    let (status, page) = post(&c, "/api/v1/traces/verdicts", ask.clone()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["trace_idle_ms"], 600_000);
    let states: Vec<_> = page["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["trace_id"].as_str().unwrap(),
                t["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (ids[0].as_str(), "assembling"),
            (ids[1].as_str(), "assembling"),
            (ids[2].as_str(), "unknown")
        ]
    );
    assert_eq!(page["traces"][0]["hops"].as_array().unwrap().len(), 3);

    c.flush().await;
    let (_, page) = post(&c, "/api/v1/traces/verdicts", ask).await;
    let t = &page["traces"][0];
    assert_eq!(t["state"], "finalised");
    let h = |a: &str, b: &str, scope: &str, v: &str, first: bool| {
        (
            a.to_string(),
            b.to_string(),
            scope.to_string(),
            v.to_string(),
            first,
        )
    };
    assert_eq!(
        hops(t),
        [
            h("grayscope-probe", "users", "cross_service", "ok", false),
            h("users", "orders", "cross_service", "missing", true),
            h("users", "orders", "in_process", "ok", false),
        ]
    );
    assert_eq!(
        t["served"],
        serde_json::json!([
            {"service": "grayscope-probe", "instance_stage": null},
            {"service": "orders", "instance_stage": "canary"},
            {"service": "users", "instance_stage": "stable"},
        ])
    );
    assert_eq!(t["findings"].as_array().unwrap().len(), 1, "{t}");
    // A clean probe trace is kept, so its verdicts outlive finalisation (`sample_clean` is 0).
    let clean = &page["traces"][1];
    assert_eq!(clean["state"], "finalised");
    assert!(hops(clean).iter().all(|h| h.3 == "ok"), "{clean}");
    assert_eq!(clean["findings"], serde_json::json!([]));
    assert_eq!(page["traces"][2]["state"], "unknown");

    // One trace at a time, the same answer.
    let (status, one) = get(&c, &format!("/api/v1/traces/{}/verdicts", ids[0])).await;
    assert_eq!(status, 200);
    assert_eq!(hops(&one), hops(t));

    // What is wrong with a request is named.
    for (body, says) in [
        ("nope".to_string(), "expected {\"trace_ids\": [...]}"),
        (
            r#"{"trace_ids": ["00000000000000000000000000000011", "xyz"]}"#.to_string(),
            "[1]: 'xyz' is not a trace id: 32 lowercase hex digits",
        ),
        (
            serde_json::json!({ "trace_ids": vec![&ids[0]; 1001] }).to_string(),
            "1001 trace ids; at most 1000",
        ),
    ] {
        let (status, e) = post(&c, "/api/v1/traces/verdicts", body).await;
        assert_eq!(status, 400);
        assert!(e["error"].as_str().unwrap().contains(says), "{e}");
    }
    let (status, _) = get(&c, "/api/v1/traces/xyz/verdicts").await;
    assert_eq!(status, 400);
    // A body past the limit is refused before it is read whole, in JSON like every error.
    let big = format!(r#"{{"trace_ids": ["{}"]}}"#, "0".repeat(300 * 1024));
    for path in ["/api/v1/traces/verdicts", "/api/v1/gate/webhook"] {
        let (status, e) = post(&c, path, big.clone()).await;
        assert_eq!(status, 413, "{path}");
        assert_eq!(e["error"], "the body is over 262144 bytes", "{path}");
    }
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_answers_with_its_callers_the_stages_it_served_and_its_findings() {
    let c = spawn_collector(test_args()).await;
    send(&c).await;
    c.flush().await;
    let (status, v) = get(&c, "/api/v1/services/orders").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["service"]["name"], "orders");
    assert_eq!(v["depth"], 1);
    assert_eq!(v["instance_stages"], serde_json::json!(["canary"]));
    let callers: Vec<&str> = v["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["caller"].as_str().unwrap())
        .collect();
    assert_eq!(callers, ["users"]);
    assert_eq!(v["callees"].as_array().unwrap().len(), 0);
    // One call came with the canary stage and one had lost it; both served by the canary.
    let mut served: Vec<(String, String, u64)> = v["served"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["stage"].as_str().unwrap_or("none").to_string(),
                r["instance_stage"].as_str().unwrap().to_string(),
                r["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    served.sort();
    assert_eq!(
        served,
        [
            ("canary".to_string(), "canary".to_string(), 1),
            ("none".to_string(), "canary".to_string(), 1)
        ]
    );
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{v}");
    assert_eq!(findings[0]["kind"], "missing");
    assert_eq!(findings[0]["trace_id"], format!("{BROKEN:032x}"));
    let nodes: Vec<&str> = v["graph"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["orders", "users"]);

    let (status, v) = get(&c, "/api/v1/services/orders?depth=3").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("'depth'"), "{v}");
    let (status, v) = get(&c, "/api/v1/services/nobody").await;
    assert_eq!(status, 404, "{v}");
    c.shutdown().await.unwrap();
}
