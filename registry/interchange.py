"""Export and import of workflows and pipelines as self-contained JSON or YAML documents, and
import of n8n workflow JSON (what natural-language workflow generators commonly emit).

ImageFlow documents::

    {"format": "imageflow.workflow", "format_version": 1, "workflow": {<workflow document>}}
    {"format": "imageflow.pipeline", "format_version": 1,
     "pipeline": {"name", "description", "category", "tags", "definition"}}

They carry no ids, owners or timestamps, so export -> import -> export gives the same text.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from django.core.exceptions import ValidationError

from registry.models import Pipeline, Workflow
from registry.workflow_document import clean_document
from registry.workflow_selectors import workflow_document

WORKFLOW_FORMAT = "imageflow.workflow"
PIPELINE_FORMAT = "imageflow.pipeline"
FORMAT_VERSION = 1
FORMATS = ("json", "yaml")


# --- serialization --------------------------------------------------------------------------------

def dump(document: dict[str, Any], *, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)
    raise ValidationError({"format": [f"unknown format {fmt!r}; use json or yaml."]})


def load(text: str | bytes | dict) -> Any:
    """A document from a dict, or from JSON or YAML text (YAML is a superset of JSON)."""
    if isinstance(text, dict):
        return text
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError({"document": ["is not UTF-8 text."]}) from None
    if not isinstance(text, str):
        raise ValidationError({"document": ["must be an object or JSON/YAML text."]})
    # Text inside the request body escaped the API parser's nesting limit: the same limit here,
    # since both decoders recurse per level (RecursionError, a 500, otherwise).
    from django.conf import settings

    from imageflow.api.parsers import json_depth_exceeds

    too_deep = ValidationError({"document": [f"nested deeper than {settings.API_JSON_MAX_DEPTH} levels."]})
    if json_depth_exceeds(text, settings.API_JSON_MAX_DEPTH):
        raise too_deep
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    except RecursionError:
        raise too_deep from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError({"document": [f"neither JSON nor YAML: {str(exc).splitlines()[0]}"]}) from None
    except RecursionError:
        raise too_deep from None


# --- workflows ------------------------------------------------------------------------------------

def workflow_export_document(workflow: Workflow) -> dict[str, Any]:
    return {"format": WORKFLOW_FORMAT, "format_version": FORMAT_VERSION, "workflow": workflow_document(workflow)}


def workflow_from_export(document: Any) -> dict[str, Any]:
    """The clean workflow document inside an export (or a bare workflow document)."""
    if not isinstance(document, dict):
        raise ValidationError({"document": ["must be an object."]})
    if "format" in document:
        if document.get("format") != WORKFLOW_FORMAT:
            raise ValidationError({"format": [f"expected {WORKFLOW_FORMAT!r}, got {document.get('format')!r}."]})
        if document.get("format_version") != FORMAT_VERSION:
            raise ValidationError({"format_version": [f"unsupported version {document.get('format_version')!r}."]})
        document = document.get("workflow")
    return clean_document(document)


# --- pipelines ------------------------------------------------------------------------------------

def pipeline_export_document(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "format": PIPELINE_FORMAT, "format_version": FORMAT_VERSION,
        "pipeline": {
            "name": pipeline.name, "description": pipeline.description, "category": pipeline.category,
            "tags": sorted(pipeline.tags.values_list("name", flat=True)), "definition": pipeline.definition,
        },
    }


def pipeline_import(*, document: Any, user) -> Pipeline:
    """Create a pipeline from an export; its definition is validated like any other."""
    from django.db import transaction

    from registry.models import Tag
    from registry.services import pipeline_create

    if not isinstance(document, dict) or document.get("format") != PIPELINE_FORMAT:
        raise ValidationError({"format": [f"expected a {PIPELINE_FORMAT!r} document."]})
    if document.get("format_version") != FORMAT_VERSION:
        raise ValidationError({"format_version": [f"unsupported version {document.get('format_version')!r}."]})
    body = document.get("pipeline")
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not isinstance(body.get("definition"), dict):
        raise ValidationError({"pipeline": ["must be an object with a name and a definition."]})
    tags = body.get("tags") or []
    category = body.get("category") or ""
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise ValidationError({"pipeline.tags": ["must be a list of non-empty strings."]})
    if not isinstance(category, str) or len(category) > 100:
        raise ValidationError({"pipeline.category": ["must be a string of at most 100 characters."]})
    with transaction.atomic():
        pipeline = pipeline_create(name=body["name"], description=body.get("description"),
                                   definition=body["definition"], created_by=user)
        if category:
            Pipeline.objects.filter(pk=pipeline.pk).update(category=category)
        pipeline.tags.set([Tag.objects.get_or_create(name=t.strip().lower())[0] for t in tags])
    pipeline.refresh_from_db()
    return pipeline


# --- n8n ------------------------------------------------------------------------------------------

N8N_NODE_KEYS = {"parameters", "name", "type"}
N8N_KEPT_NODE_KEYS = ("id", "type", "typeVersion", "position", "credentials", "disabled", "notes", "webhookId",
                      "retryOnFail", "continueOnFail", "onError", "alwaysOutputData", "executeOnce")
N8N_INPUT_TYPES = {"string": "string", "number": "float", "boolean": "bool", "array": "json", "object": "json",
                   "any": "json"}
STICKY_NOTE = "n8n-nodes-base.stickyNote"


def n8n_node_type(n8n_type: str) -> str:
    """agent / trigger / tool, from n8n's node type name."""
    short = n8n_type.rsplit(".", 1)[-1].lower()
    if "trigger" in short or short in {"webhook", "start", "cron", "schedule"}:
        return "trigger"
    if "langchain" in n8n_type.lower() and any(w in short for w in ("agent", "chain", "lmchat", "openai", "llm")):
        return "agent"
    if short in {"agent", "openai", "aiagent"}:
        return "agent"
    return "tool"


def _key(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:90] or "node"
    key, n = base, 2
    while key in taken:
        key = f"{base}-{n}"
        n += 1
    taken.add(key)
    return key


def n8n_to_document(raw: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """An n8n workflow as a workflow document, plus the list of what could not be mapped (also
    kept in `metadata.n8n`, so nothing of the source is lost)."""
    if not isinstance(raw, dict):
        raise ValidationError({"document": ["an n8n workflow is a JSON object."]})
    if not isinstance(raw.get("nodes"), list):
        raise ValidationError({"document.nodes": ["an n8n workflow has a list of nodes."]})
    connections = raw.get("connections") or {}
    if not isinstance(connections, dict):
        raise ValidationError({"document.connections": ["must be an object."]})
    unmapped: list[dict[str, str]] = []
    kept: dict[str, Any] = {"nodes": {}, "notes": []}
    nodes: list[dict[str, Any]] = []
    params: list[dict[str, Any]] = []
    key_by_name: dict[str, str] = {}
    taken: set[str] = set()

    for index, node in enumerate(raw["nodes"]):
        if not isinstance(node, dict) or not isinstance(node.get("name"), str) or not isinstance(node.get("type"), str):
            unmapped.append({"path": f"nodes[{index}]", "reason": "not an n8n node (needs name and type); kept"})
            kept.setdefault("invalid_nodes", []).append(node)
            continue
        if node["type"] == STICKY_NOTE:
            unmapped.append({"path": f"nodes[{index}]", "reason": f"sticky note {node['name']!r} is not a step; "
                                                                  "kept in metadata.n8n.notes"})
            kept["notes"].append(node)
            continue
        if node["name"] in key_by_name:
            unmapped.append({"path": f"nodes[{index}]", "reason": f"duplicate node name {node['name']!r}; kept"})
            kept.setdefault("invalid_nodes", []).append(node)
            continue
        key = _key(node["name"], taken)
        key_by_name[node["name"]] = key
        parameters = node.get("parameters") if isinstance(node.get("parameters"), dict) else {}
        nodes.append({"key": key, "node_type": n8n_node_type(node["type"]), "name": node["name"][:255],
                      "parameters": parameters, "order_index": len(nodes)})
        kept["nodes"][key] = {k: node[k] for k in N8N_KEPT_NODE_KEYS if k in node}
        extra = sorted(set(node) - N8N_NODE_KEYS - set(N8N_KEPT_NODE_KEYS))
        if extra:
            kept["nodes"][key]["other"] = {k: node[k] for k in extra}
            unmapped.append({"path": f"nodes[{index}]", "reason": f"fields {', '.join(extra)} have no column; kept"})
        if node.get("credentials"):
            unmapped.append({"path": f"nodes[{index}].credentials",
                             "reason": "credentials are references to n8n's store; kept, not resolved"})
        # Inputs declared by a sub-workflow trigger become the workflow's params.
        inputs = ((parameters.get("workflowInputs") or {}).get("values") if isinstance(parameters.get("workflowInputs"), dict)
                  else None)
        for item in inputs or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]:
                params.append({"key": item["name"][:100], "value_type": N8N_INPUT_TYPES.get(item.get("type", "string"),
                                                                                             "json"),
                               "required": True, "default_value": None, "metadata": {"source": f"n8n:{node['name']}"}})

    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for source, outputs in connections.items():
        if source not in key_by_name:
            unmapped.append({"path": f"connections.{source}", "reason": "no node with this name; dropped"})
            continue
        if not isinstance(outputs, dict):
            unmapped.append({"path": f"connections.{source}", "reason": "not an object; dropped"})
            continue
        for connection_type, by_output in outputs.items():
            for output_index, targets in enumerate(by_output or []):
                for target in targets or []:
                    where = f"connections.{source}.{connection_type}[{output_index}]"
                    if not isinstance(target, dict) or target.get("node") not in key_by_name:
                        unmapped.append({"path": where, "reason": f"target {target!r} is not a node; dropped"})
                        continue
                    parent, child = key_by_name[source], key_by_name[target["node"]]
                    if parent == child:
                        unmapped.append({"path": where, "reason": f"self-loop on {source!r} is not an edge; "
                                                                  "kept in metadata.n8n.loops"})
                        kept.setdefault("loops", []).append({"node": source, "type": connection_type,
                                                             "output": output_index})
                        continue
                    link = {"type": connection_type, "output": output_index, "input": target.get("index", 0)}
                    edge = edges.setdefault((parent, child), {"parent": parent, "child": child,
                                                              "handoff_data": {"n8n": []}})
                    edge["handoff_data"]["n8n"].append(link)

    top_level = {k: v for k, v in raw.items() if k not in {"name", "nodes", "connections", "tags"}}
    if top_level:
        kept["workflow"] = top_level
        unmapped.append({"path": ", ".join(sorted(top_level)), "reason": "workflow settings kept in metadata.n8n"})
    if not kept["notes"]:
        kept.pop("notes")
    tags = []
    for tag in raw.get("tags") or []:
        name = tag.get("name") if isinstance(tag, dict) else tag
        if isinstance(name, str) and name.strip():
            tags.append(name.strip()[:100])
    document = {
        "name": (raw.get("name") or "Imported n8n workflow")[:255] if isinstance(raw.get("name"), str)
        else "Imported n8n workflow",
        "description": None, "category": "n8n", "tags": tags,
        "metadata": {"source": "n8n", "n8n": kept, "unmapped": unmapped},
        "nodes": nodes, "edges": list(edges.values()), "params": params,
    }
    return clean_document(document), unmapped


def import_document(*, document: Any, fmt: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A clean workflow document from an ImageFlow export or an n8n workflow."""
    loaded = load(document)
    if fmt == "n8n":
        return n8n_to_document(loaded)
    if fmt == "imageflow":
        return workflow_from_export(loaded), []
    raise ValidationError({"format": [f"unknown import format {fmt!r}; use imageflow or n8n."]})
