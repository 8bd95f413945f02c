"""A Slack-compatible incoming webhook on 127.0.0.1 for ``make demo``: it answers ``ok`` like
Slack and prints each message's text (the firing and resolved alerts, the results)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TextIO


def start_demo_slack(out: TextIO) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; its URL is ``http://127.0.0.1:<port>/services/demo``."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                text = json.loads(body).get("text", "")
            except (ValueError, AttributeError):
                text = "(not a Slack message)"
            with lock:
                out.write(f"   notify -> Slack: {text}\n")
                out.flush()
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="demo-slack", daemon=True).start()
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    assert isinstance(host, str)  # an AF_INET server: a text address
    return f"http://{host}:{port}/services/demo"
