"""Small consumer helpers: read a whole topic (or its new records) without a consumer group.

Used by ``dbopt tail`` and by tests. The consumer is assigned every partition by hand and
never commits, so reading leaves no trace on the cluster.
"""

from __future__ import annotations

import time
import uuid
from typing import Iterator

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, Message, TopicPartition


class TopicNotFound(LookupError):
    """The topic does not exist on the broker."""


def assigned_consumer(bootstrap: str, topic: str, *, from_beginning: bool, timeout: float = 10.0) -> Consumer:
    """A consumer with every partition of ``topic`` assigned, at its start or its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dbopt-reader-{uuid.uuid4().hex}",  # required by librdkafka, never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
        }
    )
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        consumer.close()
        raise TopicNotFound(topic)
    offset = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, offset) for p in sorted(meta.partitions)])
    return consumer


def read_messages(consumer: Consumer, *, max_messages: int | None, idle_timeout: float) -> Iterator[Message]:
    """Yield messages (including error events, see ``Message.error()``) until ``max_messages``
    values have been yielded or ``idle_timeout`` seconds pass without a new one."""
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
