"""``dbopt demo`` runs in a namespace of its own and starts each run clean: what an earlier run
left (topics, consumer groups with offsets, the worker's local tables, the advisor's saved state,
deliveries notify had not finished) is gone, and nothing outside the namespace is touched.

The broker and the database are the oracles: topics and groups listed by the admin API, rows
counted in PostgreSQL.
"""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic
from psycopg import sql

from faults_harness import private_broker, restart_broker
from streams import db
from streams.advise.state import StateStore
from streams.app.faust_app import data_dir
from streams.config import Settings, load_settings
from streams.demo.run import in_namespace, namespace_env, reset_namespace
from streams.kafka import clients
from streams.kafka.topics import ensure_topics
from streams.notify.ledger import TABLE as LEDGER_TABLE, Ledger

pytestmark = pytest.mark.infra


def test_the_namespace_is_the_demo_s_own() -> None:
    assert in_namespace("dbopt-demo") and in_namespace("dbopt-demo.alerts.v1") and in_namespace("dbopt-demo-advisor")
    assert not in_namespace("dbopt-demonstration") and not in_namespace("dbopt.alerts.v1")
    env = namespace_env(load_settings({}), "ns")
    assert env["DBOPT_TOPIC_ALERTS"] == "ns.alerts.v1" and env["DBOPT_TOPIC_QUERY_EVENTS"] == "ns.query-events.v1"
    assert env["DBOPT_WORKER_APP_ID"] == "ns" and env["DBOPT_ADVISOR_GROUP"] == "ns-advisor"
    assert load_settings(env)  # every name it sets is a known setting


def test_a_second_run_finds_nothing_of_the_first(infra: Settings, tmp_path: object) -> None:
    namespace = f"t-demo-{uuid.uuid4().hex[:8]}"
    env = {"DBOPT_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
           "DBOPT_DATABASE_URL": infra.database_url.get_secret_value(),
           "DBOPT_WORKER_DATA_DIR": str(tmp_path), **namespace_env(infra, namespace)}  # fmt: skip
    settings = load_settings(env)
    outsider = f"t-outside-{uuid.uuid4().hex[:8]}"
    admin = clients.admin(settings)
    ensure_topics(settings)
    ensure_topics(settings.with_overrides(topics=settings.topics.model_copy(update={"alerts": outsider})), ["alerts"])
    # what a run leaves: committed offsets of its groups, a record, local tables, saved state, an unfinished delivery
    producer = clients.producer(settings)
    producer.produce(settings.topics.alerts, b"left over")
    assert producer.flush(10) == 0
    for group in (settings.advise.consumer_group, f"{namespace}-view"):
        consumer = clients.consumer(settings, group)
        consumer.commit(offsets=[TopicPartition(settings.topics.alerts, 0, 1)], asynchronous=False)
        consumer.close()
    data_dir(settings).mkdir(parents=True, exist_ok=True)
    (data_dir(settings) / "table.sst").write_bytes(b"rocksdb")
    store = StateStore(lambda: db.connect(settings, application_name="t-demo"), settings.executor.audit_schema,
                       settings.advise.consumer_group)  # fmt: skip
    store.save({"firing": {"k": 1}})
    with db.connect(settings, application_name="t-demo") as conn:
        Ledger(conn, settings.executor.audit_schema).ensure()
        ledger = sql.Identifier(settings.executor.audit_schema, LEDGER_TABLE)
        pending = f"t-{namespace}"
        conn.execute(sql.SQL(
            "INSERT INTO {} (notification_id, channel, status, kind, state, severity, condition_key, emergency, "
            "event_ms, notification, created_at, next_attempt_at) "
            "VALUES (%s, 'slack', 'pending', 'slo', 'firing', 'high', 'c', false, 0, %s, now(), now())"
        ).format(ledger), (pending, json.dumps({})))

    out = io.StringIO()
    try:
        reset_namespace(settings, out, namespace)
        present = admin.list_topics(timeout=10).topics
        assert not [t for t in present if in_namespace(t, namespace)]
        assert outsider in present  # outside the namespace: untouched
        groups = {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid}
        assert not [g for g in groups if in_namespace(g, namespace)]
        assert not data_dir(settings).exists()
        assert store.load() is None
        with db.connect(settings, application_name="t-demo") as conn:
            left = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE notification_id = %s").format(ledger), (pending,))
            assert left.fetchone() == (0,)
        assert "deleted" in out.getvalue()
        # the run after that one: topics made again, empty; a second reset is as quiet as the first was thorough
        ensure_topics(settings)
        assert _end_offset(settings, TopicPartition(settings.topics.alerts, 0)) == 0  # the left-over record is gone
        reset_namespace(settings, io.StringIO(), namespace)
    finally:
        store.close()
        for future in admin.delete_topics([outsider], operation_timeout=30).values():
            future.result()


def _end_offset(settings: Settings, tp: TopicPartition) -> int:
    """The partition's end offset, asked until the new topic's leader answers."""
    consumer = clients.consumer(settings, "t-demo-check")
    try:
        for _ in range(40):
            try:
                return int(consumer.get_watermark_offsets(tp, timeout=10)[1])
            except KafkaException:  # a topic this new: its leader not known yet
                time.sleep(0.25)
        raise AssertionError(f"no end offset for {tp.topic}")
    finally:
        consumer.close()


def test_a_reset_right_after_the_broker_starts_still_finds_the_groups(infra: Settings, tmp_path: object) -> None:
    """For a few seconds after a broker starts, its group coordinator is still loading the offsets
    topic and a listing of groups is empty: a demo started right after ``make up`` used to delete
    no group, and the stages' offsets outlived the topics they pointed into. A private broker is
    restarted here so that the shared one is never stopped; 3,000 partitions of its own make it take
    as long to load as a broker that has served a while (here about 1.7 s)."""
    with private_broker() as broker:
        admin = clients.admin(infra.with_overrides(kafka_bootstrap=broker.bootstrap))
        for future in admin.create_topics([NewTopic(f"padding-{i}", 100, 1) for i in range(30)]).values():
            future.result()
        namespace = f"t-demo-{uuid.uuid4().hex[:8]}"
        settings = load_settings({"DBOPT_KAFKA_BOOTSTRAP": broker.bootstrap,
                                  "DBOPT_DATABASE_URL": infra.database_url.get_secret_value(),
                                  "DBOPT_WORKER_DATA_DIR": str(tmp_path), **namespace_env(infra, namespace)})  # fmt: skip
        ensure_topics(settings, ["alerts"])
        stage_groups = [settings.advise.consumer_group, settings.notify.consumer_group]
        for group in stage_groups:
            consumer = clients.consumer(settings, group)
            consumer.commit(offsets=[TopicPartition(settings.topics.alerts, 0, 0)], asynchronous=False)
            consumer.close()
        broker.stop()
        restart_broker(broker)
        out = io.StringIO()
        reset_namespace(settings, out, namespace)
        assert "1 topic(s) and 2 consumer group(s)" in out.getvalue()
        admin = clients.admin(settings)  # a client of the restarted broker
        assert clients.existing_groups(admin, stage_groups) == []
