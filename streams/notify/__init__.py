"""``dbopt notify``: alerts and results reach people (Slack, PagerDuty, e-mail, SMS, webhooks).

* :mod:`.model` — what to tell (Notification) and how it reads (Message), built from records (pure)
* :mod:`.routing` — which channels get a notification: defaults and the routing file (pure)
* :mod:`.policy` — rate limits with digests, circuit breakers, the retry schedule (pure)
* :mod:`.channels` — one module per channel behind :class:`.channels.base.Channel` (I/O)
* :mod:`.ledger` — the delivery ledger in PostgreSQL: never lost, never twice (I/O)
* :mod:`.dispatch` — one worker thread per channel, so a slow channel never delays another (I/O)
* :mod:`.agent` — the stage on the shared Kafka loop, and the ``dbopt notify`` command

Details: ``docs/notify.md``.
"""
