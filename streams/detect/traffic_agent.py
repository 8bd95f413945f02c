"""Faust wiring of the error-rate and surge rules (:mod:`streams.detect.traffic`) inside
``dbopt worker``: latency-windows in, alerts out, state in the changelogged table
``dbopt-traffic-state``.

It reads the windows topic beside the latency detector (a second agent on the same topic; the
latency detector dead-letters records that are not windows, this one skips them). Crash safety as
there: alerts are sent and their delivery awaited before the state is written, so a replayed
window re-sends the same alert ids or, once applied, is ignored.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

import faust
from faust.types import StreamT, TopicT

from streams.app.tables import table_options
from streams.config import Settings
from streams.detect.traffic import TrafficDetector
from streams.observe.metrics import ALERTS
from streams.records import Alert, WindowStats
from streams.serde import Codec, DecodeError

log = logging.getLogger(__name__)
TABLE_NAME = "dbopt-traffic-state"


async def send_alerts(topic: TopicT, codec: Codec, alerts: Iterable[Alert], logger: logging.Logger) -> None:
    """Send each alert keyed by its id and wait until the broker has it (before any state is written)."""
    for alert in alerts:
        delivery = await topic.send(key=alert.alert_id.encode(), value=codec.encode_record(alert, topic.get_topic_name()))
        await delivery
        ALERTS.labels(alert.severity, alert.state).inc()
        logger.info("%s %s %s: %s", alert.kind, alert.state, alert.severity, alert.message)


def register(app: faust.App, settings: Settings) -> None:
    """Add the error/surge agent and its state table to ``app``."""
    codec = Codec.from_settings(settings)
    topics = settings.topics
    source = app.topic(topics.latency_windows, key_serializer="raw", value_serializer="raw")
    alerts = app.topic(topics.alerts, key_serializer="raw", value_serializer="raw")
    table = app.Table(TABLE_NAME, default=None, options=table_options())
    detector = TrafficDetector(settings)

    async def judge(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            try:
                record = codec.decode_record(event.value)
            except DecodeError:
                continue  # the latency detector sends it to the DLQ
            if not isinstance(record, WindowStats):
                continue
            outcome = detector.evaluate(record, table, int(time.time() * 1000))
            await send_alerts(alerts, codec, outcome.alerts, log)
            for key, value in outcome.state.items():
                table[key] = value

    app.agent(source, name="dbopt.traffic", concurrency=1)(judge)
