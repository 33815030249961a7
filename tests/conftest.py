"""Shared test fixtures. Every test runs offline; servers (Prefect, S3, HTTP) bind 127.0.0.1."""

from __future__ import annotations

import os

pytest_plugins = ["tests.servers"]

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
