// A web front end instrumented with the OpenTelemetry web SDK: its fetch instrumentation starts a
// trace with a CLIENT span per call, tags it with the release stage it was given, and propagates
// traceparent and baggage to the gateway; spans are exported over OTLP/HTTP to grayscope.
import { context, propagation } from "@opentelemetry/api";
import {
  CompositePropagator,
  W3CBaggagePropagator,
  W3CTraceContextPropagator,
} from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { FetchInstrumentation } from "@opentelemetry/instrumentation-fetch";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { WebTracerProvider } from "@opentelemetry/sdk-trace-web";

const params = new URLSearchParams(location.search);
const gateway = params.get("gateway");
const provider = new WebTracerProvider({
  resource: resourceFromAttributes({ "service.name": "web-app" }),
  spanProcessors: [
    new BatchSpanProcessor(
      new OTLPTraceExporter({ url: `${params.get("otlp")}/v1/traces` }),
    ),
  ],
});
provider.register({
  propagator: new CompositePropagator({
    propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
  }),
});
registerInstrumentations({
  instrumentations: [
    new FetchInstrumentation({
      propagateTraceHeaderCorsUrls: [/.*/],
      // The stage the page was given, on its CLIENT span as a baggage span processor would put
      // it: when the request starts, in the caller's context.
      requestHook: (span) => {
        const entry = propagation.getActiveBaggage()?.getEntry("x-release-stage");
        if (entry) span.setAttribute("x-release-stage", entry.value);
      },
    }),
  ],
});

// `n` checkouts tagged `stage`, one after the other; resolves to the HTTP statuses.
window.checkout = async (stage, n) => {
  const statuses = [];
  for (let i = 0; i < n; i++) {
    const bag = propagation.createBaggage({ "x-release-stage": { value: stage } });
    const cx = propagation.setBaggage(context.active(), bag);
    const res = await context.with(cx, () =>
      fetch(`${gateway}/checkout?user=web${i}&item=book`),
    );
    statuses.push(res.status);
  }
  return statuses;
};

window.flushSpans = () => provider.forceFlush();
window.ready = true;
