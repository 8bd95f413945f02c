"""The OTLP/HTTP receiver (aiohttp): ``POST /v1/traces`` in, QueryEvents to Kafka out.

Per request: bearer token (when configured), Content-Type (``application/x-protobuf`` or
``application/json``), body bounded before and after gzip, decode, map the spans (pure, in memory:
the statement texts are normalized before anything is written), produce the events and wait for
the broker's acknowledgement, then answer ``ExportTraceServiceResponse`` with ``partial_success``
counting the rejected spans. Answers per the OTLP specification:

====  ==============================================  ======================================
code  when                                            the client
====  ==============================================  ======================================
200   accepted (malformed spans counted in             does not retry
      ``partial_success.rejected_spans``)
400   the body is not an export request               does not retry
401   missing or wrong bearer token                   does not retry
413   body over ``DBOPT_OTLP_MAX_REQUEST_BYTES``      does not retry
415   other Content-Type or Content-Encoding          does not retry
503   the broker did not acknowledge in time, or too  retries after ``Retry-After`` seconds
      many events wait for it (backpressure)
====  ==============================================  ======================================

``GET /metrics`` (Prometheus) and ``GET /healthz`` are served on the same port.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from typing import Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from streams.config import Settings
from streams.otlp import metrics, wire
from streams.otlp.mapping import SpanMapper
from streams.otlp.publish import EventPublisher, Unavailable
from streams.records import QueryEvent

log = logging.getLogger("dbopt.otlp")

TRACES_PATH = "/v1/traces"


class Receiver:
    """Handles ``POST /v1/traces``; ``publish`` takes the events and returns once they are durable."""

    def __init__(self, settings: Settings, mapper: SpanMapper, publish: Callable[[Sequence[QueryEvent]], Awaitable[None]]) -> None:
        self.mapper = mapper
        self.publish = publish
        self.max_bytes = settings.otlp.max_request_bytes
        self.retry_after = str(settings.otlp.retry_after_s)
        token = settings.otlp.bearer_token
        self._expected = f"Bearer {token.get_secret_value()}".encode() if token is not None else None
        self.rejections = metrics.RejectionLog()

    async def traces(self, request: web.Request) -> web.Response:
        media = wire.JSON if "json" in request.headers.get("Content-Type", "").lower() else wire.PROTOBUF
        try:
            self._authorize(request)
            media = wire.media_type(request.headers.get("Content-Type"))
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise wire.WireError(413, f"request body over {self.max_bytes} bytes") from None
            body = wire.decompress(body, request.headers.get("Content-Encoding"), self.max_bytes)
            export = wire.parse_request(body, media)
        except wire.WireError as exc:
            return self._error(media, exc.status, exc.message)
        result = self.mapper.map_request(export)
        metrics.count(result, "http")
        self.rejections.record(result)
        try:
            await self.publish(result.events)
        except Unavailable as exc:
            log.warning("answering 503 (the client retries): %s", exc)
            return self._error(media, 503, f"try again later: {exc}", {"Retry-After": self.retry_after})
        metrics.ACKNOWLEDGED.inc(len(result.events))
        rejected = sum(result.rejected.values())
        return self._answer(200, wire.encode_response(media, rejected, result.rejected_summary()), media)

    def _authorize(self, request: web.Request) -> None:
        if self._expected is None:
            return
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            raise wire.WireError(401, "missing or wrong bearer token")

    def _error(self, media: str, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        if status == 401:
            headers = {"WWW-Authenticate": 'Bearer realm="dbopt otlp"'}
        return self._answer(status, wire.encode_status(media, status, message), media, headers)

    @staticmethod
    def _answer(status: int, body: bytes, media: str, headers: dict[str, str] | None = None) -> web.Response:
        metrics.REQUESTS.labels(str(status)).inc()
        return web.Response(status=status, body=body, content_type=media, headers=headers)


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"live": True})


def make_app(receiver: Receiver) -> web.Application:
    # the compressed body is bounded here, the decompressed one by wire.decompress
    app = web.Application(client_max_size=receiver.max_bytes)
    app.router.add_post(TRACES_PATH, receiver.traces)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app


async def serve_http(
    settings: Settings, host: str, port: int, mapper: SpanMapper, stop: asyncio.Event | None = None
) -> None:
    """Run the receiver until SIGTERM/SIGINT (or ``stop``); in-flight requests finish first."""
    publisher = EventPublisher(settings)
    receiver = Receiver(settings, mapper, publisher.publish)
    # auto_decompress off: gzip is inflated by wire.decompress, with its own bound
    runner = web.AppRunner(make_app(receiver), auto_decompress=False, access_log=None)
    await runner.setup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        for address in runner.addresses:
            log.info("listening on http://%s:%d%s -> topic %s", address[0], address[1], TRACES_PATH,
                     publisher.topic)  # fmt: skip
        await stop.wait()
    finally:
        await runner.cleanup()
        unacknowledged = publisher.close()
        if unacknowledged:
            log.warning("%d events were not acknowledged at shutdown (their requests got 503)", unacknowledged)
