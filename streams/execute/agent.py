"""The executor on the shared Kafka loop: commands in, results out (work in :mod:`.executor`).

One command per loop turn (``batch_size=1``): its result is produced, acknowledged by the broker,
marked emitted in the audit (``checkpoint``), and only then is the command's offset committed.
A crash anywhere before that redelivers the command, and the audit turns the redelivery into the
same result (its row is final but not emitted) or a ``duplicate``, never a second run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from streams.kafka.health import Health
from streams.kafka.loop import Emit, Incoming, Stage, run_stage
from streams.serde import DecodeError

from .executor import Executor, ResultToSend, RunReport


class ExecutorStage(Stage):
    name = "executor"

    def __init__(self, executor: Executor, health: Health, *, once: bool, max_commands: int | None,
                 idle_timeout: float) -> None:
        self.executor, self.health = executor, health
        self.once, self.max_commands, self.idle_timeout = once, max_commands, idle_timeout
        self._sent: list[ResultToSend] = []  # produced this turn, marked emitted at the checkpoint
        self._last_recheck = time.monotonic()
        self._idle_since: float | None = None  # --once counts idleness only from the first assignment

    def topics(self) -> list[str]:
        return [self.executor.settings.topics.commands]

    def restore(self) -> None:
        # connects (interrupted rows, invalid indexes, lost results); the first tick sends what it found
        # and starts the sequence of the deferred commands that are due
        self.executor.outbox += self.executor.recheck()

    def on_record(self, incoming: Incoming) -> Iterable[Emit]:
        self.executor.report.processed += 1
        self._idle_since = time.monotonic()
        return self._send(self.executor.handle(incoming))

    def on_undecodable(self, incoming: Incoming, error: DecodeError) -> Iterable[Emit]:
        self.executor.report.processed += 1
        return self._send([self.executor.undecodable(incoming, error)])

    def tick(self, now_ms: int) -> Iterable[Emit]:
        self.health.beat()
        emits = self._send(self.executor.outbox)
        self.executor.outbox = []
        if time.monotonic() - self._last_recheck >= self.executor.cfg.deferred_recheck_s:
            emits += self._send(self.executor.recheck())
            self._last_recheck = time.monotonic()
        # at most one table's commands per turn, in the wedding-aware order (streams.execute.sequence)
        emits += self._send(self.executor.sequence_turn())
        return emits

    def checkpoint(self) -> None:
        sent, self._sent = self._sent, []
        self.executor.mark_emitted(sent)

    def finished(self) -> bool:
        if self.max_commands is not None and self.executor.report.processed >= self.max_commands:
            return True
        if not self.once or not self.health.ready_event.is_set():
            return False
        if self._idle_since is None:
            self._idle_since = time.monotonic()
        return time.monotonic() - self._idle_since >= self.idle_timeout

    def _send(self, results: list[ResultToSend]) -> list[Emit]:
        self._sent += results
        topic = self.executor.settings.topics.results
        return [Emit(topic, item.key, item.result) for item in results]


def run_executor(executor: Executor, *, once: bool = False, max_commands: int | None = None,
                 idle_timeout: float = 5.0, health: Health | None = None) -> RunReport:
    """Consume commands until ``executor.stop`` is set, ``max_commands`` are done, or (``once``)
    no command arrived for ``idle_timeout`` seconds after the partitions were assigned."""
    cfg = executor.cfg
    health = health or Health("executor")
    stage = ExecutorStage(executor, health, once=once, max_commands=max_commands, idle_timeout=idle_timeout)
    try:
        # one executor per database, each with its own group: every one reads every command, runs its own
        group = cfg.consumer_group if executor.database is None else f"{cfg.consumer_group}-{executor.database}"
        run_stage(
            executor.settings, stage, group_id=group, stop=executor.stop, health=health, batch_size=1,
            poll_timeout_s=cfg.poll_timeout_s,
            # a dead executor's partitions move on quickly; a long CONCURRENTLY build is not a dead consumer
            consumer_overrides={"session.timeout.ms": 10_000,
                                "max.poll.interval.ms": min(cfg.statement_timeout_ms + 120_000, 86_400_000)},
        )
    finally:
        executor.close()
    return executor.report
