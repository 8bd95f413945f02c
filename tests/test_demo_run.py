"""``dbopt demo`` end to end, as ``make demo`` runs it: the real worker, advisor, executor, serve,
notify and collect processes, the simulator on the 1,000,000-booking demo database.

The loop must close — breach, alerts that reach the (local) Slack as firing and then resolved, a
signed index command, its result, recovery under the SLO and the verifier's verdict —, the
wedding-day notification pool must raise a pool alert with its recommended size, and the live page's
address must be printed. The broker and the database are real; the output the demo prints is what is
checked, as a person running it would read it.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from streams.config import Settings

pytestmark = [pytest.mark.infra, pytest.mark.timeout(600)]


def _story(out: str) -> str:
    """What a failed assertion shows: every event line of the run (alerts, notifications, commands,
    results, the clock's), then the end of the output."""
    events = [line for line in out.splitlines() if line.startswith(("!!", "   notify", "->", "<-", ">>", "verifier"))]
    return "\n".join(events[-120:]) + "\n--- the end of the output ---\n" + out[-2500:]


def test_make_demo_closes_the_loop_and_tells_people(infra: Settings) -> None:
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--duration", "240"],
                          capture_output=True, text=True, timeout=560)  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:] + proc.stderr[-3000:]
    assert "live page: http://127.0.0.1:8080" in out
    assert re.search(r"^>> first breaching booking window: p95 [\d.]+ ms > SLO \d+ ms$", out, re.M), _story(out)
    assert re.search(r"^!! ALERT FIRING \w+ slo [\w-]+/booking", out, re.M), _story(out)
    assert re.search(r"^   notify -> Slack: FIRING \w+: [\w-]+ \(booking", out, re.M), _story(out)
    command = re.search(r"^-> COMMAND (\w+) \(advisor\): CREATE INDEX CONCURRENTLY dbopt_idx_bookings_\w+ ON "
                        r"public\.bookings", out, re.M)  # fmt: skip
    assert command, _story(out)
    assert re.search(rf"^<- RESULT {command.group(1)} applied: ", out, re.M), _story(out)
    assert re.search(r"^>> RECOVERED: booking p95 [\d.]+ ms <= SLO \d+ ms", out, re.M), _story(out)
    assert re.search(r"^   notify -> Slack: RESOLVED \w+: [\w-]+ \(booking", out, re.M), _story(out)
    assert re.search(r"^verifier: verified: p95 [\d.]+ -> [\d.]+ ms", out, re.M), _story(out)
    pool = re.search(r"^!! ALERT FIRING \w+ pool notification-service/\S+ .*recommended max_size (\d+)", out, re.M)
    assert pool and int(pool.group(1)) > 4, _story(out)  # the pool of 4 saturates: a larger size is advised
    seconds = re.search(r"^loop closed: (\d+) s from the first breaching window to recovery", out, re.M)
    assert seconds and int(seconds.group(1)) < 120, _story(out)
