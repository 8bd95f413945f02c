"""Every client over TLS + SASL: the dev broker's SASL_SSL listener (``make up`` =
``python -m streams.devenv up --secure``: SCRAM-SHA-512, a dev CA, ``.run/env-secure``).

The SDK, ``dbopt tail``, ``dbopt worker`` (Faust/aiokafka), and the advisor and executor (the shared
loop) run with only the listener's ``DBOPT_KAFKA_*`` variables; a wrong password and an untrusted
CA fail with a message that names the setting to fix. Private topics (the ``settings`` fixture).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clienv import DBOPT, settings_env
from streams.client import EventProducer
from streams.config import Settings, TopicPolicy, env_file, load_settings, read_env_file
from streams.kafka import clients
from streams.kafka.consume import assigned_consumer, read_messages
from streams.kafka.topics import ensure_topics
from streams.serde import Codec
from worker_harness import free_port

EVENTS = 5


@pytest.fixture(scope="module")
def secure_env(infra: Settings) -> dict[str, str]:
    """The ``DBOPT_KAFKA_*`` variables of the SASL_SSL listener."""
    path = env_file().with_name("env-secure")
    if not path.exists():
        pytest.fail(f"no {path}: the running broker was started without its SASL_SSL listener; restart it once "
                    "(make down && make up)")
    return {k: v for k, v in read_env_file(path).items() if k.startswith("DBOPT_KAFKA_")}


@pytest.fixture
def secure(settings: Settings, secure_env: dict[str, str]) -> Settings:
    """This test's private topics, reached only through the SASL_SSL listener (created there)."""
    over = load_settings({**secure_env, "DBOPT_DATABASE_URL": settings.database_url.get_secret_value()})
    assert over.kafka.security_protocol == "SASL_SSL" and over.kafka_bootstrap != settings.kafka_bootstrap
    secured = settings.with_overrides(kafka_bootstrap=over.kafka_bootstrap, kafka=over.kafka,
                                      topic_policy=TopicPolicy(partitions=2))
    ensure_topics(secured)
    return secured


def child_env(settings: Settings, secure_env: dict[str, str], **extra: str) -> dict[str, str]:
    return settings_env(settings, **{**secure_env, "DBOPT_TOPIC_PARTITIONS": "2", **extra})


def wait_ready(port: int, proc: subprocess.Popen[str], timeout: float = 90.0) -> dict[str, object]:
    """Poll ``/readyz`` until it answers 200 (partitions assigned over SASL_SSL); fail if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}: {proc.args}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                return json.loads(answer.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"not ready on port {port} after {timeout}s")


@pytest.fixture
def run_dbopt(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``dbopt ARGS`` in the background (output in ``tmp_path``: a full pipe would block it); every
    started process is stopped (SIGTERM) afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
        with (tmp_path / f"{args[0]}.log").open("w") as log:
            proc = subprocess.Popen([DBOPT, *args], env=env, cwd=tmp_path, text=True, stdout=log, stderr=log)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_sdk_and_tail_over_sasl_ssl(secure: Settings, secure_env: dict[str, str]) -> None:
    with EventProducer(secure, "secure-check", instance_id="s-1") as producer:
        for i in range(EVENTS):
            producer.emit_statement(f"SELECT * FROM bookings WHERE id = {i}", duration_ms=2.0, rows=1)
        assert producer.flush(30) == 0, "events not acknowledged over SASL_SSL"

    codec = Codec.from_settings(secure)
    consumer = assigned_consumer(secure, secure.topics.query_events)
    names = [codec.decode(m.value()).schema_name for m in read_messages(consumer, max_messages=EVENTS, idle_timeout=20)]
    consumer.close()
    assert names == ["QueryEvent"] * EVENTS

    tail = subprocess.run([DBOPT, "tail", "query-events", "--from-beginning", "--max", str(EVENTS), "--timeout", "20"],
                          env=child_env(secure, secure_env), capture_output=True, text=True, timeout=120)
    assert tail.returncode == 0, tail.stderr
    assert [json.loads(line)["service"] for line in tail.stdout.splitlines()] == ["secure-check"] * EVENTS


def test_worker_windows_over_sasl_ssl(secure: Settings, secure_env: dict[str, str], run_dbopt, tmp_path: Path) -> None:
    """Faust (aiokafka) consumes, keeps its tables and emits windows through the SASL_SSL listener."""
    port, app_id = free_port(), f"secure-{uuid.uuid4().hex[:8]}"
    env = child_env(
        secure, secure_env, DBOPT_WORKER_APP_ID=app_id, DBOPT_WORKER_STORE="memory://",
        DBOPT_WORKER_DATA_DIR=str(tmp_path / "state"), DBOPT_WORKER_WEB_PORT=str(port),
        DBOPT_WINDOW_TUMBLING_MS="1000", DBOPT_WINDOW_HOP_MS="1000", DBOPT_WINDOW_HOPPING_MS="2000",
        DBOPT_WINDOW_GRACE_MS="0", DBOPT_WINDOW_IDLE_TIMEOUT_MS="500", DBOPT_WORKER_TICK_INTERVAL_MS="200",
    )
    worker = run_dbopt(env, "worker")
    wait_ready(port, worker)
    with EventProducer(secure, "secure-worker", instance_id="w-1") as producer:
        for i in range(EVENTS):
            producer.emit_statement(f"SELECT * FROM bookings WHERE id = {i}", duration_ms=3.0, rows=1)
        assert producer.flush(30) == 0
        time.sleep(2.5)  # a later event (same key, same partition) moves the watermark past the first window
        producer.emit_statement("SELECT * FROM bookings WHERE id = 0", duration_ms=3.0, rows=1)
        assert producer.flush(30) == 0
    consumer = assigned_consumer(secure, secure.topics.latency_windows)
    codec = Codec.from_settings(secure)
    windows = [codec.decode(m.value()).record for m in read_messages(consumer, max_messages=1, idle_timeout=90)]
    consumer.close()
    assert windows and windows[0]["service"] == "secure-worker"
    # the Faust agents (detector, traffic, pools) joined their own group through the listener too
    admin = clients.admin(secure)  # kept: a future of a dropped client never completes
    group = admin.describe_consumer_groups([f"{app_id}-agents"])[f"{app_id}-agents"].result(30)
    assert group.members, f"no member in {group.group_id} ({group.state})"


@pytest.mark.parametrize("stage", ["advisor", "executor"])
def test_advisor_and_executor_loops_over_sasl_ssl(
    stage: str, secure: Settings, secure_env: dict[str, str], scratch_db: str, run_dbopt
) -> None:
    """The shared consume-process-produce loop joins its group over SASL_SSL (readiness = partitions assigned)."""
    port = free_port()
    prefix = "ADVISE" if stage == "advisor" else "EXECUTOR"
    env = child_env(secure, secure_env, DBOPT_DATABASE_URL=scratch_db, DBOPT_COMMAND_KEY="k" * 32,
                    **{f"DBOPT_{prefix}_PROBE_PORT": str(port),
                       f"DBOPT_{'ADVISOR' if stage == 'advisor' else 'EXECUTOR'}_GROUP": f"secure-{uuid.uuid4().hex[:8]}"})
    proc = run_dbopt(env, stage)
    assert wait_ready(port, proc)["ready"] is True


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DBOPT_KAFKA_SASL_PASSWORD", "not-the-password",
         "refused the SCRAM-SHA-512 login of user 'dbopt': check DBOPT_KAFKA_SASL_USERNAME and DBOPT_KAFKA_SASL_PASSWORD"),
        ("DBOPT_KAFKA_SSL_CA_FILE", "/etc/ssl/certs/ca-certificates.crt",
         "failed: check DBOPT_KAFKA_SSL_CA_FILE (the CA that signed the brokers' certificates)"),
    ],
)
def test_wrong_password_or_untrusted_ca_is_named(
    secure: Settings, secure_env: dict[str, str], variable: str, value: str, expected: str
) -> None:
    if not os.path.exists(value) and variable.endswith("_FILE"):
        pytest.fail(f"{value} is needed as a CA bundle that did not sign the dev broker's certificate")
    bad = load_settings({**secure_env, variable: value})
    assert expected in (clients.diagnose(bad, timeout=5) or "")
    proc = subprocess.run([DBOPT, "tail", "query-events", "--timeout", "5"], env=child_env(secure, secure_env, **{variable: value}),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert expected in proc.stderr, proc.stderr
    assert "not-the-password" not in proc.stderr
