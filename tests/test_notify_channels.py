"""Each channel against a real local server that records what it receives: the request is the
shape the real API documents (Slack incoming webhook + Block Kit, PagerDuty Events API v2,
Twilio Messages, SMTP with plain and HTML parts, a signed webhook), and each answer is judged
right (delivered, worth a retry, or not)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from notify_servers import RecordingServer, Reply, SmtpServer, free_port
from streams.config import NotifySettings, Settings
from streams.domain.calendar import Calendar
from streams.notify.channels import build_channels
from streams.notify.channels.base import DeliveryError
from streams.notify.channels.email import EmailChannel
from streams.notify.channels.pagerduty import PagerDutyChannel
from streams.notify.channels.slack import SlackChannel
from streams.notify.channels.sms import SmsChannel
from streams.notify.channels.webhook import WebhookChannel
from streams.notify.model import from_alert, from_result
from test_notify_core import SATURDAY, alert, result

CAL = Calendar()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    yield srv
    srv.close()


def settings_with(**notify: object) -> Settings:
    return Settings().with_overrides(notify=NotifySettings(**notify))


def test_slack_block_kit(server: RecordingServer) -> None:
    channel = SlackChannel.from_settings(settings_with(slack_webhook_url=f"{server.url}/services/T0/B0/XXX"))
    n = from_alert(alert("critical", at=SATURDAY), CAL, ui_url="https://dbopt.example")
    channel.send(n, "")
    (req,) = server.requests
    assert req.path == "/services/T0/B0/XXX" and req.headers["content-type"] == "application/json"
    body = req.json()
    assert body["text"] == n.message.title
    header, lead, fields, statement, actions, context = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": n.message.title, "emoji": True}}
    assert lead["type"] == "section" and lead["text"]["type"] == "mrkdwn" and "booking-service" in lead["text"]["text"]
    assert fields["type"] == "section" and 1 <= len(fields["fields"]) <= 10
    assert {"type": "mrkdwn", "text": "*Wedding day*\n4 critical"} in fields["fields"]
    assert statement["text"]["text"] == "```SELECT * FROM bookings WHERE wedding_id = $1```"
    assert actions["elements"][0]["type"] == "button" and actions["elements"][0]["url"].startswith("https://dbopt.example/")
    assert context["type"] == "context" and n.notification_id in context["elements"][0]["text"]
    long = from_alert(alert("critical", service="s" * 300), CAL)
    channel.send(long, "")
    assert len(server.requests[-1].json()["blocks"][0]["text"]["text"]) == 150  # Block Kit's header limit
    channel.close()


def test_pagerduty_trigger_and_resolve_share_the_dedup_key(server: RecordingServer) -> None:
    server.set_default(Reply(202, b'{"status":"success","message":"Event processed","dedup_key":"x"}'))
    channel = PagerDutyChannel.from_settings(settings_with(pagerduty_url=f"{server.url}/v2/enqueue",
                                                           pagerduty_routing_key="R0UTINGKEY"))
    firing = from_alert(alert("high", "firing", at=SATURDAY), CAL)
    resolved = from_alert(alert("high", "resolved", at=SATURDAY + 300_000), CAL)
    channel.send(firing, "")
    channel.send(resolved, "")
    trigger, resolve = (r.json() for r in server.requests)
    assert all(r.path == "/v2/enqueue" for r in server.requests)
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == firing.condition_key
    assert trigger["routing_key"] == resolve["routing_key"] == "R0UTINGKEY"
    payload = trigger["payload"]
    assert payload["summary"] == firing.message.title and len(payload["summary"]) <= 1024
    assert payload["severity"] == "error"  # high -> PagerDuty's error
    assert payload["source"] == "booking-service" and payload["component"] == "booking"
    assert payload["timestamp"] == "2026-05-02T14:03:07.125+00:00"
    assert payload["custom_details"]["statement"] == "SELECT * FROM bookings WHERE wedding_id = $1"
    assert set(resolve) == {"routing_key", "event_action", "dedup_key"}
    channel.send(from_alert(alert("critical"), CAL), "")
    assert server.requests[-1].json()["payload"]["severity"] == "critical"


def test_twilio_messages_api(server: RecordingServer) -> None:
    server.set_default(Reply(201, b'{"sid": "SM123", "status": "queued"}', (("Content-Type", "application/json"),)))
    channel = SmsChannel.from_settings(settings_with(
        twilio_url=server.url, twilio_account_sid="AC0123", twilio_auth_token="t0ken", sms_from="+15550001",
        sms_to="+15550100, +15550101"))
    assert channel.targets() == ("+15550100", "+15550101")
    n = from_alert(alert("critical", service="booking-service-with-a-rather-long-name" * 3), CAL)
    channel.send(n, "+15550101")
    (req,) = server.requests
    assert req.path == "/2010-04-01/Accounts/AC0123/Messages.json"
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"AC0123:t0ken").decode()
    form = req.form()
    assert set(form) == {"To", "From", "Body"} and form["To"] == "+15550101" and form["From"] == "+15550001"
    assert len(form["Body"]) == 160 and form["Body"].startswith("dbopt FIRING critical")


def test_webhook_is_signed(server: RecordingServer) -> None:
    channel = WebhookChannel.from_settings(settings_with(webhook_url=f"{server.url}/hook", webhook_secret="s3cret"))
    n = from_result(result("applied"), CAL)
    channel.send(n, "")
    (req,) = server.requests
    expected = "sha256=" + hmac.new(b"s3cret", req.body, hashlib.sha256).hexdigest()
    assert req.headers["x-dbopt-signature"] == expected
    assert req.headers["x-dbopt-delivery"] == "result:cmd-1:applied"
    body = req.json()
    assert body["notification_id"] == "result:cmd-1:applied" and body["kind"] == "result"
    assert body["message"]["facts"]["Command"] == "cmd-1"


def test_email_plain_and_html_with_login() -> None:
    smtp = SmtpServer(login=("dbopt", "pw"))
    try:
        channel = EmailChannel.from_settings(settings_with(
            smtp_url=smtp.url, smtp_user="dbopt", smtp_password="pw", email_from="dbopt@example.com",
            email_to="oncall@example.com,ops@example.com"))
        n = from_alert(alert("high", at=SATURDAY), CAL, ui_url="https://dbopt.example")
        channel.send(n, "")
        (mail,) = smtp.delivered()
        assert mail.sender == "dbopt@example.com" and mail.recipients == ["oncall@example.com", "ops@example.com"]
        assert mail.message["Subject"].strip() == f"[dbopt] {n.message.title}"  # folded: a long line
        assert mail.message["Message-ID"].endswith("@dbopt.notify>")
        plain = mail.message.get_body(("plain",)).get_content()
        html = mail.message.get_body(("html",)).get_content()
        assert "Wedding day: 4 critical" in plain and "SELECT * FROM bookings WHERE wedding_id = $1" in plain
        assert "<th align='left'>Service</th><td>booking-service</td>" in html and "https://dbopt.example/" in html
    finally:
        smtp.close()


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it, made with openssl."""
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run = lambda *args: subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=dbopt test CA",
        "-keyout", ca_key, "-out", ca)
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr)
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", cert)
    return ca, cert, key


def test_email_starttls_with_login_verified_by_the_configured_ca(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    smtp = SmtpServer(login=("dbopt", "pw"), tls=context)  # refuses AUTH and MAIL before STARTTLS
    try:
        common = dict(smtp_url=smtp.url, smtp_user="dbopt", smtp_password="pw", email_from="dbopt@example.com",
                      email_to="oncall@example.com")
        plain = EmailChannel.from_settings(settings_with(**common))
        with pytest.raises(DeliveryError) as refused:  # without STARTTLS the server says no
            plain.send(from_alert(alert("high", at=SATURDAY), CAL), "")
        assert not refused.value.retryable
        untrusted = EmailChannel.from_settings(settings_with(**common, smtp_starttls=True))
        with pytest.raises(DeliveryError) as unverified:  # the system CA store does not know the test CA
            untrusted.send(from_alert(alert("high", at=SATURDAY), CAL), "")
        assert "CERTIFICATE_VERIFY_FAILED" in str(unverified.value) and not unverified.value.retryable
        assert not smtp.delivered()
        channel = EmailChannel.from_settings(settings_with(**common, smtp_starttls=True, smtp_ca_file=str(ca)))
        channel.send(from_alert(alert("high", at=SATURDAY), CAL), "")
        (mail,) = smtp.delivered()
        assert mail.recipients == ["oncall@example.com"]
    finally:
        smtp.close()


def test_smtp_temporary_and_permanent_failures() -> None:
    smtp = SmtpServer()
    try:
        channel = EmailChannel.from_settings(settings_with(smtp_url=smtp.url, email_from="a@b", email_to="c@d"))
        smtp.script.extend(["451 4.3.0 try again later", "554 5.7.1 rejected"])
        n = from_alert(alert("high"), CAL)
        with pytest.raises(DeliveryError) as temporary:
            channel.send(n, "")
        with pytest.raises(DeliveryError) as permanent:
            channel.send(n, "")
        assert temporary.value.retryable and not permanent.value.retryable
        channel.send(n, "")
        assert len(smtp.delivered()) == 1
    finally:
        smtp.close()


def test_answers_are_judged(server: RecordingServer) -> None:
    channel = SlackChannel(f"{server.url}/hook", timeout_s=0.3)
    n = from_alert(alert("warning"), CAL)
    server.script(Reply(500, b"rollup_error"), Reply(429, b"", (("Retry-After", "7"),)),
                  Reply(404, b"no_service"), Reply(200, delay_s=1.0))
    errors = []
    for _ in range(4):
        with pytest.raises(DeliveryError) as info:
            channel.send(n, "")
        errors.append(info.value)
    assert [e.retryable for e in errors] == [True, True, False, True]
    assert errors[0].reason == "HTTP 500: rollup_error"
    assert errors[1].retry_after_s == 7.0
    assert errors[2].reason == "HTTP 404: no_service"
    assert errors[3].reason.startswith("timeout")
    channel.send(n, "")  # the default answer: 200 ok
    with pytest.raises(DeliveryError) as refused:
        SlackChannel(f"http://127.0.0.1:{free_port()}/hook", timeout_s=1).send(n, "")
    assert refused.value.retryable and refused.value.reason.startswith("connection failed")


def test_a_channel_without_its_settings_is_off() -> None:
    on, off = build_channels(settings_with(slack_webhook_url="http://127.0.0.1:1/x", webhook_url="http://127.0.0.1:1/y"))
    assert set(on) == {"slack"}
    assert off["pagerduty"] == "DBOPT_NOTIFY_PAGERDUTY_ROUTING_KEY is not set"
    assert "DBOPT_NOTIFY_WEBHOOK_SECRET" in off["webhook"]
    assert off["sms"].startswith("DBOPT_NOTIFY_TWILIO_ACCOUNT_SID, DBOPT_NOTIFY_TWILIO_AUTH_TOKEN")
    assert off["email"] == "DBOPT_NOTIFY_SMTP_URL, DBOPT_NOTIFY_EMAIL_FROM, DBOPT_NOTIFY_EMAIL_TO not set"
