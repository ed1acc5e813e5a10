"""The workflow document: one JSON shape for the nested API, version snapshots, diffs and
export/import. Cleaning a document is the single validation of a workflow's graph.

    {"name": "...", "description": "...", "category": "...", "tags": ["a", "b"], "metadata": {...},
     "nodes":  [{"key": "fetch", "node_type": "tool", "name": "Fetch page",
                 "parameters": {...}, "order_index": 0}],
     "edges":  [{"parent": "fetch", "child": "summarize", "handoff_data": {...}}],
     "params": [{"key": "url", "value_type": "string", "required": true,
                 "default_value": null, "metadata": {...}}]}

Edges name nodes by `key`, so they can only join nodes of the same workflow. A param's
`default_value` is stored as text and must parse as its `value_type`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.core.exceptions import ValidationError

from imageflow.validators import NUL_MESSAGE, json_nul_path, name_problem
from registry.models import ParamValueType

DOCUMENT_KEYS = ("name", "description", "category", "tags", "metadata", "nodes", "edges", "params")
NODE_KEYS = ("key", "node_type", "name", "parameters", "order_index")
EDGE_KEYS = ("parent", "child", "handoff_data")
PARAM_KEYS = ("key", "value_type", "required", "default_value", "metadata")
VALUE_TYPES = tuple(ParamValueType.values)
MAX_NODES = 2000


class ParamValueError(ValueError):
    pass


def parse_param_text(value_type: str, text: str) -> Any:
    """The typed value of a stored `default_value` (text)."""
    if value_type == ParamValueType.STRING:
        return text
    if value_type == ParamValueType.INT:
        if not re.fullmatch(r"[+-]?\d+", text.strip()):
            raise ParamValueError(f"{text!r} is not an integer.")
        return int(text)
    if value_type == ParamValueType.FLOAT:
        try:
            value = float(text)
        except ValueError:
            raise ParamValueError(f"{text!r} is not a number.") from None
        if not math.isfinite(value):
            raise ParamValueError(f"{text!r} is not a finite number.")
        return value
    if value_type == ParamValueType.BOOL:
        lowered = text.strip().lower()
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            return False
        raise ParamValueError(f"{text!r} is not a boolean (true/false).")
    if value_type == ParamValueType.JSON:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ParamValueError(f"not valid JSON: {exc.msg}.") from None
    raise ParamValueError(f"unknown value_type {value_type!r}.")


def check_param_value(value_type: str, value: Any) -> Any:
    """A value given as JSON (apply) checked strictly against `value_type`."""
    if value_type == ParamValueType.STRING:
        if not isinstance(value, str):
            raise ParamValueError(f"expected a string, got {type(value).__name__}.")
        return value
    if value_type == ParamValueType.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ParamValueError(f"expected an integer, got {json.dumps(value)}.")
        return value
    if value_type == ParamValueType.FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParamValueError(f"expected a number, got {json.dumps(value)}.")
        return float(value)
    if value_type == ParamValueType.BOOL:
        if not isinstance(value, bool):
            raise ParamValueError(f"expected true or false, got {json.dumps(value)}.")
        return value
    if value_type == ParamValueType.JSON:
        return value
    raise ParamValueError(f"unknown value_type {value_type!r}.")


def default_to_text(value_type: str, value: Any) -> str | None:
    """A default given natively (5, true, {...}) or as text, normalized to its stored text."""
    if value is None:
        return None
    if isinstance(value, str):
        parsed = parse_param_text(value_type, value)
        if value_type == ParamValueType.JSON:
            return json.dumps(parsed, sort_keys=True, ensure_ascii=False)
        if value_type == ParamValueType.BOOL:
            return "true" if parsed else "false"
        if value_type == ParamValueType.INT:
            return str(parsed)
        return value if value_type == ParamValueType.STRING else repr(parsed)
    checked = check_param_value(value_type, value)
    if value_type == ParamValueType.JSON:
        return json.dumps(checked, sort_keys=True, ensure_ascii=False)
    if value_type == ParamValueType.BOOL:
        return "true" if checked else "false"
    if value_type == ParamValueType.FLOAT:
        return repr(float(checked))
    return str(checked)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:90] or "node"


def clean_document(raw: Any) -> dict[str, Any]:
    """Validate a workflow document and return its canonical form, or raise ValidationError
    whose message_dict names every offending field by dotted path (`nodes.2.key`)."""
    errors: dict[str, list[str]] = {}

    def err(path: str, message: str) -> None:
        errors.setdefault(path, []).append(message)

    if not isinstance(raw, dict):
        raise ValidationError({"document": ["must be a JSON object."]})
    nul = json_nul_path(raw)
    if nul is not None:
        raise ValidationError({nul: [NUL_MESSAGE]})
    unknown = set(raw) - set(DOCUMENT_KEYS) - {"id", "version", "created_at", "updated_at", "created_by",
                                                "organization", "request_id", "usage"}
    if unknown:
        err("document", f"unknown keys: {', '.join(sorted(unknown))}.")

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        err("name", "a non-empty string is required.")
    elif len(name) > 255:
        err("name", "at most 255 characters.")
    elif name_problem(name):
        err("name", name_problem(name))
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        err("description", "must be a string or null.")
    category = raw.get("category") or ""
    if not isinstance(category, str) or len(category) > 100:
        err("category", "must be a string of at most 100 characters.")
    tags = raw.get("tags") or []
    clean_tags: list[str] = []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() and len(t.strip()) <= 100 for t in tags):
        err("tags", "must be a list of non-empty strings of at most 100 characters.")
    else:
        clean_tags = sorted({t.strip().lower() for t in tags})
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        err("metadata", "must be an object or null.")

    # -- nodes
    raw_nodes = raw.get("nodes", [])
    nodes: list[dict[str, Any]] = []
    keys_seen: dict[str, int] = {}
    if not isinstance(raw_nodes, list):
        err("nodes", "must be a list.")
        raw_nodes = []
    if len(raw_nodes) > MAX_NODES:
        err("nodes", f"{len(raw_nodes)} nodes exceed the maximum of {MAX_NODES}.")
        raw_nodes = []
    for index, node in enumerate(raw_nodes):
        where = f"nodes.{index}"
        if not isinstance(node, dict):
            err(where, "must be an object.")
            continue
        extra = set(node) - set(NODE_KEYS) - {"id"}
        if extra:
            err(where, f"unknown keys: {', '.join(sorted(extra))}.")
        node_type = node.get("node_type")
        if not isinstance(node_type, str) or not node_type.strip() or len(node_type) > 100:
            err(f"{where}.node_type", "a non-empty string of at most 100 characters is required.")
            continue
        node_name = node.get("name")
        if not isinstance(node_name, str) or not node_name.strip() or len(node_name) > 255:
            err(f"{where}.name", "a non-empty string of at most 255 characters is required.")
            continue
        if name_problem(node_name):
            err(f"{where}.name", name_problem(node_name))
            continue
        key = node.get("key")
        if key is None:
            key = _slug(node_name)
            suffix = 2
            base = key
            while key in keys_seen:
                key = f"{base}-{suffix}"
                suffix += 1
        if not isinstance(key, str) or not key.strip() or len(key) > 100:
            err(f"{where}.key", "a non-empty string of at most 100 characters is required.")
            continue
        if key in keys_seen:
            err(f"{where}.key", f"duplicate node key {key!r} (also nodes.{keys_seen[key]}).")
            continue
        keys_seen[key] = index
        parameters = node.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            err(f"{where}.parameters", "must be an object or null.")
            continue
        order_index = node.get("order_index", index)
        if isinstance(order_index, bool) or not isinstance(order_index, int) or abs(order_index) > 2**31 - 1:
            err(f"{where}.order_index", "must be an integer.")
            continue
        nodes.append({"key": key, "node_type": node_type.strip(), "name": node_name, "parameters": parameters,
                      "order_index": order_index})

    # -- edges: both ends must be nodes of this document
    raw_edges = raw.get("edges", [])
    edges: list[dict[str, Any]] = []
    pairs: set[tuple[str, str]] = set()
    if not isinstance(raw_edges, list):
        err("edges", "must be a list.")
        raw_edges = []
    for index, edge in enumerate(raw_edges):
        where = f"edges.{index}"
        if not isinstance(edge, dict):
            err(where, "must be an object.")
            continue
        extra = set(edge) - set(EDGE_KEYS) - {"id"}
        if extra:
            err(where, f"unknown keys: {', '.join(sorted(extra))}.")
        parent, child = edge.get("parent"), edge.get("child")
        bad = False
        for end, value in (("parent", parent), ("child", child)):
            if not isinstance(value, str) or value not in keys_seen:
                err(f"{where}.{end}", f"{value!r} is not the key of a node of this workflow.")
                bad = True
        if bad:
            continue
        if parent == child:
            err(where, f"an edge cannot join node {parent!r} to itself.")
            continue
        if (parent, child) in pairs:
            err(where, f"duplicate edge {parent} -> {child}.")
            continue
        handoff = edge.get("handoff_data")
        if handoff is not None and not isinstance(handoff, dict):
            err(f"{where}.handoff_data", "must be an object or null.")
            continue
        pairs.add((parent, child))
        edges.append({"parent": parent, "child": child, "handoff_data": handoff})

    # -- params: typed defaults
    raw_params = raw.get("params", [])
    params: list[dict[str, Any]] = []
    param_keys: set[str] = set()
    if not isinstance(raw_params, list):
        err("params", "must be a list.")
        raw_params = []
    for index, param in enumerate(raw_params):
        where = f"params.{index}"
        if not isinstance(param, dict):
            err(where, "must be an object.")
            continue
        extra = set(param) - set(PARAM_KEYS) - {"id"}
        if extra:
            err(where, f"unknown keys: {', '.join(sorted(extra))}.")
        key = param.get("key")
        if not isinstance(key, str) or not key.strip() or len(key) > 100:
            err(f"{where}.key", "a non-empty string of at most 100 characters is required.")
            continue
        if key in param_keys:
            err(f"{where}.key", f"duplicate param key {key!r}.")
            continue
        param_keys.add(key)
        value_type = param.get("value_type", ParamValueType.STRING)
        if value_type not in VALUE_TYPES:
            err(f"{where}.value_type", f"must be one of {', '.join(VALUE_TYPES)}.")
            continue
        required = param.get("required", False)
        if not isinstance(required, bool):
            err(f"{where}.required", "must be true or false.")
            continue
        try:
            default_text = default_to_text(value_type, param.get("default_value"))
        except ParamValueError as exc:
            err(f"{where}.default_value", f"does not parse as {value_type}: {exc}")
            continue
        param_metadata = param.get("metadata")
        if param_metadata is not None and not isinstance(param_metadata, dict):
            err(f"{where}.metadata", "must be an object or null.")
            continue
        params.append({"key": key, "value_type": value_type, "required": required, "default_value": default_text,
                       "metadata": param_metadata})

    if errors:
        raise ValidationError(errors)
    return canonical({
        "name": name, "description": description, "category": category.strip(), "tags": clean_tags,
        "metadata": metadata, "nodes": nodes, "edges": edges, "params": params,
    })


def canonical(document: dict[str, Any]) -> dict[str, Any]:
    """Stable ordering, so equal workflows have equal documents (snapshots, round trips)."""
    return {
        "name": document["name"],
        "description": document.get("description"),
        "category": document.get("category") or "",
        "tags": sorted(document.get("tags") or []),
        "metadata": document.get("metadata"),
        "nodes": sorted(document.get("nodes") or [], key=lambda n: (n["order_index"], n["key"])),
        "edges": sorted(document.get("edges") or [], key=lambda e: (e["parent"], e["child"])),
        "params": sorted(document.get("params") or [], key=lambda p: p["key"]),
    }


def document_cycle(document: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The nodes of one cycle of a (clean) document's edges, in order, or None when it has none."""
    from registry.dag import find_cycle

    by_key = {n["key"]: n for n in document["nodes"]}
    children: dict[str, list[str]] = {key: [] for key in by_key}
    for edge in document["edges"]:
        children[edge["parent"]].append(edge["child"])
    cycle = find_cycle(list(by_key), children)
    return None if cycle is None else [by_key[key] for key in cycle]


def describe_cycle(nodes: list[dict[str, Any]]) -> str:
    """'Fetch page' -> 'Summarize' -> 'Fetch page': nodes named by name (what staff see), not key."""
    return " -> ".join(repr(n["name"]) for n in [*nodes, nodes[0]])
