"""Faust wiring of the detector: latency-windows in, alerts out, state in a changelogged table.

Crash safety (at-least-once, idempotent): for each window the detector first computes the
series' new state and its alerts, the alerts are sent and their delivery awaited, and only
then is the state written to the table. A crash before the write replays the window and
re-sends the same alerts with the same ``alert_id``; a crash after it finds the window already
applied (the series remembers its newest window start) and sends nothing. Either way a
condition never fires twice for the same breach.

The table is partitioned like the windows topic, so every record of one series must arrive
on one partition: the windows topic is keyed by service. Its changelog topic should exist
before the worker starts (see ``docs/ingest-detect.md``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from faust.types import AgentT, EventT, StreamT

from streams.app.tables import table_options
from streams.config import Settings
from streams.detect.detector import Detector
from streams.domain.slo import slo_ms
from streams.ingest import Rejected, dead_letter
from streams.observe.metrics import ALERTS, DLQ_RECORDS, LAST_WINDOWS
from streams.records import WindowStats
from streams.serde import Codec, DecodeError

log = logging.getLogger(__name__)
TABLE_NAME = "dbopt-detector-state"


def register(app: faust.App, settings: Settings) -> AgentT:
    """Add the detector agent (and its state table) to ``app``."""
    codec = Codec.from_settings(settings)
    topics = settings.topics
    source = app.topic(topics.latency_windows, key_serializer="raw", value_serializer="raw")
    alerts = app.topic(topics.alerts, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(topics.dlq, key_serializer="raw", value_serializer="raw")
    # keys are strings, values JSON-able dicts (Faust's default json table serializers); the
    # table has the app's topic_partitions, which the windows topic must have too
    table = app.Table(TABLE_NAME, default=None, options=table_options())
    detector = Detector(settings, table)

    async def reject(event: EventT, rejected: Rejected, now_ms: int) -> None:
        message = event.message
        log.warning("detector: %s at %s[%s]@%s: %s", rejected.reason, message.topic, message.partition,
                    message.offset, rejected.detail)  # fmt: skip
        record = dead_letter(message.key, message.value, message.topic, message.partition, message.offset,
                             rejected, now_ms)  # fmt: skip
        await dlq.send(key=message.key, value=codec.encode_record(record, topic=topics.dlq))
        DLQ_RECORDS.labels(rejected.reason).inc()

    async def handle(event: EventT) -> None:
        now_ms = int(time.time() * 1000)
        try:
            window = codec.decode_record(event.value)
        except DecodeError as exc:
            await reject(event, Rejected(exc.reason, exc.detail), now_ms)
            return
        if not isinstance(window, WindowStats):
            await reject(event, Rejected("not_window_stats", f"record is a {window.SCHEMA}"), now_ms)
            return
        outcome = detector.evaluate(window, now_ms)
        if window.fingerprint is None and window.window_kind == "tumbling":  # the per-context gauges
            LAST_WINDOWS.set(window.service, window.context, window.p95_ms,
                             slo_ms(window.context, window.window_start, settings.domain, settings.timezone))
        for alert in outcome.alerts:
            value = codec.encode_record(alert, topic=topics.alerts)
            delivery = await alerts.send(key=alert.alert_id.encode(), value=value)
            await delivery
            ALERTS.labels(alert.severity, alert.state).inc()
        detector.apply(outcome)

    async def detect(stream: StreamT[Any]) -> None:
        # one event at a time: Faust refuses table writes inside stream.take() batches
        async for event in stream.events():
            await handle(event)

    return app.agent(source, name="dbopt.detector", concurrency=1)(detect)
