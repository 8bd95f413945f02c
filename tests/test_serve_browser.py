"""dbopt serve in a real browser: Playwright driving Debian's Chromium (``make test`` installs it).

Screenshots of the main pages go to ``<run dir>/screenshots/`` (``.run/screenshots/``), which CI keeps.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright
from prometheus_client import REGISTRY
from psycopg.rows import dict_row

from serve_harness import PASSWORDS, advisor_command, firing_alert, produce, wait_for, window
from streams.config import Settings, run_dir
from streams.execute.agent import run_executor
from streams.execute.executor import Executor
from streams.records import NotificationResult, PoolSnapshot
from streams.serve import server

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = run_dir() / "screenshots"
pytestmark = [
    pytest.mark.usefixtures("created_topics"),
    pytest.mark.skipif(not CHROMIUM.exists() or not shutil.which("chromium"),
                       reason="Debian's chromium is not installed (make test installs it)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # A record reaches the page only after serve's consumer has read it from the broker; on a busy
    # two-core machine that can take longer than Playwright's 5 s default for assertions.
    expect.set_options(timeout=20_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def logged_in(browser: Browser, running: server.Running, name: str, *, hold_events: list[Route] | None = None) -> Page:
    """A page logged in as ``name``; with ``hold_events`` its ``/events`` requests wait there, unsent."""
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    if hold_events is not None:
        page.route("**/events", lambda route: hold_events.append(route))
    page.set_default_timeout(15_000)
    page.goto(running.url + "/")
    expect(page).to_have_url(running.url + "/login?next=%2F")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("form[action='/login'] button")
    expect(page.locator(".who")).to_contain_text(name)
    return page


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_breaching_context_and_a_new_window_without_a_reload(browser: Browser, ss: Settings,
                                                               served: server.Running) -> None:
    now = int(time.time() * 1000)
    alert = firing_alert(now)
    produce(ss, *[window(i, p95, now=now) for i, p95 in ((6, 21.0), (7, 24.5), (8, 38.0), (9, 61.0), (10, 82.5))],
            *[window(i, p95, now=now, fingerprint="9f1c2ab4e0d7a611") for i, p95 in ((8, 40.0), (9, 70.0), (10, 95.0))],
            *[window(i, 30.0 + i, now=now, service="vendor-api", context="vendor_search") for i in (8, 9, 10)],
            window(10, 12.0, now=now, service="guest-service", context="guest_management"), alert,
            NotificationResult(notification_id=alert.alert_id, source="alert", channel="pagerduty", status="delivered",
                               severity="critical", state="firing", attempts=1, finished_at=now),
            PoolSnapshot(service="notification-service", instance_id="n-1", snapshot_time=now, size=4, max_size=4,
                         in_use=4, idle=0, waiting=3, min_size=1, interval_ms=5000, checkouts=40,
                         checkout_wait_p95_ms=250.0))
    page = logged_in(browser, served, "olivia")
    booking = page.locator("tr[data-service='booking-service'][data-context='booking']")
    expect(booking).to_have_attribute("data-colour", "red")
    expect(booking.locator("td.p95")).to_have_text("82.5 ms")
    expect(page.locator("tr[data-service='vendor-api']")).to_have_attribute("data-colour", "green")
    expect(page.locator("#live-status")).to_have_text("live")
    shot(page, "overview")

    page.evaluate("window.notReloaded = true")
    produce(ss, window(11, 123.4, now=now))
    expect(booking.locator("td.p95")).to_have_text("123.4 ms")
    assert page.evaluate("window.notReloaded") is True  # swapped in by the live update, not a reload

    page.goto(served.url + "/services/booking-service?fingerprint=9f1c2ab4e0d7a611")
    expect(page.locator("svg.chart")).to_have_attribute("data-last-p95", "95.0")
    expect(page.locator("pre.sql")).to_contain_text("SELECT * FROM bookings WHERE vendor_id = $1")
    shot(page, "service")
    page.goto(served.url + "/alerts")
    expect(page.locator(f"tr[data-alert='{alert.alert_id}']")).to_contain_text("pagerduty: delivered")
    shot(page, "alerts")
    page.goto(served.url + "/pools")
    expect(page.locator("tr[data-pool='notification-service/default']")).to_contain_text("4/4")
    shot(page, "pools")
    page.close()


def test_a_change_made_before_the_event_stream_opens_is_shown(browser: Browser, ss: Settings,
                                                              served: server.Running) -> None:
    """A window that reaches serve after the page was rendered but before its ``/events`` stream opened
    was announced to nobody; the page fetches its live block when the stream opens (also after a
    reconnect), so it is shown all the same. The stream is held back here to make that gap certain."""
    held: list[Route] = []
    page = logged_in(browser, served, "olivia", hold_events=held)
    expect(page.locator("#live")).to_contain_text("No closed window yet")
    deadline = time.monotonic() + 15
    while not held:  # the route handler runs while Playwright waits, not in time.sleep
        assert time.monotonic() < deadline, "the page did not request its event stream"
        page.wait_for_timeout(100)

    now = int(time.time() * 1000)
    produce(ss, window(10, 82.5, now=now))
    wait_for("serve's view to hold the window", served.parts.view.contexts)
    time.sleep(1.0)  # its announcement has gone out, to no open stream
    held[-1].continue_()
    page.unroute("**/events")  # a reconnection is not held
    expect(page.locator("#live-status")).to_have_text("live")
    booking = page.locator("tr[data-service='booking-service'][data-context='booking']")
    expect(booking.locator("td.p95")).to_have_text("82.5 ms")
    page.close()


def test_a_viewer_sees_no_approve_button_and_gets_403(browser: Browser, ss: Settings, served: server.Running) -> None:
    create = advisor_command("CREATE INDEX CONCURRENTLY dbopt_idx_status ON bookings (status)",
                             table="public.bookings")
    produce(ss, create)
    context = browser.new_context(http_credentials={"username": "vic", "password": PASSWORDS["vic"], "send": "always"})
    page = context.new_page()
    page.goto(served.url + "/basic-login?next=/optimizations")  # the browser answers the 401 challenge
    row = page.locator(f"tr[data-recommendation='{create.command_id}']")
    expect(row).to_contain_text("an operator decides")
    expect(page.locator("button.approve")).to_have_count(0)
    expect(page.locator("#emergency-form")).to_have_count(0)
    answer = context.request.post(f"{served.url}/api/recommendations/{create.command_id}/approve", data={})
    assert answer.status == 403 and "operator" in answer.json()["detail"]
    context.close()


def test_an_operators_approval_is_applied_and_shown(browser: Browser, ss: Settings, served: server.Running) -> None:
    executor = Executor(ss)
    worker = threading.Thread(target=run_executor, args=(executor,), daemon=True)
    worker.start()
    try:
        create = advisor_command(
            "CREATE INDEX CONCURRENTLY dbopt_idx_bookings_vendor ON bookings (vendor_id)",
            rollback_sql="DROP INDEX CONCURRENTLY dbopt_idx_bookings_vendor", table="public.bookings",
            service="booking-service", context="booking", fingerprints=["9f1c2ab4e0d7a611"], p95_before_ms=82.5,
            cost_before=431.0, cost_after=8.3, reason="index bookings (vendor_id): plan cost -98%")
        produce(ss, create)
        page = logged_in(browser, served, "olivia")
        page.goto(served.url + "/optimizations")
        row = page.locator(f"tr[data-recommendation='{create.command_id}']")
        expect(row).to_contain_text("executor: deferred")  # the executor in recommend mode waits for a person
        shot(page, "recommendations")
        row.locator("button.approve").click()
        expect(page).to_have_url(re.compile(r"/optimizations\?command=\w+$"))
        approved_id = page.url.rsplit("=", 1)[1]
        result = page.locator(f"tr[data-command='{approved_id}']")
        expect(result).to_have_attribute("data-status", "applied", timeout=30_000)
        expect(result).to_contain_text("approved by olivia")
        shot(page, "optimizations")
        with psycopg.connect(ss.database_url.get_secret_value(), row_factory=dict_row) as conn:
            audit = conn.execute("SELECT status, origin, command FROM dbopt.dbopt_audit WHERE command_id = %s",
                                 (approved_id,)).fetchone()
        assert audit is not None and (audit["status"], audit["origin"]) == ("applied", "operator")
        assert audit["command"]["reason"].startswith("approved by olivia in dbopt serve")
        # the executor's metrics counted both results and saw its database
        assert (REGISTRY.get_sample_value("dbopt_executor_results_total", {"status": "applied"}) or 0) >= 1
        assert (REGISTRY.get_sample_value("dbopt_executor_results_total", {"status": "deferred"}) or 0) >= 1
        assert REGISTRY.get_sample_value("dbopt_executor_db_up") == 1
        page.close()
    finally:
        executor.stop.set()
        worker.join(timeout=30)
