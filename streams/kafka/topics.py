"""Every dbopt topic, made from one configuration (:class:`streams.config.TopicPolicy`).

``topic_specs`` is pure (what each topic should look like); ``ensure_topics`` talks to the
broker and creates what is missing. Both are idempotent by construction: a topic that
exists is reported, never altered.
"""

from __future__ import annotations

import time

from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import Settings

# commands and results are an audit trail keyed by command_id: compacted, and kept longer
_AUDIT_TOPICS = ("commands", "results")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str]


@dataclass
class EnsureReport:
    """What :func:`ensure_topics` did: topics it created and topics it found."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    # topic -> (partitions it has, partitions the policy asks for)
    partition_mismatch: dict[str, tuple[int, int]] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The desired shape of every topic in ``settings.topics``."""
    policy = settings.topic_policy
    specs = []
    for key, name in settings.topics.all().items():
        if key in _AUDIT_TOPICS:
            config = {"cleanup.policy": "compact,delete", "retention.ms": str(policy.command_retention_ms)}
        elif key == "dlq":
            config = {"cleanup.policy": "delete", "retention.ms": str(policy.dlq_retention_ms)}
        else:
            config = {"cleanup.policy": "delete", "retention.ms": str(policy.retention_ms)}
        specs.append(TopicSpec(name, policy.partitions, policy.replication, config))
    return specs


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 10_000})


def ensure_topics(settings: Settings, *, timeout: float = 30.0) -> EnsureReport:
    """Create every missing dbopt topic; report the ones that already exist.

    Raises :class:`confluent_kafka.KafkaException` when the broker cannot be reached or
    refuses a topic (for example a replication factor above the number of brokers).
    """
    admin = admin_client(settings)
    specs = topic_specs(settings)
    present = admin.list_topics(timeout=timeout).topics
    report = EnsureReport()
    missing = []
    for spec in specs:
        if spec.name in present:
            _found(report, spec, len(present[spec.name].partitions))
        else:
            missing.append(spec)
    if not missing:
        return report
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication, config=s.config) for s in missing],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    raced = []
    for spec in missing:
        try:
            futures[spec.name].result()
            report.created.append(spec.name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            raced.append(spec)  # created by someone else since we listed
    # created by someone else since we listed: the broker's metadata may lag its creation a moment
    deadline = time.monotonic() + timeout
    while raced:
        present = admin.list_topics(timeout=timeout).topics
        for spec in [s for s in raced if s.name in present]:
            _found(report, spec, len(present[spec.name].partitions))
            raced.remove(spec)
        if raced and time.monotonic() > deadline:
            names = [spec.name for spec in raced]
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"topics {names} exist but are not in the metadata"))
        if raced:
            time.sleep(0.2)
    return report


def _found(report: EnsureReport, spec: TopicSpec, partitions: int) -> None:
    report.existing.append(spec.name)
    if partitions != spec.partitions:
        report.partition_mismatch[spec.name] = (partitions, spec.partitions)
