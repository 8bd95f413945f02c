"""Prometheus metrics of dbopt notify (served on ``/metrics`` of its probe server).

=========================================  =========  ===============  ==========================================
metric                                      type       labels           meaning
=========================================  =========  ===============  ==========================================
dbopt_notifications_total                   counter    channel, status  outcomes: delivered, failed, suppressed,
                                                                        digested (and held, retried on the way)
dbopt_notification_delivery_seconds         histogram  channel          ledger entry -> delivered
dbopt_notify_breaker_state                  gauge      channel          0 closed, 1 half-open, 2 open
=========================================  =========  ===============  ==========================================
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NOTIFICATIONS = Counter("dbopt_notifications", "Notification deliveries by channel and outcome.", ["channel", "status"])
DELIVERY_SECONDS = Histogram(
    "dbopt_notification_delivery_seconds",
    "From a notification entering the ledger to its delivery, by channel.",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
BREAKER_STATE = Gauge("dbopt_notify_breaker_state", "Circuit breaker of a channel: 0 closed, 1 half-open, 2 open.",
                      ["channel"])
