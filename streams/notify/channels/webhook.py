"""Generic webhook (``DBOPT_NOTIFY_WEBHOOK_URL``, ``DBOPT_NOTIFY_WEBHOOK_SECRET``).

A JSON POST of the whole notification. ``X-Dbopt-Signature: sha256=<hex>`` is the HMAC-SHA256 of
the exact body bytes with the shared secret; ``X-Dbopt-Delivery`` is the notification id, the
same on every retry, so the receiver can drop a repeat. Any 2xx is success.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from streams.config import Settings

from ..model import Notification
from .base import ChannelOff, HttpChannel

SIGNATURE_HEADER = "X-Dbopt-Signature"
DELIVERY_HEADER = "X-Dbopt-Delivery"


def payload(notification: Notification) -> dict[str, Any]:
    data = notification.to_json()
    data["message"]["facts"] = {label: value for label, value in notification.message.facts}
    return data


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookChannel(HttpChannel):
    name = "webhook"

    def __init__(self, url: str, secret: str, timeout_s: float) -> None:
        super().__init__(timeout_s)
        self.url, self.secret = url, secret.encode()

    @classmethod
    def from_settings(cls, settings: Settings) -> "WebhookChannel":
        n = settings.notify
        if n.webhook_url is None:
            raise ChannelOff("DBOPT_NOTIFY_WEBHOOK_URL is not set")
        if n.webhook_secret is None:
            raise ChannelOff("DBOPT_NOTIFY_WEBHOOK_URL is set but DBOPT_NOTIFY_WEBHOOK_SECRET (the signing key) is not")
        return cls(n.webhook_url.get_secret_value(), n.webhook_secret.get_secret_value(), n.timeout_s)

    def send(self, notification: Notification, target: str) -> None:
        body = json.dumps(payload(notification), separators=(",", ":"), sort_keys=True).encode()
        self.post(self.url, content=body, headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.secret, body),
            DELIVERY_HEADER: notification.notification_id,
        })

    def describe(self) -> str:
        return "JSON POST, HMAC-SHA256 signed (URL hidden: it may hold a token)"
