"""`dbopt produce` and `dbopt tail` through the real console script and broker, plus the pure
pieces (line parsing, time conversion, JSON view) without servers."""

from __future__ import annotations

import base64
import calendar
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from clienv import DBOPT, dbopt, schema_registry, settings_env  # noqa: F401 - fixture
from samples import EXAMPLES
from streams.config import Settings, TopicPolicy
from streams.kafka.topics import ensure_topics
from streams.records import Alert, DeadLetter, QueryEvent
from streams.serde import Codec
from streams.sql import StatementCache
from streams.tools.jsonview import iso_from_ms, ms_from_iso, to_json
from streams.tools.produce import BadLine, event_time_ms, parse_line

T_ISO = "2026-05-02T14:03:07.125Z"
T_MS = calendar.timegm((2026, 5, 2, 14, 3, 7)) * 1000 + 125  # independent of the code under test


# -- pure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T_ISO, T_MS),
        ("2026-05-02T16:03:07.125+02:00", T_MS),
        ("2026-05-02T14:03:07.125", T_MS),  # no offset: UTC
        (T_MS, T_MS),
        (str(T_MS), T_MS),
        (float(T_MS), T_MS),
    ],
)
def test_event_time_forms(value: Any, expected: int) -> None:
    assert event_time_ms(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("yesterday", "neither ISO-8601 nor epoch milliseconds"),
        (1_700_000_000, "looks like epoch seconds"),
        (-5, "out of range"),
        (True, "must be ISO-8601 text or epoch milliseconds"),
        ([1], "must be ISO-8601 text or epoch milliseconds"),
        (10**17, "out of range"),
    ],
)
def test_bad_event_times(value: Any, reason: str) -> None:
    with pytest.raises(BadLine, match=reason):
        event_time_ms(value)


def test_iso_round_trip() -> None:
    assert iso_from_ms(T_MS) == T_ISO and ms_from_iso(T_ISO) == T_MS
    assert iso_from_ms(0) == "1970-01-01T00:00:00.000Z"


def _parse(text: str, service: str | None = None) -> QueryEvent:
    return parse_line(text, cache=StatementCache(16), codec=Codec(), service=service, instance_id="i", database=None)


def test_parse_line_normalizes_and_fills_defaults() -> None:
    record = _parse(json.dumps({
        "service": "guest-service", "duration_ms": 7, "event_time": T_ISO,
        "query_text": "SELECT * FROM guests WHERE email = 'ann@example.com'",
    }))
    assert record.query_text == "SELECT * FROM guests WHERE email = $1"
    assert record.event_time == T_MS and record.tables == ("guests",) and record.statement_type == "SELECT"
    assert record.instance_id == "i" and record.error is None and record.event_id
    assert _parse('{"query_text": "SELECT 1", "duration_ms": 1}', service="cli").service == "cli"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ('"a string"', "expected a JSON object"),
        ('{"query_text": "SELECT 1", "duration_ms": 1}', "service is required"),
        ('{"service": "s", "duration_ms": 1}', "query_text is required"),
        ('{"service": "s", "query_text": "SELECT 1"}', "duration_ms is required"),
        ('{"service": "s", "query_text": "SELECT 1", "duration_ms": -2}', "must not be negative"),
        ('{"service": "s", "query_text": "SELECT 1", "duration_ms": "fast"}', "finite number"),
        ('{"service": "s", "query_text": "SELECT 1", "duration_ms": true}', "finite number"),
        ('{"service": "s", "query_text": "SELECT 1", "duration_ms": NaN}', "finite number"),
        ('{"service": "s", "query_text": "SELECT 1", "duration_ms": 1, "rows": 1.5}', "rows must be a whole number"),
        ('{"service": "s", "query_text": "SELECT 1", "duration_ms": 1, "event_time": "noon"}', "event_time"),
        ('{"service": "s", "query_text": "SELECT 1", "duration_ms": 1, "colour": "red"}', "unknown field"),
    ],
)
def test_parse_line_rejects(line: str, reason: str) -> None:
    with pytest.raises(BadLine, match=reason):
        _parse(line)


def test_json_view_of_bytes_and_timestamps() -> None:
    record = DeadLetter.from_avro(EXAMPLES["DeadLetter"][0])
    view = to_json(record)
    assert base64.b64decode(view["original_value"]) == record.original_value
    assert view["received_at"] == iso_from_ms(record.received_at)
    assert view["source_offset"] == record.source_offset
    json.dumps(view)  # plain JSON
    alert = Alert.from_avro(EXAMPLES["Alert"][0])
    alert_view = to_json(alert)
    assert alert_view["window_end"] == iso_from_ms(alert.window_end) and alert_view["state"] == "firing"
    assert alert_view["created_at"] == iso_from_ms(alert.created_at) and alert_view["p95_ms"] == alert.p95_ms


# -- through the CLI and the broker -----------------------------------------------------------


GOOD = [
    {"event_id": "good-1", "service": "booking-service", "duration_ms": 48.5, "event_time": T_ISO, "rows": 2,
     "query_text": "SELECT * FROM bookings WHERE couple_email = 'ann.smith@example.com' AND amount > 1250.75"},
    {"event_id": "good-2", "service": "guest-service", "duration_ms": 3, "event_time": T_MS + 1000,
     "query_text": "INSERT INTO guests (name, phone) VALUES ('Zoë Quixote', '+44 7700 900123')",
     "vendor_category": "florists", "wedding_id": "w-9"},
    {"event_id": "good-3", "service": "payment-service", "duration_ms": 0.25,
     "query_text": "UPDATE payments SET paid_on = DATE '2026-06-13' WHERE id = 99117"},
]
LITERALS = ["ann.smith@example.com", "1250.75", "Zoë Quixote", "7700 900123", "2026-06-13", "99117"]
BAD = {  # line number in the file -> the reason printed
    2: "not valid JSON",
    4: "duration_ms is required",
    5: "duration_ms must not be negative",
    6: "duration_ms must be a finite number",
    8: "event_time 'last tuesday' is neither ISO-8601 nor epoch milliseconds",
}


def _jsonl() -> str:
    lines = [
        json.dumps(GOOD[0]),
        '{"service": "booking-service", "query_text": "SELECT 1", ',
        json.dumps(GOOD[1]),
        json.dumps({"service": "x", "query_text": "SELECT 1"}),
        json.dumps({"service": "x", "query_text": "SELECT 1", "duration_ms": -4}),
        json.dumps({"service": "x", "query_text": "SELECT 1", "duration_ms": "slow"}),
        "",  # blank lines are skipped, not bad
        json.dumps({"service": "x", "query_text": "SELECT 1", "duration_ms": 1, "event_time": "last tuesday"}),
        json.dumps(GOOD[2]),
    ]
    return "\n".join(lines) + "\n"


def _tail(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return dbopt(settings, "tail", *args, timeout=60)


@pytest.mark.parametrize("wire", ["single-object", "confluent"])
def test_produce_then_tail(settings: Settings, wire: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if wire == "confluent":
        settings = settings.with_overrides(schema_registry_url=request.getfixturevalue("schema_registry"))
    ensure_topics(settings.with_overrides(topic_policy=TopicPolicy(partitions=3)))
    path = tmp_path / "events.jsonl"
    path.write_text(_jsonl())
    proc = dbopt(settings, "produce", "--jsonl", str(path))
    assert proc.returncode == 1, proc.stderr
    reported = [line for line in proc.stderr.splitlines() if line.startswith("line ")]
    assert [int(line.split(":")[0].split()[1]) for line in reported] == sorted(BAD)
    for line in reported:
        number = int(line.split(":")[0].split()[1])
        assert BAD[number] in line
    assert f"sent 3, bad {len(BAD)}, not delivered 0" in proc.stdout

    out = _tail(settings, "query-events", "--from-beginning", "--timeout", "5")
    assert out.returncode == 0, out.stderr
    records = {r["event_id"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert sorted(records) == ["good-1", "good-2", "good-3"]
    one, two, three = records["good-1"], records["good-2"], records["good-3"]
    assert one["event_time"] == T_ISO and two["event_time"] == iso_from_ms(T_MS + 1000)
    assert one["service"] == "booking-service" and one["rows"] == 2 and one["duration_ms"] == 48.5
    assert one["query_text"] == "SELECT * FROM bookings WHERE couple_email = $1 AND amount > $2"
    assert one["tables"] == ["bookings"] and one["statement_type"] == "SELECT"
    assert two["vendor_category"] == "florists" and two["wedding_id"] == "w-9" and two["rows"] == -1
    assert three["statement_type"] == "UPDATE" and three["error"] is None
    assert abs(ms_from_iso(three["event_time"]) - time.time() * 1000) < 120_000  # defaulted to now
    for literal in LITERALS:
        assert literal not in out.stdout

    # --max stops after N records; a full topic name works as well as a short one
    limited = _tail(settings, settings.topics.query_events, "--from-beginning", "--max", "2", "--timeout", "20")
    assert limited.returncode == 0 and len(limited.stdout.splitlines()) == 2


def test_produce_from_stdin_all_good(settings: Settings) -> None:
    proc = dbopt(settings, "produce", "--jsonl", "-", "--service", "cli-service",
                 stdin='{"query_text": "SELECT 1", "duration_ms": 1}\n')
    assert proc.returncode == 0, proc.stderr
    assert "sent 1, bad 0" in proc.stdout
    out = _tail(settings, "query-events", "--from-beginning", "--max", "1", "--timeout", "15")
    assert json.loads(out.stdout)["service"] == "cli-service"


@pytest.mark.usefixtures("created_topics")
def test_tail_reports_undecodable_records(settings: Settings) -> None:
    topic = settings.topics.dlq
    letter = EXAMPLES["DeadLetter"][0]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(topic, b"\x7bnot avro", partition=0)
    producer.produce(topic, Codec().encode("DeadLetter", letter, topic=topic), partition=0)
    assert producer.flush(15) == 0
    out = _tail(settings, "dlq", "--from-beginning", "--timeout", "5")
    assert out.returncode == 1
    assert "partition 0 offset 0: cannot decode (undecodable)" in out.stderr
    (line,) = out.stdout.splitlines()
    shown = json.loads(line)
    assert base64.b64decode(shown["original_value"]) == letter["original_value"]
    assert shown["received_at"] == iso_from_ms(letter["received_at"])


@pytest.mark.usefixtures("created_topics")
def test_tail_last_0_shows_only_new_records(settings: Settings) -> None:
    topic = settings.topics.alerts
    codec = Codec()
    old, new = EXAMPLES["Alert"]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(topic, codec.encode("Alert", old, topic=topic))
    assert producer.flush(15) == 0
    tail = subprocess.Popen([DBOPT, "tail", "alerts", "--last", "0", "--max", "1", "--timeout", "30"], env=settings_env(settings),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # keep producing new records until the tail (assigned at the end) has seen one
        deadline = time.monotonic() + 30
        while tail.poll() is None and time.monotonic() < deadline:
            producer.produce(topic, codec.encode("Alert", new, topic=topic))
            producer.flush(5)
            time.sleep(0.3)
        stdout, stderr = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, stderr
    assert json.loads(stdout)["alert_id"] == new["alert_id"]


def test_cli_errors_are_clear(settings: Settings) -> None:
    missing = dbopt(settings, "produce", "--jsonl", "/nonexistent/events.jsonl")
    assert missing.returncode == 2 and "cannot read /nonexistent/events.jsonl" in missing.stderr
    unknown = _tail(settings, "no-such-topic", "--timeout", "1")
    assert unknown.returncode == 2 and "does not exist" in unknown.stderr and "query-events" in unknown.stderr
    bad_max = _tail(settings, "alerts", "--max", "zero")
    assert bad_max.returncode == 2 and "--max: 'zero' is not a whole number" in bad_max.stderr
    no_file = dbopt(settings, "produce")
    assert no_file.returncode == 2 and "--jsonl" in no_file.stderr
