use super::trace::FinaliseContext;
use super::*;
use crate::model::{SpanFlags, SpanKind, StageMode, StageSource, TraceId};
use crate::testkit::Kit;

trait FinaliseExt {
    fn finalise(
        &self,
        spans: &[SpanRecord],
        policy: &Policy,
        live: &[(&str, &str)],
    ) -> TraceOutcome {
        self.finalise_in(spans, policy, live, false)
    }

    fn finalise_in(
        &self,
        spans: &[SpanRecord],
        policy: &Policy,
        live: &[(&str, &str)],
        unsettled: bool,
    ) -> TraceOutcome {
        self.finalise_modes(spans, policy, live, unsettled, &[])
    }

    /// Finalises with the services of `captured` carrying the stage only on the spans that
    /// received a request ([`crate::model::StageMode::Captured`]).
    fn finalise_modes(
        &self,
        spans: &[SpanRecord],
        policy: &Policy,
        live: &[(&str, &str)],
        unsettled: bool,
        captured: &[&str],
    ) -> TraceOutcome {
        self.graph_modes(spans, policy, live, unsettled, captured).0
    }

    /// Also returns the trace's graph, with the verdicts finalisation left on its edges.
    fn graph_modes(
        &self,
        spans: &[SpanRecord],
        policy: &Policy,
        live: &[(&str, &str)],
        unsettled: bool,
        captured: &[&str],
    ) -> (TraceOutcome, TraceGraph);
}

impl FinaliseExt for Kit {
    /// Builds the graph the way the assembler does and finalises it, `unsettled` saying whether
    /// the load balancer's members are changing.
    fn graph_modes(
        &self,
        spans: &[SpanRecord],
        policy: &Policy,
        live: &[(&str, &str)],
        unsettled: bool,
        captured: &[&str],
    ) -> (TraceOutcome, TraceGraph) {
        let mut g = TraceGraph::default();
        let idx: Vec<_> = spans.iter().map(|s| g.add_node(*s)).collect();
        for (ci, c) in spans.iter().enumerate() {
            if let Some(p) = c.parent
                && let Some(pi) = spans.iter().position(|s| s.span_id == p)
            {
                g.add_edge(idx[pi], idx[ci], judge_edge(&spans[pi], c, policy));
            }
        }
        let live: Vec<(Sym, Sym)> = live
            .iter()
            .map(|(svc, st)| (self.sym.services.intern(svc), self.v(st)))
            .collect();
        let is_live = move |svc: Sym, st: Sym| live.contains(&(svc, st));
        let captured: Vec<Sym> = captured
            .iter()
            .map(|s| self.sym.services.intern(s))
            .collect();
        let stage_mode = move |svc: Sym| {
            if captured.contains(&svc) {
                StageMode::Captured
            } else {
                StageMode::EverySpan
            }
        };
        let cx = FinaliseContext {
            policy,
            is_live: &is_live,
            is_receiver: &|_| true,
            stage_mode: Some(&stage_mode),
            observed_at_ms: 0,
            orphans: Orphans::Judge,
            settled: 0,
            unsettled,
            stale_before_ns: 0,
        };
        let out = finalise(TraceId(7), &mut g, &[], &cx);
        (out, g)
    }
}

#[test]
fn edge_verdict_table() {
    let k = Kit::new();
    let p = Policy::default();
    let a = k.span(1, None, "a", SpanKind::Client);
    let b = k.span(2, Some(1), "b", SpanKind::Server);
    let canary = |s| k.stage(s, "canary");
    let stable = |s| k.stage(s, "stable");
    assert_eq!(judge_edge(&canary(a), &canary(b), &p), Verdict::Ok);
    assert_eq!(judge_edge(&a, &b, &p), Verdict::Absent);
    assert_eq!(judge_edge(&canary(a), &b, &p), Verdict::Missing);
    assert_eq!(judge_edge(&canary(a), &stable(b), &p), Verdict::Changed);
    assert_eq!(judge_edge(&a, &stable(b), &p), Verdict::Appeared);
    let mut typo = b;
    typo.near_miss_key = Some(k.v("x-release-stag"));
    typo.near_miss_value = Some(k.v("canary"));
    assert_eq!(judge_edge(&canary(a), &typo, &p), Verdict::KeyMismatch);
    assert_eq!(
        judge_edge(&a, &typo, &p),
        Verdict::Absent,
        "a near miss with nothing sent is not a finding"
    );

    let strict = Policy {
        allowed: [k.v("stable"), k.v("canary")].into_iter().collect(),
        ..Policy::default()
    };
    let bad = k.stage(b, "canry");
    assert_eq!(judge_edge(&canary(a), &bad, &strict), Verdict::InvalidValue);
    assert_eq!(judge_edge(&a, &bad, &strict), Verdict::InvalidValue);
    assert_eq!(
        judge_edge(&canary(a), &bad, &p),
        Verdict::Changed,
        "no allowed list: any value"
    );
}

#[test]
fn misrouted_only_when_the_sent_stage_was_live_for_the_callee() {
    let k = Kit::new();
    let p = Policy::default();
    let gw = k.stage(k.span(1, None, "gateway", SpanKind::Server), "canary");
    let call = k.stage(k.span(2, Some(1), "gateway", SpanKind::Client), "canary");
    let orders = k.instance(
        k.stage(k.span(3, Some(2), "orders", SpanKind::Server), "canary"),
        "stable",
    );
    let spans = [gw, call, orders];

    let out = k.finalise(&spans, &p, &[("orders", "canary"), ("orders", "stable")]);
    assert_eq!(out.findings.len(), 1);
    let f = &out.findings[0];
    assert_eq!(
        (f.kind, f.scope, f.first_break),
        (Verdict::Misrouted, Scope::CrossService, true)
    );
    assert!(
        f.detail(&k.sym)
            .contains("routed to a stable instance of orders"),
        "{}",
        f.detail(&k.sym)
    );

    let out = k.finalise(&spans, &p, &[("orders", "stable")]);
    assert!(
        out.findings.is_empty(),
        "no canary orders instance: stable is the only place to go"
    );

    // The stage never reached orders: the loss is the cause, not routing.
    let mut lost = orders;
    lost.stage = None;
    let out = k.finalise(&[gw, call, lost], &p, &[("orders", "canary")]);
    assert_eq!(out.findings[0].kind, Verdict::Missing);

    // The caller rewrote the stage and routing followed the rewritten value: changed, not misrouted.
    let rewritten = k.stage(orders, "stable");
    let out = k.finalise(&[gw, call, rewritten], &p, &[("orders", "canary")]);
    assert_eq!(out.findings.len(), 1);
    assert_eq!(out.findings[0].kind, Verdict::Changed);
}

#[test]
fn first_break_and_consequences() {
    let k = Kit::new();
    let p = Policy::default();
    // users SERVER (canary) -> users CLIENT (lost) -> orders SERVER (default stable) -> orders CLIENT
    let s1 = k.stage(k.span(1, None, "users", SpanKind::Server), "canary");
    let s2 = k.span(2, Some(1), "users", SpanKind::Client);
    let s3 = k.stage(k.span(3, Some(2), "orders", SpanKind::Server), "stable");
    let s4 = k.stage(k.span(4, Some(3), "orders", SpanKind::Client), "stable");
    let out = k.finalise(&[s4, s3, s2, s1], &p, &[]);
    let mut f: Vec<_> = out
        .findings
        .iter()
        .map(|f| (f.kind, f.scope, f.first_break))
        .collect();
    f.sort_by_key(|x| x.0);
    assert_eq!(
        f,
        vec![
            (Verdict::Missing, Scope::InProcess, true),
            (Verdict::Appeared, Scope::CrossService, false),
        ]
    );
    let missing = out
        .findings
        .iter()
        .find(|f| f.kind == Verdict::Missing)
        .unwrap();
    // An in-process loss on an outgoing span is counted on the call's hop.
    assert_eq!(
        missing.hop.callee,
        NodeKey::Service(k.sym.services.intern("orders"))
    );
    assert!(
        missing
            .detail(&k.sym)
            .starts_with("users made an outgoing call without the request's context")
    );
    assert_eq!(out.stage, Some(k.v("canary")));
    assert_eq!(out.edges.iter().filter(|e| e.first_break).count(), 1);
    assert_eq!(out.edges.iter().filter(|e| e.call).count(), 1);
}

#[test]
fn independent_branches_each_have_a_first_break() {
    let k = Kit::new();
    let p = Policy::default();
    let root = k.stage(k.span(1, None, "orders", SpanKind::Server), "canary");
    let a = k.stage(k.span(2, Some(1), "orders", SpanKind::Client), "canary");
    let b = k.stage(k.span(3, Some(1), "orders", SpanKind::Client), "canary");
    let pay = k.span(4, Some(2), "payments", SpanKind::Server);
    let inv = k.stage(k.span(5, Some(3), "inventory", SpanKind::Server), "stable");
    let out = k.finalise(&[root, a, b, pay, inv], &p, &[]);
    assert_eq!(out.findings.len(), 2);
    assert!(out.findings.iter().all(|f| f.first_break));
}

#[test]
fn broken_traces() {
    let k = Kit::new();
    let p = Policy::default();
    // An orphan: its parent never arrived.
    let orphan = k.stage(k.span(5, Some(99), "payments", SpanKind::Server), "canary");
    let child = k.span(6, Some(5), "payments", SpanKind::Internal);
    let out = k.finalise(&[orphan, child], &p, &[]);
    let kinds: Vec<_> = out
        .findings
        .iter()
        .map(|f| (f.kind, f.first_break, f.caller.is_none()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (Verdict::BrokenTrace, true, true),
            (Verdict::Missing, false, false)
        ]
    );
    assert!(out.findings[0].detail(&k.sym).contains("never arrived"));

    // The same orphan while the instances behind the load balancer change: its parent may be on
    // another instance. Counted on its hop as unverifiable, not a finding; what lies below is
    // judged as usual, and is now the first break.
    let out = k.finalise_in(&[orphan, child], &p, &[], true);
    let kinds: Vec<_> = out
        .findings
        .iter()
        .map(|f| (f.kind, f.first_break))
        .collect();
    assert_eq!(kinds, vec![(Verdict::Missing, true)]);
    let unverifiable: Vec<_> = out
        .edges
        .iter()
        .filter(|e| e.verdict == Some(Verdict::Unverifiable))
        .collect();
    assert_eq!(unverifiable.len(), 1);
    assert_eq!(
        unverifiable[0].hop.callee,
        NodeKey::Service(k.svc("payments"))
    );
    assert!(!Verdict::Unverifiable.is_finding());
    // A root CLIENT span is no split: still a broken trace.
    let root = k.span(1, None, "orders", SpanKind::Client);
    let out = k.finalise_in(&[root], &p, &[], true);
    assert_eq!(out.findings[0].kind, Verdict::BrokenTrace);

    // A root CLIENT span: an outgoing call made with no inbound context.
    let root = k.span(1, None, "orders", SpanKind::Client);
    let inv = k.span(2, Some(1), "inventory", SpanKind::Server);
    let out = k.finalise(&[root, inv], &p, &[]);
    assert_eq!(out.findings.len(), 1);
    let f = &out.findings[0];
    assert_eq!((f.kind, f.scope), (Verdict::BrokenTrace, Scope::InProcess));
    assert_eq!(
        f.hop.caller,
        Some(NodeKey::Service(k.sym.services.intern("orders")))
    );
    assert_eq!(
        f.hop.callee,
        NodeKey::Service(k.sym.services.intern("inventory"))
    );

    // ... unless the service is a known job.
    let exempt = Policy {
        exempt_roots: vec![(k.sym.services.intern("orders"), None)],
        ..Policy::default()
    };
    assert!(k.finalise(&[root, inv], &exempt, &[]).findings.is_empty());

    // A root SERVER span is normal.
    let probe = k.span(1, None, "orders", SpanKind::Server);
    assert!(k.finalise(&[probe], &p, &[]).findings.is_empty());
}

#[test]
fn parent_cycles_are_broken_traces_not_hangs() {
    let k = Kit::new();
    let a = k.span(1, Some(2), "a", SpanKind::Server);
    let b = k.span(2, Some(1), "a", SpanKind::Internal);
    let c = k.span(3, Some(2), "a", SpanKind::Internal);
    let out = k.finalise(&[c, a, b], &Policy::default(), &[]);
    let breaks: Vec<_> = out.findings.iter().filter(|f| f.first_break).collect();
    assert_eq!(breaks.len(), 1);
    assert_eq!(breaks[0].kind, Verdict::BrokenTrace);
    assert!(breaks[0].detail(&k.sym).contains("cycle"));
}

#[test]
fn a_very_deep_chain_does_not_overflow_the_stack() {
    let k = Kit::new();
    let mut spans = vec![k.stage(k.span(1, None, "a", SpanKind::Server), "canary")];
    for i in 2..=100_000u64 {
        spans.push(k.stage(k.span(i, Some(i - 1), "a", SpanKind::Internal), "canary"));
    }
    spans[50_000].stage = None;
    let mut g = TraceGraph::default();
    let idx: Vec<_> = spans.iter().map(|s| g.add_node(*s)).collect();
    let p = Policy::default();
    for i in 1..spans.len() {
        g.add_edge(idx[i - 1], idx[i], judge_edge(&spans[i - 1], &spans[i], &p));
    }
    let cx = FinaliseContext {
        policy: &p,
        is_live: &|_, _| false,
        is_receiver: &|_| true,
        stage_mode: None,
        observed_at_ms: 0,
        orphans: Orphans::Judge,
        settled: 0,
        unsettled: false,
        stale_before_ns: 0,
    };
    let out = finalise(TraceId(1), &mut g, &[], &cx);
    let kinds: Vec<_> = out
        .findings
        .iter()
        .map(|f| (f.kind, f.first_break))
        .collect();
    assert_eq!(
        kinds,
        vec![(Verdict::Missing, true), (Verdict::Appeared, false)]
    );
    assert_eq!(out.edges.len(), 99_999);
}

#[test]
fn uninstrumented_callees_become_virtual_calls() {
    let k = Kit::new();
    let root = k.stage(k.span(1, None, "orders", SpanKind::Server), "canary");
    let mut call = k.stage(k.span(2, Some(1), "orders", SpanKind::Client), "canary");
    call.peer = Some(k.v("db.internal:5432"));
    let out = k.finalise(&[root, call], &Policy::default(), &[]);
    let virt: Vec<_> = out.edges.iter().filter(|e| e.verdict.is_none()).collect();
    assert_eq!(virt.len(), 1);
    assert_eq!(
        virt[0].hop.callee,
        NodeKey::Virtual(k.v("db.internal:5432"))
    );
    assert!(virt[0].call);
}

/// A root CLIENT span starts its trace, by evidence, or lost its context: a stage on it, a client
/// application's resource, or a service that never receives calls say it started the trace.
#[test]
fn root_calls_that_start_traces_are_not_broken() {
    let k = Kit::new();
    let policy = Policy::new(&["canary".into(), "stable".into()], &[], &[], &k.sym);
    let judge = |root: SpanRecord, receives: bool| -> (Vec<Verdict>, Vec<Option<Sym>>) {
        let mut server = k.span(2, Some(1), "gateway", SpanKind::Server);
        server.stage = root.stage;
        let mut g = TraceGraph::default();
        let (a, b) = (g.add_node(root), g.add_node(server));
        g.add_edge(a, b, judge_edge(&root, &server, &policy));
        let cx = FinaliseContext {
            policy: &policy,
            is_live: &|_, _| false,
            is_receiver: &|_| receives,
            stage_mode: None,
            observed_at_ms: 0,
            orphans: Orphans::Judge,
            settled: 0,
            unsettled: false,
            stale_before_ns: 0,
        };
        let o = finalise(TraceId(1), &mut g, &[], &cx);
        let starts = o
            .edges
            .iter()
            .filter(|e| e.hop.caller.is_none() && e.call)
            .map(|e| e.stage)
            .collect();
        (o.findings.iter().map(|f| f.kind).collect(), starts)
    };
    let fetch = k.span(1, None, "web-app", SpanKind::Client);
    let canary = Some(k.v("canary"));
    // A browser's fetch with the stage it was given.
    assert_eq!(
        judge(k.stage(fetch, "canary"), true),
        (vec![], vec![canary])
    );
    // A browser's, by its resource, without a stage.
    let browser = SpanRecord {
        flags: crate::model::SpanFlags::CLIENT_APP,
        ..fetch
    };
    assert_eq!(judge(browser, true), (vec![], vec![None]));
    // A job: its service never receives calls.
    assert_eq!(judge(fetch, false), (vec![], vec![None]));
    // A call that lost its context in a service that serves requests.
    assert_eq!(judge(fetch, true), (vec![Verdict::BrokenTrace], vec![]));
    // A stage that is no allowed value is no evidence.
    let (kinds, _) = judge(k.stage(fetch, "canry"), true);
    assert!(kinds.contains(&Verdict::BrokenTrace), "{kinds:?}");
}

/// The shop of a team that forwards `X-Release-Stage` by hand and captures it on SERVER spans
/// only: orders' SERVER span has the header, it queries PostgreSQL, renders (INTERNAL) and calls
/// payments, whose SERVER span has the header.
fn captured_shop(k: &Kit, received_by_payments: Option<&str>) -> Vec<SpanRecord> {
    let header = |s: SpanRecord, v: &str| SpanRecord {
        stage_from: Some(StageSource::HttpHeader),
        ..k.stage(s, v)
    };
    let orders = header(k.span(1, None, "orders", SpanKind::Server), "canary");
    let db = SpanRecord {
        flags: SpanFlags::BACKEND,
        peer: Some(k.v("postgresql")),
        ..k.span(2, Some(1), "orders", SpanKind::Client)
    };
    let render = k.span(3, Some(1), "orders", SpanKind::Internal);
    let call = SpanRecord {
        peer: Some(k.v("payments")),
        ..k.span(4, Some(3), "orders", SpanKind::Client)
    };
    let payments = k.span(5, Some(4), "payments", SpanKind::Server);
    let payments = match received_by_payments {
        Some(v) => header(payments, v),
        None => payments,
    };
    let charge = k.span(6, Some(5), "payments", SpanKind::Internal);
    vec![orders, db, render, call, payments, charge]
}

fn verdicts(g: &TraceGraph) -> Vec<Verdict> {
    let mut v: Vec<_> = g.edge_references().map(|e| *e.weight()).collect();
    v.sort();
    v
}

#[test]
fn a_stage_captured_at_the_server_is_judged_from_service_to_service() {
    let k = Kit::new();
    let p = Policy::default();
    let both = ["orders", "payments"];

    // Clean: nothing to report, and nothing judged where the stage cannot be.
    let (out, g) = k.graph_modes(&captured_shop(&k, Some("canary")), &p, &[], false, &both);
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    use Verdict::{NotApplicable as Na, Ok};
    assert_eq!(verdicts(&g), vec![Ok, Na, Na, Na, Na]);
    let hop = out
        .edges
        .iter()
        .find(|e| e.call && e.hop.callee == NodeKey::Service(k.svc("payments")))
        .expect("the hop is counted");
    assert_eq!((hop.verdict, hop.stage), (Some(Ok), Some(k.v("canary"))));
    // The database is a virtual node, with the request's stage and no verdict.
    let db = out
        .edges
        .iter()
        .find(|e| e.call && e.hop.callee == NodeKey::Virtual(k.v("postgresql")))
        .expect("the database call is counted");
    assert_eq!((db.verdict, db.stage), (None, Some(k.v("canary"))));
    // The CLIENT span shows the stage its service received, and says so.
    let call = g.node_weights().find(|s| s.span_id.get() == 4).unwrap();
    assert_eq!(
        (call.stage, call.stage_from),
        (Some(k.v("canary")), Some(StageSource::Inbound))
    );

    // The same spans judged as if every span carried the stage: what a team capturing headers
    // was told before, a finding on every request.
    let out = k.finalise(&captured_shop(&k, Some("canary")), &p, &[]);
    let kinds: Vec<_> = out.findings.iter().map(|f| (f.kind, f.scope)).collect();
    assert!(
        kinds.contains(&(Verdict::Missing, Scope::InProcess)),
        "{kinds:?}"
    );

    // Not forwarded: exactly one `missing` on the hop.
    let out = k.finalise_modes(&captured_shop(&k, None), &p, &[], false, &both);
    let f: Vec<_> = out
        .findings
        .iter()
        .map(|f| (f.kind, f.scope, f.first_break, f.hop))
        .collect();
    let hop = Hop {
        caller: Some(NodeKey::Service(k.svc("orders"))),
        callee: NodeKey::Service(k.svc("payments")),
    };
    assert_eq!(f, vec![(Verdict::Missing, Scope::CrossService, true, hop)]);
    assert_eq!(out.findings[0].caller.unwrap().stage, Some(k.v("canary")));

    // Rewritten: exactly one `changed`.
    let out = k.finalise_modes(&captured_shop(&k, Some("stable")), &p, &[], false, &both);
    let f: Vec<_> = out.findings.iter().map(|f| (f.kind, f.scope)).collect();
    assert_eq!(f, vec![(Verdict::Changed, Scope::CrossService)]);

    // Routed to a stable payments while a canary one is live: exactly one `misrouted`.
    let mut spans = captured_shop(&k, Some("canary"));
    spans[4] = k.instance(spans[4], "stable");
    let live = [("payments", "canary"), ("payments", "stable")];
    let out = k.finalise_modes(&spans, &p, &live, false, &both);
    let f: Vec<_> = out.findings.iter().map(|f| (f.kind, f.scope)).collect();
    assert_eq!(f, vec![(Verdict::Misrouted, Scope::CrossService)]);

    // Judging again (a trace reopened by late spans) gives the same verdicts.
    let (_, mut g) = k.graph_modes(&captured_shop(&k, None), &p, &[], false, &both);
    let before = verdicts(&g);
    let stage_mode = |svc: Sym| {
        if both.iter().any(|s| k.svc(s) == svc) {
            StageMode::Captured
        } else {
            StageMode::EverySpan
        }
    };
    let cx = FinaliseContext {
        policy: &p,
        is_live: &|_, _| false,
        is_receiver: &|_| true,
        stage_mode: Some(&stage_mode),
        observed_at_ms: 0,
        orphans: Orphans::Judge,
        settled: 0,
        unsettled: false,
        stale_before_ns: 0,
    };
    let out = finalise(TraceId(7), &mut g, &[], &cx);
    assert_eq!(verdicts(&g), before);
    assert_eq!(out.findings.len(), 1);
}

#[test]
fn a_database_call_is_no_stage_hop_unless_it_carries_a_stage() {
    let k = Kit::new();
    let p = Policy::default();
    let server = k.stage(k.span(1, None, "orders", SpanKind::Server), "canary");
    let db = SpanRecord {
        flags: SpanFlags::BACKEND,
        peer: Some(k.v("redis")),
        ..k.span(2, Some(1), "orders", SpanKind::Client)
    };
    assert_eq!(judge_edge(&server, &db, &p), Verdict::NotApplicable);
    assert_eq!(judge_edge(&server, &k.stage(db, "canary"), &p), Verdict::Ok);
    assert_eq!(
        judge_edge(&server, &k.stage(db, "stable"), &p),
        Verdict::Changed
    );
    let out = k.finalise(&[server, db], &p, &[]);
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert!(!Verdict::NotApplicable.is_finding() && !Verdict::NotApplicable.is_judged());
}
