#!/usr/bin/env python3
"""What span metrics can show of each propagation bug, next to grayscope's findings, measured.

    scripts/spanmetrics-compare.py [--requests N] [--fault-rate R]

For a clean load and then for each kind of fault the load generator injects, the same load (same
seed, same requests) goes to grayscope and to the OpenTelemetry Collector with the `spanmetrics`
connector counting calls by `x-release-stage` and `deployment.stage` (the nearest thing a user
would run instead of grayscope; the `servicegraph` connector, which would add the caller, is not
served by the Go module proxy here), exemplars on, into its Prometheus exporter. Then:

- grayscope: how many injected faults it reports as a first break on the right hop, and how many
  findings it reports that no fault explains;
- span metrics: which series exist only when the fault is injected (a series absent from healthy
  traffic is what an alert rule can catch; a shift in counts cannot be told from a change in the
  traffic mix), the services those series name, and how many faulty traces their exemplars name.

Prints a Markdown table. Needs Go (the Collector is built by tests/otelcol/build.sh).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "grayscope")
OTELCOL = os.path.join(ROOT, "target", "otelcol", "grayscope-otelcol")
KINDS = [
    "missing-cross-service",
    "missing-in-process",
    "changed",
    "appeared",
    "key-mismatch",
    "misrouted",
    "orphan",
    "lost-context",
]
CALLS = "traces_span_metrics_calls_total"
# Labels that say where a series comes from rather than what it counts.
NOISE = {"job", "instance", "collector_instance_id", "otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    for _ in range(400):
        if proc.poll() is not None:
            sys.exit(f"the collector exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port}")


def get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loadgen(args, grpc, kind, faults_out):
    cmd = [
        BIN, "loadgen", "--protocol", "grpc", "--grpc", grpc, "--seed", "7",
        "--spans-per-request", "90", "--concurrency", "2", "--templates", "16",
        "--requests", str(args.requests), "--faults-out", faults_out,
    ]
    cmd += ["--fault-rate", "0"] if kind is None else [
        "--fault-rate", str(args.fault_rate), "--fault-kinds", kind]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(faults_out) as f:
        return json.load(f)


def run_grayscope(args, work, kind):
    out = open(os.path.join(work, "gs.out"), "w+")
    proc = subprocess.Popen(
        [BIN, "serve", "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0",
         "--http", "127.0.0.1:0", "--log", "warn", "--trace-idle", "1s",
         "--data", tempfile.mkdtemp(dir=work)],
        stdout=out, stderr=subprocess.DEVNULL)
    try:
        line = ""
        for _ in range(400):
            out.seek(0)
            line = out.readline()
            if "metrics on" in line:
                break
            time.sleep(0.05)
        grpc = re.search(r"OTLP/gRPC on ([^,]+),", line).group(1)
        api = re.search(r"metrics on (https?://\S+)", line).group(1)
        faults = loadgen(args, grpc, kind, os.path.join(work, "faults-gs.json"))
        time.sleep(2)
        for _ in range(600):
            left = sum(float(l.split()[-1]) for l in get(api + "/metrics").splitlines()
                       if l.startswith(("grayscope_buffered_spans", "grayscope_store_queued_spans")))
            if left == 0:
                break
            time.sleep(0.1)
        findings, cursor = [], None
        while True:
            page = json.loads(get(api + "/api/v1/findings?limit=1000"
                                  + (f"&cursor={cursor}" if cursor else "")))
            findings += page["findings"]
            cursor = page.get("next")
            if not cursor:
                break
        return faults, findings
    finally:
        stop(proc)


def run_spanmetrics(args, work, kind):
    grpc, http, prom = free_port(), free_port(), free_port()
    config = os.path.join(work, "otelcol.yaml")
    with open(config, "w") as f:
        f.write(f"""receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:{grpc}" }}
      http: {{ endpoint: "127.0.0.1:{http}" }}
connectors:
  spanmetrics:
    dimensions: [{{ name: x-release-stage }}, {{ name: deployment.stage }}]
    metrics_flush_interval: 1s
    exemplars: {{ enabled: true, max_per_data_point: 1000 }}
exporters:
  prometheus: {{ endpoint: "127.0.0.1:{prom}", enable_open_metrics: true }}
service:
  telemetry: {{ metrics: {{ level: none }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [spanmetrics] }}
    metrics: {{ receivers: [spanmetrics], exporters: [prometheus] }}
""")
    proc = subprocess.Popen([OTELCOL, "--config", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{prom}/metrics"
    accept = "application/openmetrics-text; version=1.0.0"
    # The connector keeps exemplars for one flush interval only: scrape all along, as a
    # Prometheus with a short scrape interval would, and keep every exemplar seen.
    seen, done = {}, threading.Event()

    def scrape():
        while not done.wait(0.5):
            try:
                for k, (_, ids) in parse_calls(get(url, accept), strict=False).items():
                    seen.setdefault(k, set()).update(ids)
            except OSError:
                pass

    try:
        wait_port(grpc, proc)
        scraper = threading.Thread(target=scrape)
        scraper.start()
        try:
            faults = loadgen(args, f"127.0.0.1:{grpc}", kind,
                             os.path.join(work, "faults-sm.json"))
            time.sleep(3)
        finally:
            done.set()
            scraper.join()
        series = parse_calls(get(url, accept))
        return faults, {k: (n, ids | seen.get(k, set())) for k, (n, ids) in series.items()}
    finally:
        stop(proc)


def parse_calls(text, strict=True):
    """calls by label set: (count, trace ids of their exemplars)."""
    series = {}
    pattern = re.compile(r"^" + CALLS + r"\{(.*?)\} (\S+)(?: # \{(.*?)\})?")
    for line in text.splitlines():
        m = pattern.match(line)
        if not m:
            continue
        labels = frozenset((k, v) for k, v in re.findall(r'(\w+)="([^"]*)"', m.group(1))
                           if k not in NOISE)
        exemplar = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        count, ids = series.get(labels, (0.0, set()))
        if exemplar.get("trace_id"):
            ids.add(exemplar["trace_id"])
        series[labels] = (count + float(m.group(2)), ids)
    if strict and not series:
        sys.exit(f"no {CALLS} series scraped from the Collector")
    return series


def describe(labels):
    d = dict(labels)
    stage = d.get("x_release_stage", "")
    return (f"{d.get('service_name')} {d.get('span_kind', '').replace('SPAN_KIND_', '')} "
            f"{d.get('span_name')!r} "
            f"stage={stage or '(none)'} instance={d.get('deployment_stage') or '(none)'}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--fault-rate", type=float, default=0.05)
    args = p.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    subprocess.run([os.path.join(ROOT, "tests", "otelcol", "build.sh")], check=True)
    work = tempfile.mkdtemp()
    try:
        _, clean_gs = run_grayscope(args, work, None)
        _, clean = run_spanmetrics(args, work, None)
        rows = [("none", 0, f"{len(clean_gs)} findings", "-", "-", "-")]
        details = []
        for kind in KINDS:
            faults, findings = run_grayscope(args, work, kind)
            sm_faults, series = run_spanmetrics(args, work, kind)
            # Trace ids differ from run to run; the faults and their hops do not.
            assert len(faults) == len(sm_faults), "both collectors got the same load"
            want = {(f["trace_id"], f["kind"], f.get("caller"), f["callee"]) for f in faults}
            got = {(f["trace_id"], f["kind"], f["edge"].get("caller"), f["edge"]["callee"])
                   for f in findings if f.get("first_break")}
            hop = f"{faults[0]['caller'] or '(root)'} -> {faults[0]['callee']}" if faults else "?"
            new = {k: v for k, v in series.items() if k not in clean}
            services = sorted({dict(k).get("service_name") for k in new})
            faulty = {f["trace_id"] for f in sm_faults}
            named = {t for _, ids in new.values() for t in ids} & faulty
            rows.append((
                f"{kind} ({faults[0]['kind'] if faults else '?'}, {hop})",
                len(faults),
                f"{len(want & got)} at the hop, {len(findings) - len(want & got)} other",
                str(len(new)),
                ", ".join(services) or "-",
                f"{len(named)}",
            ))
            details += [f"{kind}: {describe(k)}: {int(v[0])} calls" for k, v in new.items()]
        print("| fault (finding, hop) | faulty traces | grayscope findings | new span-metric series "
              "| services they name | faulty traces named by exemplars |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(str(c) for c in r) + " |")
        print()
        for d in details:
            print(f"- {d}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
