"""dbopt serve's HTTP API and pages against the real broker and a scratch database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import bcrypt
import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from serve_harness import (
    HASHES,
    KEY,
    PASSWORDS,
    advisor_command,
    firing_alert,
    produce,
    wait_for,
    window,
)
from streams.config import Settings
from streams.execute.audit import Audit
from streams.kafka.consume import assigned_consumer, read_messages
from streams.records import NotificationResult, OptimizationCommand, PoolSnapshot
from streams.serde import Codec
from streams.serve import server

pytestmark = pytest.mark.usefixtures("created_topics")
OLIVIA = ("olivia", PASSWORDS["olivia"])
VIC = ("vic", PASSWORDS["vic"])


def client(running: server.Running, auth: tuple[str, str] | None = OLIVIA) -> httpx.Client:
    return httpx.Client(base_url=running.url, auth=auth, timeout=30)


def commands_on_topic(settings: Settings, count: int) -> list[OptimizationCommand]:
    consumer = assigned_consumer(settings, settings.topics.commands)
    try:
        codec = Codec.from_settings(settings)
        found = [codec.decode_record(m.value()) for m in read_messages(consumer, max_messages=count, idle_timeout=10)
                 if m.error() is None]
    finally:
        consumer.close()
    return [r for r in found if isinstance(r, OptimizationCommand)]


def test_the_view_follows_every_topic(ss: Settings, served: server.Running) -> None:
    now = int(time.time() * 1000)
    alert = firing_alert(now)
    produce(ss, window(8, 20.0, now=now), window(9, 35.0, now=now), window(10, 82.5, now=now),
            window(10, 82.5, now=now, fingerprint="fp-vendor"),
            window(10, 40.0, now=now, service="vendor-api", context="vendor_search"), alert,
            NotificationResult(notification_id=alert.alert_id, source="alert", channel="slack", status="delivered",
                               severity="critical", state="firing", attempts=1, finished_at=now),
            PoolSnapshot(service="notification-service", instance_id="n-1", snapshot_time=now, size=4, max_size=4,
                         in_use=4, idle=0, waiting=3, min_size=1, interval_ms=5000, checkouts=40,
                         checkout_wait_p95_ms=250.0))
    api = client(served)
    rows = wait_for("both contexts", lambda: (r := api.get("/api/contexts").json()) and len(r) == 2 and r)
    booking = rows[0]
    assert (booking["service"], booking["p95_ms"], booking["slo_ms"], booking["colour"]) == (
        "booking-service", 82.5, 50.0, "red")
    assert booking["firing"][0]["alert_id"] == alert.alert_id and rows[1]["colour"] == "green"
    points = api.get("/api/services/booking-service/windows").json()
    assert [p["p95_ms"] for p in points] == [20.0, 35.0, 82.5] and points[-1]["slo_ms"] == 50.0
    assert [p["p95_ms"] for p in api.get("/api/services/booking-service/windows",
                                         params={"fingerprint": "fp-vendor"}).json()] == [82.5]
    alerts = wait_for("the notification", lambda: (a := api.get("/api/alerts").json())["firing"]
                      and a["firing"][0]["notifications"] and a)
    assert alerts["firing"][0]["notifications"][0]["channel"] == "slack"
    pools = wait_for("the pool", lambda: api.get("/api/pools").json()["pools"])
    assert pools[0]["service"] == "notification-service" and pools[0]["waiting"] == 3
    assert api.get("/api/calendar").json()["aggressiveness"] == "recommend"
    for path, text in (("/", "82.5 ms"), ("/services/booking-service", "SLO 50 ms"), ("/alerts", "slack: delivered"),
                       ("/pools", "notification-service"),
                       ("/services/booking-service?fingerprint=fp-vendor", "SELECT * FROM bookings")):
        page = api.get(path)
        assert page.status_code == 200 and text in page.text, path
    assert api.get("/healthz").status_code == 200 and httpx.get(served.url + "/readyz").status_code == 200


def test_who_may_do_what(ss: Settings, served: server.Running) -> None:
    anonymous = client(served, None)
    assert anonymous.get("/api/contexts").status_code == 401
    assert anonymous.get("/api/contexts").headers["www-authenticate"].startswith("Basic")
    page = anonymous.get("/optimizations?command=x", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Foptimizations%3Fcommand%3Dx"
    assert client(served, ("olivia", "wrong")).get("/api/contexts").status_code == 401
    assert anonymous.get("/openapi.json").status_code == 401 and anonymous.get("/metrics").status_code == 401

    viewer = client(served, VIC)
    assert viewer.get("/api/contexts").status_code == 200
    denied = viewer.post("/api/recommendations/abc/approve", json={})
    assert denied.status_code == 403 and "operator" in denied.json()["detail"]
    assert viewer.post("/api/emergency", json={"sql": "ANALYZE bookings", "reason": "x"}).status_code == 403
    operator = client(served)
    assert operator.post("/api/recommendations/abc/approve", json={}).status_code == 404
    forged = operator.post("/recommendations/abc/approve", data={"note": "x"})  # a form without the CSRF token
    assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]

    # the login form: a session cookie, CSRF on every form, the token bound to the session
    browser = client(served, None)
    form = browser.get("/login?next=/alerts")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    assert browser.post("/login", data={"username": "olivia", "password": PASSWORDS["olivia"],
                                        "csrf_token": "wrong"}).status_code == 403
    bad = browser.post("/login", data={"username": "olivia", "password": "nope", "csrf_token": token},
                       follow_redirects=False)
    assert bad.headers["location"].startswith("/login?failed=1")
    good = browser.post("/login", data={"username": "olivia", "password": PASSWORDS["olivia"], "csrf_token": token,
                                        "next": "/alerts"}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/alerts"
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert browser.get("/api/contexts").status_code == 200
    assert browser.post("/api/emergency", json={"sql": "ANALYZE bookings", "reason": "x"}).status_code == 403  # no token

    # the API description, and no secret anywhere
    spec = operator.get("/openapi.json").json()
    assert {"/api/contexts", "/api/services/{service}/windows", "/api/alerts", "/api/optimizations", "/api/pools",
            "/api/analyze", "/api/recommendations/{rec_id}/approve", "/api/recommendations/{rec_id}/dismiss",
            "/healthz", "/readyz"} <= set(spec["paths"])
    secrets = [*HASHES.values(), *PASSWORDS.values(), KEY, "serve-test-session-secret",
               ss.database_url.get_secret_value()]
    for path in ("/", "/alerts", "/optimizations", "/pools", "/services/booking-service", "/api/calendar",
                 "/api/optimizations", "/openapi.json", "/metrics", "/healthz", "/login"):
        for who in (operator, viewer):
            body = who.get(path).text
            assert not [s for s in secrets if s in body], path
    metrics = operator.get("/metrics").text
    assert "dbopt_serve_http_requests_total" in metrics and "dbopt_stage_records_in_total" in metrics


def test_approve_dismiss_emergency_and_history(ss: Settings, served: server.Running) -> None:
    now = int(time.time() * 1000)
    create = advisor_command("CREATE INDEX CONCURRENTLY dbopt_idx_vendor ON bookings (vendor_id)",
                             rollback_sql="DROP INDEX CONCURRENTLY dbopt_idx_vendor", table="public.bookings",
                             service="booking-service", context="booking", fingerprints=["fp1"], p95_before_ms=85.0,
                             cost_before=400.0, cost_after=8.0, reason="index bookings (vendor_id): cost -98%")
    analyze = advisor_command("ANALYZE bookings", action="analyze", table="public.bookings", created_at=now)
    produce(ss, create, analyze)
    operator, viewer = client(served), client(served, VIC)
    wait_for("two recommendations", lambda: len(operator.get("/api/recommendations").json()) == 2)
    rec = operator.get("/api/recommendations").json()[0]
    assert rec["state"] == "pending" and "recommend" in rec["why"]

    assert viewer.post(f"/api/recommendations/{create.command_id}/approve", json={}).status_code == 403
    approved = operator.post(f"/api/recommendations/{create.command_id}/approve", json={"note": "wedding season"})
    assert approved.status_code == 202, approved.text
    sent = approved.json()
    assert "approved by olivia" in sent["reason"] and sent["action"] == "create_index"
    again = operator.post(f"/api/recommendations/{create.command_id}/approve", json={})
    assert again.status_code == 409 and "approved by olivia" in again.json()["detail"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', operator.get("/optimizations").text).group(1)  # type: ignore[union-attr]
    by_form = operator.post(f"/recommendations/{create.command_id}/approve", data={"csrf_token": token})
    assert by_form.status_code == 409 and "<html" in by_form.text and "already approved by olivia" in by_form.text
    dismissed = operator.post(f"/api/recommendations/{analyze.command_id}/dismiss", json={"note": "not now"})
    assert dismissed.status_code == 200 and dismissed.json()["decided_by"] == "olivia"

    assert operator.post("/api/emergency", json={"sql": "VACUUM bookings", "reason": " "}).status_code == 422
    emergency = operator.post("/api/emergency", json={"sql": "VACUUM bookings", "reason": "bloat during the wedding"})
    assert emergency.status_code == 202 and emergency.json()["emergency"] is True

    on_topic = {c.command_id: c for c in commands_on_topic(ss, 4)}
    mine = on_topic[sent["command_id"]]
    assert mine.origin == "operator" and mine.sql == create.sql and mine.fingerprints == ("fp1",)
    assert mine.reason.startswith("approved by olivia in dbopt serve (recommendation ")
    assert on_topic[emergency.json()["command_id"]].emergency
    with psycopg.connect(ss.database_url.get_secret_value(), row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM dbopt.dbopt_serve_decisions ORDER BY decided_at").fetchall()
    assert [(r["recommendation_id"], r["decision"], r["decided_by"], r["command_id"]) for r in rows] == [
        (create.command_id, "approved", "olivia", sent["command_id"]), (analyze.command_id, "dismissed", "olivia", None)]

    # history the topics no longer hold: the executor's audit table
    old = advisor_command("ANALYZE bookings_archive", action="analyze", table="public.bookings_archive",
                          created_at=now - 86_400_000)
    with psycopg.connect(ss.database_url.get_secret_value(), autocommit=True) as conn:
        audit = Audit(conn, ss.executor.audit_schema)
        audit.ensure()
        audit.save(old, "applied", "applied in 4 ms (allowed at aggressiveness moderate)", "executor-1",
                   sql_text=old.sql, table="public.bookings_archive", duration_ms=4.0)
    history = wait_for("the audit row", lambda: next(
        (o for o in operator.get("/api/optimizations").json() if o["command_id"] == old.command_id), None))
    assert history["status"] == "applied" and history["audited"] and history["duration_ms"] == 4.0

    # a new serve process rebuilds the same picture from the topics and the database
    served.close()
    again_served = server.start(ss)
    try:
        fresh = client(again_served)
        decided = wait_for("the decisions again", lambda: {
            x["id"]: (x["state"], x["decision"]["decided_by"])
            for x in fresh.get("/api/recommendations").json() if x["decision"]})
        assert decided == {create.command_id: ("approved", "olivia"), analyze.command_id: ("dismissed", "olivia")}
        assert {o["command_id"] for o in fresh.get("/api/optimizations").json()} >= {
            create.command_id, sent["command_id"], emergency.json()["command_id"], old.command_id}
    finally:
        again_served.close()


def test_analyze_normalizes_literals_first(served: server.Running) -> None:
    answer = client(served, VIC).post(
        "/api/analyze", json={"sql": "SELECT * FROM bookings WHERE vendor_id = 42 AND email = 'bride@example.org'"})
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    assert "42" not in answer.text and "bride@example.org" not in answer.text
    assert "$1" in doc["normalized_sql"] and doc["error"] is None and doc["cost_before"] > 0
    assert any("vendor_id" in c["index"] for c in doc["candidates"])
    assert client(served).post("/api/analyze", json={"sql": "this is not sql"}).status_code == 422


def test_commands_hash_password_and_serve(ss: Settings) -> None:
    hashed = subprocess.run([sys.executable, "-m", "streams.cli", "ui", "hash-password", "--rounds", "10"],
                            input="s3cret pass\n", capture_output=True, text=True, check=True)
    last = hashed.stdout.strip().splitlines()[-1]
    assert bcrypt.checkpw(b"s3cret pass", last.encode()) and "," not in last and ":" not in last
    env = {**os.environ, "DBOPT_KAFKA_BOOTSTRAP": ss.kafka_bootstrap, "DBOPT_DATABASE_URL":
           ss.database_url.get_secret_value(), **{f"DBOPT_TOPIC_{k.upper()}": v for k, v in ss.topics.all().items()}}
    missing = subprocess.run([sys.executable, "-m", "streams.cli", "serve", "--port", "0"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "DBOPT_UI_USERS" in missing.stderr
    env["DBOPT_UI_USERS"] = f"ops:operator:{last}"
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "serve", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = iter(proc.stdout.readline, "")
        url = next(m.group(1) for line in lines if (m := re.search(r"dbopt serve: (http://\S+)", line)))
        assert httpx.get(url + "/api/contexts", auth=("ops", "s3cret pass")).status_code == 200
        wait_for("ready", lambda: httpx.get(url + "/readyz").status_code == 200)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
