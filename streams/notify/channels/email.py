"""E-mail over SMTP (``DBOPT_NOTIFY_SMTP_URL`` = ``smtp://host:port``, ``DBOPT_NOTIFY_SMTP_STARTTLS``,
``DBOPT_NOTIFY_SMTP_CA_FILE``, ``DBOPT_NOTIFY_SMTP_USER``/``_PASSWORD``, ``DBOPT_NOTIFY_EMAIL_FROM``, ``DBOPT_NOTIFY_EMAIL_TO``).

One message to every recipient, ``multipart/alternative`` with a plain-text and an HTML part.
The ``Message-ID`` is derived from the notification id, the same on every retry, so a mail
system that keeps ids can drop a repeat. SMTP 4xx replies and lost connections are worth a
retry; 5xx replies (a refused sender, a failed login) are not.
"""

from __future__ import annotations

import html
import logging
import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import urlsplit

from streams.config import Settings

from ..model import Notification, digest_of
from .base import Channel, ChannelOff, DeliveryError

log = logging.getLogger("dbopt.notify.email")


def compose(notification: Notification, sender: str, recipients: tuple[str, ...]) -> EmailMessage:
    msg = notification.message
    mail = EmailMessage()
    mail["Subject"] = f"[dbopt] {msg.title}"
    mail["From"] = sender
    mail["To"] = ", ".join(recipients)
    mail["Message-ID"] = f"<{digest_of(notification.notification_id)}@dbopt.notify>"
    mail["X-Dbopt-Notification"] = notification.notification_id
    lines = [msg.summary, "", *(f"{label}: {value}" for label, value in msg.facts)]
    if msg.items:
        lines += ["", *(f"- {item}" for item in msg.items)]
    if msg.statement:
        lines += ["", "Statement (normalized):", f"    {msg.statement}"]
    if msg.link:
        lines += ["", f"Live page: {msg.link}"]
    mail.set_content("\n".join(lines) + "\n")
    rows = "".join(f"<tr><th align='left'>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
                   for label, value in msg.facts)
    parts = [f"<h2>{html.escape(msg.title)}</h2>", f"<p>{html.escape(msg.summary)}</p>", f"<table>{rows}</table>"]
    if msg.items:
        parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in msg.items) + "</ul>")
    if msg.statement:
        parts.append(f"<pre>{html.escape(msg.statement)}</pre>")
    if msg.link:
        parts.append(f"<p><a href=\"{html.escape(msg.link)}\">Open in dbopt</a></p>")
    mail.add_alternative("<html><body>" + "".join(parts) + "</body></html>", subtype="html")
    return mail


class EmailChannel(Channel):
    name = "email"

    def __init__(self, host: str, port: int, sender: str, recipients: tuple[str, ...], *, starttls: bool,
                 user: str | None, password: str | None, timeout_s: float, ca_file: str | None = None) -> None:
        self.host, self.port, self.sender, self.recipients = host, port, sender, recipients
        self.starttls, self.user, self.password, self.timeout_s = starttls, user, password, timeout_s
        self.ca_file = ca_file

    @classmethod
    def from_settings(cls, settings: Settings) -> "EmailChannel":
        n = settings.notify
        missing = [env for env, value in (("DBOPT_NOTIFY_SMTP_URL", n.smtp_url), ("DBOPT_NOTIFY_EMAIL_FROM", n.email_from),
                                          ("DBOPT_NOTIFY_EMAIL_TO", n.email_to)) if not value]
        if missing:
            raise ChannelOff(f"{', '.join(missing)} not set")
        assert n.smtp_url and n.email_from
        url = urlsplit(n.smtp_url)
        if url.scheme != "smtp" or not url.hostname:
            raise ChannelOff(f"DBOPT_NOTIFY_SMTP_URL={n.smtp_url!r} is not smtp://host:port")
        password = n.smtp_password.get_secret_value() if n.smtp_password else None
        return cls(url.hostname, url.port or 25, n.email_from, tuple(n.email_to), starttls=n.smtp_starttls,
                   user=n.smtp_user, password=password, timeout_s=n.timeout_s, ca_file=n.smtp_ca_file)

    def send(self, notification: Notification, target: str) -> None:
        mail = compose(notification, self.sender, self.recipients)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=self.ca_file))
                if self.user:
                    smtp.login(self.user, self.password or "")
                refused = smtp.send_message(mail, from_addr=self.sender, to_addrs=list(self.recipients))
        except smtplib.SMTPRecipientsRefused as exc:  # nobody accepted
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(f"SMTP refused every recipient: {exc.recipients}",
                                retryable=all(400 <= c < 500 for c in codes)) from None
        except smtplib.SMTPResponseException as exc:
            error = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            reason = f"SMTP {exc.smtp_code}: {error}"
            raise DeliveryError(reason, retryable=400 <= exc.smtp_code < 500) from None
        except smtplib.SMTPNotSupportedError as exc:  # e.g. AUTH offered only after STARTTLS: a setting is off
            raise DeliveryError(f"SMTP: {exc} (is DBOPT_NOTIFY_SMTP_STARTTLS needed?)", retryable=False) from None
        except ssl.SSLCertVerificationError as exc:  # the server's certificate is not trusted: a setting is off
            raise DeliveryError(f"SMTP STARTTLS: {exc} (see DBOPT_NOTIFY_SMTP_CA_FILE)", retryable=False) from None
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, timeouts, refused connections
            raise DeliveryError(f"SMTP: {type(exc).__name__}: {exc}", retryable=True) from None
        if refused:
            log.warning("%s: some recipients refused it: %s", notification.notification_id, refused)

    def describe(self) -> str:
        auth = f", login as {self.user}" if self.user else ""
        tls = ", STARTTLS" if self.starttls else ""
        return f"smtp://{self.host}:{self.port}{tls}{auth} from {self.sender} to {len(self.recipients)} address(es)"
