"""The latency chart of one series as inline SVG (pure): p50, p95 and p99 of each closed window,
the SLO line, and a marker where an index was applied or rolled back. Server-rendered, so the
page needs no chart library and the live update simply swaps the new markup in."""

from __future__ import annotations

from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from .view import Chart

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 14, 28
LINES = (("p50_ms", "p50", "line-p50"), ("p95_ms", "p95", "line-p95"), ("p99_ms", "p99", "line-p99"))


def _clock(ms: int, timezone: str) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(timezone)).strftime("%H:%M:%S")


def render(chart: Chart, timezone: str) -> str:
    """The SVG markup (every text escaped)."""
    points = chart.points
    if not points:
        return '<p class="empty">no closed window kept for this series</p>'
    t0 = points[0].window_end
    t1 = max(points[-1].window_end, t0 + 1)
    markers = [m for m in chart.markers if t0 <= m.at_ms <= t1]
    top = max(max(p.p99_ms for p in points), chart.slo_ms) * 1.15 or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(ms: int) -> float:
        return LEFT + (ms - t0) / (t1 - t0) * plot_w if len(points) > 1 else LEFT + plot_w / 2

    def y(value: float) -> float:
        return TOP + plot_h - value / top * plot_h

    last = points[-1]
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" data-last-p95="{last.p95_ms:.1f}" '
        f'data-slo="{chart.slo_ms:.1f}" aria-label="{escape(chart.title)}: p50, p95, p99 per window against the '
        f'SLO of {chart.slo_ms:.0f} ms">',
        f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        value = top * fraction
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>'
                     f'<text class="axis" x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.0f}</text>')
    for ms, anchor in sorted({(t0, "start"), ((t0 + t1) // 2, "middle"), (t1, "end")}):
        parts.append(f'<text class="axis" x="{x(ms):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                     f'{_clock(ms, timezone)}</text>')
    parts.append(f'<text class="axis" x="12" y="{TOP + plot_h / 2:.0f}" transform="rotate(-90 12 {TOP + plot_h / 2:.0f})"'
                 ' text-anchor="middle">ms</text>')
    slo_y = y(chart.slo_ms)
    parts.append(f'<line class="slo" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{slo_y:.1f}" y2="{slo_y:.1f}"/>'
                 f'<text class="slo-label" x="{LEFT + plot_w - 4}" y="{slo_y - 4:.1f}" text-anchor="end">'
                 f'SLO {chart.slo_ms:.0f} ms</text>')
    for attr, _name, css in LINES:
        path = " ".join(f"{x(p.window_end):.1f},{y(getattr(p, attr)):.1f}" for p in points)
        parts.append(f'<polyline class="{css}" points="{path}"/>')
    for p in points:
        parts.append(
            f'<circle class="dot{" breach" if p.p95_ms > p.slo_ms else ""}" cx="{x(p.window_end):.1f}" '
            f'cy="{y(p.p95_ms):.1f}" r="3"><title>{_clock(p.window_start, timezone)}–{_clock(p.window_end, timezone)}'
            f": p50 {p.p50_ms:.1f} · p95 {p.p95_ms:.1f} · p99 {p.p99_ms:.1f} ms, {p.count} queries</title></circle>"
        )
    for m in markers:
        mx = x(m.at_ms)
        parts.append(
            f'<g class="marker marker-{escape(m.status)}"><line x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP}" '
            f'y2="{TOP + plot_h}"/><text x="{mx + 3:.1f}" y="{TOP + 10}">{escape(m.status.replace("_", " "))}</text>'
            f"<title>{escape(m.label)} {escape(m.status)} at {_clock(m.at_ms, timezone)} "
            f"(command {escape(m.command_id)})</title></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
