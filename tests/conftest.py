"""Shared pytest configuration for the moe_tf test-suite."""

import os

# Must be set before TensorFlow is imported anywhere (test modules import it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hypothesis import settings  # noqa: E402

# Deterministic, bounded property tests: the suite runs on small CPU machines.
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("ci")
