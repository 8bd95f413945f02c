"""Which channels get a notification (pure).

Routes are tried in order and the first that matches decides; a route may name no channel
(silence). The built-in defaults: ``critical`` alerts -> PagerDuty, Slack, SMS; ``high`` -> Slack,
e-mail; ``warning`` -> Slack; results -> Slack; ``info`` -> nothing. A routing file
(``DBOPT_NOTIFY_ROUTES``, YAML) puts its own routes in front of the defaults (or replaces them
with ``defaults: false``)::

    routes:
      - match: {severity: critical, context: [booking, payment]}
        channels: [pagerduty, slack, sms, email]
      - match: {kind: result, state: [failed, rolled_back]}
        channels: [slack, email]
      - match: {service: analytics-service}
        channels: []            # never tell anyone about this one
    defaults: true

A match names any of ``kind`` (slo, regression, pool, result), ``severity``, ``context``,
``service`` and ``state`` (firing, resolved, or a result status), each a value or a list.
A resolved alert goes to the channels the firing one was routed to, whatever the routes say.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from streams.config import ConfigError

from .model import ALERT_KINDS, KINDS, RESULT_KIND, SEVERITIES, Notification

CHANNELS = ("pagerduty", "slack", "email", "sms", "webhook")
MATCH_FIELDS = ("kind", "severity", "context", "service", "state")


@dataclass(frozen=True)
class Route:
    match: Mapping[str, frozenset[str]]
    channels: tuple[str, ...]

    def matches(self, notification: Notification) -> bool:
        return all(getattr(notification, name) in values for name, values in self.match.items())


DEFAULT_ROUTES: tuple[Route, ...] = (
    Route({"kind": frozenset(ALERT_KINDS), "severity": frozenset({"critical"})}, ("pagerduty", "slack", "sms")),
    Route({"kind": frozenset(ALERT_KINDS), "severity": frozenset({"high"})}, ("slack", "email")),
    Route({"kind": frozenset(ALERT_KINDS), "severity": frozenset({"warning"})}, ("slack",)),
    Route({"kind": frozenset({RESULT_KIND})}, ("slack",)),
)


def channels_for(notification: Notification, routes: tuple[Route, ...],
                 firing_channels: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The channels for ``notification``. ``firing_channels``: where the firing alert of the same
    condition went (None when unknown); a resolved alert follows it."""
    if notification.kind in ALERT_KINDS and notification.state == "resolved" and firing_channels is not None:
        return firing_channels
    for route in routes:
        if route.matches(notification):
            return route.channels
    return ()


def load_routes(path: str | Path | None) -> tuple[Route, ...]:
    """The routes of a routing file followed by the defaults; the defaults alone without a file."""
    if not path:
        return DEFAULT_ROUTES
    where = f"routing file {path}"
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    return parse_routes(doc, where)


def parse_routes(doc: Any, where: str = "routes") -> tuple[Route, ...]:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict) or set(doc) - {"routes", "defaults"}:
        raise ConfigError(f"{where}: expected a mapping with 'routes' (a list) and optionally 'defaults' (true/false)")
    defaults = doc.get("defaults", True)
    if not isinstance(defaults, bool):
        raise ConfigError(f"{where}: 'defaults' must be true or false")
    raw_routes = doc.get("routes")
    raw_routes = [] if raw_routes is None else raw_routes
    if not isinstance(raw_routes, list):
        raise ConfigError(f"{where}: 'routes' must be a list")
    routes = tuple(_route(raw, f"{where}: route {i + 1}") for i, raw in enumerate(raw_routes))
    return routes + (DEFAULT_ROUTES if defaults else ())


def _route(raw: Any, where: str) -> Route:
    if not isinstance(raw, dict) or set(raw) != {"match", "channels"}:
        raise ConfigError(f"{where}: needs exactly the keys 'match' and 'channels'")
    match, channels = raw["match"] or {}, raw["channels"] or []
    if not isinstance(match, dict):
        raise ConfigError(f"{where}: 'match' must be a mapping of {', '.join(MATCH_FIELDS)}")
    unknown = set(match) - set(MATCH_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: cannot match on {sorted(unknown)}; use {', '.join(MATCH_FIELDS)}")
    parsed: dict[str, frozenset[str]] = {}
    for name, value in match.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{where}: {name} must be a name or a list of names")
        allowed = {"kind": KINDS, "severity": SEVERITIES}.get(name)
        if allowed and set(values) - set(allowed):
            raise ConfigError(f"{where}: {name} {sorted(set(values) - set(allowed))} unknown; use {', '.join(allowed)}")
        parsed[name] = frozenset(values)
    if not isinstance(channels, list) or set(channels) - set(CHANNELS):
        raise ConfigError(f"{where}: channels must be a list of {', '.join(CHANNELS)}")
    return Route(parsed, tuple(dict.fromkeys(channels)))


def describe(routes: tuple[Route, ...]) -> list[str]:
    """One line per route, for ``dbopt notify --check``."""
    lines = []
    for route in routes:
        cond = " ".join(f"{k}={'|'.join(sorted(v))}" for k, v in route.match.items()) or "anything"
        lines.append(f"{cond} -> {', '.join(route.channels) or '(nobody)'}")
    return lines


@dataclass(frozen=True)
class Planned:
    """One delivery to queue: ``pending``, or ``suppressed`` with the reason."""

    channel: str
    target: str
    status: str
    reason: str = ""


NO_CHANNEL = "none"  # the ledger's channel of a notification no route sent anywhere


def plan(notification: Notification, routes: tuple[Route, ...], targets: Mapping[str, tuple[str, ...]],
         off: Mapping[str, str], *, firing_channels: tuple[str, ...] | None = None,
         resolved_later: bool = False) -> list[Planned]:
    """Every delivery of ``notification``: one per target of each routed channel that is on
    (``targets``), a suppressed one per routed channel that is off (``off``: why). A firing alert
    whose condition is already resolved later (records of two partitions can arrive out of
    order) is suppressed: telling it now would reopen a closed incident."""
    if resolved_later and notification.state == "firing":
        return [Planned(NO_CHANNEL, "", "suppressed", "the condition was resolved before this firing arrived")]
    channels = channels_for(notification, routes, firing_channels)
    if not channels:
        why = "no route for it" if firing_channels is None else "its firing alert went to no channel"
        return [Planned(NO_CHANNEL, "", "suppressed", why)]
    planned: list[Planned] = []
    for channel in channels:
        if channel in targets:
            planned += [Planned(channel, target, "pending") for target in targets[channel]]
        else:
            planned.append(Planned(channel, "", "suppressed", f"channel off: {off.get(channel, 'not configured')}"))
    return planned
