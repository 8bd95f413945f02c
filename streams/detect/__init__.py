"""Detector (pure): SLO breaches and regressions of closed windows, with hysteresis."""

from streams.detect.detector import Detector, SeriesChange, alert_id, severity

__all__ = ["Detector", "SeriesChange", "alert_id", "severity"]
