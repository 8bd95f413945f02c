"""The shared consume–process–produce loop against the real broker: committed-offset start,
commit only after the output is acknowledged, a failed delivery retried (never dropped), health."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from msgspec.structs import replace

from samples import EXAMPLES
from streams.config import Settings
from streams.kafka import clients
from streams.kafka.consume import assigned_consumer, read_messages
from streams.kafka.health import Health
from streams.kafka.loop import Emit, Incoming, Stage, run_stage
from streams.kafka.topics import ensure_topics
from streams.records import Alert
from streams.serde import Codec


class Echo(Stage):
    """Copies every alert to the DLQ topic (any output topic does), padded by ``pad`` bytes."""

    name = "echo"

    def __init__(self, settings: Settings, pad: int = 0) -> None:
        self.settings, self.pad, self.seen = settings, pad, []

    def topics(self) -> list[str]:
        return [self.settings.topics.alerts]

    def on_record(self, incoming: Incoming) -> Iterable[Emit]:
        assert isinstance(incoming.record, Alert)
        self.seen.append(incoming.record.alert_id)
        out = replace(incoming.record, message="x" * self.pad)
        return [Emit(self.settings.topics.dlq, out.alert_id, out)]


def _alerts(n: int) -> list[Alert]:
    base = Alert.from_avro(EXAMPLES["Alert"][0])
    return [replace(base, alert_id=f"a-{i}-{uuid.uuid4().hex[:6]}") for i in range(n)]


def _produce(settings: Settings, alerts: list[Alert]) -> None:
    codec, producer = Codec(), clients.producer(settings)
    for alert in alerts:
        producer.produce(settings.topics.alerts, key=alert.alert_id.encode(),
                         value=codec.encode("Alert", alert.to_avro(), topic=settings.topics.alerts))
    assert producer.flush(30) == 0


def _output_ids(settings: Settings, expected: int) -> list[str]:
    consumer = assigned_consumer(settings, settings.topics.dlq)
    codec, ids = Codec(), []
    for msg in read_messages(consumer, max_messages=expected, idle_timeout=5):
        if msg.error() is None:
            ids.append(codec.decode(msg.value()).record["alert_id"])
    consumer.close()
    return ids


def _committed(settings: Settings, group: str) -> int:
    consumer = clients.consumer(settings, group)
    meta = consumer.list_topics(settings.topics.alerts, timeout=10).topics[settings.topics.alerts]
    parts = [TopicPartition(settings.topics.alerts, p) for p in meta.partitions]
    try:
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    except KafkaException:  # the group's coordinator is still being chosen: not known yet
        return -1
    finally:
        consumer.close()


def _run(settings: Settings, stage: Stage, group: str, health: Health | None = None) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=run_stage, args=(settings, stage),
                              kwargs={"group_id": group, "stop": stop, "health": health, "poll_timeout_s": 0.2},
                              daemon=True)
    thread.start()
    return thread, stop


def _wait(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_new_group_starts_at_the_beginning_and_resumes_from_its_commit(settings: Settings) -> None:
    ensure_topics(settings)
    first = _alerts(5)
    _produce(settings, first)  # before the stage ever ran: a new group must not skip these
    group = f"loop-{uuid.uuid4().hex[:8]}"
    stage = Echo(settings)
    thread, stop = _run(settings, stage, group)
    _wait(lambda: _committed(settings, group) == 5)
    stop.set()
    thread.join(30)
    assert sorted(stage.seen) == sorted(a.alert_id for a in first)

    second = _alerts(3)
    _produce(settings, second)
    again = Echo(settings)
    thread, stop = _run(settings, again, group)
    _wait(lambda: _committed(settings, group) == 8)
    stop.set()
    thread.join(30)
    assert sorted(again.seen) == sorted(a.alert_id for a in second)  # only what was not committed
    assert sorted(_output_ids(settings, 8)) == sorted(a.alert_id for a in first + second)


def test_failed_delivery_blocks_the_commit_until_the_broker_takes_the_record(settings: Settings) -> None:
    ensure_topics(settings)
    admin = clients.admin(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topics.dlq)

    def max_message_bytes(value: int) -> None:
        entry = ConfigEntry("max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET)
        for future in admin.incremental_alter_configs([ConfigResource(resource.restype, resource.name,
                                                                      incremental_configs=[entry])]).values():
            future.result()

    max_message_bytes(2_000)  # the padded output is refused by the broker: delivery fails
    _produce(settings, _alerts(2))
    group = f"loop-{uuid.uuid4().hex[:8]}"
    health = Health("echo")
    stage = Echo(settings, pad=20_000)
    thread, stop = _run(settings, stage, group, health)
    _wait(lambda: len(stage.seen) >= 2)
    _wait(lambda: "not delivered" in str(health.describe()["problem"]))
    time.sleep(1.5)
    assert _committed(settings, group) == 0  # nothing committed while the output is not acknowledged
    assert health.live

    max_message_bytes(1_000_000)  # the retry now succeeds
    _wait(lambda: _committed(settings, group) == 2)
    stop.set()
    thread.join(30)
    assert len(_output_ids(settings, 2)) == 2
    assert health.describe()["ready"] is False  # stopped


def test_ready_once_assigned_and_stop_ends_the_loop(settings: Settings) -> None:
    ensure_topics(settings)
    health = Health("echo")
    thread, stop = _run(settings, Echo(settings), f"loop-{uuid.uuid4().hex[:8]}", health)
    assert health.ready_event.wait(30)
    assert health.ready and health.live
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
