"""The latest closed windows, as the executor's sequencing sees them (I/O around :mod:`.sequence`).

A reader without a consumer group (nothing committed, nothing to recover): at start it reads the
last records of each latency-windows partition, then whatever arrives, without blocking, once per
loop turn. It keeps the latest closed tumbling *context* window per (service, context) of the
executor's database; the sequencer checks them before it starts the next table.
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaException

from streams.config import Settings
from streams.kafka.consume import TopicNotFound, assigned_consumer
from streams.records import WindowStats
from streams.serde import Codec, DecodeError

from .sequence import LatestWindow

log = logging.getLogger("dbopt.executor")
LOOKBACK = 500  # records per partition read at start: the windows of the last minutes


class WindowWatch:
    def __init__(self, settings: Settings, database: str | None) -> None:
        self.settings, self.database = settings, database
        self.codec = Codec.from_settings(settings)
        self._consumer: Consumer | None = None
        self.latest: dict[tuple[str, str], LatestWindow] = {}

    def poll(self, max_records: int = 1000) -> list[LatestWindow]:
        """Read what has arrived (never waits); the latest window per (service, context)."""
        consumer = self._reader()
        if consumer is not None:
            try:
                messages = consumer.consume(max_records, timeout=0)
            except KafkaException as exc:
                log.warning("reading windows for the sequence check: %s", exc)
                messages = []
            for msg in messages:
                if msg.error() is None:
                    self._take(msg.value() or b"")
        return list(self.latest.values())

    def _take(self, value: bytes) -> None:
        try:
            record = self.codec.decode_record(value)
        except DecodeError:
            return
        if (not isinstance(record, WindowStats) or record.window_kind != "tumbling" or record.fingerprint is not None
                or record.database != self.database):
            return
        key = (record.service, record.context)
        known = self.latest.get(key)
        if known is None or record.window_end > known.window_end:
            self.latest[key] = LatestWindow(record.context, record.service, record.window_end, record.p95_ms,
                                            record.count)

    def _reader(self) -> Consumer | None:
        if self._consumer is None:
            try:
                self._consumer = assigned_consumer(self.settings, self.settings.topics.latency_windows,
                                                   last=LOOKBACK, timeout=5.0)
            except (TopicNotFound, KafkaException) as exc:
                log.info("no windows to check the sequence against yet: %s", exc)
                return None
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
