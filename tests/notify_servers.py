"""Real local servers standing in for Slack, PagerDuty, Twilio, a webhook receiver and an SMTP
relay: they listen on 127.0.0.1, record every request they receive, and answer as a test tells
them (a status, a ``Retry-After``, a delay longer than the client's timeout).

A request counts as *delivered* when the server answered it with a 2xx: that is what the real
services do (Slack posts the message when it answers ``ok``, not when it answers 500).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the server answered
    at: float

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


class RecordingServer:
    """One HTTP server. ``script(...)`` queues replies for the next requests, in order;
    ``default`` answers every request after them."""

    def __init__(self, default: Reply = Reply()) -> None:
        self.default = default
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self._changed = threading.Condition(self._lock)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536  # the status line, headers and body leave in one write (no Nagle/delayed-ACK stall)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with server._lock:
                    reply = server._script.popleft() if server._script else server.default
                    server.requests.append(Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                                   body, reply.status, time.time()))
                    server._changed.notify_all()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client gave up (timeout) or died

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def set_default(self, reply: Reply) -> None:
        with self._lock:
            self.default = reply

    def delivered(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.delivered]

    def wait_for(self, predicate: Callable[[list[Request]], bool], timeout: float = 20.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; {len(self.requests)} request(s): "
                                         f"{[(r.path, r.status) for r in self.requests][-10:]}")
                self._changed.wait(min(left, 0.2))
            return list(self.requests)

    def wait_delivered(self, count: int, timeout: float = 20.0) -> list[Request]:
        self.wait_for(lambda rs: sum(r.delivered for r in rs) >= count, timeout)
        return self.delivered()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    code: str  # the SMTP reply given to DATA


class _Handler:
    def __init__(self, box: "SmtpServer") -> None:
        self.box = box

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        with self.box.lock:
            code = self.box.script.popleft() if self.box.script else self.box.default
            raw = envelope.original_content or envelope.content or b""
            message = message_from_bytes(raw if isinstance(raw, bytes) else raw.encode(), policy=policy.default)
            self.box.mails.append(Mail(envelope.mail_from or "", list(envelope.rcpt_tos), message, code))  # type: ignore[arg-type]
        return code


@dataclass
class SmtpServer:
    """aiosmtpd on 127.0.0.1; ``login`` = (user, password) requires AUTH LOGIN/PLAIN (no TLS needed)."""

    login: tuple[str, str] | None = None
    tls: ssl.SSLContext | None = None  # offer STARTTLS with this context, and require it
    default: str = "250 OK"
    mails: list[Mail] = field(default_factory=list)
    script: deque[str] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.login:
            user, password = self.login

            def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                             data: Any) -> AuthResult:
                ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (user, password)
                return AuthResult(success=ok)

            kwargs = {"authenticator": authenticate, "auth_required": True, "auth_require_tls": self.tls is not None}
        if self.tls is not None:
            kwargs.update(tls_context=self.tls, require_starttls=True)
        self.port = free_port()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def delivered(self) -> list[Mail]:
        with self.lock:
            return [m for m in self.mails if m.code.startswith("2")]

    def wait_delivered(self, count: int, timeout: float = 20.0) -> list[Mail]:
        deadline = time.monotonic() + timeout
        while len(self.delivered()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; {len(self.mails)} mail(s), codes {[m.code for m in self.mails]}")
            time.sleep(0.05)
        return self.delivered()

    def close(self) -> None:
        self.controller.stop()
