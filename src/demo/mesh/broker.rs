//! The messaging hop: orders publishes `OrderPlaced` through NATS, billing consumes it. The
//! message's headers carry `traceparent` and `baggage` as any W3C carrier does; canary messages go
//! to the canary consumer group (`billing_gray` on `orders.placed.canary`), the rest to `billing`
//! on `orders.placed.stable`: gray release on a queue, routed by stage per consumer group.

use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator};
use opentelemetry::trace::{Link, Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tokio_stream::StreamExt as _;

use super::*;

const STABLE_SUBJECT: &str = "orders.placed.stable";
const CANARY_SUBJECT: &str = "orders.placed.canary";
const DESTINATION: &str = "orders.placed";

fn attributes(op: &'static str, group: Option<&'static str>) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("messaging.system", "nats"),
        KeyValue::new("messaging.destination.name", DESTINATION),
        KeyValue::new("messaging.operation.type", op),
    ];
    if let Some(g) = group {
        a.push(KeyValue::new("messaging.consumer.group.name", g));
    }
    a
}

struct Headers<'a>(&'a mut async_nats::HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct ReadHeaders<'a>(Option<&'a async_nats::HeaderMap>);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0?.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .map(|h| h.iter().map(|(k, _)| k.as_ref()).collect())
            .unwrap_or_default()
    }
}

fn propagator(trace_context_only: bool) -> TextMapCompositePropagator {
    let mut p: Vec<Box<dyn TextMapPropagator + Send + Sync>> =
        vec![Box::new(TraceContextPropagator::new())];
    if !trace_context_only {
        p.push(Box::new(BaggagePropagator::new()));
    }
    TextMapCompositePropagator::new(p)
}

/// orders' side: publishes one message per order, inside a PRODUCER span.
#[derive(Clone)]
pub(super) struct Publisher {
    pub(super) client: async_nats::Client,
    pub(super) tracer: SdkTracer,
    pub(super) fault: Option<FaultKind>,
    pub(super) tally: Arc<Tally>,
}

/// Messages published and handled, so that stopping waits for the ones still in flight.
#[derive(Default)]
pub(super) struct Tally {
    published: AtomicU64,
    handled: AtomicU64,
}

impl Tally {
    /// Waits (at most `within`) until every message published has been handled.
    pub(super) async fn drained(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.handled.load(Ordering::Acquire) < self.published.load(Ordering::Acquire)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Publisher {
    pub(super) async fn order_placed(&self, order_id: String) {
        let canary = propagation::current_stage().is_some_and(|s| s.as_str() == CANARY);
        let subject = if canary && self.fault != Some(FaultKind::Misroute) {
            CANARY_SUBJECT
        } else {
            STABLE_SUBJECT
        };
        let cx = Context::current();
        let span = self
            .tracer
            .span_builder("orders.placed publish")
            .with_kind(SpanKind::Producer)
            .with_attributes(attributes("send", None))
            .start_with_context(&self.tracer, &cx);
        let cx = cx.with_span(span);
        // `changed`: a publishing middleware stamps the default stage on every message.
        let sent = match self.fault {
            Some(FaultKind::Changed) => cx.with_baggage([KeyValue::new(STAGE_KEY, DEFAULT_STAGE)]),
            _ => cx.clone(),
        };
        let mut headers = async_nats::HeaderMap::new();
        propagator(self.fault == Some(FaultKind::TraceContextOnly))
            .inject_context(&sent, &mut Headers(&mut headers));
        if let Err(e) = self
            .client
            .publish_with_headers(subject, headers, order_id.into())
            .await
        {
            tracing::warn!("demo: publishing OrderPlaced failed: {e}");
        } else {
            self.tally.published.fetch_add(1, Ordering::AcqRel);
        }
        cx.span().end();
    }
}

/// billing's side, one consumer group per stage: subscribes (before returning, so that no message
/// published after this is missed) and handles every message in a CONSUMER span.
pub(super) async fn consume(
    client: &async_nats::Client,
    tracer: SdkTracer,
    stage: &str,
    fault: Option<FaultKind>,
    stop: CancellationToken,
    tally: Arc<Tally>,
) -> Result<JoinHandle<()>, DemoError> {
    let (subject, group) = if stage == CANARY {
        (CANARY_SUBJECT, "billing_gray")
    } else {
        (STABLE_SUBJECT, "billing")
    };
    let mut sub = client
        .queue_subscribe(subject, group.to_string())
        .await
        .map_err(|e| DemoError::Broker(format!("subscribing to {subject}: {e}")))?;
    client
        .flush()
        .await
        .map_err(|e| DemoError::Broker(format!("subscribing to {subject}: {e}")))?;
    // A consumer announces itself as it starts, as services do: its instance is then known
    // (and live) before the first message, whichever group gets the traffic.
    tracer
        .span_builder(format!("{subject} subscribe"))
        .with_kind(SpanKind::Internal)
        .start(&tracer)
        .end();
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => break,
                m = sub.next() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let parent = propagator(false).extract(&ReadHeaders(msg.headers.as_ref()));
            let (cx, links) = match fault {
                // A links-only consumer: its own trace, a link to the message's context, and
                // the baggage not restored from the headers.
                Some(FaultKind::LinksOnly) => (
                    Context::new(),
                    vec![Link::with_context(parent.span().span_context().clone())],
                ),
                Some(FaultKind::IgnoreHeaders) => (Context::new(), Vec::new()),
                _ => (parent, Vec::new()),
            };
            let mut span = tracer
                .span_builder(format!("{DESTINATION} process"))
                .with_kind(SpanKind::Consumer)
                .with_attributes(attributes("process", Some(group)))
                .with_links(links)
                .start_with_context(&tracer, &cx);
            span.end();
            tally.handled.fetch_add(1, Ordering::AcqRel);
        }
    }))
}
