"""A map step's item counts as events, snapshots, the API and the admin name them, read from the
step's counter columns (moved by the engine in the statement that finishes an item)."""

from __future__ import annotations

from typing import Any

# name -> column of component_executions
ITEM_COLUMNS = {"total": "item_count", "completed": "items_completed", "failed": "items_failed",
                "skipped": "items_skipped", "cached": "items_cached"}


def step_item_counts(step: Any) -> dict[str, int] | None:
    """{"total", "completed", "failed", "skipped", "cached"} of a step (a dict of its column values
    or the model), or None when the step is not itemized (no item count)."""
    read = step.get if isinstance(step, dict) else lambda column: getattr(step, column, None)
    if read("item_count") is None:
        return None
    return {name: int(read(column) or 0) for name, column in ITEM_COLUMNS.items()}


def run_item_counts(step_items: list[dict[str, int] | None]) -> dict[str, int] | None:
    """The counts summed over a run's itemized steps; None when none is."""
    itemized = [items for items in step_items if items is not None]
    if not itemized:
        return None
    return {name: sum(items[name] for items in itemized) for name in ITEM_COLUMNS}
