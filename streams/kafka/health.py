"""Health of a long-running stage, for Kubernetes probes and for tests.

``live``: the stage's loop has turned recently (a wedged loop stops answering).
``ready``: the stage has its partitions assigned and has restored what it needs; it is doing
its job. :func:`serve` exposes ``/healthz`` (live), ``/readyz`` (ready) and ``/metrics``
(Prometheus) on a loopback address by default.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest


class Health:
    """Thread-safe state shared by a stage's loop and its probe server."""

    def __init__(self, name: str, *, stall_after_s: float = 60.0) -> None:
        self.name = name
        self.stall_after_s = stall_after_s
        self.ready_event = threading.Event()
        self._lock = threading.Lock()
        self._beat = time.monotonic()
        self._problem = ""

    def beat(self) -> None:
        """The loop turned."""
        with self._lock:
            self._beat = time.monotonic()

    def set_ready(self, ready: bool, problem: str = "") -> None:
        with self._lock:
            self._problem = problem
        if ready:
            self.ready_event.set()
        else:
            self.ready_event.clear()

    @property
    def live(self) -> bool:
        with self._lock:
            return time.monotonic() - self._beat < self.stall_after_s

    @property
    def ready(self) -> bool:
        return self.live and self.ready_event.is_set()

    def describe(self) -> dict[str, object]:
        with self._lock:
            problem = self._problem
            since = time.monotonic() - self._beat
        return {"stage": self.name, "live": self.live, "ready": self.ready, "last_turn_s": round(since, 3),
                "problem": problem}


def serve(health: Health, host: str, port: int, registry: CollectorRegistry = REGISTRY) -> ThreadingHTTPServer:
    """Start the probe server in a daemon thread; returns it (``shutdown()`` stops it).

    Port 0 binds a free port: read it from ``server.server_address``.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok = health.live if path == "/healthz" else health.ready
                body = json.dumps(health.describe()).encode()
                self._answer(200 if ok else 503, body, "application/json")
            else:
                self._answer(404, b"not found\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return  # probes every few seconds would flood the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"{health.name}-probes", daemon=True).start()
    return server
