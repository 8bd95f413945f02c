"""Topics against the real broker: `dbopt topics create` creates all, then finds all (shapes
checked through AdminClient metadata and the topic configs the broker reports); the broker does
not auto-create topics, so every producing command (SDK, produce, command submit) ensures its own
or says what to run."""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic

from clienv import dbopt
from streams.client import EventProducer
from streams.config import Settings, TopicPolicy
from streams.kafka import clients
from streams.kafka.topics import ensure_topics, topic_specs


def _partitions(settings: Settings) -> dict[str, int]:
    """Partitions of each of the test's topics that exist."""
    meta = clients.admin(settings).list_topics(timeout=10).topics
    return {name: len(meta[name].partitions) for name in settings.topics.all().values() if name in meta}


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
    assert f"{len(names)} created, 0 already existed" in first.stdout

    second = dbopt(settings, "topics", "create", DBOPT_TOPIC_PARTITIONS="3", DBOPT_DLQ_RETENTION_MS="123456")
    assert second.returncode == 0, second.stderr
    assert not [line for line in second.stdout.splitlines() if line.startswith("created")]
    assert sorted(line.split()[1] for line in second.stdout.splitlines() if line.startswith("exists")) == names
    assert "warning" not in second.stderr

    admin = clients.admin(settings)
    meta = admin.list_topics(timeout=10).topics
    assert all(len(meta[n].partitions) == 3 for n in names)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in (settings.topics.dlq, settings.topics.commands)]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    assert configs[settings.topics.dlq]["retention.ms"].value == "123456"
    assert configs[settings.topics.dlq]["cleanup.policy"].value == "delete"
    assert configs[settings.topics.commands]["cleanup.policy"].value == "compact,delete"


@pytest.mark.infra
def test_existing_topic_with_other_partition_count_is_reported(settings: Settings) -> None:
    admin = clients.admin(settings)
    admin.create_topics([NewTopic(settings.topics.alerts, num_partitions=1, replication_factor=1)])[
        settings.topics.alerts
    ].result()
    report = ensure_topics(settings.with_overrides(topic_policy=TopicPolicy(partitions=2)))
    assert report.existing == [settings.topics.alerts]
    assert len(report.created) == len(settings.topics.all()) - 1
    assert report.partition_mismatch == {settings.topics.alerts: (1, 2)}
    proc = dbopt(settings, "topics", "create", DBOPT_TOPIC_PARTITIONS="2")
    assert proc.returncode == 0
    assert f"warning: {settings.topics.alerts} has 1 partitions, the configuration asks for 2" in proc.stderr


@pytest.mark.infra
def test_unreachable_broker_is_a_clear_error(settings: Settings) -> None:
    proc = dbopt(settings.with_overrides(kafka_bootstrap="127.0.0.1:1"), "topics", "create", "--timeout", "2")
    assert proc.returncode == 1
    assert "cannot create topics on 127.0.0.1:1" in proc.stderr


def test_specs_of_some_topics() -> None:
    settings = Settings()
    assert [s.name for s in topic_specs(settings, ["commands"])] == [settings.topics.commands]
    with pytest.raises(ValueError, match="unknown topic keys \\['query-events'\\]"):
        topic_specs(settings, ["query-events"])


@pytest.mark.infra
def test_dev_broker_does_not_auto_create_topics(infra: Settings) -> None:
    """The running dev broker has the setting devenv writes (a broker started before it needs a restart)."""
    admin = clients.admin(infra)
    (broker,) = admin.list_topics(timeout=10).brokers
    resource = ConfigResource(ConfigResource.Type.BROKER, str(broker))
    config = admin.describe_configs([resource])[resource].result()
    assert config["auto.create.topics.enable"].value == "false"


@pytest.mark.infra
def test_sdk_creates_its_topic_at_start_without_waiting(settings: Settings) -> None:
    settings = settings.with_overrides(topic_policy=TopicPolicy(partitions=2))
    with EventProducer(settings, "topics-test", instance_id="t-1") as sdk:
        assert sdk.emit_statement("SELECT 1", duration_ms=1.0, rows=1)  # queued until the topic exists
        assert sdk.topic_ready(30)
        assert sdk.flush(30) == 0
    assert sdk.sent == 1 and not sdk.dropped
    assert _partitions(settings) == {settings.topics.query_events: 2}


@pytest.mark.infra
def test_sdk_starts_and_emits_while_the_broker_is_unreachable(settings: Settings) -> None:
    started = time.monotonic()
    sdk = EventProducer(settings.with_overrides(kafka_bootstrap="127.0.0.1:1"), "topics-test")
    assert time.monotonic() - started < 1.0
    assert sdk.emit_statement("SELECT 1", duration_ms=1.0, rows=1)
    assert not sdk.topic_ready(0.5)
    sdk.close(timeout=0.5)
    assert sdk.dropped == {"unflushed": 1}


@pytest.mark.infra
def test_produce_and_command_submit_create_only_their_topics(settings: Settings) -> None:
    produced = dbopt(settings, "produce", "--jsonl", "-", "--service", "topics-test",
                     stdin='{"query_text": "SELECT 1", "duration_ms": 1}\n', DBOPT_TOPIC_PARTITIONS="2")
    assert produced.returncode == 0, produced.stderr
    assert _partitions(settings) == {settings.topics.query_events: 2}
    submitted = dbopt(settings, "command", "submit", "--sql", "ANALYZE bookings",
                      DBOPT_COMMAND_KEY="topics-test-key", DBOPT_TOPIC_PARTITIONS="3")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert _partitions(settings) == {settings.topics.query_events: 2, settings.topics.commands: 3}
    # a topic that exists with another layout is used as it is, with a warning
    again = dbopt(settings, "produce", "--jsonl", "-", "--service", "topics-test",
                  stdin='{"query_text": "SELECT 2", "duration_ms": 1}\n')
    assert again.returncode == 0, again.stderr
    assert f"warning: {settings.topics.query_events} has 2 partitions, the configuration asks for 6" in again.stderr


@pytest.mark.infra
@pytest.mark.parametrize(
    ("broker", "extra"),
    [("127.0.0.1:1", {}), (None, {"DBOPT_TOPIC_REPLICATION": "3"})],  # unreachable; refuses the topic
    ids=["unreachable", "refused"],
)
def test_produce_without_its_topic_names_the_command_to_run(
    settings: Settings, broker: str | None, extra: dict[str, str]
) -> None:
    if broker is not None:
        settings = settings.with_overrides(kafka_bootstrap=broker)
    proc = dbopt(settings, "produce", "--jsonl", "-", "--service", "topics-test", "--timeout", "2",
                 stdin='{"query_text": "SELECT 1", "duration_ms": 1}\n', **extra)
    assert proc.returncode == 1
    assert f"dbopt produce: cannot make sure topic(s) {settings.topics.query_events} exist on {settings.kafka_bootstrap}" in proc.stderr
    assert "`dbopt topics create`" in proc.stderr
