"""Reads of executions that are more than `objects.get`."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, F, Q, QuerySet, Sum

from executions.item_counts import ITEM_COLUMNS
from executions.models import (
    FINISHED_STEP_STATUSES,
    ComponentExecution,
    FileLineage,
    PipelineExecution,
    StepStatus,
    progress_percentage,
)
from files.models import File
from imageflow.api.ownership import can_see_all, scope_to_user


def execution_progress(execution: PipelineExecution, *, steps: list[ComponentExecution] | None = None) -> dict:
    """{"completed", "failed", "skipped", "cancelled", "running", "pending", "finished", "total",
    "percentage", "total_items", "completed_items", "failed_items", "skipped_items",
    "cached_items"}: `percentage` counts every finished step (completed, failed, skipped,
    cancelled); the item counts are summed over the itemized steps (0 when none is). Counted from
    `steps` when the caller has loaded them all already (no second query)."""
    items = dict.fromkeys(ITEM_COLUMNS, 0)
    if steps is not None:
        counts: dict[str, int] = {}
        for step in steps:
            counts[step.status] = counts.get(step.status, 0) + 1
            if step.item_count is not None:
                for name, column in ITEM_COLUMNS.items():
                    items[name] += getattr(step, column)
    else:
        itemized = Q(item_count__isnull=False)
        rows = execution.steps.order_by().values("status").annotate(
            n=Count("id"), **{name: Sum(column, filter=itemized) for name, column in ITEM_COLUMNS.items()})
        counts = {}
        for row in rows:
            counts[row["status"]] = row["n"]
            for name in ITEM_COLUMNS:
                items[name] += row[name] or 0
    total = sum(counts.values())
    finished = sum(counts.get(status, 0) for status in FINISHED_STEP_STATUSES)
    progress = {status.value: counts.get(status.value, 0) for status in StepStatus}
    progress.update(total=total, finished=finished,
                    percentage=progress_percentage(finished, total))
    progress.update({f"{name}_items": n for name, n in items.items()})
    return progress


def execution_steps(execution: PipelineExecution) -> QuerySet[ComponentExecution]:
    """A run's steps in order, each with its component's name and version as `component_name` and
    `component_version` (annotated: a status poll neither loads the component rows, their JSON
    Schemas included, nor pays for a join's second model per row)."""
    return (execution.steps.annotate(component_name=F("component__name"), component_version=F("component__version"))
            .order_by("created_at", "node_id"))



# --- lineage: which files a file was derived from, and what was derived from it ----------------

LINEAGE_DEFAULT_DEPTH = 10
LINEAGE_MAX_DEPTH = 50


@dataclass
class LineageNode:
    """A file of a lineage answer: how far from the asked file, what it was derived from (the
    sources the user may see) and the step that made it (None: uploaded, or made before lineage)."""

    file: File
    depth: int
    derived_from: list[str]
    step: dict | None


@dataclass
class Lineage:
    file: File
    derived_from: list[str]
    step: dict | None
    max_depth: int
    ancestors: list[LineageNode]
    descendants: list[LineageNode]


def _visible_files_sql(user) -> tuple[str, tuple]:
    """`AND <file id column> IN (...)` of the files the user may see, from imageflow.api.ownership
    (the one place that scopes), or nothing for staff."""
    if can_see_all(user):
        return "", ()
    sql, params = scope_to_user(File.objects.values("pk"), user=user).query.sql_with_params()
    return f" AND {{column}} IN ({sql})", params


def _lineage_reach_sql(visible: str) -> str:
    """Every file reachable from the root within `depth` edges up (ancestors, 'a') and down
    (descendants, 'd'), each at its smallest depth. Two recursive CTEs that only follow edges to
    files the user may see, so a hidden file neither shows nor leads anywhere; UNION (not ALL)
    keeps one row per file and depth, so a diamond does not multiply rows."""
    lineage = FileLineage._meta.db_table
    up_visible = visible.format(column="l.derived_from_id")
    down_visible = visible.format(column="l.file_id")
    return f"""
WITH RECURSIVE up(id, depth) AS (
    SELECT l.derived_from_id, 1 FROM {lineage} l WHERE l.file_id = %s{up_visible}
  UNION
    SELECT l.derived_from_id, up.depth + 1 FROM up JOIN {lineage} l ON l.file_id = up.id
     WHERE up.depth < %s{up_visible}
), down(id, depth) AS (
    SELECT l.file_id, 1 FROM {lineage} l WHERE l.derived_from_id = %s{down_visible}
  UNION
    SELECT l.file_id, down.depth + 1 FROM down JOIN {lineage} l ON l.derived_from_id = down.id
     WHERE down.depth < %s{down_visible}
)
SELECT 'a', id, min(depth) FROM up GROUP BY id
UNION ALL
SELECT 'd', id, min(depth) FROM down GROUP BY id
"""


def file_lineage(*, file: File, user, depth: int = LINEAGE_DEFAULT_DEPTH) -> Lineage:
    """The ancestors and descendants of `file` (which the caller has checked the user may see) up
    to `depth` edges away, limited to files the user may see. Four queries whatever the size of
    the graph: the reach (recursive CTEs), the files, their lineage rows with steps."""
    visible, visible_params = _visible_files_sql(user)
    params = (file.pk, *visible_params, depth, *visible_params, file.pk, *visible_params, depth, *visible_params)
    with connection.cursor() as cursor:
        cursor.execute(_lineage_reach_sql(visible), params)
        reach = cursor.fetchall()
    ids = {file_id for _, file_id, _ in reach}
    files = {f.pk: f for f in File.objects.filter(pk__in=ids)} if ids else {}
    edges = FileLineage.objects.filter(file_id__in=[file.pk, *ids])
    if not can_see_all(user):
        edges = edges.filter(derived_from_id__in=scope_to_user(File.objects.values("pk"), user=user))
    sources: dict = {}
    steps: dict = {}
    for row in edges.order_by("id").values("file_id", "derived_from_id", "step_id", "step__execution_id",
                                           "step__node_id", "step__component_id", "step__component__name",
                                           "step__component__version"):
        sources.setdefault(row["file_id"], []).append(str(row["derived_from_id"]))
        if row["step_id"] is not None:
            steps.setdefault(row["file_id"], {
                "id": str(row["step_id"]), "execution": str(row["step__execution_id"]),
                "node_id": row["step__node_id"],
                "component": {"id": str(row["step__component_id"]), "name": row["step__component__name"],
                              "version": row["step__component__version"]},
            })

    def nodes(direction: str) -> list[LineageNode]:
        found = [LineageNode(file=files[file_id], depth=found_depth, derived_from=sources.get(file_id, []),
                             step=steps.get(file_id))
                 for kind, file_id, found_depth in reach if kind == direction and file_id in files]
        return sorted(found, key=lambda n: (n.depth, n.file.created_at, str(n.file.pk)))

    return Lineage(file=file, derived_from=sources.get(file.pk, []), step=steps.get(file.pk), max_depth=depth,
                   ancestors=nodes("a"), descendants=nodes("d"))


def execution_outputs_by_input(execution: PipelineExecution, *,
                               steps: list[ComponentExecution]) -> dict[str, dict[str, list[str]]]:
    """{input file id: {node id: [ids of that node's outputs derived from the input]}} of a run,
    every input of the run a key. Read from the lineage of the outputs its steps record (loaded
    already): one query, none while no step has outputs. A merge output is listed under each of
    its inputs; a passed-through input is its own output; outputs made before lineage was
    recorded are not listed."""
    inputs = [str(i) for i in (execution.input_data or {}).get("inputs") or []]
    by_input: dict[str, dict[str, list[str]]] = {i: {} for i in inputs}
    produced = [(step.node_id, [str(f) for f in (step.output_data or {}).get("files") or []]) for step in steps
                if step.status == StepStatus.COMPLETED]
    outputs = {f for _, files in produced for f in files}
    if not outputs:
        return by_input
    sources: dict[str, list[str]] = {}
    for file_id, source_id in FileLineage.objects.filter(file_id__in=outputs).values_list("file_id", "derived_from_id"):
        sources.setdefault(str(file_id), []).append(str(source_id))
    position = {file_id: n for n, file_id in enumerate(inputs)}  # an input's place in the run's order
    roots: dict[str, set[str]] = {}

    def roots_of(file_id: str, seen: frozenset = frozenset()) -> set[str]:
        if file_id in position:
            return {file_id}
        if file_id not in roots:
            found: set[str] = set()
            for source in sources.get(file_id, ()):
                if source not in seen:  # lineage is acyclic; a guard costs nothing
                    found |= roots_of(source, seen | {file_id})
            roots[file_id] = found
        return roots[file_id]

    for node_id, files in produced:
        for file_id in files:
            for root in sorted(roots_of(file_id), key=position.__getitem__):
                by_input[root].setdefault(node_id, []).append(file_id)
    return by_input
