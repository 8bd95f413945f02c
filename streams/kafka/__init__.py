"""Kafka plumbing shared by the commands: topic creation and small consumer helpers."""
