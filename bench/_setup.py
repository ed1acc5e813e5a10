"""Shared start-up of the API benchmarks: Django on the benchmark database (DATABASE_NAME)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imageflow.settings")
    os.environ.setdefault("DATABASE_NAME", "imageflow_api")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def ensure_database() -> None:
    """Create the benchmark's database (DATABASE_NAME) if it does not exist yet."""
    import psycopg

    name = os.environ["DATABASE_NAME"]
    conninfo = dict(dbname="postgres", user=os.environ.get("DATABASE_USER", "postgres"),
                    host=os.environ.get("DATABASE_HOST", "127.0.0.1"), port=os.environ.get("DATABASE_PORT", "5432"))
    if os.environ.get("DATABASE_PASSWORD"):
        conninfo["password"] = os.environ["DATABASE_PASSWORD"]
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")
