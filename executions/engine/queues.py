"""Routing: the Celery queue a step (and its items) is sent to, from its component's resource
requirements, so that only suitably equipped workers take it (`celery worker -Q gpu`).

A component asking for a GPU (`"gpu": 1` or more) goes to STEP_QUEUE_ROUTES["gpu"], one asking for
at least STEP_HIGHMEM_BYTES of memory (`"memory": "8Gi"`) to STEP_QUEUE_ROUTES["highmem"], one
asking for at least STEP_HIGHCPU_CORES cores (`"cpu": 8`) to STEP_QUEUE_ROUTES["highcpu"] (no such
route by default: most hosts have the cores a step asks for); any other to the default queue
(CELERY_TASK_DEFAULT_QUEUE). The first that applies wins, in that order. The queue is chosen when a run starts
and kept in each step's `input_data["queue"]`.
"""

from __future__ import annotations

import re

from django.conf import settings

_UNITS = {"": 1, "k": 1000, "m": 1000 ** 2, "g": 1000 ** 3, "t": 1000 ** 4,
          "ki": 1024, "mi": 1024 ** 2, "gi": 1024 ** 3, "ti": 1024 ** 4}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def memory_bytes(value) -> int | None:
    """'512Mi', '2G', '1073741824' or a number -> bytes (Kubernetes quantities); None if unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    match = _QUANTITY.match(str(value or ""))
    if not match:
        return None
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def component_queue(component) -> str | None:
    """The queue of this component's steps; None: the default queue."""
    needs = component.resource_requirements or {}
    routes = settings.STEP_QUEUE_ROUTES
    gpu = needs.get("gpu") or 0
    if isinstance(gpu, (int, float)) and not isinstance(gpu, bool) and gpu > 0 and routes.get("gpu"):
        return routes["gpu"]
    memory = memory_bytes(needs.get("memory"))
    if memory is not None and memory >= settings.STEP_HIGHMEM_BYTES and routes.get("highmem"):
        return routes["highmem"]
    cpu = cpu_cores(needs.get("cpu"))
    if cpu is not None and cpu >= settings.STEP_HIGHCPU_CORES and routes.get("highcpu"):
        return routes["highcpu"]
    return None


def cpu_cores(value) -> float | None:
    """2, 0.5, '4' or '500m' (Kubernetes millicores) -> cores; None if unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value or "").strip()
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return None
