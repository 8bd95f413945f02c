"""Assembly of ``dbopt serve``: the view, the stage following the topics (a thread) and uvicorn.

:func:`run` is the command (uvicorn in the main thread: SIGTERM and Ctrl-C stop it gracefully,
then the stage); :func:`start` runs the same in background threads and returns at once, for tests
and the demo.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from dataclasses import dataclass

import uvicorn

from streams.config import ConfigError, Settings
from streams.kafka.health import Health
from streams.kafka.loop import stop_on_signals

from .actions import Actions
from .agent import ServeStage, start_agent
from .app import Broadcaster, Parts, create_app
from .auth import Authenticator, parse_users
from .store import Store
from .view import View

log = logging.getLogger("dbopt.serve")
SHUTDOWN_GRACE_S = 3


def build(settings: Settings, view: View | None = None) -> tuple[Parts, ServeStage]:
    """The application's parts and the stage that feeds its view (nothing started yet)."""
    if settings.serve.users is None:
        raise ConfigError("DBOPT_UI_USERS is not set: dbopt serve needs at least one user "
                          "(name:role:hash, hashes from `dbopt ui hash-password`; see docs/serve.md)")
    users = parse_users(settings.serve.users.get_secret_value())
    if not users:
        raise ConfigError("DBOPT_UI_USERS names no user")
    view = view or View(settings)
    store = Store(settings)
    broadcaster = Broadcaster()
    secret = settings.serve.session_secret
    parts = Parts(
        settings=settings, view=view, actions=Actions(settings, view, store), authenticator=Authenticator(users),
        health=Health("serve"), broadcaster=broadcaster, stopping=threading.Event(),
        session_secret=secret.get_secret_value() if secret else secrets.token_urlsafe(32),
    )
    if settings.command_key is None:
        log.warning("serve: DBOPT_COMMAND_KEY is not set: operators cannot approve or send commands")
    try:
        store.ensure()
    except Exception as exc:  # noqa: BLE001 - the page works without it; decisions answer 503 until it is back
        log.warning("serve: decisions table not ready (PostgreSQL: %s); approvals wait for it", exc)
    return parts, ServeStage(settings, view, store, broadcaster.publish)


def _server(parts: Parts, host: str, port: int) -> tuple[uvicorn.Server, socket.socket]:
    config = uvicorn.Config(create_app(parts), log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    sock = socket.create_server((host, port), reuse_port=False)
    return uvicorn.Server(config), sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


def run(settings: Settings, host: str, port: int, announce: bool = True) -> None:
    """Serve until SIGTERM/SIGINT (the command)."""
    parts, stage = build(settings)
    server, sock = _server(parts, host, port)
    stop = threading.Event()
    # uvicorn handles SIGTERM/SIGINT while it runs and raises the signal again once it stopped:
    # these handlers take it then (the stage stops, the command exits 0)
    stop_on_signals(stop)
    agent = start_agent(settings, stage, stop, parts.health)
    if announce:
        print(f"dbopt serve: {address(sock)}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        parts.stopping.set()
        stop.set()
        agent.join(timeout=10)


@dataclass
class Running:
    """A ``dbopt serve`` in background threads (:func:`start`)."""

    url: str
    parts: Parts
    server: uvicorn.Server
    threads: list[threading.Thread]
    stop: threading.Event

    def close(self) -> None:
        self.parts.stopping.set()
        self.server.should_exit = True
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def start(settings: Settings, host: str = "127.0.0.1", port: int = 0, view: View | None = None) -> Running:
    """Start serve in background threads; returns once it accepts connections."""
    parts, stage = build(settings, view)
    server, sock = _server(parts, host, port)
    stop = threading.Event()
    agent = start_agent(settings, stage, stop, parts.health)
    web = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dbopt-serve-web", daemon=True)
    web.start()
    while not server.started and web.is_alive():
        stop.wait(0.05)
    return Running(address(sock), parts, server, [web, agent], stop)
