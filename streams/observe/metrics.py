"""Prometheus metrics of the worker and the ``/metrics`` page on Faust's web server.

Names follow Prometheus conventions: ``dbopt_`` prefix, counters end in ``_total`` (the client
adds it), durations in ``_seconds``. The agents increment the counters; :class:`MetricsSensor`
(installed by :func:`install_metrics_route`) measures, for every event of every agent, the
processing time and the consumer lag of its partition (log end offset - offset - 1).

=====================================  =========  ==================  ===============================
metric                                  type       labels              meaning
=====================================  =========  ==================  ===============================
dbopt_events_in_total                   counter    -                   query events read by ingest
dbopt_dlq_records_total                 counter    reason              records sent to the DLQ
dbopt_late_events_total                 counter    -                   events later than the grace
dbopt_fingerprint_overflow_total        counter    service             events folded into ``other``
dbopt_windows_emitted_total             counter    kind                closed windows emitted
dbopt_alerts_total                      counter    severity, state     alerts sent
dbopt_consumer_lag_messages             gauge      topic, partition    messages not yet processed
dbopt_processing_seconds                histogram  topic               time an agent spent on an event
=====================================  =========  ==================  ===============================
"""

from __future__ import annotations

import time
from typing import Any

import faust
from faust.sensors import Sensor
from faust.types import TP, EventT, StreamT
from faust.web import Request, Response, View
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

EVENTS_IN = Counter("dbopt_events_in", "Query events read by the ingest agent.")
DLQ_RECORDS = Counter("dbopt_dlq_records", "Records sent to the dead-letter topic, by reason.", ["reason"])
LATE_EVENTS = Counter("dbopt_late_events", "Events that arrived after their window's grace period.")
FINGERPRINT_OVERFLOW = Counter(
    "dbopt_fingerprint_overflow", "Events folded into the 'other' fingerprint by the per-service cap.", ["service"]
)
WINDOWS_EMITTED = Counter("dbopt_windows_emitted", "Closed windows emitted, by window kind.", ["kind"])
ALERTS = Counter("dbopt_alerts", "Alerts sent, by severity and state.", ["severity", "state"])
CONSUMER_LAG = Gauge(
    "dbopt_consumer_lag_messages", "Messages in a partition not yet processed by this worker.", ["topic", "partition"]
)
PROCESSING = Histogram(
    "dbopt_processing_seconds",
    "Time an agent spent on one event.",
    ["topic"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class MetricsSensor(Sensor):
    """Processing time and consumer lag of every event an agent handles."""

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT, event: EventT) -> dict[str, Any] | None:
        return {"started": time.perf_counter()}

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: StreamT, event: EventT, state: dict[str, Any] | None = None
    ) -> None:
        if state is not None:
            PROCESSING.labels(tp.topic).observe(time.perf_counter() - state["started"])
        highwater = stream.app.consumer.highwater(tp)
        if highwater is not None:
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(highwater - offset - 1, 0))


def render(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in Prometheus text exposition format."""
    return generate_latest(registry)


def install_metrics_route(app: faust.App) -> None:
    """Serve ``/metrics`` on the app's web server and measure every agent's events."""
    app.sensors.add(MetricsSensor())

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        # aiohttp refuses a charset inside content_type=, so the full header is set directly
        return web.bytes(render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
