"""One module per channel, all behind :class:`.base.Channel`."""

from __future__ import annotations

from typing import Callable

from streams.config import Settings

from .base import Channel, ChannelOff
from .email import EmailChannel
from .pagerduty import PagerDutyChannel
from .slack import SlackChannel
from .sms import SmsChannel
from .webhook import WebhookChannel

FACTORIES: dict[str, Callable[[Settings], Channel]] = {
    cls.name: cls.from_settings for cls in (PagerDutyChannel, SlackChannel, EmailChannel, SmsChannel, WebhookChannel)
}


def build_channels(settings: Settings) -> tuple[dict[str, Channel], dict[str, str]]:
    """The channels that are on, and why each other one is off."""
    on: dict[str, Channel] = {}
    off: dict[str, str] = {}
    for name, factory in FACTORIES.items():
        try:
            on[name] = factory(settings)
        except ChannelOff as exc:
            off[name] = str(exc)
    return on, off
