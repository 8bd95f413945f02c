"""Observability of the worker: Prometheus metrics and the /metrics page."""
