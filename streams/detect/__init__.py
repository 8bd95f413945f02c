"""Detector (pure): SLO breaches and regressions of closed windows, with hysteresis."""

from streams.detect.detector import Detector, Outcome, alert_id, severity

__all__ = ["Detector", "Outcome", "alert_id", "severity"]
