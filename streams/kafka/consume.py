"""Small consumer helpers: read a whole topic, or its last records, without a consumer group.

Used by ``dbopt tail`` and by tests. The consumer is assigned every partition by hand and
never commits, so reading leaves no trace on the cluster.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, Message, TopicPartition

from streams.config import Settings
from streams.kafka.clients import consumer as new_consumer

# librdkafka's logical offset RD_KAFKA_OFFSET_TAIL(n) = -2000 - n: "n records before the end",
# resolved (and retried) by the client once the partition's leader answers
OFFSET_TAIL_BASE = -2000
# metadata errors of a topic that is not there: unknown, or a name that is not a topic name
NOT_FOUND = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_EXCEPTION)


class TopicNotFound(LookupError):
    """The topic does not exist on the broker (or its name is not a valid topic name)."""


def start_offset(last: int | None) -> int:
    """The logical offset of the oldest record (``None``), of the last ``last`` ones, or of the end (``0``)."""
    if last is None:
        return OFFSET_BEGINNING
    return OFFSET_END if last == 0 else OFFSET_TAIL_BASE - last


def assigned_consumer(
    settings: Settings, topic: str, *, last: int | None = None, timeout: float = 10.0, **overrides: Any
) -> Consumer:
    """A consumer with every partition of ``topic`` assigned.

    ``last=None`` starts at the oldest record; ``last=N`` at the last N records of each
    partition (``0``: only records that arrive from now on). ``overrides`` are librdkafka
    properties (``enable_partition_eof=True`` ...), as for :func:`streams.kafka.clients.consumer`.
    """
    # a group id is required by librdkafka; it is never joined (assign, no subscribe) nor committed
    consumer = new_consumer(settings, f"dbopt-reader-{uuid.uuid4().hex}", **overrides)
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or (meta.error is not None and meta.error.code() in NOT_FOUND):
        consumer.close()
        raise TopicNotFound(topic)
    consumer.assign([TopicPartition(topic, p, start_offset(last)) for p in sorted(meta.partitions)])
    return consumer


def read_messages(consumer: Consumer, *, max_messages: int | None, idle_timeout: float) -> Iterator[Message]:
    """Yield messages (including error and end-of-partition events, see ``Message.error()``)
    until ``max_messages`` values have been yielded or ``idle_timeout`` seconds pass without a
    new one."""
    count = 0
    deadline = time.monotonic() + idle_timeout
    while max_messages is None or count < max_messages:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        msg = consumer.poll(min(remaining, 0.5))
        if msg is None:
            continue
        if msg.error() is None:
            count += 1
            deadline = time.monotonic() + idle_timeout
        yield msg
