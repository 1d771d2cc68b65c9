//! The server side of the hand-built style (`--propagation header`): the stage shows on a span
//! only as the instrumentation's captured request header, the way
//! `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=x-release-stage` or gRPC metadata
//! capture records it on SERVER spans.

use super::*;
use opentelemetry::trace::TraceContextExt as _;

/// Records the request's `X-Release-Stage` on its SERVER span as a captured header
/// (`http.request.header.x-release-stage`) or captured gRPC metadata
/// (`rpc.grpc.request.metadata.x-release-stage`): a string array, as instrumentations write it.
/// Inside a [`StageLayer`], which started the span. Off (`--propagation baggage`) it does nothing.
#[derive(Clone, Copy)]
pub(super) struct CaptureLayer {
    pub(super) on: bool,
    /// At the entry: a request that came without a stage is recorded with the one it was given,
    /// as an attribute of its own, as a hand-built entry middleware that applies a default does.
    pub(super) entry: bool,
}

impl<S> tower::Layer<S> for CaptureLayer {
    type Service = Capture<S>;
    fn layer(&self, inner: S) -> Capture<S> {
        Capture {
            inner,
            layer: *self,
        }
    }
}

#[derive(Clone)]
pub(super) struct Capture<S> {
    inner: S,
    layer: CaptureLayer,
}

impl<S, B> tower::Service<Request<B>> for Capture<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.layer.on
            && let Some(cx) = req.extensions().get::<Context>()
        {
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
            let key = if grpc {
                "rpc.grpc.request.metadata.x-release-stage"
            } else {
                "http.request.header.x-release-stage"
            };
            let header = req
                .headers()
                .get(STAGE_HEADER)
                .and_then(|v| v.to_str().ok());
            match header {
                Some(v) => cx.span().set_attribute(KeyValue::new(
                    key,
                    opentelemetry::Value::Array(
                        vec![opentelemetry::StringValue::from(v.to_string())].into(),
                    ),
                )),
                None if self.layer.entry => {
                    if let Some(stage) = propagation::stage(cx) {
                        cx.span().set_attribute(KeyValue::new(STAGE_KEY, stage));
                    }
                }
                None => {}
            }
        }
        self.inner.call(req)
    }
}
