"""Where one ``dbopt worker`` process spends its time while it drains a pre-filled topic.

    .venv/bin/python bench/profile_worker.py --label after [--events 100000] [--seconds 40]

The worker runs under py-spy (a sampling profiler, from outside the interpreter: no change to
the code profiled) until it has committed every offset of the topic (or ``--seconds`` passed).
The samples (collapsed stacks, all threads) are summarized as the functions with the most
samples *on the stack* (inclusive) and *on top of the stack* (self), written to
``bench/profiles/<label>.txt``. The topic is the one ``bench/compare.py`` fills; with
``--sketch-topic``, the worker reads that topic of StatementSketch records instead (the one
``bench/sketch_throughput.py`` fills) and an empty events topic.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from common import bench_settings, committed, fill, total as records_in, worker_env

PROFILES = Path(__file__).parent / "profiles"


def summarize(collapsed: Path, top: int = 30, focus: str = "") -> str:
    """Inclusive and self sample counts per function from py-spy's raw (collapsed) output; with
    ``focus``, only the stacks that pass through that function (e.g. one thread's loop)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")"
                  if " (" in f else f for f in stack.split(";")[1:]]  # fmt: skip
        if not frames or (focus and not any(f.startswith(focus + " ") for f in frames)):
            continue
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{total} samples ({f'stacks through {focus}' if focus else 'all threads'})", "",
             f"top {top} inclusive (on the stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", f"top {top} self (on top of the stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="name of the summary file in bench/profiles/")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--topic", default="dbopt.bench.query-events.100k")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop profiling after this long")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--sketch-topic", default="", help="profile sketch mode on this filled sketches topic")
    args = parser.parse_args()
    settings = bench_settings()
    if args.sketch_topic:
        topic, total = args.sketch_topic, records_in(settings, args.sketch_topic)
        env, app_id = worker_env(settings, f"dbopt.bench.no-events.{uuid.uuid4().hex[:8]}",
                                 DBOPT_TOPIC_STATEMENT_SKETCHES=topic)  # fmt: skip
    else:
        topic, total = args.topic, fill(settings, args.topic, args.events)
        env, app_id = worker_env(settings, topic)
    raw = Path(tempfile.mkstemp(prefix="dbopt-profile-", suffix=".txt")[1])
    log = Path(tempfile.mkstemp(prefix="dbopt-profile-worker-", suffix=".log")[1])
    spy = str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--threads", "--rate", str(args.rate), "--format", "raw", "-o", str(raw),
               "--duration", str(int(args.seconds)), "--", sys.executable, "-m", "streams.cli", "worker",
               "--log-level", "warning"]  # fmt: skip
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None and committed(settings, app_id, topic) < total:
            time.sleep(1)
        drained = time.perf_counter() - started
        if proc.poll() is None:  # stop the worker (py-spy's child): py-spy then writes its samples
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            for pid in children:
                os.kill(int(pid), signal.SIGTERM)
        proc.wait(timeout=120)
    PROFILES.mkdir(exist_ok=True)
    header = (f"py-spy {args.rate} Hz, worker draining {total} records of {topic} "
              f"({drained:.0f} s from launch to all committed, startup included)\n")  # fmt: skip
    summary = header + summarize(raw) + "\n" + summarize(raw, focus="WindowsStage.run")
    (PROFILES / f"{args.label}.txt").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
