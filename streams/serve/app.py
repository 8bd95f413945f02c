"""The ASGI application of ``dbopt serve`` (FastAPI): pages, the JSON API, live updates, probes.

Pages are rendered on the server (Jinja2, templates and assets inside the package, nothing from
elsewhere). Each page's live part is re-fetched by ``static/live.js`` when the server-sent events
stream (``/events``) says that something it shows changed, so a new window reaches an open page
without a reload.

Who may do what (:mod:`.auth`): every route but the probes needs a user, by HTTP basic auth or by
the login form's session cookie (signed, HttpOnly, SameSite=Strict); a page without one is sent to
``/login``, an API call gets 401. State-changing routes need the ``operator`` role (403 otherwise)
and a CSRF token: the session's token in the form field ``csrf_token`` or the ``X-CSRF-Token``
header. An API client on basic auth may instead send ``Content-Type: application/json`` (no
browser sends that cross-site without CORS, which serve never allows). No page or answer carries
a secret: not the password hashes, the command key, the session key or the database password.
"""


# no `from __future__ import annotations` here: FastAPI reads the dependency aliases defined inside
# create_app (Viewer, Operator) from the evaluated annotations
import asyncio
import base64
import binascii
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware

from streams.config import Settings
from streams.kafka.health import Health
from streams.pools.cli import as_json as pools_json

from . import chart
from .actions import ActionError, Actions, analyze
from .auth import Authenticator, User, csrf_matches, new_csrf_token
from .view import (
    AlertsView,
    CalendarState,
    ContextRow,
    Optimization,
    Recommendation,
    View,
    WindowPoint,
)

REALM = 'Basic realm="dbopt serve", charset="UTF-8"'
SESSION_COOKIE = "dbopt_session"
LIVE_HEADER = "x-dbopt-fragment"
KEEPALIVE_S = 15.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
REQUESTS = Counter("dbopt_serve_http_requests", "HTTP requests answered by dbopt serve, by method and status.",
                   ["method", "status"])
LIVE_CLIENTS = Gauge("dbopt_serve_live_clients", "Open live-update streams (/events) of dbopt serve.")


class NotAuthenticated(Exception):
    """No user: a page goes to the login form, everything else gets 401."""


class Broadcaster:
    """Tells every open ``/events`` stream what changed; ``publish`` may be called from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: set[asyncio.Queue[set[str]]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, kinds: set[str]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fanout, set(kinds))

    def _fanout(self, kinds: set[str]) -> None:
        for queue in self._queues:
            queue.put_nowait(kinds)

    def open(self) -> asyncio.Queue[set[str]]:
        queue: asyncio.Queue[set[str]] = asyncio.Queue()
        self._queues.add(queue)
        LIVE_CLIENTS.set(len(self._queues))
        return queue

    def close(self, queue: asyncio.Queue[set[str]]) -> None:
        self._queues.discard(queue)
        LIVE_CLIENTS.set(len(self._queues))


@dataclass
class Parts:
    """What the application works with (built by :mod:`.server`)."""

    settings: Settings
    view: View
    actions: Actions
    authenticator: Authenticator
    health: Health
    broadcaster: Broadcaster
    stopping: threading.Event
    session_secret: str


# --- API models ---------------------------------------------------------------------------------


class AnalyzeIn(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="One statement; its literals are replaced by $n "
                     "before anything else happens and are never kept")


class DecisionIn(BaseModel):
    note: str = Field("", max_length=500, description="Why (kept with the decision; an approval's command says it)")


class EmergencyIn(BaseModel):
    sql: str = Field(min_length=1, max_length=10_000, description="One allowlisted statement")
    reason: str = Field(min_length=1, max_length=500, description="Why now (kept in the command and its audit row)")


class DecisionOut(BaseModel):
    recommendation_id: str
    decision: str
    decided_by: str
    decided_at: int
    command_id: str | None


class CommandOut(BaseModel):
    command_id: str
    action: str
    sql: str
    emergency: bool
    reason: str


# --- template helpers ---------------------------------------------------------------------------


def _formatters(timezone: str) -> dict[str, Callable[..., Any]]:
    zone = ZoneInfo(timezone)

    def ms(value: float | None, digits: int = 1) -> str:
        return "–" if value is None else f"{value:,.{digits}f} ms"

    def clock(value: int | None) -> str:
        return "–" if not value else datetime.fromtimestamp(value / 1000, zone).strftime("%H:%M:%S")

    def when(value: int | None) -> str:
        return "–" if not value else datetime.fromtimestamp(value / 1000, zone).strftime("%Y-%m-%d %H:%M:%S")

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{value:.1%}"

    def cost(value: float | None) -> str:
        return "–" if value is None else f"{value:,.0f}"

    return {"ms": ms, "clock": clock, "when": when, "pct": pct, "cost": cost}


def create_app(parts: Parts) -> FastAPI:
    settings, view, actions, auth = parts.settings, parts.view, parts.actions, parts.authenticator
    env = Environment(loader=PackageLoader("streams.serve", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(_formatters(settings.timezone))
    env.globals["chart"] = lambda c: Markup(chart.render(c, settings.timezone))  # its texts are escaped inside

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        parts.broadcaster.bind(asyncio.get_running_loop())
        yield

    app = FastAPI(title="dbopt serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, description="The live view of dbopt and the decisions it leaves to people. "
                  "Every route but /healthz and /readyz needs HTTP basic auth (or the login session).")
    app.add_middleware(SessionMiddleware, secret_key=parts.session_secret, session_cookie=SESSION_COOKIE,
                       max_age=settings.serve.session_max_age_s, same_site="strict",
                       https_only=settings.serve.cookie_secure)
    app.mount("/static", StaticFiles(packages=[("streams.serve", "static")]), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        REQUESTS.labels(request.method, str(response.status_code)).inc()
        return response

    # --- who --------------------------------------------------------------------------------------

    async def current_user(request: Request) -> User:
        user = auth.user(request.session.get("user"))
        if user is not None:
            request.state.via = "session"
            return user
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic" and encoded:
            try:
                name, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise NotAuthenticated() from None
            user = await run_in_threadpool(auth.authenticate, name, password)
            if user is not None:
                request.state.via = "basic"
                return user
        raise NotAuthenticated()

    Viewer = Annotated[User, Depends(current_user)]

    async def operator(request: Request, user: Viewer) -> User:
        if not user.operator:
            raise HTTPException(403, f"{user.name} is a {user.role}: only an operator may change anything")
        token = request.headers.get("x-csrf-token")
        if token is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            token = str((await request.form()).get("csrf_token") or "")
        json_api = request.headers.get("content-type", "").split(";")[0].strip() == "application/json"
        if not (request.state.via == "basic" and json_api) and not csrf_matches(request.session.get("csrf"), token):
            raise HTTPException(403, "CSRF token missing or wrong: reload the page (API clients on basic auth: "
                                "send Content-Type: application/json)")
        return user

    Operator = Annotated[User, Depends(operator)]

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, _exc: NotAuthenticated) -> Response:
        if request.method == "GET" and _wants_page(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return JSONResponse({"detail": "authentication required (HTTP basic auth, or log in at /login)"},
                            status_code=401, headers={"WWW-Authenticate": REALM})

    @app.exception_handler(ActionError)
    async def action_error(request: Request, exc: ActionError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        response = page(request, "error", None, message=exc.message)  # a form's answer: a page
        response.status_code = exc.status
        return response

    def csrf(request: Request) -> str:
        token = request.session.get("csrf")
        if not token:
            token = request.session["csrf"] = new_csrf_token()
        return str(token)

    def page(request: Request, name: str, user: User | None, **context: Any) -> HTMLResponse:
        live = request.headers.get(LIVE_HEADER) == "1"
        template = env.get_template(f"{name}_live.html" if live else f"{name}.html")
        body = template.render(user=user, csrf=csrf(request), path=request.url.path, settings_view=_public(settings),
                               calendar=view.calendar_state(), **context)
        return HTMLResponse(body)

    # --- probes and metrics -------------------------------------------------------------------

    @app.get("/healthz", include_in_schema=True, tags=["probes"], summary="live: the loop turns")
    def healthz() -> JSONResponse:
        return JSONResponse(parts.health.describe(), status_code=200 if parts.health.live else 503)

    @app.get("/readyz", tags=["probes"], summary="ready: following the topics")
    def readyz() -> JSONResponse:
        return JSONResponse(parts.health.describe(), status_code=200 if parts.health.ready else 503)

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics (any user)")
    def metrics(_user: Viewer) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_user: Viewer) -> JSONResponse:
        return JSONResponse(app.openapi())

    # --- login ----------------------------------------------------------------------------------

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/", failed: int = 0) -> HTMLResponse:  # noqa: A002
        return page(request, "login", None, next=_local(next), failed=bool(failed))

    @app.get("/basic-login", include_in_schema=False)
    async def basic_login(request: Request, next: str = "/") -> Response:  # noqa: A002
        """The browser's own basic-auth prompt instead of the form: a 401 challenge until it sends
        a user (at the site's root, so the browser then sends it with every page)."""
        try:
            await current_user(request)
        except NotAuthenticated:
            return JSONResponse({"detail": "authentication required"}, status_code=401,
                                headers={"WWW-Authenticate": REALM})
        return RedirectResponse(_local(next), status_code=303)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        target = _local(str(form.get("next") or "/"))
        if not csrf_matches(request.session.get("csrf"), str(form.get("csrf_token") or "")):
            raise HTTPException(403, "CSRF token missing or wrong: reload the login page")
        user = await run_in_threadpool(auth.authenticate, str(form.get("username") or ""),
                                       str(form.get("password") or ""))
        if user is None:
            return RedirectResponse(f"/login?failed=1&next={quote(target, safe='')}", status_code=303)
        request.session.clear()
        request.session.update(user=user.name, csrf=new_csrf_token())
        return RedirectResponse(target, status_code=303)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request, _user: Viewer) -> Response:
        form = await request.form()
        if not csrf_matches(request.session.get("csrf"), str(form.get("csrf_token") or "")):
            raise HTTPException(403, "CSRF token missing or wrong")
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # --- pages ----------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def overview(request: Request, user: Viewer) -> HTMLResponse:
        return page(request, "overview", user, rows=view.contexts(), alerts=view.alerts(),
                    pending=[r for r in view.recommendations() if r.state == "pending"])

    @app.get("/services/{service}", include_in_schema=False)
    def service_page(request: Request, user: Viewer, service: str, fingerprint: str | None = None) -> HTMLResponse:
        return page(request, "service", user, detail=view.service(service, fingerprint or None))

    @app.get("/alerts", include_in_schema=False)
    def alerts_page(request: Request, user: Viewer) -> HTMLResponse:
        return page(request, "alerts", user, alerts=view.alerts())

    @app.get("/optimizations", include_in_schema=False)
    def optimizations_page(request: Request, user: Viewer, command: str | None = None) -> HTMLResponse:
        return page(request, "optimizations", user, optimizations=view.optimizations(),
                    recommendations=view.recommendations(), selected=command)

    @app.get("/pools", include_in_schema=False)
    def pools_page(request: Request, user: Viewer) -> HTMLResponse:
        pools, budgets, as_of = view.pools()
        return page(request, "pools", user, pools=pools, budgets=budgets, as_of=as_of)

    @app.post("/recommendations/{rec_id}/approve", include_in_schema=False)
    async def approve_form(request: Request, user: Operator, rec_id: str) -> Response:
        note = str((await request.form()).get("note") or "")
        _, record = await run_in_threadpool(actions.approve, rec_id, user, note)
        return RedirectResponse(f"/optimizations?command={record.command_id}", status_code=303)

    @app.post("/recommendations/{rec_id}/dismiss", include_in_schema=False)
    async def dismiss_form(request: Request, user: Operator, rec_id: str) -> Response:
        note = str((await request.form()).get("note") or "")
        await run_in_threadpool(actions.dismiss, rec_id, user, note)
        return RedirectResponse(f"/optimizations?command={rec_id}", status_code=303)

    @app.post("/emergency", include_in_schema=False)
    async def emergency_form(request: Request, user: Operator) -> Response:
        form = await request.form()
        record = await run_in_threadpool(actions.emergency, str(form.get("sql") or ""),
                                         str(form.get("reason") or ""), user)
        return RedirectResponse(f"/optimizations?command={record.command_id}", status_code=303)

    @app.get("/events", include_in_schema=False)
    async def events(_user: Viewer) -> Response:
        async def stream() -> AsyncIterator[str]:
            queue = parts.broadcaster.open()
            try:
                yield "retry: 2000\n: connected\n\n"
                idle = 0.0
                while not parts.stopping.is_set():
                    try:
                        kinds = await asyncio.wait_for(queue.get(), timeout=1.0)
                    except TimeoutError:
                        idle += 1.0
                        if idle >= KEEPALIVE_S:
                            idle = 0.0
                            yield ": keep-alive\n\n"
                        continue
                    while not queue.empty():
                        kinds |= queue.get_nowait()
                    idle = 0.0
                    yield f"event: update\ndata: {json.dumps(sorted(kinds))}\n\n"
            finally:
                parts.broadcaster.close(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # --- the API ----------------------------------------------------------------------------------

    @app.get("/api/contexts", tags=["view"], summary="every (service, context) now: p95 against its SLO, traffic, "
             "error share, colour, firing alerts")
    def api_contexts(_user: Viewer) -> list[ContextRow]:
        return view.contexts()

    @app.get("/api/calendar", tags=["view"], summary="season, freeze day, wedding-day criticality, aggressiveness")
    def api_calendar(_user: Viewer) -> CalendarState:
        return view.calendar_state()

    @app.get("/api/services/{service}/windows", tags=["view"],
             summary="closed tumbling windows of a service's context rows, or of one fingerprint")
    def api_windows(_user: Viewer, service: str, fingerprint: str | None = None,
                    context: str | None = None) -> list[WindowPoint]:
        return view.windows(service, fingerprint or None, context)

    @app.get("/api/alerts", tags=["view"], summary="alert conditions, firing and resolved, with what was notified")
    def api_alerts(_user: Viewer) -> AlertsView:
        return view.alerts()

    @app.get("/api/optimizations", tags=["view"], summary="every command with its results, before/after, verdict")
    def api_optimizations(_user: Viewer) -> list[Optimization]:
        return view.optimizations()

    @app.get("/api/recommendations", tags=["decisions"], summary="what waits for a person, and what was decided")
    def api_recommendations(_user: Viewer) -> list[Recommendation]:
        return view.recommendations()

    @app.get("/api/pools", tags=["view"], summary="connection pools and server budgets, as the worker judges them")
    def api_pools(_user: Viewer) -> dict[str, Any]:
        pools, budgets, as_of = view.pools()
        return pools_json(pools, budgets, as_of)

    @app.post("/api/analyze", tags=["analysis"], summary="the advisor's analysis of one statement (literals "
              "normalized first, never stored): candidates, HypoPG costs, decision")
    async def api_analyze(body: AnalyzeIn, _user: Viewer) -> dict[str, Any]:
        return await run_in_threadpool(analyze, settings, body.sql)

    @app.post("/api/recommendations/{rec_id}/approve", tags=["decisions"], status_code=202,
              summary="operator: send the recommended statement as your signed command")
    async def api_approve(rec_id: str, user: Operator, body: DecisionIn | None = None) -> CommandOut:
        _, record = await run_in_threadpool(actions.approve, rec_id, user, body.note if body else "")
        return CommandOut(command_id=record.command_id, action=record.action, sql=record.sql,
                          emergency=record.emergency, reason=record.reason)

    @app.post("/api/recommendations/{rec_id}/dismiss", tags=["decisions"],
              summary="operator: dismiss a recommendation (nothing is sent)")
    async def api_dismiss(rec_id: str, user: Operator, body: DecisionIn | None = None) -> DecisionOut:
        decision = await run_in_threadpool(actions.dismiss, rec_id, user, body.note if body else "")
        return DecisionOut(recommendation_id=decision.recommendation_id, decision=decision.decision,
                           decided_by=decision.decided_by, decided_at=decision.decided_at,
                           command_id=decision.command_id)

    @app.post("/api/emergency", tags=["decisions"], status_code=202,
              summary="operator: send an emergency command (passes the freeze-day rule) with a reason")
    async def api_emergency(body: EmergencyIn, user: Operator) -> CommandOut:
        record = await run_in_threadpool(actions.emergency, body.sql, body.reason, user)
        return CommandOut(command_id=record.command_id, action=record.action, sql=record.sql,
                          emergency=record.emergency, reason=record.reason)

    @app.get("/robots.txt", include_in_schema=False)
    def robots() -> PlainTextResponse:
        return PlainTextResponse("User-agent: *\nDisallow: /\n")

    return app


def _wants_page(request: Request) -> bool:
    path = request.url.path
    return not path.startswith(("/api/", "/events", "/metrics", "/openapi.json")) and \
        request.headers.get(LIVE_HEADER) != "1"


def _local(target: str) -> str:
    """Only a path on this site (``/...``, not ``//host``) is a place to go back to after the login."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _public(settings: Settings) -> dict[str, Any]:
    """The few settings a page shows (never a secret)."""
    return {"aggressiveness": settings.executor.aggressiveness, "timezone": settings.timezone,
            "retention_h": settings.serve.retention_s / 3600}
