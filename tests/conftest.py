"""Suite-wide settings. Hypothesis: no deadline (the machine's speed varies; speed lives in bench/)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "sevbox", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("sevbox")
