"""``dbopt serve``: the live page and HTTP API (docs/serve.md).

* :mod:`.view` — the pure core: the bounded in-memory view of the topics (windows per key, alerts
  with what was notified, commands and results joined into optimizations, recommendations, pools),
  status colours and the calendar state. Tested without servers.
* :mod:`.auth` — users and roles from ``DBOPT_UI_USERS``, bcrypt hashes, CSRF tokens.
* :mod:`.chart` — the latency chart as inline SVG (pure).
* :mod:`.store` — what serve reads and writes in PostgreSQL: the executor's audit table (history)
  and the operators' decisions on recommendations.
* :mod:`.actions` — approve, dismiss, emergency: signed operator commands on the commands topic.
* :mod:`.agent` — the stage on the shared Kafka loop that feeds the view, in a thread beside uvicorn.
* :mod:`.app` — the ASGI application (FastAPI): pages, JSON API, server-sent events, probes.
* :mod:`.cli` — ``dbopt serve``; :mod:`.ui_cli` — ``dbopt ui hash-password``.
"""
