"""The wheel works outside the checkout.

Builds the wheel from a clean copy of this checkout, installs it into a fresh virtualenv in a
temporary directory (dependencies from the package index), and from another directory runs
``dbopt --help``, ``dbopt topics create``, an SDK round trip and ``dbopt tail`` against the real
broker, on this test's private topics. ``PYTHONPATH`` is cleared and the test asserts that
``streams`` and its Avro schemas are loaded from the virtualenv, never from the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from clienv import settings_env
from streams.config import Settings

ROOT = Path(__file__).resolve().parents[1]
# what a build never reads; setuptools would also put a stale build/ directory's files in the wheel
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".run", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "node_modules"
)
EVENTS = 3

# runs in the fresh virtualenv: where the package comes from, then EventProducer -> broker -> consumer
SDK_ROUND_TRIP = f"""
import importlib.resources, json, streams
from streams.client import EventProducer
from streams.config import load_settings
from streams.kafka.consume import assigned_consumer, read_messages
from streams.serde import Codec

settings = load_settings()
schema = importlib.resources.files("streams.contracts").joinpath("QueryEvent.avsc")
print(json.dumps({{"streams": streams.__file__, "schema": str(schema)}}))
with EventProducer(settings, "install-check", instance_id="install-1") as producer:
    for i in range({EVENTS}):
        producer.emit_statement(f"SELECT * FROM bookings WHERE id = {{i}}", duration_ms=1.5, rows=1)
    assert producer.flush(30) == 0, "events not acknowledged"
codec = Codec.from_settings(settings)
consumer = assigned_consumer(settings, settings.topics.query_events)
for msg in read_messages(consumer, max_messages={EVENTS}, idle_timeout=20):
    if msg.error() is None:
        print(json.dumps({{"key": msg.key().decode(), "schema": codec.decode(msg.value()).schema_name}}))
consumer.close()
"""


def _run(*cmd: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_wheel_runs_outside_the_checkout(settings: Settings, tmp_path: Path) -> None:
    src, dist, venv, work = (tmp_path / name for name in ("src", "dist", "venv", "work"))
    shutil.copytree(ROOT, src, symlinks=True, ignore=NOT_SOURCE)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src)
    (wheel,) = dist.glob("dbopt_streams-*.whl")
    contents = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"streams/contracts/{p.name}" for p in (ROOT / "schemas").glob("*.avsc")}
    expected |= {"streams/devenv/kafka-pom.xml", "streams/devenv/log4j2.properties"}
    assert expected <= contents

    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)

    work.mkdir()
    env = settings_env(settings)
    env.pop("PYTHONPATH", None)

    def installed(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(*args, cwd=work, env=env)

    dbopt = str(venv / "bin" / "dbopt")
    assert "topics" in installed(dbopt, "--help").stdout

    created = installed(dbopt, "topics", "create").stdout
    assert f"{len(settings.topics.all())} created, 0 already existed" in created

    lines = [json.loads(line) for line in installed(str(venv / "bin" / "python"), "-c", SDK_ROUND_TRIP).stdout.splitlines()]
    where, *records = lines
    site = venv.resolve()
    assert Path(where["streams"]).resolve().is_relative_to(site), where
    assert Path(where["schema"]).resolve().is_relative_to(site), where
    assert records == [{"key": "install-check", "schema": "QueryEvent"}] * EVENTS

    tail = installed(dbopt, "tail", "query-events", "--from-beginning", "--max", str(EVENTS), "--timeout", "20")
    shown = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [(r["service"], r["instance_id"]) for r in shown] == [("install-check", "install-1")] * EVENTS
