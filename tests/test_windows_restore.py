"""The windows stage's restore against the real broker: a changelog partition is read to its end, and a
read that gets nowhere is started again on a new consumer a bounded number of times, then fails (it
must not wait forever, as it did before: after a broker restart an assigned consumer can stay stuck)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from streams.config import Settings
from streams.kafka import clients
from streams.windows.agent import RESTORE_ATTEMPTS, WindowsStage, changelog_topic_name

pytestmark = pytest.mark.infra
PARTITION = 2
RECORDS = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(5)]


@pytest.fixture
def stage(settings: Settings) -> Iterator[WindowsStage]:
    """A windows stage (not running) whose changelog partition 2 holds :data:`RECORDS`."""
    app_id = f"t-restore-{uuid.uuid4().hex[:8]}"
    settings = settings.with_overrides(windows=settings.windows.with_overrides(app_id=app_id))
    topic = changelog_topic_name(settings)
    admin = clients.admin(settings)
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result()
    producer = clients.producer(settings)
    for key, value in RECORDS:
        producer.produce(topic, key=key, value=value, partition=PARTITION)
    assert producer.flush(30) == 0
    stage = WindowsStage(settings)
    try:
        yield stage
    finally:
        stage.consumer.close()
        stage._restorer.close()
        admin.delete_topics([topic], operation_timeout=30)[topic].result()


def _end(stage: WindowsStage) -> int:
    low, high = stage._restorer.get_watermark_offsets(TopicPartition(stage.changelog, PARTITION), timeout=10)
    assert (low, high) == (0, len(RECORDS))
    return int(high)


def test_a_changelog_partition_is_read_to_its_end(stage: WindowsStage) -> None:
    tp = TopicPartition(stage.changelog, PARTITION, OFFSET_BEGINNING)
    assert stage._read_changelog(tp, _end(stage)) == RECORDS
    assert stage._read_changelog(tp, _end(stage)) == RECORDS  # again on the same consumer: it was unassigned


def test_a_read_that_gets_nowhere_is_started_again_on_new_consumers_then_fails(
    stage: WindowsStage, caplog: pytest.LogCaptureFixture
) -> None:
    tp = TopicPartition(stage.changelog, PARTITION, OFFSET_BEGINNING)
    first = stage._restorer
    started = time.monotonic()
    with (caplog.at_level(logging.WARNING, logger="streams.windows.agent"),
          pytest.raises(KafkaException, match=f"not read to offset {len(RECORDS) + 1}")):
        stage._read_changelog(tp, _end(stage) + 1, stall_s=1.0)  # an offset the partition never reaches
    elapsed = time.monotonic() - started
    restarts = [r for r in caplog.records if "starting again on a new consumer" in r.getMessage()]
    assert len(restarts) == RESTORE_ATTEMPTS
    assert f"at offset {len(RECORDS)} of {len(RECORDS) + 1}" in restarts[0].getMessage()  # it did read what is there
    assert stage._restorer is not first  # a new consumer, and a working one:
    assert stage._read_changelog(tp, _end(stage)) == RECORDS
    assert elapsed < RESTORE_ATTEMPTS * 10  # bounded: each attempt ends ~1 s after its last progress
