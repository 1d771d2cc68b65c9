"""A service of a small shop built the way many teams hand-build gray release in Python: Flask
and requests, instrumented with the official OpenTelemetry SDK and its Flask, requests and
sqlite3 instrumentations, exporting OTLP/HTTP. For tests/flask_headers.rs.

The stage is forwarded by hand: each handler reads `X-Release-Stage` from its request and writes
it on its outgoing calls. Nothing copies it onto spans; it shows only where the Flask
instrumentation captures it as a request header
(`OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=x-release-stage`, set by the test):
on SERVER spans. Orders also stores each order in SQLite and prices it in an INTERNAL span.

    flask_service.py frontend --otlp URL --orders URL
    flask_service.py orders --otlp URL --payments-stable URL --payments-canary URL [--fault F]
    flask_service.py payments --otlp URL --instance-stage S

F: missing (the header is not forwarded), changed (it is forwarded as `stable`), misroute (every
call goes to the stable payments). Prints `listening PORT` once it serves on 127.0.0.1:PORT; on
end of input (or SIGTERM) it stops and flushes its spans.
"""

import argparse
import signal
import sqlite3
import sys
import threading

import requests
from flask import Flask, jsonify, request
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from werkzeug.serving import make_server

STAGE_HEADER = "X-Release-Stage"


def setup(service, instance_stage, otlp):
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service, "deployment.stage": instance_stage}
        )
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp + "/v1/traces"))
    )
    trace.set_tracer_provider(provider)
    RequestsInstrumentor().instrument()
    SQLite3Instrumentor().instrument()
    return provider


def frontend(a, app):
    @app.get("/checkout")
    def checkout():
        stage = request.headers.get(STAGE_HEADER)
        r = requests.post(
            a.orders + "/orders",
            json={"item": request.args.get("item", "book")},
            headers={STAGE_HEADER: stage} if stage else {},
            timeout=10,
        )
        r.raise_for_status()
        return jsonify(r.json())


def orders(a, app):
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
    lock = threading.Lock()
    tracer = trace.get_tracer("flask_service")

    @app.post("/orders")
    def place():
        stage = request.headers.get(STAGE_HEADER)
        item = request.get_json()["item"]
        with lock:
            # Through a cursor: the sqlite3 instrumentation traces cursors' statements.
            cur = db.cursor()
            cur.execute("INSERT INTO orders (item) VALUES (?)", (item,))
            order_id = cur.lastrowid
        with tracer.start_as_current_span("price order"):
            price = sum(item.encode()) * 3
        if a.fault == "missing":
            headers = {}
        elif a.fault == "changed":
            headers = {STAGE_HEADER: "stable"}
        else:
            headers = {STAGE_HEADER: stage} if stage else {}
        canary = stage == "canary" and a.fault != "misroute"
        payments = a.payments_canary if canary else a.payments_stable
        r = requests.post(
            payments + "/charge",
            json={"order": order_id, "amount": price},
            headers=headers,
            timeout=10,
        )
        r.raise_for_status()
        return jsonify({"order": order_id, "charged_by": r.json()["instance"]})


def payments(a, app):
    @app.post("/charge")
    def charge():
        return jsonify({"instance": a.instance_stage})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["frontend", "orders", "payments"])
    p.add_argument("--otlp", required=True)
    p.add_argument("--orders")
    p.add_argument("--payments-stable")
    p.add_argument("--payments-canary")
    p.add_argument("--instance-stage", default="stable")
    p.add_argument("--fault", choices=["missing", "changed", "misroute"])
    a = p.parse_args()

    provider = setup(a.role, a.instance_stage, a.otlp)
    app = Flask(a.role)
    FlaskInstrumentor().instrument_app(app)
    {"frontend": frontend, "orders": orders, "payments": payments}[a.role](a, app)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("listening", server.server_port, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    server.shutdown()
    provider.shutdown()


if __name__ == "__main__":
    main()
