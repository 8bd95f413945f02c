"""`dbopt topics create` against the real broker: creates all, then finds all; shapes checked
through AdminClient metadata and the topic configs the broker reports."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams.config import Settings, TopicPolicy
from streams.kafka.topics import ensure_topics, topic_specs

from clienv import dbopt


def test_specs_follow_the_policy() -> None:
    settings = Settings(topic_policy=TopicPolicy(partitions=4, retention_ms=1000, dlq_retention_ms=2000,
                                                 command_retention_ms=3000))
    specs = {s.name: s for s in topic_specs(settings)}
    assert set(specs) == set(settings.topics.all().values())
    assert all(s.partitions == 4 and s.replication == 1 for s in specs.values())
    assert specs["dbopt.commands.v1"].config == {"cleanup.policy": "compact,delete", "retention.ms": "3000"}
    assert specs["dbopt.results.v1"].config == {"cleanup.policy": "compact,delete", "retention.ms": "3000"}
    assert specs["dbopt.dlq.v1"].config == {"cleanup.policy": "delete", "retention.ms": "2000"}
    assert specs["dbopt.query-events.v1"].config == {"cleanup.policy": "delete", "retention.ms": "1000"}


@pytest.mark.infra
def test_create_twice(settings: Settings) -> None:
    names = sorted(settings.topics.all().values())
    first = dbopt(settings, "topics", "create", DBOPT_TOPIC_PARTITIONS="3", DBOPT_DLQ_RETENTION_MS="123456")
    assert first.returncode == 0, first.stderr
    assert sorted(line.split()[1] for line in first.stdout.splitlines() if line.startswith("created")) == names
    assert "7 created, 0 already existed" in first.stdout

    second = dbopt(settings, "topics", "create", DBOPT_TOPIC_PARTITIONS="3", DBOPT_DLQ_RETENTION_MS="123456")
    assert second.returncode == 0, second.stderr
    assert not [line for line in second.stdout.splitlines() if line.startswith("created")]
    assert sorted(line.split()[1] for line in second.stdout.splitlines() if line.startswith("exists")) == names
    assert "warning" not in second.stderr

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    meta = admin.list_topics(timeout=10).topics
    assert all(len(meta[n].partitions) == 3 for n in names)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in (settings.topics.dlq, settings.topics.commands)]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    assert configs[settings.topics.dlq]["retention.ms"].value == "123456"
    assert configs[settings.topics.dlq]["cleanup.policy"].value == "delete"
    assert configs[settings.topics.commands]["cleanup.policy"].value == "compact,delete"


@pytest.mark.infra
def test_existing_topic_with_other_partition_count_is_reported(settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    admin.create_topics([NewTopic(settings.topics.alerts, num_partitions=1, replication_factor=1)])[
        settings.topics.alerts
    ].result()
    report = ensure_topics(settings.with_overrides(topic_policy=TopicPolicy(partitions=2)))
    assert report.existing == [settings.topics.alerts]
    assert len(report.created) == 6
    assert report.partition_mismatch == {settings.topics.alerts: (1, 2)}
    proc = dbopt(settings, "topics", "create", DBOPT_TOPIC_PARTITIONS="2")
    assert proc.returncode == 0
    assert f"warning: {settings.topics.alerts} has 1 partitions, the configuration asks for 2" in proc.stderr


@pytest.mark.infra
def test_unreachable_broker_is_a_clear_error(settings: Settings) -> None:
    proc = dbopt(settings.with_overrides(kafka_bootstrap="127.0.0.1:1"), "topics", "create", "--timeout", "2")
    assert proc.returncode == 1
    assert "cannot create topics on 127.0.0.1:1" in proc.stderr
