//! The join, driven the way the workers drive it: spans into an assembler, finalised traces
//! through [`Joins::absorb`], time moved by hand.

use std::sync::Arc;

use super::*;
use crate::assemble::{Assembler, AssemblerConfig};
use crate::model::{Link, Messaging, MessagingOp, SpanBatch, SpanExtra, SpanKind, SpanRecord};
use crate::testkit::Kit;
use crate::verify::messaging::DestinationPolicy;
use crate::verify::{Finding, Scope, Verdict};

const IDLE: u64 = 100;
const WAIT: u64 = 10_000;

struct Rig {
    k: Kit,
    asm: Assembler,
    joins: Joins,
    now: u64,
    /// Every outcome handed downstream, joined ones included.
    out: Vec<Finalised>,
}

impl Rig {
    fn new() -> Self {
        Self::with(
            JoinConfig::new(Duration::from_millis(WAIT), 1000, 1000),
            &[],
            &[],
        )
    }

    fn with(cfg: JoinConfig, live: &[(&str, &str)], dest: &[(&str, DestinationPolicy)]) -> Self {
        let k = Kit::new();
        let dest: Vec<(String, DestinationPolicy)> =
            dest.iter().map(|(d, p)| (d.to_string(), *p)).collect();
        let policy = Arc::new(Policy::new(&[], &[], &dest, &k.sym));
        let declared: Vec<_> = live.iter().map(|(s, st)| (k.svc(s), k.v(st))).collect();
        let instances = Arc::new(Instances::new(declared, 60_000));
        Rig {
            asm: Assembler::new(
                AssemblerConfig {
                    idle_ms: IDLE,
                    max_spans: 100_000,
                    tombstones: 1000,
                    tombstone_ms: 3 * IDLE,
                    sample_clean: 0.0,
                    orphan_wait_ms: 0,
                    keep_ms: 0,
                    max_kept: 0,
                },
                policy.clone(),
                instances.clone(),
            ),
            joins: Joins::new(cfg, policy, instances),
            k,
            now: 0,
            out: Vec::new(),
        }
    }

    fn send(&mut self, trace: u128, spans: &[(SpanRecord, Option<SpanExtra>)]) {
        let mut batch = SpanBatch::default();
        for (s, e) in spans {
            batch.spans.push((TraceId(trace), *s));
            if let Some(e) = e {
                batch.extras.push((TraceId(trace), s.span_id, e.clone()));
            }
        }
        let mut out = Vec::new();
        self.asm.insert(batch, self.now, self.now, &mut out);
        self.hand_over(out);
    }

    /// Moves time on and finalises what went idle, as a worker's tick does.
    fn tick(&mut self, ms: u64) {
        self.now += ms;
        let mut out = Vec::new();
        self.asm.expire(self.now, self.now, &mut out);
        self.hand_over(out);
    }

    fn hand_over(&mut self, mut out: Vec<Finalised>) {
        self.joins.absorb(&mut out, self.now, self.now);
        self.out.extend(out);
    }

    fn joined_edges(&self) -> Vec<Verdict> {
        self.out
            .iter()
            .filter(|f| f.outcome.joined)
            .flat_map(|f| f.outcome.edges.iter().filter_map(|e| e.verdict))
            .collect()
    }

    fn findings(&self) -> Vec<&Finding> {
        self.out
            .iter()
            .flat_map(|f| f.outcome.findings.iter())
            .collect()
    }

    fn msg(&self, op: MessagingOp, links: &[Link]) -> Option<SpanExtra> {
        Some(SpanExtra {
            messaging: Messaging {
                system: Some(self.k.v("rabbitmq")),
                destination: Some(self.k.v("orders.placed")),
                group: None,
                op,
            },
            links: links.to_vec(),
            links_dropped: 0,
        })
    }

    /// orders SERVER (1) -> orders PRODUCER `send` (2), in trace `trace`, with `stage`.
    fn producer(&mut self, trace: u128, stage: Option<&str>) -> Link {
        let k = &self.k;
        let mut a = k.span(1, None, "orders", SpanKind::Server);
        let mut b = k.span(2, Some(1), "orders", SpanKind::Producer);
        a.stage = stage.map(|s| k.v(s));
        b.stage = a.stage;
        let e = self.msg(MessagingOp::Send, &[]);
        self.send(trace, &[(a, None), (b, e)]);
        Link {
            trace_id: TraceId(trace),
            span_id: b.span_id,
            sampled: true,
        }
    }

    /// A billing CONSUMER `process` span (id 5) rooting trace `trace`, linking to `links`.
    fn consumer(&mut self, trace: u128, stage: Option<&str>, links: &[Link]) {
        let k = &self.k;
        let mut c = k.instance(k.span(5, None, "billing", SpanKind::Consumer), "stable");
        c.stage = stage.map(|s| k.v(s));
        let e = self.msg(MessagingOp::Process, links);
        self.send(trace, &[(c, e)]);
    }
}

#[test]
fn a_links_only_consumer_that_restored_the_stage_is_ok_and_one_that_did_not_is_missing() {
    let mut r = Rig::new();
    let l1 = r.producer(1, Some("canary"));
    let l2 = r.producer(2, Some("canary"));
    r.consumer(10, Some("canary"), &[l1]);
    r.consumer(11, None, &[l2]);
    r.tick(IDLE + 1);
    assert_eq!(r.joined_edges(), vec![Verdict::Ok, Verdict::Missing]);
    let f = r.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].kind, f[0].scope, f[0].first_break),
        (Verdict::Missing, Scope::Messaging, true)
    );
    assert_eq!(f[0].trace_id, TraceId(11));
    let m = f[0].messaging.expect("messaging on the finding");
    assert_eq!(m.destination, Some(r.k.v("orders.placed")));
    assert!(
        f[0].detail(&r.k.sym).contains("did not restore it"),
        "{}",
        f[0].detail(&r.k.sym)
    );
    // Neither consumer root is a broken trace: their links say where the messages came from.
    assert!(f.iter().all(|f| f.kind != Verdict::BrokenTrace));
}

#[test]
fn a_consumer_finalised_before_its_producer_waits_for_it() {
    let mut r = Rig::new();
    let link = Link {
        trace_id: TraceId(1),
        span_id: crate::model::SpanId::new(2).unwrap(),
        sampled: true,
    };
    r.consumer(10, None, &[link]);
    r.tick(IDLE + 1);
    assert!(r.joined_edges().is_empty());
    assert_eq!(r.joins.stats().waiting_links, 1);
    r.producer(1, Some("canary"));
    r.tick(IDLE + 1);
    assert_eq!(r.joined_edges(), vec![Verdict::Missing]);
    let s = r.joins.stats();
    assert_eq!(
        (s.waiting_links, s.waiting_consumers, s.resolved),
        (0, 0, 1)
    );
}

#[test]
fn a_link_to_a_producer_that_never_arrives_is_unresolved_after_the_wait_and_never_a_finding() {
    let mut r = Rig::new();
    let link = Link {
        trace_id: TraceId(99),
        span_id: crate::model::SpanId::new(2).unwrap(),
        sampled: true,
    };
    r.consumer(10, None, &[link]);
    r.tick(IDLE + 1);
    r.tick(WAIT - 10);
    assert!(r.joined_edges().is_empty(), "still waiting");
    r.tick(20);
    assert_eq!(r.joined_edges(), vec![Verdict::Unresolved]);
    assert!(r.findings().is_empty());
    let s = r.joins.stats();
    assert_eq!(s.unresolved[1], 1, "expired");
    assert_eq!(s.waiting_links, 0);
}

#[test]
fn an_unsampled_producer_is_not_waited_for() {
    let mut r = Rig::new();
    let link = Link {
        trace_id: TraceId(99),
        span_id: crate::model::SpanId::new(2).unwrap(),
        sampled: false,
    };
    r.consumer(10, None, &[link]);
    r.tick(IDLE + 1);
    assert_eq!(r.joined_edges(), vec![Verdict::Unresolved]);
    assert!(r.findings().is_empty());
    assert_eq!(r.joins.stats().unresolved[0], 1);
    assert_eq!(r.joins.stats().waiting_links, 0);
}

#[test]
fn a_batch_of_mixed_stages_is_one_low_severity_mixed_batch_finding() {
    let mut r = Rig::new();
    let l1 = r.producer(1, Some("canary"));
    let l2 = r.producer(2, Some("stable"));
    let l3 = r.producer(3, Some("canary"));
    r.consumer(10, Some("canary"), &[l1, l2, l3]);
    r.tick(IDLE + 1);
    assert_eq!(
        r.joined_edges(),
        vec![Verdict::Ok, Verdict::MixedBatch, Verdict::Ok]
    );
    let f = r.findings();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, Verdict::MixedBatch);
    assert_eq!(f[0].kind.severity(), crate::verify::Severity::Low);
    assert!(f[0].first_break);
}

#[test]
fn a_batch_that_lost_the_stage_has_one_first_break_for_all_its_edges() {
    let mut r = Rig::new();
    let links: Vec<Link> = (1..=4).map(|t| r.producer(t, Some("canary"))).collect();
    r.consumer(10, None, &links);
    r.tick(IDLE + 1);
    assert_eq!(r.joined_edges(), vec![Verdict::Missing; 4]);
    let f = r.findings();
    assert_eq!(f.len(), 4);
    assert_eq!(f.iter().filter(|f| f.first_break).count(), 1);
}

#[test]
fn duplicate_links_give_one_edge() {
    let mut r = Rig::new();
    let l = r.producer(1, Some("canary"));
    r.consumer(10, Some("canary"), &[l, l, l]);
    r.tick(IDLE + 1);
    assert_eq!(r.joined_edges(), vec![Verdict::Ok]);
}

#[test]
fn a_link_to_a_span_of_the_same_trace_is_judged() {
    let mut r = Rig::new();
    let k = &r.k;
    let a = k.stage(k.span(1, None, "orders", SpanKind::Server), "canary");
    let b = k.stage(k.span(2, Some(1), "orders", SpanKind::Producer), "canary");
    // A consumer in the same trace that links to the producer instead of having it as parent.
    let c = k.span(3, Some(1), "billing", SpanKind::Consumer);
    let link = Link {
        trace_id: TraceId(1),
        span_id: b.span_id,
        sampled: true,
    };
    let eb = r.msg(MessagingOp::Send, &[]);
    let ec = r.msg(MessagingOp::Process, &[link]);
    r.send(1, &[(a, None), (b, eb), (c, ec)]);
    r.tick(IDLE + 1);
    assert_eq!(r.joined_edges(), vec![Verdict::Missing]);
    let f = r.findings();
    // orders SERVER -> billing CONSUMER (a parent edge, cross_service) lost the stage too.
    assert!(f.iter().any(|f| f.scope == Scope::Messaging));
}

#[test]
fn a_link_that_is_also_the_parent_is_one_edge_judged_inside_the_trace() {
    let mut r = Rig::new();
    let k = &r.k;
    let a = k.stage(k.span(1, None, "orders", SpanKind::Server), "canary");
    let b = k.stage(k.span(2, Some(1), "orders", SpanKind::Producer), "canary");
    let c = k.span(3, Some(2), "billing", SpanKind::Consumer);
    let link = Link {
        trace_id: TraceId(1),
        span_id: b.span_id,
        sampled: true,
    };
    let eb = r.msg(MessagingOp::Send, &[]);
    let ec = r.msg(MessagingOp::Process, &[link]);
    r.send(1, &[(a, None), (b, eb), (c, ec)]);
    r.tick(IDLE + 1);
    assert!(r.joined_edges().is_empty());
    let f = r.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].kind, f[0].scope),
        (Verdict::Missing, Scope::Messaging)
    );
}

#[test]
fn a_consumer_lagging_past_trace_idle_is_judged_against_its_parent_producer() {
    let mut r = Rig::new();
    r.producer(1, Some("canary"));
    r.tick(IDLE + 1);
    // Within the tombstone: late, and still judged.
    let k = &r.k;
    let c = k.stage(k.span(3, Some(2), "billing", SpanKind::Consumer), "canary");
    r.send(1, &[(c, None)]);
    r.tick(1);
    // Past the tombstone: a new trace whose consumer root's parent is the producer.
    r.tick(10 * IDLE);
    let k = &r.k;
    let d = k.span(4, Some(2), "billing", SpanKind::Consumer);
    r.send(1, &[(d, None)]);
    r.tick(IDLE + 1);
    assert_eq!(r.joined_edges(), vec![Verdict::Ok, Verdict::Missing]);
    let f = r.findings();
    assert_eq!(
        f.len(),
        1,
        "no broken_trace for the lagging consumer: {f:?}"
    );
    assert_eq!(f[0].kind, Verdict::Missing);
}

#[test]
fn misrouted_messages_follow_the_destination_policy() {
    let run = |policy: DestinationPolicy, live: &[(&str, &str)]| {
        let mut r = Rig::with(
            JoinConfig::new(Duration::from_millis(WAIT), 1000, 1000),
            live,
            &[("orders.placed", policy)],
        );
        let l = r.producer(1, Some("canary"));
        // billing's stable instance handles the canary message.
        r.consumer(10, Some("canary"), &[l]);
        r.tick(IDLE + 1);
        r.joined_edges()
    };
    let live = [("billing", "canary")];
    assert_eq!(
        run(DestinationPolicy::Fallback, &live),
        vec![Verdict::Misrouted]
    );
    assert_eq!(run(DestinationPolicy::Fallback, &[]), vec![Verdict::Ok]);
    assert_eq!(
        run(DestinationPolicy::Exclusive, &[]),
        vec![Verdict::Misrouted]
    );
    assert_eq!(run(DestinationPolicy::Broadcast, &live), vec![Verdict::Ok]);
}

#[test]
fn past_the_bound_the_oldest_wait_ends_unresolved_and_is_counted() {
    let mut r = Rig::with(
        JoinConfig::new(Duration::from_millis(WAIT), 1000, 2),
        &[],
        &[],
    );
    for t in 0..3u128 {
        let link = Link {
            trace_id: TraceId(100 + t),
            span_id: crate::model::SpanId::new(2).unwrap(),
            sampled: true,
        };
        r.consumer(10 + t, None, &[link]);
    }
    r.tick(IDLE + 1);
    assert_eq!(r.joined_edges(), vec![Verdict::Unresolved]);
    let s = r.joins.stats();
    assert_eq!((s.waiting_links, s.unresolved[2]), (2, 1));
    let mut out = Vec::new();
    r.joins.drain(Unresolved::Shutdown, r.now, r.now, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(r.joins.stats().waiting_links, 0);
}

#[test]
fn producers_are_bounded_in_count_and_kept_for_the_wait() {
    let mut r = Rig::with(
        JoinConfig::new(Duration::from_millis(WAIT), 2, 1000),
        &[],
        &[],
    );
    for t in 1..=3 {
        r.producer(t, Some("canary"));
    }
    r.tick(IDLE + 1);
    let s = r.joins.stats();
    assert_eq!((s.producers, s.producers_evicted), (2, 1));
    r.tick(WAIT);
    assert_eq!(r.joins.stats().producers, 0);
}

#[test]
fn roots_receive_and_settle_are_normal_and_a_consumer_without_parent_or_link_is_broken() {
    let mut r = Rig::new();
    let k = &r.k;
    let receive = k.span(1, None, "billing", SpanKind::Client);
    let settle = k.span(2, None, "billing", SpanKind::Client);
    let lost = k.span(3, None, "billing", SpanKind::Consumer);
    let er = r.msg(MessagingOp::Receive, &[]);
    let es = r.msg(MessagingOp::Settle, &[]);
    r.send(1, &[(receive, er)]);
    r.send(2, &[(settle, es)]);
    r.send(3, &[(lost, None)]);
    r.tick(IDLE + 1);
    let f = r.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].kind, f[0].trace_id),
        (Verdict::BrokenTrace, TraceId(3))
    );
    assert!(
        f[0].detail(&r.k.sym)
            .contains("neither a parent nor a link")
    );
}

#[test]
fn a_pika_style_consumer_receive_span_is_a_consumer_and_a_batch_receive_is_not_its_parents_stage() {
    let mut r = Rig::new();
    let k = &r.k;
    // Before semantic conventions v1.28 a push consumer named its span `receive` (pika does):
    // as a root, with neither parent nor link, it lost the producer's context.
    let pika = k.span(1, None, "billing", SpanKind::Consumer);
    // A v1.28 pull consumer: a CLIENT `receive` root without a stage, and a `process` span under
    // it that restored the message's stage: not `appeared`.
    let receive = k.span(2, None, "audit", SpanKind::Client);
    let process = k.stage(k.span(3, Some(2), "audit", SpanKind::Consumer), "canary");
    let ep = r.msg(MessagingOp::Receive, &[]);
    let er = r.msg(MessagingOp::Receive, &[]);
    let eq = r.msg(MessagingOp::Process, &[]);
    r.send(1, &[(pika, ep)]);
    r.send(2, &[(receive, er), (process, eq)]);
    r.tick(IDLE + 1);
    let f = r.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].kind, f[0].scope, f[0].trace_id),
        (Verdict::BrokenTrace, Scope::Messaging, TraceId(1))
    );
}
