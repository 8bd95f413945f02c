"""PagerDuty Events API v2 (``DBOPT_NOTIFY_PAGERDUTY_URL``, ``DBOPT_NOTIFY_PAGERDUTY_ROUTING_KEY``).

A firing alert is a ``trigger`` event, its resolution a ``resolve`` event with the same
``dedup_key`` (the alert condition: one incident per condition, not per window). Severity maps
to PagerDuty's ``critical``/``error``/``warning``/``info``. Results and digests are ``trigger``
events too, each with its own ``dedup_key``. The API answers ``202`` with
``{"status": "success", "dedup_key": ...}``; 400 is a bad event, 429 rate limiting, 5xx retry.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from streams.config import Settings

from ..model import ALERT_KINDS, Notification
from .base import ChannelOff, HttpChannel, truncate

SEVERITY = {"critical": "critical", "high": "error", "warning": "warning", "info": "info"}


def event(notification: Notification, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body."""
    resolving = notification.kind in ALERT_KINDS and notification.state == "resolved"
    if notification.kind in ALERT_KINDS:
        dedup_key = notification.condition_key
    else:
        dedup_key = notification.notification_id
    body: dict[str, Any] = {"routing_key": routing_key, "event_action": "resolve" if resolving else "trigger",
                            "dedup_key": dedup_key}
    if resolving:
        return body
    msg = notification.message
    details: dict[str, Any] = {label: value for label, value in msg.facts}
    if msg.statement:
        details["statement"] = msg.statement
    if msg.items:
        details["held back"] = list(msg.items)
    details["notification_id"] = notification.notification_id
    body["payload"] = {
        "summary": truncate(msg.title, 1024),
        "source": notification.service,
        "severity": SEVERITY[notification.severity],
        "timestamp": datetime.fromtimestamp(notification.event_ms / 1000, timezone.utc).isoformat(timespec="milliseconds"),
        "component": notification.context,
        "group": notification.service,
        "class": notification.kind,
        "custom_details": details,
    }
    body["client"] = "dbopt"
    if msg.link:
        body["client_url"] = msg.link
        body["links"] = [{"href": msg.link, "text": "Open in dbopt"}]
    return body


class PagerDutyChannel(HttpChannel):
    name = "pagerduty"

    def __init__(self, url: str, routing_key: str, timeout_s: float) -> None:
        super().__init__(timeout_s)
        self.url, self.routing_key = url, routing_key

    @classmethod
    def from_settings(cls, settings: Settings) -> "PagerDutyChannel":
        key = settings.notify.pagerduty_routing_key
        if key is None:
            raise ChannelOff("DBOPT_NOTIFY_PAGERDUTY_ROUTING_KEY is not set")
        return cls(settings.notify.pagerduty_url, key.get_secret_value(), settings.notify.timeout_s)

    def send(self, notification: Notification, target: str) -> None:
        self.post(self.url, json=event(notification, self.routing_key))

    def describe(self) -> str:
        return self.url
