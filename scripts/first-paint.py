#!/usr/bin/env python3
"""First contentful paint of dashboard pages in headless Chromium, over WebDriver.

    scripts/first-paint.py URL [URL...]

Starts chromedriver (Debian's `chromium-driver`) on a free port, opens each URL five times in one
session, and prints the first contentful paint and when the response ended, in ms from navigation
(min / median / max). Ends the chromedriver it started.
"""
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request


def call(base, method, path, body=None):
    req = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["value"]


PAINT = (
    "const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');"
    "const n = performance.getEntriesByType('navigation')[0];"
    "return p ? [p.startTime, n.responseEnd] : null;"
)


def main(urls):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = subprocess.Popen(
        ["chromedriver", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                call(base, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        session = call(base, "POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"],
            },
        }}})["sessionId"]
        s = f"/session/{session}"
        for url in urls:
            paints, ends = [], []
            for _ in range(5):
                call(base, "POST", s + "/url", {"url": url})
                for _ in range(50):
                    v = call(base, "POST", s + "/execute/sync", {"script": PAINT, "args": []})
                    if v:
                        break
                    time.sleep(0.1)
                if v:
                    paints.append(v[0])
                    ends.append(v[1])
            if not paints:
                print(f"{url}: no paint timing reported")
                continue
            print(
                f"{url}: first contentful paint min {min(paints):.0f} ms, median "
                f"{statistics.median(paints):.0f} ms, max {max(paints):.0f} ms "
                f"(response end median {statistics.median(ends):.0f} ms)"
            )
        call(base, "DELETE", s)
    finally:
        driver.kill()
        driver.wait()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
