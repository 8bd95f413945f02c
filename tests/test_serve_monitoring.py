"""The Grafana dashboard and the Prometheus alert rules name only metrics (and labels) the code exports.

The exported names come from prometheus_client's registry after importing every module that
declares metrics, not from reading the code: a renamed metric breaks this test.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

MONITORING = Path(__file__).resolve().parents[1] / "k8s" / "monitoring"
MODULES = (
    "streams.observe.metrics",  # the worker
    "streams.client.metrics",  # the SDK inside the services
    "streams.kafka.loop",  # every stage on the shared loop
    "streams.advise.advisor",
    "streams.execute.executor",
    "streams.notify.metrics",
    "streams.collect.agent",
    "streams.otlp.metrics",
    "streams.serve.app",
    "streams.serve.actions",
    "streams.serve.agent",
)
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
METRIC = re.compile(r"\bdbopt_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b(dbopt_[a-z0-9_]+)\{([^}]*)\}")


def exported() -> dict[str, set[str]]:
    """Every sample name the dbopt modules export -> the label names of its metric."""
    for module in MODULES:
        importlib.import_module(module)
    names: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("dbopt_"):
            continue
        # label names from the collector (the registry's own index; a labelled metric without children has no samples)
        collector = REGISTRY._names_to_collectors.get(family.name)  # noqa: SLF001
        labels = set(getattr(collector, "_labelnames", ()))
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def expressions() -> list[tuple[str, str]]:
    """(where, expression) of every rule and every dashboard target."""
    found = []
    rules = yaml.safe_load((MONITORING / "dbopt-alerts.rules.yaml").read_text())
    for group in rules["groups"]:
        found += [(f"rule {rule['alert']}", rule["expr"]) for rule in group["rules"]]
    dashboard = json.loads((MONITORING / "dbopt-dashboard.json").read_text())
    found += [(f"panel {p['title']!r}", t["expr"]) for p in dashboard["panels"] for t in p.get("targets", ())]
    return found


def problems(where: str, expr: str, names: dict[str, set[str]]) -> list[str]:
    metrics = METRIC.findall(expr)
    found = [f"{where}: names no dbopt metric"] if not metrics else []
    found += [f"{where}: {m} is not exported" for m in metrics if m not in names]
    for metric, matchers in SELECTOR.findall(expr):
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
            if metric in names and label not in names[metric]:
                found.append(f"{where}: {metric} has no label {label}")
    return found


def test_every_expression_names_exported_metrics_and_labels() -> None:
    names = exported()
    assert {"dbopt_executor_results_total", "dbopt_context_p95_seconds", "dbopt_advisor_verdicts_total",
            "dbopt_executor_db_up", "dbopt_notifications_total", "dbopt_serve_http_requests_total"} <= set(names)
    found = expressions()
    assert len(found) > 20
    assert [p for where, expr in found for p in problems(where, expr, names)] == []


def test_the_rules_cover_the_issue_and_the_check_sees_a_bad_name() -> None:
    rules = {rule["alert"] for group in yaml.safe_load((MONITORING / "dbopt-alerts.rules.yaml").read_text())["groups"]
             for rule in group["rules"]}
    assert {"DboptConsumerLagGrowing", "DboptDeadLetters", "DboptSdkDroppingEvents", "DboptNoWindowsEmitted",
            "DboptExecutorFailing", "DboptSloBreach"} <= rules
    names = exported()
    assert problems("x", "rate(dbopt_windows_emited_total[5m])", names) == ["x: dbopt_windows_emited_total is not exported"]
    assert problems("x", 'dbopt_executor_results_total{state="failed"}', names) == [
        "x: dbopt_executor_results_total has no label state"]


def test_the_per_context_gauges_are_bounded() -> None:
    from streams.observe.metrics import LastWindows

    gauges = LastWindows(limit=2)
    gauges.set("svc-a", "booking", 80.0, 50.0)
    gauges.set("svc-b", "booking", 20.0, 50.0)
    gauges.set("svc-a", "booking", 85.0, 50.0)  # updated: now the most recent
    gauges.set("svc-c", "payment", 10.0, 20.0)  # a third pair: svc-b, the least recently set, goes

    def value(name: str, service: str, context: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"service": service, "context": context})

    assert value("dbopt_context_p95_seconds", "svc-a", "booking") == 0.085
    assert value("dbopt_context_slo_p95_seconds", "svc-c", "payment") == 0.02
    assert value("dbopt_context_p95_seconds", "svc-b", "booking") is None
    assert value("dbopt_context_slo_p95_seconds", "svc-b", "booking") is None
