"""Small process helpers shared by the local Kafka and PostgreSQL launchers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence


class StartError(RuntimeError):
    """A local server did not come up; the message carries the tail of its log."""


def run(cmd: Sequence[str], *, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its output when it fails."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise StartError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    if not quiet and proc.stdout.strip():
        print(proc.stdout.rstrip())
    return proc


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    content = path.read_text(errors="replace").splitlines()
    return "\n".join(content[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    what: str,
    log: Path | None = None,
) -> None:
    """Poll ``ready`` until it is true; fail fast when ``alive`` says the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not alive():
            raise StartError(f"{what} exited during start-up. Last log lines:\n{tail(log) if log else ''}")
        time.sleep(0.3)
    raise StartError(f"{what} not ready after {timeout:.0f}s. Last log lines:\n{tail(log) if log else ''}")


def stop_pid(pid: int, *, timeout: float = 30.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.2)


def start_daemon(
    cmd: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    ready: Callable[[], bool],
    what: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90,
) -> int:
    """Start a server in its own session, logging to ``log_file``; wait until ``ready``. Returns its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    wait_until(ready, timeout=timeout, alive=lambda: proc.poll() is None, what=what, log=log_file)
    return proc.pid


def stop_daemon(pid_file: Path) -> bool:
    """Stop the server whose pid is in ``pid_file``; False when none was running."""
    pid = read_pid(pid_file)
    if pid is None:
        return False
    stop_pid(pid)
    pid_file.unlink(missing_ok=True)
    return True
