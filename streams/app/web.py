"""The worker's HTTP surface: ``/metrics``, ``/healthz`` and ``/readyz``, nothing else.

Faust's web server serves built-in views by default: ``/router`` (the cluster's topology),
``/table`` (table *contents*: the windows and the detector's state), ``/`` (statistics or a
status page) and, in debug mode, ``/graph``. The worker gives its web server an empty blueprint
manager instead, so only the pages registered here answer and every other path is 404. The
server binds to ``DBOPT_WORKER_WEB_HOST`` only (default ``127.0.0.1``; a pod sets its own
address or ``0.0.0.0`` deliberately).

The probes answer like the confluent-kafka stages' (:mod:`streams.kafka.health`): JSON
``{"stage", "live", "ready", "problem"}``, 200 when the state holds, 503 when not.

* live: the event loop answers and the app has not crashed or begun to stop.
* ready: live, not rebalancing, partitions assigned, and the tables restored from their
  changelogs (windows and detector state are whole).
"""

from __future__ import annotations

from collections.abc import Sequence

import faust
from faust.web import Request, Response, View
from faust.web.base import BlueprintManager

from streams.kafka.health import Health
from streams.observe.metrics import install_metrics_route

STAGE = "worker"


def live_problem(app: faust.App, stages: Sequence[Health] = ()) -> str:
    """Why the worker is not live ('' when it is)."""
    for stage in stages:
        if not stage.live:
            return f"{stage.name}: its loop stalled"
    if app.crashed:
        return f"crashed: {app.crash_reason!r}"
    if app.should_stop:
        return "stopping"
    return ""


def ready_problem(app: faust.App, stages: Sequence[Health] = ()) -> str:
    """Why the worker is not ready ('' when it is)."""
    for stage in stages:
        if not stage.ready:
            return f"{stage.name}: {stage.describe()['problem'] or 'not ready'}"
    if app.rebalancing:
        return "rebalancing"
    if not app.consumer.assignment():
        return "no partitions assigned"
    if not app.tables.actives_ready:
        return "restoring tables from their changelogs"
    return ""


def state(app: faust.App, stages: Sequence[Health] = ()) -> dict[str, object]:
    live = live_problem(app, stages)
    problem = live or ready_problem(app, stages)
    return {"stage": STAGE, "live": not live, "ready": not problem, "problem": problem}


def install_web_surface(app: faust.App, stages: Sequence[Health] = ()) -> None:
    """Serve only ``/metrics``, ``/healthz`` and ``/readyz`` on ``app``'s web server; the probes
    answer for ``stages`` (loops running beside the app) too."""
    app.web.blueprints = BlueprintManager()  # none of Faust's built-in views
    install_metrics_route(app)

    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        body = state(app, stages)
        return web.json(body, status=200 if body["live"] else 503)

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        body = state(app, stages)
        return web.json(body, status=200 if body["ready"] else 503)
