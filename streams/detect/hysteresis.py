"""Count-based hysteresis of one alert condition, and the deterministic alert id (pure).

A condition fires after ``fire_after`` consecutive breaching observations and resolves after
``resolve_after`` consecutive good ones; while firing it never fires again. An observation that
was not judged (``None``: too few samples, no baseline yet) changes nothing. The condition's state
is a JSON-able dict, replaced and never mutated in place, so it can live in a Faust table.
"""

from __future__ import annotations

from typing import Any, Literal

from streams.detect.detector import alert_id

Change = Literal["firing", "resolved"]

__all__ = ["Change", "alert_id", "fresh", "step"]


def fresh() -> dict[str, Any]:
    return {"firing": False, "breaches": 0, "goods": 0, "severity": None}


def step(
    condition: dict[str, Any], breach: bool | None, fire_after: int, resolve_after: int
) -> tuple[dict[str, Any], Change | None]:
    """The condition after one observation, and ``firing``/``resolved`` when it changed."""
    if breach is None:
        return condition, None
    if not condition["firing"]:
        breaches = condition["breaches"] + 1 if breach else 0
        if breaches >= fire_after:
            return {**condition, "firing": True, "breaches": 0, "goods": 0}, "firing"
        return {**condition, "breaches": breaches}, None
    goods = 0 if breach else condition["goods"] + 1
    if goods >= resolve_after:
        return {**condition, "firing": False, "breaches": 0, "goods": 0}, "resolved"
    return {**condition, "goods": goods}, None
