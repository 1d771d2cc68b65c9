"""A RabbitMQ producer or consumer instrumented with the official OpenTelemetry Python SDK and its
pika instrumentation, exporting OTLP/HTTP: one side of a messaging hop for tests/pika.rs.

The stage travels the way a Python service carries it: W3C baggage (`x-release-stage`) in the
message headers, injected and extracted by the pika instrumentation through the global propagator,
and copied onto every span by the baggage span processor.

    pika_service.py produce --amqp-port P --otlp URL --queue Q --count N [--propagators tracecontext]
    pika_service.py consume --amqp-port P --otlp URL --queue Q --count N --instance-stage S
"""

import argparse
import sys
import time

import pika
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.pika import PikaInstrumentor
from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def provider(service, instance_stage, otlp):
    p = TracerProvider(
        resource=Resource.create(
            {"service.name": service, "deployment.stage": instance_stage}
        )
    )
    p.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    # The SDK's defaults: batches sent every 5 s unless flushed.
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp + "/v1/traces")))
    return p


def channel(port, queue):
    deadline = time.time() + 60
    while True:
        try:
            conn = pika.BlockingConnection(
                pika.ConnectionParameters(host="127.0.0.1", port=port)
            )
            break
        except pika.exceptions.AMQPConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    return conn, ch


def produce(a):
    if a.propagators == "tracecontext":
        propagate.set_global_textmap(TraceContextTextMapPropagator())
    else:
        propagate.set_global_textmap(
            CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
        )
    tp = provider("orders", a.instance_stage, a.otlp)
    tracer = tp.get_tracer("pika_service")
    conn, ch = channel(a.amqp_port, a.queue)
    PikaInstrumentor.instrument_channel(ch, tracer_provider=tp)
    for i in range(a.count):
        # An incoming request tagged with the stage, as the gateway's baggage brings it.
        token = context.attach(baggage.set_baggage("x-release-stage", a.stage))
        try:
            with tracer.start_as_current_span("POST /orders", kind=trace.SpanKind.SERVER):
                ch.basic_publish(exchange="", routing_key=a.queue, body=b"order %d" % i)
        finally:
            context.detach(token)
    conn.close()
    tp.shutdown()


def consume(a):
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    tp = provider("billing", a.instance_stage, a.otlp)
    conn, ch = channel(a.amqp_port, a.queue)
    PikaInstrumentor.instrument_channel(ch, tracer_provider=tp)
    seen = 0

    def on_message(channel, method, properties, body):
        nonlocal seen
        seen += 1
        channel.basic_ack(delivery_tag=method.delivery_tag)
        if seen >= a.count:
            channel.stop_consuming()

    ch.basic_consume(queue=a.queue, on_message_callback=on_message)
    print("consuming", flush=True)
    ch.start_consuming()
    conn.close()
    tp.shutdown()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["produce", "consume"])
    ap.add_argument("--amqp-port", type=int, required=True)
    ap.add_argument("--otlp", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--stage", default="canary")
    ap.add_argument("--instance-stage", default="canary")
    ap.add_argument("--propagators", choices=["tracecontext,baggage", "tracecontext"],
                    default="tracecontext,baggage")
    a = ap.parse_args()
    produce(a) if a.role == "produce" else consume(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
