"""The stage that feeds the view: it follows the topics with the shared Kafka loop, in a thread
beside uvicorn, and reads the executor's audit table now and then.

**Rebuilt on start.** Each process joins a consumer group of its own
(``DBOPT_SERVE_CONSUMER_GROUP`` + host, pid and a random suffix), so it starts at the beginning
of every topic and replays what the topics still hold into the view, which keeps only its
retention (``DBOPT_SERVE_RETENTION_S`` of windows, the newest ``DBOPT_SERVE_MAX_RECORDS`` alerts
and optimizations). The group's offsets are committed by the loop as for any stage but never read
again (a restart is a new group); the broker forgets them after its offsets retention. Nothing is
produced: serve only reads the topics (operators' commands go out through :mod:`.actions`).

**History.** Commands older than the commands topic holds, and the executor's own word on each,
come from its audit table (:class:`~streams.serve.store.Store`), re-read every
``DBOPT_SERVE_HISTORY_REFRESH_S``; so are the operators' decisions (other serve processes take
them too). A database that is down leaves the view as it was and is tried again at the next refresh.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable

import psycopg
from prometheus_client import Counter, Gauge

from streams.config import Settings
from streams.kafka.health import Health
from streams.kafka.loop import Emit, Incoming, Stage, run_stage

from .store import Store
from .view import View

log = logging.getLogger("dbopt.serve")
HISTORY_READS = Counter("dbopt_serve_history_reads", "Reads of the executor's audit table by dbopt serve, by outcome.",
                        ["outcome"])
VIEW_ITEMS = Gauge("dbopt_serve_view_items", "What the view of dbopt serve holds, by part.", ["part"])
PRUNE_EVERY_S = 10.0
RESTART_DELAY_S = 5.0


class ServeStage(Stage):
    name = "serve"

    def __init__(self, settings: Settings, view: View, store: Store, changed: Callable[[set[str]], None]) -> None:
        self.settings, self.view, self.store, self.changed = settings, view, store, changed
        self._pending: set[str] = set()
        self._history_at = 0.0
        self._pruned_at = time.monotonic()

    def topics(self) -> list[str]:
        t = self.settings.topics
        return [t.latency_windows, t.alerts, t.commands, t.results, t.notifications, t.pool_snapshots,
                t.server_snapshots]

    def restore(self) -> None:
        self.refresh_history()

    def on_record(self, incoming: Incoming) -> Iterable[Emit]:
        if incoming.record is not None:
            kind = self.view.add(incoming.record)
            if kind is not None:
                self._pending.add(kind)
        return ()

    def tick(self, now_ms: int) -> Iterable[Emit]:
        if time.monotonic() - self._history_at >= self.settings.serve.history_refresh_s:
            self.refresh_history()
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            self.view.prune()
            self._pruned_at = time.monotonic()
            for part, count in self.view.sizes().items():
                VIEW_ITEMS.labels(part).set(count)
        if self._pending:
            changed, self._pending = self._pending, set()
            self.changed(changed)
        return ()

    def refresh_history(self) -> None:
        """Audit rows and decisions into the view (the database being down changes nothing)."""
        self._history_at = time.monotonic()
        try:
            if self.view.add_audit(self.store.audit(self.settings.serve.max_records)):
                self._pending.add("optimizations")
            if self.view.set_decisions(self.store.decisions()):
                self._pending.add("optimizations")
        except psycopg.Error as exc:
            HISTORY_READS.labels("failed").inc()
            log.warning("serve: audit history not read (tried again in %.0f s): %s",
                        self.settings.serve.history_refresh_s, str(exc).strip().splitlines()[0])
            return
        HISTORY_READS.labels("ok").inc()


def group_id(settings: Settings) -> str:
    """A consumer group of this process only: every start reads the topics from the beginning."""
    return f"{settings.serve.consumer_group}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def start_agent(settings: Settings, stage: ServeStage, stop: threading.Event, health: Health) -> threading.Thread:
    """Run ``stage`` on the shared loop in a daemon thread until ``stop`` is set; a failure (the
    broker unreachable at start) is logged and the loop started again, with the same group."""
    group = group_id(settings)

    def follow() -> None:
        while not stop.is_set():
            try:
                run_stage(settings, stage, group_id=group, stop=stop, health=health,
                          poll_timeout_s=settings.serve.poll_timeout_s)
            except Exception as exc:  # noqa: BLE001 - keep serving the page; the probes show the problem
                log.error("serve: following the topics failed, starting again in %.0f s: %s", RESTART_DELAY_S, exc)
                health.set_ready(False, f"following the topics failed: {exc}")
                stop.wait(RESTART_DELAY_S)

    thread = threading.Thread(target=follow, name="dbopt-serve-agent", daemon=True)
    thread.start()
    return thread
