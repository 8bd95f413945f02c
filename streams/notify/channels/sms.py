"""SMS through Twilio's Messages REST API (``DBOPT_NOTIFY_TWILIO_*``, ``DBOPT_NOTIFY_SMS_FROM``,
``DBOPT_NOTIFY_SMS_TO``).

One form-encoded ``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`` with ``To``,
``From`` and ``Body`` per recipient, HTTP basic auth (Account SID, auth token); Twilio answers
``201`` with the message resource. The body is at most 160 characters (one GSM segment).
Each number is its own delivery (a retry never texts a number twice).
"""

from __future__ import annotations

from streams.config import Settings

from ..model import ALERT_KINDS, Notification
from .base import ChannelOff, HttpChannel, truncate

MAX_BODY = 160


def body(notification: Notification) -> str:
    """The text: state, severity, service, context, the figure; cut to 160 characters."""
    msg = notification.message
    if notification.kind in ALERT_KINDS:
        text = f"dbopt {msg.title}"
    else:
        text = f"dbopt {msg.title}: {msg.summary}"
    return truncate(" ".join(text.split()), MAX_BODY)


class SmsChannel(HttpChannel):
    name = "sms"

    def __init__(self, base_url: str, account_sid: str, auth_token: str, sender: str,
                 recipients: tuple[str, ...], timeout_s: float) -> None:
        super().__init__(timeout_s)
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.auth = (account_sid, auth_token)
        self.sender, self.recipients = sender, recipients

    @classmethod
    def from_settings(cls, settings: Settings) -> "SmsChannel":
        n = settings.notify
        missing = [env for env, value in (("DBOPT_NOTIFY_TWILIO_ACCOUNT_SID", n.twilio_account_sid),
                                          ("DBOPT_NOTIFY_TWILIO_AUTH_TOKEN", n.twilio_auth_token),
                                          ("DBOPT_NOTIFY_SMS_FROM", n.sms_from),
                                          ("DBOPT_NOTIFY_SMS_TO", n.sms_to)) if not value]
        if missing:
            raise ChannelOff(f"{', '.join(missing)} not set")
        assert n.twilio_account_sid and n.twilio_auth_token and n.sms_from
        return cls(n.twilio_url, n.twilio_account_sid, n.twilio_auth_token.get_secret_value(), n.sms_from,
                   tuple(n.sms_to), n.timeout_s)

    def targets(self) -> tuple[str, ...]:
        return self.recipients

    def send(self, notification: Notification, target: str) -> None:
        self.post(self.url, data={"To": target, "From": self.sender, "Body": body(notification)}, auth=self.auth)

    def describe(self) -> str:
        return f"{self.url} from {self.sender} to {len(self.recipients)} number(s)"
