"""OpenTelemetry in: PostgreSQL client spans (OTLP/HTTP or a Kafka topic) become QueryEvents.

``mapping`` is the pure span -> QueryEvent core, ``wire`` the pure OTLP body decoding/encoding;
``server`` (``dbopt otlp``), ``publish`` and ``agent`` (``--from-kafka``) are the I/O edge.
"""
