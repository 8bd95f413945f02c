"""``dbopt advisor`` on the shared Kafka loop: alerts, windows, commands and results in; signed
commands and ``kept`` results out (decisions in :mod:`streams.advise.advisor`).

The advisor's state (firing fingerprints, pending verifications, evidence, window history) is
saved in PostgreSQL (:mod:`streams.advise.state`) at every checkpoint, after the turn's output
was acknowledged and before its offsets are committed; a restarted advisor loads it and resumes
from the committed offsets, so nothing that fired or was applied while it was down is missed.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, Callable

import psycopg

from streams import db
from streams.advise.advisor import Advisor
from streams.advise.evaluate import Evaluator
from streams.advise.state import StateStore
from streams.cli_args import add_logging_arguments
from streams.commands import command_key
from streams.config import Settings, load_settings
from streams.kafka.health import Health, serve
from streams.kafka.loop import Emit, Incoming, Stage, run_stage, stop_on_signals
from streams.records import Alert, OptimizationCommand, OptimizationResult, WindowStats

HELP = "run the advisor: firing alerts -> HypoPG-checked index commands; verify applied indexes, roll back"

log = logging.getLogger("dbopt.advisor")


class AdvisorStage(Stage):
    name = "advisor"

    def __init__(self, settings: Settings, connect: Callable[[], Evaluator] | None = None,
                 health: Health | None = None) -> None:
        self.settings = settings
        self.advisor = Advisor(settings, connect)
        self.health = health
        self.store = StateStore(lambda: db.connect(settings, application_name="dbopt-advisor"),
                                settings.executor.audit_schema, settings.advise.consumer_group)
        self._saved: dict[str, Any] | None = None
        topics = settings.topics
        self._handlers: dict[str, tuple[type, Callable[[Any], None]]] = {  # topic -> (record, handler)
            topics.alerts: (Alert, self.advisor.on_alert),
            topics.latency_windows: (WindowStats, self.advisor.on_window),
            topics.commands: (OptimizationCommand, self.advisor.on_command),
            topics.results: (OptimizationResult, self.advisor.on_result),
        }

    def topics(self) -> list[str]:
        return list(self._handlers)

    def restore(self) -> None:
        state = self._with_db(self.store.load)
        if state is not None:
            self.advisor.restore(state)
            log.info("restored: %d firing fingerprint(s), %d pending verification(s)",
                     len(self.advisor.firing), len(self.advisor.verifier.pending))
        self._saved = state

    def on_record(self, incoming: Incoming) -> Iterable[Emit]:
        expected, handle = self._handlers[incoming.topic]
        if not isinstance(incoming.record, expected):
            log.warning("skipping a %s on %s@%d", type(incoming.record).__name__, incoming.topic, incoming.offset)
            return ()
        handle(incoming.record)
        return ()

    def tick(self, now_ms: int) -> Iterable[Emit]:
        self.advisor.tick(now_ms)
        out, self.advisor.outbox = self.advisor.outbox, []
        return out

    def checkpoint(self) -> None:
        state = self.advisor.snapshot()
        if state != self._saved:
            self._with_db(lambda: self.store.save(state))
            self._saved = state

    def _with_db(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` against PostgreSQL, waiting (with backoff) while it is unavailable."""
        delay = 0.5
        while True:
            try:
                return work()
            except psycopg.OperationalError as exc:
                log.warning("PostgreSQL unavailable for the advisor's state (%s); retrying in %.1fs",
                            str(exc).strip().splitlines()[0], delay)
                self.store.close()
                if self.health is not None:
                    self.health.beat()
                time.sleep(delay)
                delay = min(delay * 2, 30.0)


def run_advisor(
    settings: Settings,
    stop: threading.Event,
    health: Health | None = None,
    connect: Callable[[], Evaluator] | None = None,
) -> None:
    """Run until ``stop`` is set; ``health`` becomes ready once partitions are assigned."""
    health = health or Health("advisor")
    stage = AdvisorStage(settings, connect, health)
    try:
        run_stage(settings, stage, group_id=settings.advise.consumer_group, stop=stop, health=health,
                  poll_timeout_s=settings.advise.poll_timeout_s)
    finally:
        stage.store.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_logging_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    command_key(settings)  # fail now, clearly, when DBOPT_COMMAND_KEY is missing
    stop = threading.Event()
    stop_on_signals(stop)
    health = Health("advisor")
    if settings.advise.probe_port:
        serve(health, settings.advise.probe_host, settings.advise.probe_port)
    run_advisor(settings, stop, health)
    return 0
