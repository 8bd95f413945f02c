"""Every dbopt topic, made from one configuration (:class:`streams.config.TopicPolicy`).

``topic_specs`` is pure (what each topic should look like); ``ensure_topics`` talks to the
broker and creates what is missing. Both are idempotent by construction: a topic that
exists is reported, never altered.

Brokers do not auto-create topics (the dev broker neither): a topic made on first use would get
the broker's default layout, and the worker refuses a source whose partitions differ from its
changelogs'. So every command that produces ensures its own topics first
(:func:`ensure_for_producing`), and ``dbopt topics create`` makes them all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import Settings

from . import clients

# commands and results are an audit trail keyed by command_id: compacted, and kept longer
_AUDIT_TOPICS = ("commands", "results")
# errors that mean "the broker cannot be reached (yet)", as opposed to a refusal
_UNREACHABLE = (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN)
# ensure_in_background: (bootstrap, topic names) -> set once those topics exist
_BACKGROUND: dict[tuple[str, tuple[str, ...]], threading.Event] = {}
_BACKGROUND_LOCK = threading.Lock()


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


class TopicsUnavailable(RuntimeError):
    """A producing command could not make sure its topics exist; the message says what to do."""


def topic_specs(settings: Settings, keys: Collection[str] | None = None) -> list[TopicSpec]:
    """The desired shape of every topic in ``settings.topics``, or of those named by ``keys``
    (attribute names of :class:`streams.config.Topics`, e.g. ``"query_events"``)."""
    policy = settings.topic_policy
    topics = settings.topics.all()
    unknown = set(keys or ()) - set(topics)
    if unknown:
        raise ValueError(f"unknown topic keys {sorted(unknown)}; known: {sorted(topics)}")
    specs = []
    for key, name in topics.items():
        if keys is not None and key not in keys:
            continue
        if key in _AUDIT_TOPICS:
            config = {"cleanup.policy": "compact,delete", "retention.ms": str(policy.command_retention_ms)}
        elif key == "dlq":
            config = {"cleanup.policy": "delete", "retention.ms": str(policy.dlq_retention_ms)}
        else:
            config = {"cleanup.policy": "delete", "retention.ms": str(policy.retention_ms)}
        specs.append(TopicSpec(name, policy.partitions, policy.replication, config))
    return specs


def kafka_topic_manifests(settings: Settings, cluster: str) -> list[dict[str, object]]:
    """Strimzi ``KafkaTopic`` resources of :func:`topic_specs`: what ``dbopt topics create`` makes, for a
    cluster whose topics the Topic Operator manages (``k8s/tools/generate.py`` writes them to k8s/)."""
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaTopic",
            "metadata": {"name": spec.name, "labels": {"strimzi.io/cluster": cluster}},
            "spec": {"topicName": spec.name, "partitions": spec.partitions, "replicas": spec.replication,
                     "config": dict(spec.config)},
        }
        for spec in topic_specs(settings)
    ]


def ensure_topics(
    settings: Settings, keys: Collection[str] | None = None, *, timeout: float = 30.0, admin: AdminClient | None = None
) -> EnsureReport:
    """Create every missing dbopt topic (or those named by ``keys``); report the ones that exist.

    Raises :class:`confluent_kafka.KafkaException` when the broker cannot be reached or
    refuses a topic (for example a replication factor above the number of brokers).
    """
    admin = admin or clients.admin(settings)
    specs = topic_specs(settings, keys)
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


def mismatch_warnings(report: EnsureReport) -> list[str]:
    """One line per existing topic whose partition count is not the configured one."""
    return [
        f"warning: {name} has {have} partitions, the configuration asks for {want} "
        "(Kafka cannot shrink a topic; change DBOPT_TOPIC_PARTITIONS or recreate it)"
        for name, (have, want) in report.partition_mismatch.items()
    ]


def ensure_for_producing(settings: Settings, keys: Collection[str], *, timeout: float = 30.0) -> EnsureReport:
    """What a producing command runs before it sends: its topics exist with the configured layout.

    Raises :class:`TopicsUnavailable`, naming the topics and ``dbopt topics create``, when they
    can be neither found nor created (broker unreachable, no right to create topics, ...).
    """
    try:
        return ensure_topics(settings, keys, timeout=timeout)
    except KafkaException as exc:
        names = ", ".join(spec.name for spec in topic_specs(settings, keys))
        raise TopicsUnavailable(
            f"cannot make sure topic(s) {names} exist on {settings.kafka_bootstrap}: {_reason(exc)}; "
            "check DBOPT_KAFKA_BOOTSTRAP, or have them created with `dbopt topics create`"
        ) from None


def _reason(exc: KafkaException) -> str:
    error = exc.args[0]
    return error.str() if isinstance(error, KafkaError) else str(error)


def ensure_in_background(
    settings: Settings, keys: Collection[str], log: logging.Logger, *, retry_max_s: float = 30.0
) -> threading.Event:
    """Ensure topics without making the caller wait: what the SDK does at start.

    Once per process per set of topics, a daemon thread runs :func:`ensure_topics`; the returned
    event is set when the topics exist. While the broker is unreachable the thread retries, backing
    off up to ``retry_max_s``; when the broker refuses (for example no right to create topics) it
    logs an error naming ``dbopt topics create`` and gives up.
    """
    names = tuple(spec.name for spec in topic_specs(settings, keys))
    with _BACKGROUND_LOCK:
        ready = _BACKGROUND.get((settings.kafka_bootstrap, names))
        if ready is None:
            ready = _BACKGROUND[(settings.kafka_bootstrap, names)] = threading.Event()
            threading.Thread(
                target=_keep_ensuring, args=(settings, tuple(keys), ready, log, retry_max_s),
                name=f"dbopt-ensure-{'+'.join(names)}", daemon=True,
            ).start()
    return ready


def _keep_ensuring(
    settings: Settings, keys: tuple[str, ...], ready: threading.Event, log: logging.Logger, retry_max_s: float
) -> None:
    # librdkafka's own lines (connection refused ...) go to the caller's logging, not stderr
    admin = clients.admin(settings, logger=log.getChild("librdkafka"))
    names = ", ".join(spec.name for spec in topic_specs(settings, keys))
    delay = 1.0
    warned = False
    while True:
        try:
            report = ensure_topics(settings, keys, timeout=10.0, admin=admin)
        except KafkaException as exc:
            if exc.args[0].code() not in _UNREACHABLE:
                log.error("cannot create topic(s) %s on %s: %s; run `dbopt topics create` with the right to create "
                          "topics (until then events are dropped)", names, settings.kafka_bootstrap, _reason(exc))
                return
            if not warned:
                log.warning("cannot reach %s to check topic(s) %s yet (%s); retrying in the background",
                            settings.kafka_bootstrap, names, _reason(exc))
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, retry_max_s)
            continue
        for line in mismatch_warnings(report):
            log.warning(line)
        if report.created:
            log.info("created topic(s) %s", report.created)
        ready.set()
        return
