"""The one interface every channel implements, and the HTTP plumbing the HTTP channels share.

A channel turns a :class:`~streams.notify.model.Notification` into one request of its service's
real API and says how it went: it returns when the service accepted it, and raises
:class:`DeliveryError` otherwise, saying whether trying again can help (timeouts, connection
errors, 429 with its ``Retry-After``, 5xx) or not (any other 4xx: a bad key, a bad payload).
Channels never retry, wait or rate-limit themselves: the dispatcher does (see
:mod:`streams.notify.policy`), the same way for every channel.

``targets()`` lists the separate recipients the channel sends to one by one (the SMS numbers);
every (notification, channel, target) is one delivery in the ledger, so a retry never re-sends
to a recipient that already has it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx

from ..model import Notification

USER_AGENT = "dbopt-notify/1"


class ChannelOff(Exception):
    """The channel's settings are missing: the channel is off (the message says which)."""


class DeliveryError(Exception):
    def __init__(self, reason: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Channel(ABC):
    name: ClassVar[str]

    def targets(self) -> tuple[str, ...]:
        return ("",)

    @abstractmethod
    def send(self, notification: Notification, target: str) -> None:
        """Deliver, or raise :class:`DeliveryError`."""

    def describe(self) -> str:
        """Where it sends (no secret), for ``dbopt notify --check``."""
        return ""

    def close(self) -> None:  # noqa: B027 - an optional hook: most channels hold no connection
        """Release connections (called once, by the channel's worker, when it stops)."""


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class HttpChannel(Channel):
    """A channel that POSTs to an HTTP API with one connection-pooling client."""

    def __init__(self, timeout_s: float) -> None:
        self.http = httpx.Client(timeout=timeout_s, headers={"User-Agent": USER_AGENT})

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.post(url, **kwargs)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"timeout: {type(exc).__name__}", retryable=True) from None
        except httpx.TransportError as exc:
            raise DeliveryError(f"connection failed: {type(exc).__name__}: {exc}", retryable=True) from None
        if response.is_success:
            return response
        body = response.text[:200].strip()
        reason = f"HTTP {response.status_code}" + (f": {body}" if body else "")
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise DeliveryError(reason, retryable=True, retry_after_s=retry_after(response.headers.get("Retry-After")))
        raise DeliveryError(reason, retryable=False)

    def close(self) -> None:
        self.http.close()


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
