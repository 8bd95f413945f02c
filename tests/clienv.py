"""Run the real ``dbopt`` console script against a test's Settings (private topics, same servers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.config import Settings

DBOPT = str(Path(sys.executable).with_name("dbopt"))


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment that makes ``load_settings()`` in a child see ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    env["DBOPT_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    env["DBOPT_DATABASE_URL"] = settings.database_url.get_secret_value()
    env["DBOPT_SCHEMA_REGISTRY_URL"] = settings.schema_registry_url or ""
    for key, name in settings.topics.all().items():
        env[f"DBOPT_TOPIC_{key.upper()}"] = name
    env.update(extra)
    return env


def dbopt(settings: Settings, *args: str, stdin: str | None = None, timeout: float = 60, **extra: str
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DBOPT, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
        env=settings_env(settings, **extra),
    )


@pytest.fixture(scope="session")
def schema_registry(infra: Settings) -> str:
    """URL of the local Confluent-compatible schema registry (started if needed, left running
    like the broker). It is not written to .run/env, so other tests keep single-object encoding."""
    from streams.devenv.__main__ import registry

    reg = registry()
    reg.start()
    return reg.url
