"""Local infrastructure for development, tests and the demo: Kafka and PostgreSQL on loopback."""
