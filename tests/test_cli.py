"""The ``dbopt`` command line through the real console script: --version, every --help, the
documented exit statuses, the logging options, and ``tail`` against the real broker."""

from __future__ import annotations

import json
import os
import select
import subprocess
from importlib.metadata import version
from typing import Any

import pytest

from clienv import DBOPT, dbopt, settings_env
from samples import EXAMPLES
from streams.cli import COMMANDS, DISTRIBUTION
from streams.config import Settings, TopicPolicy
from streams.kafka import clients
from streams.kafka.topics import ensure_topics
from streams.serde import Codec

# commands whose work is done by an action sub-command
ACTIONS = {"topics": ["create"], "demo-db": ["init"], "command": ["submit"]}
LONG_RUNNING = ["worker", "advisor", "executor", "simulate", "demo", "tail", "produce", "notify", "otlp"]


def clean_env(**env: str) -> dict[str, str]:
    """This process's environment without DBOPT_* variables, plus ``env``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}, **env}


def run_dbopt(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``dbopt`` without any server."""
    return subprocess.run([DBOPT, *args], capture_output=True, text=True, timeout=60, env=clean_env(**env))


# -- no servers -----------------------------------------------------------------------------------


def test_version_is_the_installed_distribution() -> None:
    proc = run_dbopt("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"dbopt {version(DISTRIBUTION)}"


def test_help_documents_exit_statuses_and_every_command() -> None:
    proc = run_dbopt("--help")
    assert proc.returncode == 0, proc.stderr
    assert "exit status:" in proc.stdout
    for status in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {status}" in proc.stdout
    for name in COMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize("argv", [[name] for name in COMMANDS] + [[c, a] for c, acts in ACTIONS.items() for a in acts],
                         ids=" ".join)
def test_every_command_has_help(argv: list[str]) -> None:
    proc = run_dbopt(*argv, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: dbopt {' '.join(argv)}")


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_commands_share_the_logging_options(name: str) -> None:
    help_text = run_dbopt(name, "--help").stdout
    assert "--log-level LEVEL" in help_text and "--log-format {text,json}" in help_text
    wrong = run_dbopt(name, "--log-level", "loud")
    assert wrong.returncode == 2
    assert "--log-level: 'loud' is not one of DEBUG, INFO, WARNING, ERROR" in wrong.stderr


def test_usage_errors_exit_2_with_a_message() -> None:
    unknown = run_dbopt("no-such-command")
    assert unknown.returncode == 2 and "invalid choice: 'no-such-command'" in unknown.stderr
    missing = run_dbopt()
    assert missing.returncode == 2 and "required: COMMAND" in missing.stderr
    bad_value = run_dbopt("tail", "alerts", "--last", "-1")
    assert bad_value.returncode == 2 and "--last: -1 must be at least 0" in bad_value.stderr
    both = run_dbopt("tail", "alerts", "--last", "3", "--from-beginning")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DBOPT_TOPIC_PARTITIONS", "zero"), ("DBOPT_TIMEZONE", "Mars/Base"), ("DBOPT_KAFKA_BOOTSTRAPP", "x:9092")],
)
def test_a_bad_setting_exits_2_and_names_it(variable: str, value: str) -> None:
    proc = run_dbopt("tail", "alerts", "--timeout", "1", **{variable: value})
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "configuration error" in proc.stderr and variable in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unexpected_failure_exits_1_in_one_line_with_the_traceback_at_debug() -> None:
    """A broker that is not there: one line on stderr; at DEBUG the traceback, here as JSON."""
    env = clean_env(DBOPT_KAFKA_BOOTSTRAP="127.0.0.1:9")  # the discard port: nothing listens
    tail = [DBOPT, "tail", "alerts", "--timeout", "1"]
    plain = subprocess.Popen(tail, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    debug = subprocess.Popen([*tail, "--log-level", "debug", "--log-format", "json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, plain_err = plain.communicate(timeout=60)
    _, debug_err = debug.communicate(timeout=60)
    assert plain.returncode == 1 and debug.returncode == 1
    (line,) = [line for line in plain_err.splitlines() if line.strip()]
    assert line.startswith("dbopt tail: KafkaException: ")
    logged = [json.loads(line) for line in debug_err.splitlines() if line.startswith("{")]
    failure = next(entry for entry in logged if entry["message"] == "tail failed")
    assert failure["level"] == "DEBUG" and failure["logger"] == "streams.cli" and "time" in failure
    assert "Traceback" in failure["exc_info"] and "KafkaException" in failure["exc_info"]


# -- tail against the real broker -----------------------------------------------------------------

PARTITIONS = 3
PER_PARTITION = 5


def _alerts_in_every_partition(settings: Settings) -> set[str]:
    """PER_PARTITION alerts in each partition of the alerts topic; returns their ids."""
    ensure_topics(settings.with_overrides(topic_policy=TopicPolicy(partitions=PARTITIONS)))
    topic = settings.topics.alerts
    codec = Codec.from_settings(settings)
    producer = clients.producer(settings)
    ids = set()
    for partition in range(PARTITIONS):
        for i in range(PER_PARTITION):
            alert: dict[str, Any] = {**EXAMPLES["Alert"][0], "alert_id": f"p{partition}-{i}"}
            producer.produce(topic, codec.encode("Alert", alert, topic=topic), partition=partition)
            ids.add(alert["alert_id"])
    assert producer.flush(30) == 0
    return ids


def _shown(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [json.loads(line)["alert_id"] for line in proc.stdout.splitlines()]


def test_tail_last_n_shows_exactly_n_of_each_partition_then_says_it_waits(settings: Settings) -> None:
    ids = _alerts_in_every_partition(settings)
    proc = dbopt(settings, "tail", "alerts", "--last", "2", "--timeout", "3",
                 "--log-level", "debug", "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    shown = _shown(proc)
    assert sorted(shown) == sorted(f"p{p}-{i}" for p in range(PARTITIONS) for i in (3, 4))
    # each partition in order
    for p in range(PARTITIONS):
        assert [s for s in shown if s.startswith(f"p{p}-")] == [f"p{p}-3", f"p{p}-4"]
    lines = proc.stderr.splitlines()
    waiting = f"dbopt tail: waiting for new records on {settings.topics.alerts} (exits after 3 s without one, or Ctrl-C)"
    assert waiting in lines
    # the debug log line is JSON
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(entry["logger"] == "streams.tools.tail" and entry["level"] == "DEBUG" for entry in logged)

    more_than_there = dbopt(settings, "tail", "alerts", "--last", "50", "--timeout", "3")
    assert sorted(_shown(more_than_there)) == sorted(ids)
    everything = dbopt(settings, "tail", "alerts", "--from-beginning", "--timeout", "3")
    assert sorted(_shown(everything)) == sorted(ids)


def test_tail_max_alone_prints_records_already_there(settings: Settings) -> None:
    """The README's `dbopt tail query-events --max 5` right after `simulate`: the default --last
    shows records already in the topic, so it prints and exits instead of waiting silently."""
    ids = _alerts_in_every_partition(settings)
    proc = dbopt(settings, "tail", "alerts", "--max", "4", timeout=30)
    assert proc.returncode == 0, proc.stderr
    shown = _shown(proc)
    assert len(shown) == 4 and set(shown) <= ids


def test_tail_of_an_empty_topic_says_it_is_waiting(settings: Settings) -> None:
    ensure_topics(settings)
    tail = subprocess.Popen([DBOPT, "tail", "results"], env=settings_env(settings),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said, _, _ = select.select([tail.stderr], [], [], 30)
        line = tail.stderr.readline() if said else "(nothing within 30 s)"
    finally:
        tail.terminate()
        tail.communicate(timeout=30)
    assert line == f"dbopt tail: waiting for new records on {settings.topics.results} (Ctrl-C to stop)\n"


def test_tail_of_a_missing_topic_exits_2(settings: Settings) -> None:
    proc = dbopt(settings, "tail", "no-such-topic", "--timeout", "1")
    assert proc.returncode == 2
    assert "topic 'no-such-topic' does not exist" in proc.stderr and "query-events" in proc.stderr
