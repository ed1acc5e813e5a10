"""Shared start-up of the live-progress and log benchmarks: Django on a benchmark database."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def django_setup(default_database: str = "imageflow_live") -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imageflow.settings")
    os.environ.setdefault("DATABASE_NAME", default_database)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(values_ms: list[float]) -> str:
    return (f"n={len(values_ms)} median={statistics.median(values_ms):.2f} ms p95={percentile(values_ms, 95):.2f} ms "
            f"p99={percentile(values_ms, 99):.2f} ms max={max(values_ms):.2f} ms")
