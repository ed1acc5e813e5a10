"""The pipeline DAG: its canonical JSON format and the one validation used on save and on run.

Canonical definition (see README, "Pipelines and the execution engine")::

    {"nodes": [{"id": "resize", "component": {"name": "resize", "version": "1.0.0"},
                "parameters": {"width": 320}}],
     "edges": [{"from": "resize", "to": "gray"},
               {"from": "split", "to": "merge", "outputs": [0]}]}

Every node produces an ordered list of files. A child's inputs are its parents' outputs,
concatenated in the order its incoming edges are listed; an edge's optional `outputs` (a list
of indexes into the parent's outputs) picks which of them flow along that edge. Root nodes
receive the run's input files.
"""

from __future__ import annotations

import json

import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
from django.conf import settings
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from imageflow.exceptions import DagValidationError
from imageflow.validators import NUL_MESSAGE, json_nul_path
from registry.models import Component


@dataclass(frozen=True)
class DagEdge:
    parent: str
    child: str
    outputs: tuple[int, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"from": self.parent, "to": self.child}
        if self.outputs is not None:
            data["outputs"] = list(self.outputs)
        return data


@dataclass(frozen=True)
class DagNode:
    id: str
    component: Component
    parameters: dict[str, Any]
    index: int


@dataclass
class ValidatedDag:
    nodes: dict[str, DagNode]
    edges: list[DagEdge]
    parents: dict[str, list[str]]
    children: dict[str, list[str]]
    order: list[str]
    incoming: dict[str, list[DagEdge]] = field(default_factory=dict)
    # What a failed item of a map step does to the run: "fail" or "continue" (None: the setting's
    # default, ON_ITEM_ERROR_DEFAULT, or what the run asks for).
    on_item_error: str | None = None

    @property
    def roots(self) -> list[str]:
        return [node_id for node_id in self.order if not self.parents[node_id]]

    @property
    def leaves(self) -> list[str]:
        return [node_id for node_id in self.order if not self.children[node_id]]


# A failed item: the run fails (naming the node, the input file and the cause), or the item's
# downstream items are skipped and the rest of the run goes on (docs/engine.md, "Items").
ON_ITEM_ERROR_POLICIES = ("fail", "continue")


def _error(errors: list[dict], field_path: str, message: str, node: str | None = None) -> None:
    errors.append({"node": node, "field": field_path, "message": message})


def _copy_json(value: Any) -> Any:
    """A copy of a JSON value (dicts and lists are new; leaves are immutable); faster than deepcopy."""
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


def _apply_defaults(schema: Any, instance: Any) -> None:
    """Fill in JSON Schema `default`s of missing object properties, recursively."""
    if not isinstance(schema, dict) or not isinstance(instance, dict):
        return
    for name, subschema in (schema.get("properties") or {}).items():
        if not isinstance(subschema, dict):
            continue
        if name not in instance and "default" in subschema:
            instance[name] = _copy_json(subschema["default"])
        if name in instance:
            _apply_defaults(subschema, instance[name])


def _path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


# Compiled validators by schema text, kept by the process: checking a schema against its
# metaschema and compiling it costs milliseconds, and every run start validates its nodes'
# parameters against the same few schemas. Keyed by the schema itself, so an edited schema
# compiles anew; bounded, so a registry with very many schemas cannot grow it without limit.
_COMPILED: dict[str, Any] = {}
_COMPILED_MAX = 1024


def _compiled(schema: dict):
    key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    compiled = _COMPILED.get(key)
    if compiled is None:
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
            try:
                fast = jsonschema_rs.validator_for(schema)
            except Exception:  # a schema the Rust library cannot compile: explain every node instead
                fast = None
            compiled = (cls(schema), fast)
        except SchemaError as exc:
            compiled = exc
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[key] = compiled
    return compiled


class _SchemaCache:
    """Compiled validators per component (a 5,000-node DAG usually uses a handful): the compiled
    Rust validator answers "valid?" fast; `jsonschema` explains the (rare) invalid ones with paths."""

    def __init__(self) -> None:
        self._validators: dict[Any, Any] = {}

    def get(self, component: Component):
        if component.pk not in self._validators:
            self._validators[component.pk] = _compiled(component.input_schema or {"type": "object"})
        return self._validators[component.pk]


def validate_definition(definition: dict, *, max_nodes: int | None = None) -> ValidatedDag:
    """Check a pipeline definition and return the resolved DAG, or raise DagValidationError
    listing every problem (node id and field path of each)."""
    errors: list[dict] = []
    if not isinstance(definition, dict):
        raise DagValidationError([{"node": None, "field": "definition", "message": "must be a JSON object."}])
    nul = json_nul_path(definition)
    if nul is not None:
        raise DagValidationError([{"node": None, "field": nul, "message": NUL_MESSAGE}])
    unknown_keys = set(definition) - {"nodes", "edges", "on_item_error"}
    if unknown_keys:
        _error(errors, "definition", f"unknown keys: {', '.join(sorted(unknown_keys))}.")
    on_item_error = definition.get("on_item_error")
    if on_item_error is not None and on_item_error not in ON_ITEM_ERROR_POLICIES:
        _error(errors, "on_item_error", f"must be one of {', '.join(ON_ITEM_ERROR_POLICIES)}.")
    raw_nodes = definition.get("nodes")
    raw_edges = definition.get("edges", [])
    if not isinstance(raw_nodes, list):
        raise DagValidationError(errors + [{"node": None, "field": "nodes", "message": "must be a list of nodes."}])
    if not isinstance(raw_edges, list):
        raise DagValidationError(errors + [{"node": None, "field": "edges", "message": "must be a list of edges."}])
    if not raw_nodes:
        raise DagValidationError(errors + [{"node": None, "field": "nodes", "message": "a pipeline needs at least one node."}])
    limit = settings.PIPELINE_MAX_NODES if max_nodes is None else max_nodes
    if len(raw_nodes) > limit:
        raise DagValidationError(errors + [{"node": None, "field": "nodes",
                                            "message": f"{len(raw_nodes)} nodes exceed the maximum of {limit}."}])

    # -- nodes: shape and unique ids
    shaped: list[tuple[int, str, str, str, dict]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_nodes):
        where = f"nodes[{index}]"
        if not isinstance(raw, dict):
            _error(errors, where, "must be an object.")
            continue
        node_id = raw.get("id")
        if not isinstance(node_id, str) or not node_id.strip():
            _error(errors, f"{where}.id", "must be a non-empty string.")
            continue
        if len(node_id) > 255:
            _error(errors, f"{where}.id", "must be at most 255 characters.", node_id)
            continue
        if node_id in seen:
            _error(errors, f"{where}.id", f"duplicate node id {node_id!r} (also nodes[{seen[node_id]}]).", node_id)
            continue
        seen[node_id] = index
        extra = set(raw) - {"id", "component", "parameters", "label", "position"}
        if extra:
            _error(errors, where, f"unknown keys: {', '.join(sorted(extra))}.", node_id)
        ref = raw.get("component")
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not isinstance(ref.get("version"), str):
            _error(errors, f"{where}.component", 'must be {"name": <str>, "version": <str>}.', node_id)
            continue
        parameters = raw.get("parameters", {})
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            _error(errors, f"{where}.parameters", "must be an object.", node_id)
            continue
        shaped.append((index, node_id, ref["name"], ref["version"], parameters))

    # -- components: one query for every (name, version) referenced
    wanted = {(name, version) for _, _, name, version, _ in shaped}
    components: dict[tuple[str, str], Component] = {}
    if wanted:
        names = {name for name, _ in wanted}
        versions = {version for _, version in wanted}
        for component in Component.objects.filter(name__in=names, version__in=versions):
            components[(component.name, component.version)] = component

    schemas = _SchemaCache()
    nodes: dict[str, DagNode] = {}
    for index, node_id, name, version, parameters in shaped:
        component = components.get((name, version))
        if component is None:
            _error(errors, f"nodes[{index}].component", f"unknown component {name}:{version}.", node_id)
            continue
        compiled = schemas.get(component)
        if isinstance(compiled, SchemaError):
            _error(errors, f"nodes[{index}].component",
                   f"component {name}:{version} has an invalid input_schema: {compiled.message}", node_id)
            continue
        validator, fast = compiled
        params = _copy_json(parameters)
        _apply_defaults(validator.schema, params)
        nodes[node_id] = DagNode(id=node_id, component=component, parameters=params, index=index)
        if fast is not None and fast.is_valid(params):
            continue
        found = sorted(validator.iter_errors(params), key=lambda e: [str(p) for p in e.absolute_path])
        if not found and fast is not None:  # the two libraries disagree: report the fast one's findings
            for err in fast.iter_errors(params):
                _error(errors, f"nodes[{index}].parameters{_path(err.instance_path)}", err.message, node_id)
        for err in found:
            parts = list(err.absolute_path)
            if err.validator == "required" and isinstance(err.instance, dict):
                missing = [p for p in err.validator_value if p not in err.instance]
                if missing:
                    parts.append(missing[0])
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                allowed = set((err.schema.get("properties") or {}))
                extra_props = sorted(k for k in err.instance if k not in allowed)
                if extra_props:
                    parts.append(extra_props[0])
            _error(errors, f"nodes[{index}].parameters{_path(parts)}", err.message, node_id)

    # -- edges: known endpoints, no duplicates, no self loops
    all_ids = set(seen)
    parents: dict[str, list[str]] = {node_id: [] for node_id in seen}
    children: dict[str, list[str]] = {node_id: [] for node_id in seen}
    incoming: dict[str, list[DagEdge]] = {node_id: [] for node_id in seen}
    edges: list[DagEdge] = []
    pairs: set[tuple[str, str]] = set()
    for index, raw in enumerate(raw_edges):
        where = f"edges[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("from"), str) or not isinstance(raw.get("to"), str):
            _error(errors, where, 'must be {"from": <node id>, "to": <node id>}.')
            continue
        parent, child = raw["from"], raw["to"]
        extra = set(raw) - {"from", "to", "outputs"}
        if extra:
            _error(errors, where, f"unknown keys: {', '.join(sorted(extra))}.", child if child in all_ids else None)
        dangling = [end for end in (parent, child) if end not in all_ids]
        if dangling:
            _error(errors, where, f"dangling edge {parent} -> {child}: no node {', '.join(map(repr, dangling))}.",
                   child if child in all_ids else (parent if parent in all_ids else None))
            continue
        if parent == child:
            _error(errors, where, f"cycle: {parent} -> {parent}.", parent)
            continue
        if (parent, child) in pairs:
            _error(errors, where, f"duplicate edge {parent} -> {child}.", child)
            continue
        outputs = raw.get("outputs")
        if outputs is not None:
            if not isinstance(outputs, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in outputs):
                _error(errors, f"{where}.outputs", "must be a list of output indexes (integers >= 0).", child)
                continue
            outputs = tuple(outputs)
        pairs.add((parent, child))
        edge = DagEdge(parent=parent, child=child, outputs=outputs)
        edges.append(edge)
        parents[child].append(parent)
        children[parent].append(child)
        incoming[child].append(edge)

    # -- acyclic: Kahn's algorithm; whatever is left over lies on or behind a cycle
    order = _topological_order(list(seen), parents, children)
    if len(order) < len(seen):
        cycle = _find_cycle(set(seen) - set(order), children)
        _error(errors, "edges", "cycle: " + " -> ".join(cycle + [cycle[0]]) + ".", cycle[0])

    if errors:
        raise DagValidationError(errors)
    return ValidatedDag(nodes={node_id: nodes[node_id] for node_id in order},
                        edges=edges, parents=parents, children=children, order=order, incoming=incoming,
                        on_item_error=on_item_error)


def find_cycle(ids: list[str], children: dict[str, list[str]]) -> list[str] | None:
    """The nodes of one cycle of a graph given as children lists, in order, or None when the graph
    is acyclic (the check of pipeline definitions, for other graphs such as workflows)."""
    parents: dict[str, list[str]] = {node_id: [] for node_id in ids}
    for parent in ids:
        for child in children.get(parent, []):
            parents[child].append(parent)
    full_children = {node_id: list(children.get(node_id, [])) for node_id in ids}
    order = _topological_order(list(ids), parents, full_children)
    if len(order) == len(ids):
        return None
    return _find_cycle(set(ids) - set(order), full_children)


def _topological_order(ids: list[str], parents: dict[str, list[str]], children: dict[str, list[str]]) -> list[str]:
    remaining = {node_id: len(parents[node_id]) for node_id in ids}
    queue = deque(node_id for node_id in ids if remaining[node_id] == 0)
    order: list[str] = []
    while queue:
        node_id = queue.popleft()
        order.append(node_id)
        for child in children[node_id]:
            remaining[child] -= 1
            if remaining[child] == 0:
                queue.append(child)
    return order


def _find_cycle(candidates: set[str], children: dict[str, list[str]]) -> list[str]:
    """A cycle among nodes Kahn's algorithm could not order (iterative DFS, no recursion limit)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(candidates):
        if state.get(start):
            continue
        path: list[str] = [start]
        position = {start: 0}
        state[start] = 1
        stack = [iter([c for c in children[start] if c in candidates])]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                done = path.pop()
                position.pop(done, None)
                state[done] = 2
                continue
            if state.get(child) == 1:
                return path[position[child]:]
            if state.get(child) == 2:
                continue
            state[child] = 1
            position[child] = len(path)
            path.append(child)
            stack.append(iter([c for c in children[child] if c in candidates]))
    return sorted(candidates)[:1]


def merge_parameters(definition: dict, overrides: dict[str, dict] | None) -> dict:
    """A copy of `definition` whose nodes' parameters are updated by `overrides` ({node_id: {...}}).
    Unknown node ids are reported as a DagValidationError on field `parameters.<id>`."""
    if not overrides:
        return definition
    if not isinstance(overrides, dict):
        raise DagValidationError([{"node": None, "field": "parameters", "message": "must be an object of {node_id: {...}}."}])
    merged = copy.deepcopy(definition)
    nodes = {n.get("id"): n for n in merged.get("nodes", []) if isinstance(n, dict)}
    errors: list[dict] = []
    for node_id, values in overrides.items():
        if node_id not in nodes:
            _error(errors, f"parameters.{node_id}", f"no node {node_id!r} in the pipeline.", node_id)
        elif not isinstance(values, dict):
            _error(errors, f"parameters.{node_id}", "must be an object.", node_id)
        else:
            base = nodes[node_id].get("parameters") or {}
            nodes[node_id]["parameters"] = {**base, **values}
    if errors:
        raise DagValidationError(errors)
    return merged
