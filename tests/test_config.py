"""Settings (pure, and the real ``dbopt config`` command): each declared once with a doc; unknown
names, bad values and bad URLs rejected with the variable's name; secrets never shown; the run
directory found from the current project, never inside an installed package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.config import (
    OTHER_VARIABLES,
    PROJECT_NAME,
    VARIABLES,
    ConfigError,
    Group,
    Settings,
    load_settings,
    run_dir,
)
from streams.domain.vocabulary import DEFAULT_CONTEXT_RULES

DBOPT = str(Path(sys.executable).with_name("dbopt"))
REPO = Path(__file__).resolve().parents[1]
PASSWORD = "hunter2-pw"
KEY = "k3y-s3cret"
SECRET_URL = f"postgresql://dbopt:{PASSWORD}@db.example:5432/app"


def dbopt_config(tmp_path: Path, *args: str, env_file: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``dbopt config`` with only ``env`` as DBOPT_* variables and ``env_file`` as the run dir's env file."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    if env_file is not None:
        (run / "env").write_text(env_file)
    process_env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    process_env.update(DBOPT_RUN_DIR=str(run), **env)
    return subprocess.run(
        [DBOPT, "config", *args], capture_output=True, text=True, timeout=60, env=process_env, cwd=tmp_path
    )


# --- names ---------------------------------------------------------------------------------


def test_typo_names_the_nearest_variable() -> None:
    with pytest.raises(ConfigError, match=r"DBOPT_KAFKA_BOOTSTRAPP.*did you mean DBOPT_KAFKA_BOOTSTRAP\?"):
        load_settings({"DBOPT_KAFKA_BOOTSTRAPP": "127.0.0.1:9092"})
    with pytest.raises(ConfigError, match="did you mean DBOPT_EXECUTOR_GROUP"):
        load_settings({"DBOPT_EXECUTOR_GRUOP": "g"})
    with pytest.raises(ConfigError, match=r"unknown variable DBOPT_ZZZZZZ.*dbopt config"):
        load_settings({"DBOPT_ZZZZZZ": "1"})


def test_variables_read_elsewhere_are_known() -> None:
    settings = load_settings({name: "x" for name in OTHER_VARIABLES} | {"PATH": "/bin"})
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert not set(OTHER_VARIABLES) & set(VARIABLES)


def test_every_dbopt_name_in_code_docs_and_manifests_is_known() -> None:
    """The unknown-name check must never break a real command or a documented example."""
    known = set(VARIABLES) | set(OTHER_VARIABLES)
    files = [REPO / "README.md", REPO / "Makefile"]
    for folder, pattern in (("streams", "*.py"), ("bench", "*.py"), ("docs", "*.md"), ("k8s", "*.yaml")):
        files += (REPO / folder).rglob(pattern)
    unknown = {
        f"{name} ({path.relative_to(REPO)})"
        for path in files
        for name in re.findall(r"DBOPT_[A-Z0-9_]+", path.read_text())
        if not name.endswith("_") and name not in known  # DBOPT_TOPIC_<NAME>, DBOPT_WORKER_* are prefixes
    }
    assert not unknown
    uses = [
        line
        for path in (REPO / "streams").rglob("*.py")
        for line in path.read_text().splitlines()
        if not re.search(r'"DBOPT_[A-Z0-9_]+": ', line)  # not its own entry in OTHER_VARIABLES
    ]
    assert [name for name in OTHER_VARIABLES if not any(name in line for line in uses)] == []  # none is stale


def test_documented_names_are_kept() -> None:
    """Names users and manifests already use (the interface), with their attribute paths."""
    expected = {
        "DBOPT_KAFKA_BOOTSTRAP": ("kafka_bootstrap",),
        "DBOPT_DATABASE_URL": ("database_url",),
        "DBOPT_TOPIC_ALERTS": ("topics", "alerts"),
        "DBOPT_TOPIC_PARTITIONS": ("topic_policy", "partitions"),
        "DBOPT_DLQ_RETENTION_MS": ("topic_policy", "dlq_retention_ms"),
        "DBOPT_MAX_INDEXES_PER_TABLE": ("executor", "max_indexes_per_table"),
        "DBOPT_AGGRESSIVENESS": ("executor", "aggressiveness"),
        "DBOPT_AUDIT_SCHEMA": ("executor", "audit_schema"),
        "DBOPT_EXECUTOR_GROUP": ("executor", "consumer_group"),
        "DBOPT_EXECUTOR_LOCK_KEY": ("executor", "advisory_lock_key"),
        "DBOPT_ADVISOR_GROUP": ("advise", "consumer_group"),
        "DBOPT_ADVISE_POLL_TIMEOUT_S": ("advise", "poll_timeout_s"),
        "DBOPT_SLO_P95_MS": ("domain", "slo_p95_ms"),
        "DBOPT_SLO_DEFAULT_P95_MS": ("domain", "default_slo_p95_ms"),
        "DBOPT_CONTEXT_RULES": ("domain", "context_rules"),
        "DBOPT_WINDOW_HOP_MS": ("windows", "hop_ms"),
        "DBOPT_WORKER_APP_ID": ("windows", "app_id"),
        "DBOPT_INGEST_STATEMENT_TYPES": ("ingest", "statement_types"),
        "DBOPT_DETECT_WINDOW_KINDS": ("detect", "window_kinds"),
        "DBOPT_SDK_COMPRESSION": ("sdk_compression",),
        "DBOPT_FREEZE_WEEKDAYS": ("freeze_weekdays",),
    }
    assert {name: VARIABLES[name].path for name in expected} == expected


def test_every_setting_has_a_description() -> None:
    missing = [name for name, variable in VARIABLES.items() if not (variable.field.description or "").strip()]
    groups = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not missing and not groups
    assert all(issubclass(v.owner, (Group, Settings)) for v in VARIABLES.values())


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("DBOPT_TIMEZONE", "Mars/Base", "unknown time zone"),
        ("DBOPT_SDK_COMPRESSION", "brotli", "'zstd'"),
        ("DBOPT_KAFKA_BOOTSTRAP", "localhost", "host:port"),
        ("DBOPT_KAFKA_BOOTSTRAP", "a:9092,b:99999", "host:port"),
        ("DBOPT_DATABASE_URL", "mysql://u:p@h/db", "postgresql://"),
        ("DBOPT_DATABASE_URL", "postgresql://h:port/db", "postgresql://"),
        ("DBOPT_SCHEMA_REGISTRY_URL", "localhost:8081", "http://"),
        ("DBOPT_FREEZE_WEEKDAYS", "sat,funday", "'sun'"),
        ("DBOPT_AGGRESSIVENESS", "reckless", "'moderate'"),
        ("DBOPT_WINDOW_HOPPING_MS", "90000", "multiple of DBOPT_WINDOW_HOP_MS"),
        ("DBOPT_TOPIC_PARTITIONS", "0", "greater than or equal to 1"),
        ("DBOPT_EXECUTOR_POLL_TIMEOUT_S", "inf", "finite"),
        ("DBOPT_INGEST_MAX_AGE_MS", "soon", "integer"),
        ("DBOPT_WORKER_STORE", "redis://", "rocksdb://"),
        ("DBOPT_WORKER_WEB_PORT", "70000", "65535"),
        ("DBOPT_DETECT_WINDOW_KINDS", "", "at least 1"),
        ("DBOPT_ADVISE_MIN_IMPROVEMENT", "1", "less than 1"),
        ("DBOPT_DEFAULT_CRITICALITY", "urgent", "'critical'"),
        ("DBOPT_SEASON_SLO_MULTIPLIERS", '{"winter": 2}', "'peak'"),
        ("DBOPT_SLO_P95_MS", "{oops", "not valid JSON"),
    ],
)
def test_bad_value_is_rejected_with_the_variable_name(name: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        load_settings({name: value})
    assert problem in str(info.value)


def test_values_are_read_as_documented() -> None:
    settings = load_settings(
        {
            "DBOPT_FREEZE_WEEKDAYS": "Saturday, SUN",
            "DBOPT_INGEST_STATEMENT_TYPES": "select,insert",
            "DBOPT_AGGRESSIVENESS": " Aggressive ",
            "DBOPT_SLO_P95_MS": '{"honeymoon": 75}',
            "DBOPT_SCHEMA_REGISTRY_URL": "http://registry:8081/",
            "DBOPT_TOPIC_PARTITIONS": "",  # empty: the default
            "DBOPT_KAFKA_BOOTSTRAP": "k1:9092, k2:9092",
            "DBOPT_DATABASE_URL": "postgresql:///app",  # local socket
        }
    )
    assert settings.freeze_weekdays == ("sat", "sun")
    assert settings.ingest.statement_types == ("SELECT", "INSERT")
    assert settings.executor.aggressiveness == "aggressive"
    assert settings.domain.slo_p95_ms["honeymoon"] == 75 and settings.domain.slo_p95_ms["booking"] == 50
    assert settings.schema_registry_url == "http://registry:8081"
    assert settings.topic_policy.partitions == 6
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.domain.context_rules == DEFAULT_CONTEXT_RULES
    assert load_settings({"DBOPT_FREEZE_WEEKDAYS": ""}).freeze_weekdays == ()  # empty list: no freeze day


def test_settings_in_code_are_validated_copies() -> None:
    base = Settings()
    assert base == load_settings({})  # Settings() reads no environment
    changed = base.with_overrides(timezone="Europe/Berlin", executor=base.executor.with_overrides(lock_timeout_ms=7))
    assert (changed.timezone, changed.executor.lock_timeout_ms, base.timezone) == ("Europe/Berlin", 7, "UTC")
    with pytest.raises(ConfigError, match="DBOPT_TIMEZONE"):
        base.with_overrides(timezone="Mars/Base")
    with pytest.raises(ConfigError, match="DBOPT_EXECUTOR_LOCK_TIMEOUT_MS"):
        base.executor.with_overrides(lock_timeout_ms=0)


# --- secrets -------------------------------------------------------------------------------


def test_secrets_never_show_in_repr_str_or_errors() -> None:
    settings = load_settings({"DBOPT_DATABASE_URL": SECRET_URL, "DBOPT_COMMAND_KEY": KEY})
    assert settings.database_url.get_secret_value() == SECRET_URL
    assert settings.command_key is not None and settings.command_key.get_secret_value() == KEY
    for text in (repr(settings), str(settings), settings.model_dump_json(), f"{settings.database_url}"):
        assert PASSWORD not in text and KEY not in text
    assert str(settings.database_url) == "postgresql://dbopt:**********@db.example:5432/app"  # host, port, db kept
    with pytest.raises(ConfigError, match="DBOPT_DATABASE_URL") as info:
        load_settings({"DBOPT_DATABASE_URL": f"mysql://dbopt:{PASSWORD}@db.example/app"})
    assert PASSWORD not in str(info.value)
    with pytest.raises(ConfigError) as info:
        settings.with_overrides(database_url=f"mysql://dbopt:{PASSWORD}@db.example/app")
    assert PASSWORD not in str(info.value)


def test_dbopt_config_masks_secrets_and_marks_sources(tmp_path: Path) -> None:
    proc = dbopt_config(
        tmp_path,
        env_file="DBOPT_TIMEZONE=Europe/Berlin\nDBOPT_SDK_LINGER_MS=5\n",
        DBOPT_DATABASE_URL=SECRET_URL,
        DBOPT_COMMAND_KEY=KEY,
        DBOPT_TIMEZONE="America/New_York",  # the process environment wins over the file
    )
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout and KEY not in proc.stdout
    lines = proc.stdout.splitlines()
    assert "DBOPT_DATABASE_URL=postgresql://dbopt:**********@db.example:5432/app  # environment" in lines
    assert "DBOPT_COMMAND_KEY=**********  # environment" in lines
    assert "DBOPT_TIMEZONE=America/New_York  # environment" in lines
    assert f"DBOPT_SDK_LINGER_MS=5  # {tmp_path / 'run' / 'env'}" in lines
    assert "DBOPT_FREEZE_WEEKDAYS=sat  # default" in lines
    assert len(lines) == len(VARIABLES)

    report = json.loads(dbopt_config(tmp_path, "--json", DBOPT_COMMAND_KEY=KEY).stdout)
    assert report["DBOPT_COMMAND_KEY"]["value"] == "**********"
    assert report["DBOPT_FREEZE_WEEKDAYS"] == {
        "value": ["sat"], "source": "default", "description": VARIABLES["DBOPT_FREEZE_WEEKDAYS"].field.description
    }


@pytest.mark.parametrize(
    ("env_file", "env", "expected"),
    [
        ("", {"DBOPT_SDK_COMPRESSION": "brotli"}, "DBOPT_SDK_COMPRESSION='brotli'"),
        ("", {"DBOPT_DATABASE_URL": f"mysql://u:{PASSWORD}@h/db"}, "DBOPT_DATABASE_URL: must be"),
        ("DBOPT_TIMEZON=UTC\n", {}, "unknown variable DBOPT_TIMEZON (in {run}/env); did you mean DBOPT_TIMEZONE?"),
    ],
)
def test_dbopt_config_exits_2_on_a_bad_setting(tmp_path: Path, env_file: str, env: dict[str, str], expected: str) -> None:
    proc = dbopt_config(tmp_path, env_file=env_file, **env)
    assert proc.returncode == 2
    assert expected.format(run=tmp_path / "run") in proc.stderr
    assert PASSWORD not in proc.stderr and "Traceback" not in proc.stderr


# --- run directory -------------------------------------------------------------------------


def _project(path: Path, name: str = PROJECT_NAME) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    return path


def test_run_dir_is_dbopt_run_dir_when_set(tmp_path: Path) -> None:
    assert run_dir(tmp_path, {"DBOPT_RUN_DIR": str(tmp_path / "state")}) == tmp_path / "state"


def test_run_dir_is_the_current_projects(tmp_path: Path) -> None:
    project = _project(tmp_path / "checkout")
    deep = project / "streams" / "app"
    deep.mkdir(parents=True)
    assert run_dir(deep, {}) == project / ".run"
    other = _project(project / "vendored", name="something-else")  # another project inside: not ours
    assert run_dir(other, {}) == project / ".run"
    (other / ".run").mkdir()  # ... unless it already has a .run/
    assert run_dir(other, {}) == other / ".run"


def test_run_dir_outside_any_project_is_the_cwds(tmp_path: Path) -> None:
    assert run_dir(tmp_path, {}) == tmp_path / ".run"


def test_run_dir_is_never_inside_site_packages(tmp_path: Path) -> None:
    project = _project(tmp_path / "checkout")
    site = project / ".venv" / "lib" / "python3.11" / "site-packages"
    package = site / "streams"
    (site / ".run").mkdir(parents=True)  # left there by an old install
    package.mkdir()
    assert run_dir(package, {}) == project / ".run"
    bare = tmp_path / "env" / "lib" / "site-packages" / "streams"
    bare.mkdir(parents=True)
    with pytest.raises(ConfigError, match="DBOPT_RUN_DIR"):
        run_dir(bare, {})
