"""Slack incoming webhook (``DBOPT_NOTIFY_SLACK_WEBHOOK_URL``): a Block Kit message.

The webhook takes ``{"text": ..., "blocks": [...]}`` as JSON and answers ``200 ok``; errors are
4xx with a short code (``invalid_payload``, ``no_service``, ``channel_not_found``...), 429 with
``Retry-After`` when rate limited, 5xx. ``text`` is the fallback shown in notifications. Block Kit
limits are respected: header text 150 characters, section text 3000, at most 10 section fields of
2000 characters each.
"""

from __future__ import annotations

from typing import Any

from streams.config import Settings

from ..model import Notification
from .base import ChannelOff, HttpChannel, truncate

EMOJI = {"critical": ":rotating_light:", "high": ":warning:", "warning": ":large_yellow_circle:",
         "info": ":information_source:"}


def blocks(notification: Notification) -> dict[str, Any]:
    """The webhook payload."""
    msg = notification.message
    icon = ":white_check_mark:" if notification.state == "resolved" else EMOJI[notification.severity]
    body: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(msg.title, 150), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(f"{icon} {msg.summary}", 3000)}},
    ]
    if msg.facts:
        body.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": truncate(f"*{label}*\n{value}", 2000)} for label, value in msg.facts[:10]
        ]})
    if msg.items:
        body.append({"type": "section", "text": {"type": "mrkdwn",
                                                  "text": truncate("\n".join(f"• {i}" for i in msg.items), 3000)}})
    if msg.statement:
        body.append({"type": "section", "text": {"type": "mrkdwn", "text": truncate(f"```{msg.statement}```", 3000)}})
    if msg.link:
        body.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in dbopt"}, "url": msg.link}
        ]})
    body.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"dbopt · {notification.kind} · `{notification.notification_id}`"}
    ]})
    return {"text": truncate(msg.title, 3000), "blocks": body}


class SlackChannel(HttpChannel):
    name = "slack"

    def __init__(self, webhook_url: str, timeout_s: float) -> None:
        super().__init__(timeout_s)
        self.url = webhook_url

    @classmethod
    def from_settings(cls, settings: Settings) -> "SlackChannel":
        url = settings.notify.slack_webhook_url
        if url is None:
            raise ChannelOff("DBOPT_NOTIFY_SLACK_WEBHOOK_URL is not set")
        return cls(url.get_secret_value(), settings.notify.timeout_s)

    def send(self, notification: Notification, target: str) -> None:
        self.post(self.url, json=blocks(notification))

    def describe(self) -> str:
        return "incoming webhook (URL hidden: it holds the token)"
