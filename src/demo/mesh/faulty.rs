//! The faults that live on the wire: a middleware below the caller's CLIENT span that rewrites
//! what its client injected.

use super::*;

/// Rewrites the outgoing headers of one call after the caller's client has injected them: the
/// `changed` and `typo` faults live on the wire, below the CLIENT span, as a buggy middleware would.
/// In the hand-built style (`header_only`) the call carries `X-Release-Stage` and no baggage.
#[derive(Clone)]
pub(super) struct FaultService<S> {
    pub(super) inner: S,
    pub(super) fault: Option<FaultKind>,
    pub(super) header_only: bool,
}

impl<S, B> tower::Service<Request<B>> for FaultService<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.fault {
            Some(FaultKind::Changed) => {
                let headers = req.headers_mut();
                edit_baggage(headers, |cx| propagation::with_stage(cx, DEFAULT_STAGE));
                headers.insert(STAGE_HEADER, http::HeaderValue::from_static(DEFAULT_STAGE));
            }
            Some(FaultKind::Typo) if self.header_only => {
                let headers = req.headers_mut();
                if let Some(v) = headers.remove(STAGE_HEADER) {
                    headers.insert(http::HeaderName::from_static(TYPO_KEY), v);
                }
            }
            Some(FaultKind::Typo) => {
                let headers = req.headers_mut();
                edit_baggage(headers, |cx| {
                    let mut baggage = propagation::copy_baggage(cx);
                    if let Some((value, _)) = baggage.remove(STAGE_KEY) {
                        let _ = baggage.insert(TYPO_KEY, value);
                    }
                    cx.with_baggage(baggage)
                });
                headers.remove(STAGE_HEADER);
            }
            _ => {}
        }
        if self.header_only {
            req.headers_mut().remove("baggage");
        }
        self.inner.call(req)
    }
}

fn edit_baggage(headers: &mut HeaderMap, edit: impl FnOnce(&Context) -> Context) {
    let bp = BaggagePropagator::new();
    let cx = edit(&bp.extract(&HeaderExtractor(headers)));
    headers.remove("baggage");
    bp.inject_context(&cx, &mut HeaderInjector(headers));
}
