"""Private servers for the fault suite: the faults stop and start servers, so they never touch the
shared broker (127.0.0.1:19092) or the shared PostgreSQL cluster ``dbopt`` that other tests and
people use. Each test gets its own:

* **Kafka broker** (:func:`private_broker`): the project's launcher (:class:`streams.devenv.kafka.KafkaBroker`,
  the jars ``make up`` fetched) with its own run directory and free ports — stopping and starting it
  is a real broker restart (same data directory) that no one else sees;
* **PostgreSQL cluster** (:func:`private_postgres`): another Debian cluster (``pg_createcluster`` with
  its own name, port and data directory, made by :class:`streams.devenv.postgres.PostgresCluster`),
  stopped with ``pg_ctlcluster ... stop`` for the outage and dropped afterwards. ``make up`` only
  ever replaces the cluster called ``dbopt``, so the shared one is never touched.

Both live under ``<run dir>/faults/`` (the PostgreSQL server runs as ``postgres`` and must reach its
data directory: pytest's ``tmp_path`` under /tmp/pytest-of-root is private to root).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.config import Settings, run_dir
from streams.devenv.kafka import KafkaBroker
from streams.devenv.postgres import PG_MAJOR, PostgresCluster
from streams.devenv.process import wait_until
from streams.kafka.consume import TopicNotFound
from worker_harness import WindowReader, free_port

CHECKOUT = Path(__file__).resolve().parents[1]


def _scratch(kind: str) -> Path:
    path = run_dir(CHECKOUT) / "faults" / f"{kind}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


@contextmanager
def private_broker() -> Iterator[KafkaBroker]:
    """A single-node broker of its own (same Kafka version and jars as ``make up``), stopped and
    deleted afterwards."""
    shared = KafkaBroker(run_dir=run_dir(CHECKOUT))
    shared.fetch()  # the jars are normally there already (make up)
    scratch = _scratch("kafka")
    (scratch / "kafka" / shared.version).mkdir(parents=True)
    (scratch / "kafka" / shared.version / "libs").symlink_to(shared.libs)
    broker = KafkaBroker(run_dir=scratch, port=free_port(), controller_port=free_port(), heap="512m")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def restart_broker(broker: KafkaBroker) -> None:
    """Start ``broker`` again after :meth:`KafkaBroker.stop` (same data directory, same ports)."""
    broker.start()
    wait_until(broker.ready, timeout=60, what="private Kafka")


@contextmanager
def private_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of its own (role and database ``dbopt``, HypoPG, pg_stat_statements),
    dropped afterwards."""
    scratch = _scratch("pg")
    cluster = PostgresCluster(run_dir=scratch, port=free_port(), name=f"faults_{uuid.uuid4().hex[:8]}")
    try:
        cluster.start()
        yield cluster
    finally:
        subprocess.run(["pg_dropcluster", PG_MAJOR, cluster.name, "--stop"], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def stop_postgres(cluster: PostgresCluster) -> None:
    """Stop the cluster at once (``-m fast``: sessions are cut, like a crashed or restarted server)."""
    subprocess.run(["pg_ctlcluster", PG_MAJOR, cluster.name, "stop", "-m", "fast"], check=True, capture_output=True)


def start_postgres(cluster: PostgresCluster) -> None:
    subprocess.run(["pg_ctlcluster", PG_MAJOR, cluster.name, "start"], check=True, capture_output=True)
    wait_until(cluster.ready, timeout=60, what="private PostgreSQL")


def window_reader(settings: Settings, timeout: float = 30.0) -> WindowReader:
    """A :class:`WindowReader` once the windows topic is visible (a just-created topic may take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return WindowReader(settings)
        except TopicNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
