"""Faust wiring of the pool monitor inside ``dbopt worker``.

The budget and the advice need every pool of a server at once, but the pool-snapshots topic is
keyed by service and spread over partitions (and workers). So two agents:

* ``dbopt.pools-forward`` reads the pool-snapshots and server-snapshots topics (each worker its
  share of the partitions) and forwards each record's bytes, unchanged, to the internal topic
  ``<app id>-pools`` under one key, so they all land in one partition: one worker sees them all,
  each instance's records still in order. Undecodable records go to the DLQ.
* ``dbopt.pools`` reads that topic and runs :class:`streams.pools.PoolMonitor`, state in the
  changelogged table ``dbopt-pools-state``. As in the latency detector, the alerts of a record are
  sent and their delivery awaited before the state is written: a crash in between replays the
  record and re-sends the same alert ids; after it, the record is older than the instance's state
  and changes nothing.

The internal topic has the app's partition count (its table's changelog is co-partitioned with
it); ``dbopt worker`` creates it before Faust starts (:func:`streams.app.faust_app.prepare_topics`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from faust.types import EventT, StreamT

from streams.app.tables import table_options
from streams.config import Settings
from streams.detect.traffic_agent import send_alerts
from streams.ingest import Rejected, dead_letter
from streams.observe.metrics import DLQ_RECORDS
from streams.pools.monitor import PoolMonitor
from streams.records import PoolSnapshot, ServerSnapshot
from streams.serde import Codec, DecodeError

log = logging.getLogger(__name__)
TABLE_NAME = "dbopt-pools-state"
FORWARD_KEY = b"pools"


def pools_topic_name(settings: Settings) -> str:
    """The internal topic every pool and server snapshot is forwarded to, under one key."""
    return f"{settings.windows.app_id}-pools"


def register(app: faust.App, settings: Settings) -> None:
    """Add the forwarding agent, the pool monitor agent and its state table to ``app``."""
    codec = Codec.from_settings(settings)
    topics = settings.topics
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    sources = app.topic(topics.pool_snapshots, topics.server_snapshots, **raw)
    internal = app.topic(pools_topic_name(settings), **raw)
    alerts = app.topic(topics.alerts, **raw)
    dlq = app.topic(topics.dlq, **raw)
    table = app.Table(TABLE_NAME, default=None, options=table_options())
    monitor = PoolMonitor(settings)

    async def reject(event: EventT, rejected: Rejected) -> None:
        message = event.message
        log.warning("pools: %s at %s[%s]@%s: %s", rejected.reason, message.topic, message.partition,
                    message.offset, rejected.detail)  # fmt: skip
        record = dead_letter(message.key, message.value, message.topic, message.partition, message.offset,
                             rejected, int(time.time() * 1000))  # fmt: skip
        await dlq.send(key=message.key, value=codec.encode_record(record, topic=topics.dlq))
        DLQ_RECORDS.labels(rejected.reason).inc()

    async def forward(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            try:
                name = codec.decode(event.value).schema_name
            except DecodeError as exc:
                await reject(event, Rejected(exc.reason, exc.detail))
                continue
            if name not in (PoolSnapshot.SCHEMA, ServerSnapshot.SCHEMA):
                await reject(event, Rejected("unexpected_record", f"record is a {name}"))
                continue
            await internal.send(key=FORWARD_KEY, value=event.value)

    async def judge(stream: StreamT[Any]) -> None:
        # one event at a time: Faust refuses table writes inside stream.take() batches
        async for event in stream.events():
            record = codec.decode_record(event.value)  # checked by the forwarder
            assert isinstance(record, (PoolSnapshot, ServerSnapshot))
            outcome = monitor.on_record(record, table, int(time.time() * 1000))
            await send_alerts(alerts, codec, outcome.alerts, log)
            for key, value in outcome.state.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value

    app.agent(sources, name="dbopt.pools-forward", concurrency=1)(forward)
    app.agent(internal, name="dbopt.pools", concurrency=1)(judge)
