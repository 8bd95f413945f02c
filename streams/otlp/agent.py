"""``dbopt otlp --from-kafka TOPIC``: OTLP trace records from a Kafka topic become QueryEvents.

The OpenTelemetry Collector's Kafka exporter writes one ``ExportTraceServiceRequest`` per record,
serialized as protobuf (``encoding: otlp_proto``, its default) or OTLP/JSON (``otlp_json``). This
stage reads them with the shared loop (:mod:`streams.kafka.loop`: committed-offset start, offsets
committed only after the produced events are acknowledged, SIGTERM stops cleanly), maps the spans
with the same pure core as the HTTP receiver and produces the events to the query-events topic.

A record that is not an export request becomes a DeadLetter (reason ``undecodable``) that points
at the source record (topic, partition, offset) but does not copy its bytes: they hold statement
texts with literals, which never enter dbopt's topics.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterable

from streams.config import Settings
from streams.kafka.health import Health
from streams.kafka.loop import Emit, Incoming, Stage, run_stage
from streams.otlp import metrics, wire
from streams.otlp.mapping import SpanMapper
from streams.records import DeadLetter

log = logging.getLogger("dbopt.otlp")


class OtlpTopicStage(Stage):
    """Raw OTLP records in (``decode_values`` off), QueryEvents and DeadLetters out."""

    name = "otlp"
    decode_values = False

    def __init__(self, settings: Settings, source_topic: str, mapper: SpanMapper) -> None:
        self.source_topic = source_topic
        self.events_topic = settings.topics.query_events
        self.dlq_topic = settings.topics.dlq
        self.mapper = mapper
        self.rejections = metrics.RejectionLog()

    def topics(self) -> list[str]:
        return [self.source_topic]

    def on_record(self, incoming: Incoming) -> Iterable[Emit]:
        try:
            export = wire.parse_kafka_value(incoming.value)
        except wire.WireError as exc:
            log.warning("%s[%d]@%d is not an OTLP export request: %s", incoming.topic, incoming.partition,
                        incoming.offset, exc.message)  # fmt: skip
            letter = DeadLetter(
                reason="undecodable",
                detail=f"not an OTLP ExportTraceServiceRequest ({exc.message}); the value stays in the source topic",
                source_topic=incoming.topic,
                source_partition=incoming.partition,
                source_offset=incoming.offset,
                received_at=int(time.time() * 1000),
            )
            return [Emit(self.dlq_topic, incoming.topic, letter)]
        result = self.mapper.map_request(export)
        metrics.count(result, "kafka")
        self.rejections.record(result)
        return [Emit(self.events_topic, event.service, event) for event in result.events]


def run_from_kafka(
    settings: Settings, source_topic: str, mapper: SpanMapper, stop: threading.Event, health: Health | None = None
) -> None:
    """Consume ``source_topic`` until ``stop`` is set (consumer group ``DBOPT_OTLP_CONSUMER_GROUP``)."""
    stage = OtlpTopicStage(settings, source_topic, mapper)
    run_stage(settings, stage, group_id=settings.otlp.consumer_group, stop=stop, health=health)
