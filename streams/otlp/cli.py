"""``dbopt otlp``: the OpenTelemetry receiver (OTLP/HTTP, or ``--from-kafka TOPIC``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading

from streams.cli_args import add_logging_arguments, non_negative_int
from streams.config import Settings, load_settings
from streams.kafka.health import Health, serve as serve_probes
from streams.kafka.loop import stop_on_signals
from streams.otlp.mapping import Limits, SpanMapper

HELP = ("OpenTelemetry receiver: PostgreSQL client spans (OTLP/HTTP POST /v1/traces, or a Kafka topic "
        "the Collector writes) become literal-free QueryEvents")  # fmt: skip

log = logging.getLogger("dbopt.otlp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default DBOPT_OTLP_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=non_negative_int,
                        help="port to listen on (default DBOPT_OTLP_PORT, 4318; 0: any free port)")  # fmt: skip
    parser.add_argument("--from-kafka", metavar="TOPIC",
                        help="instead of OTLP/HTTP, consume the OTLP records (otlp_proto or otlp_json) an "
                        "OpenTelemetry Collector's Kafka exporter writes to TOPIC; --host/--port then serve "
                        "/healthz, /readyz and /metrics")  # fmt: skip
    add_logging_arguments(parser)


def mapper_for(settings: Settings) -> SpanMapper:
    """The span mapper with the settings' cache size and the ingest stage's limits."""
    limits = Limits(
        max_string=settings.ingest.max_string,
        max_statement=settings.otlp.max_statement,
        max_query_text=settings.ingest.max_query_text,
    )
    return SpanMapper(settings.otlp.statement_cache, limits)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    host = args.host or settings.otlp.host
    port = settings.otlp.port if args.port is None else args.port
    mapper = mapper_for(settings)
    if args.from_kafka is None:
        from streams.otlp.server import serve_http  # aiohttp only for this mode

        asyncio.run(serve_http(settings, host, port, mapper))
        return 0
    from streams.otlp.agent import run_from_kafka

    stop = threading.Event()
    stop_on_signals(stop)
    health = Health("otlp")
    probes = serve_probes(health, host, port)
    log.info("consuming %s; probes on http://%s:%d", args.from_kafka, *probes.server_address[:2])
    try:
        run_from_kafka(settings, args.from_kafka, mapper, stop, health)
    finally:
        probes.shutdown()
    return 0
