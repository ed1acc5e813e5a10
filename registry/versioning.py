"""Differences between two versions of a workflow (documents) or a pipeline (definitions).

A diff lists, per collection (nodes, edges, params), what was added, removed and changed; a
changed item names each changed field with its value before and after. Items are matched by
their identity: node key (workflow) or node id (pipeline), (parent, child) for edges, key for
params. Top-level fields (name, description, tags, ...) are compared the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def _field_changes(before: dict[str, Any], after: dict[str, Any], *, skip: Iterable[str] = ()) -> dict[str, dict]:
    skipped = set(skip)
    changes: dict[str, dict] = {}
    for field in sorted((set(before) | set(after)) - skipped):
        if before.get(field) != after.get(field):
            changes[field] = {"from": before.get(field), "to": after.get(field)}
    return changes


def diff_collection(before: list[dict], after: list[dict], *, identity: Callable[[dict], Any],
                    label: Callable[[dict], Any]) -> dict[str, list]:
    old = {identity(item): item for item in before}
    new = {identity(item): item for item in after}
    added = [new[k] for k in new if k not in old]
    removed = [old[k] for k in old if k not in new]
    changed = []
    for k in new:
        if k in old and old[k] != new[k]:
            changed.append({"id": label(new[k]), "fields": _field_changes(old[k], new[k])})
    return {"added": added, "removed": removed, "changed": changed}


def _is_empty(diff: dict[str, Any]) -> bool:
    return not diff["fields"] and all(
        not any(section[part] for part in ("added", "removed", "changed"))
        for name, section in diff.items() if name != "fields"
    )


def diff_workflow_documents(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    diff = {
        "fields": _field_changes(before, after, skip=("nodes", "edges", "params")),
        "nodes": diff_collection(before.get("nodes", []), after.get("nodes", []),
                                 identity=lambda n: n["key"], label=lambda n: n["key"]),
        "edges": diff_collection(before.get("edges", []), after.get("edges", []),
                                 identity=lambda e: (e["parent"], e["child"]),
                                 label=lambda e: f"{e['parent']}->{e['child']}"),
        "params": diff_collection(before.get("params", []), after.get("params", []),
                                  identity=lambda p: p["key"], label=lambda p: p["key"]),
    }
    diff["identical"] = _is_empty(diff)
    return diff


def _edge_ends(edge: dict) -> tuple[Any, Any]:
    return edge.get("from", edge.get("source")), edge.get("to", edge.get("target"))


def diff_pipeline_versions(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """`before`/`after`: {"name", "description", "definition": {"nodes": [...], "edges": [...]}}."""
    old_def = before.get("definition") or {}
    new_def = after.get("definition") or {}
    diff = {
        "fields": _field_changes(before, after, skip=("definition",)),
        "nodes": diff_collection(
            [n for n in old_def.get("nodes", []) if isinstance(n, dict)],
            [n for n in new_def.get("nodes", []) if isinstance(n, dict)],
            identity=lambda n: n.get("id"), label=lambda n: n.get("id")),
        "edges": diff_collection(
            [e for e in old_def.get("edges", []) if isinstance(e, dict)],
            [e for e in new_def.get("edges", []) if isinstance(e, dict)],
            identity=_edge_ends, label=lambda e: "{}->{}".format(*_edge_ends(e))),
    }
    diff["identical"] = _is_empty(diff)
    return diff
