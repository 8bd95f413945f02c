"""Ingest stage (pure): decode, validate, normalize and classify one QueryEvent; DLQ records."""

from streams.ingest.validate import (
    OTHER_FINGERPRINT,
    Accepted,
    CapOutcome,
    FingerprintCap,
    Rejected,
    dead_letter,
    validate,
)

__all__ = [
    "OTHER_FINGERPRINT",
    "Accepted",
    "CapOutcome",
    "FingerprintCap",
    "Rejected",
    "dead_letter",
    "validate",
]
