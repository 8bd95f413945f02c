"""Spans per second of `dbopt otlp`, one process, with realistic OTLP batches.

    .venv/bin/python bench/otlp_throughput.py [--batches 300] [--concurrency 4] [--inline-fraction 0.1]

A batch is what an OpenTelemetry SDK's BatchSpanProcessor exports: 512 spans of one service,
80 % PostgreSQL client spans (stable attribute names, as @opentelemetry/instrumentation-pg sends
them) and 20 % HTTP server / internal spans. Of the database spans, ``--inline-fraction`` run a
statement with literal values inlined into the text (every text new: a statement-cache miss); the
rest are parameterized texts from 40 templates (hits after their first use). ``--batches``
distinct batches are built up front and each is sent once, so inlined texts never repeat.

Two measurements over the same batches:

1. **core**: protobuf decode + span -> QueryEvent mapping (``streams.otlp.wire`` + ``mapping``) in
   this process, no I/O: the receiver's CPU cost per span, and the statement cache hit rate;
2. **end to end**: a real ``dbopt otlp`` process on a free port (fresh cache), gzip protobuf
   ``POST /v1/traces`` from ``--concurrency`` clients in this process, to the local broker
   (``make up``); a request counts once answered 200, i.e. once the broker acknowledged all of its
   events. The clients share the machine's 2 cores with the receiver and the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from streams.config import load_settings
from streams.kafka import clients
from streams.otlp import wire
from streams.otlp.mapping import SpanMapper
from streams.otlp.synthetic import db_attributes, request, span

BATCH = 512
DB_SHARE = 0.8
TABLES = ("bookings", "guests", "payments", "vendors", "invitations", "timeline_events", "rsvp", "venues")
TEMPLATES = [
    f"SELECT * FROM {t} WHERE id = $1" for t in TABLES
] + [
    f"SELECT id, status FROM {t} WHERE wedding_id = $1 AND status = ANY($2) ORDER BY created_at DESC LIMIT $3" for t in TABLES
] + [
    f"UPDATE {t} SET status = $1, updated_at = now() WHERE id = $2" for t in TABLES
] + [
    f"INSERT INTO {t} (wedding_id, payload, created_at) VALUES ($1, $2, now()) RETURNING id" for t in TABLES
] + [
    f"SELECT count(*) FROM {t} t JOIN weddings w ON w.id = t.wedding_id WHERE w.date BETWEEN $1 AND $2" for t in TABLES
]  # fmt: skip


def make_batch(rng: random.Random, service: str, inline_fraction: float) -> ExportTraceServiceRequest:
    now = time.time_ns()
    spans = []
    for i in range(BATCH):
        start = now + i * 1000
        if rng.random() >= DB_SHARE:
            spans.append(span({"http.request.method": "GET", "http.route": "/weddings/:id", "url.path": f"/weddings/{i}",
                               "http.response.status_code": 200, "server.address": "api", "user_agent.original": "x"},
                              start_ns=start, duration_ns=rng.randint(1, 50) * 1_000_000,
                              kind=Span.SPAN_KIND_SERVER, name="GET /weddings/:id"))  # fmt: skip
            continue
        if rng.random() < inline_fraction:
            text = (f"SELECT * FROM guests WHERE email = 'guest{rng.randrange(10**9)}@example.com' "
                    f"AND wedding_id = {rng.randrange(10**6)}")  # fmt: skip
        else:
            text = rng.choice(TEMPLATES)
        attrs = {**db_attributes(text), "db.operation.name": text.split()[0]}
        spans.append(span(attrs, start_ns=start, duration_ns=rng.randint(100, 20_000) * 1000, name="pg.query"))
    return request(service, spans, **{"service.instance.id": f"{service}-pod-1", "host.name": "node-1",
                                      "telemetry.sdk.language": "nodejs", "telemetry.sdk.name": "opentelemetry"})  # fmt: skip


def make_bodies(count: int, inline_fraction: float) -> list[bytes]:
    rng = random.Random(7)
    return [make_batch(rng, f"service-{i % 10}", inline_fraction).SerializeToString() for i in range(count)]


def core(bodies: list[bytes]) -> tuple[float, SpanMapper]:
    """spans/s of decode + map over ``bodies``, each once."""
    mapper = SpanMapper()
    spans = 0
    started = time.perf_counter()
    for body in bodies:
        spans += mapper.map_request(wire.parse_request(body, wire.PROTOBUF)).spans
    return spans / (time.perf_counter() - started), mapper


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> dict[int, int]:
    """Answers by HTTP status of ``concurrency`` clients sending ``bodies`` (each once, gzip)."""
    queue = [gzip.compress(b) for b in reversed(bodies)]
    headers = {"Content-Type": wire.PROTOBUF, "Content-Encoding": "gzip"}
    statuses: dict[int, int] = {}

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            while queue:
                async with session.post(url, data=queue.pop(), headers=headers) as answer:
                    await answer.read()
                    statuses[answer.status] = statuses.get(answer.status, 0) + 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dbopt otlp did not start:\n{log.read_text()}") from None
            time.sleep(0.1)


def end_to_end(bodies: list[bytes], concurrency: int) -> tuple[float, dict[int, int]]:
    settings = load_settings()
    topic = f"dbopt.bench.otlp-events.{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    env.update(DBOPT_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, DBOPT_TOPIC_QUERY_EVENTS=topic)
    log = Path(tempfile.mkstemp(prefix="dbopt-bench-otlp-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "otlp", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz", proc, log)
            url = f"http://127.0.0.1:{port}/v1/traces"
            warm = asyncio.run(post_all(url, [request("warm-up", []).SerializeToString()], 1))  # connections, topic
            assert warm == {200: 1}, warm
            started = time.perf_counter()
            statuses = asyncio.run(post_all(url, bodies, concurrency))
            rate = statuses.get(200, 0) * BATCH / (time.perf_counter() - started)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            clients.admin(settings).delete_topics([topic], operation_timeout=30)
    return rate, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=300, help="distinct 512-span batches, each sent once (default 300)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients (default 4)")
    parser.add_argument("--inline-fraction", type=float, default=0.1,
                        help="share of database spans with literal-inlined (always new) texts (default 0.1)")  # fmt: skip
    args = parser.parse_args()
    bodies = make_bodies(args.batches, args.inline_fraction)
    size = sum(map(len, bodies)) / len(bodies)
    print(f"{args.batches} batches of {BATCH} spans ({DB_SHARE:.0%} database, {args.inline_fraction:.0%} of those with "
          f"inlined literals); {size / 1024:.0f} KiB protobuf, {len(gzip.compress(bodies[0])) / 1024:.0f} KiB gzip each")  # fmt: skip
    rate, mapper = core(bodies)
    lookups = mapper.cache.hits + mapper.cache.misses
    print(f"core: decode + map, 1 process      {rate:10,.0f} spans/s")
    print(f"statement cache hit rate           {mapper.cache.hits / lookups:10.1%} ({lookups:,} lookups)")
    rate, statuses = end_to_end(bodies, args.concurrency)
    print(f"end to end: HTTP -> acknowledged   {rate:10,.0f} spans/s (1 receiver, {args.concurrency} clients)")
    print(f"answers by status                  {statuses}")


if __name__ == "__main__":
    main()
