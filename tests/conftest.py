"""Shared fixtures. Tests marked ``infra`` talk to the real local Kafka and PostgreSQL;
the session starts them (``python -m streams.devenv up``) when they are not running."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from streams.config import Settings, Topics, load_settings

pytest_plugins = ["serve_harness"]  # the serve tests' fixtures ss and served

# the servers' state is the checkout's .run/ (the run directory is found from the cwd): pytest
# started from elsewhere must not make a second cluster, which would replace the shared one
CHECKOUT = Path(__file__).resolve().parents[1]


def _infra_up() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streams.devenv", "up", "--secure"], capture_output=True, text=True, cwd=CHECKOUT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"could not start local Kafka/PostgreSQL:\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="session")
def infra() -> Settings:
    """Settings pointing at the running local broker and database."""
    _infra_up()
    return load_settings()


@pytest.fixture
def unique_topics(infra: Settings) -> Topics:
    """A private set of topic names for one test, so tests never see each other's records."""
    suffix = uuid.uuid4().hex[:8]
    return Topics(**{name: f"{value}.t{suffix}" for name, value in Topics().all().items()})


@pytest.fixture
def settings(infra: Settings, unique_topics: Topics) -> Iterator[Settings]:
    """Settings with this test's private topics; the topics are deleted afterwards."""
    from streams.kafka import clients

    yield infra.with_overrides(topics=unique_topics)
    admin = clients.admin(infra)
    present = admin.list_topics(timeout=10).topics
    names = [n for n in unique_topics.all().values() if n in present]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()


@pytest.fixture
def created_topics(settings: Settings) -> Settings:
    """``settings`` whose private topics exist with the configured layout: brokers (the dev broker
    too) do not create a topic on first use, so a test that produces with a plain producer needs them."""
    from streams.kafka.topics import ensure_topics

    ensure_topics(settings)
    return settings


@pytest.fixture
def scratch_db(infra: Settings) -> Iterator[str]:
    """URL of a new, empty database (dropped afterwards)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    url = infra.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the servers are marked ``infra`` (``make unit`` runs the others)."""
    for item in items:
        if "infra" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.infra)
