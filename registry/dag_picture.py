"""DAG pictures for the admin: a definition (pipeline) or a document (workflow) drawn left to
right by Graphviz `dot`, as an inline SVG.

Two steps, kept apart so each can be tested alone: `pipeline_dot` / `workflow_dot` are pure
functions from the definition to dot source (every label escaped for dot; dot escapes it again
for XML, so a name carrying `<script>` is text inside the SVG), and `render_svg` runs `dot -Tsvg`
with a timeout and a size limit. `picture` puts them together behind the Django cache (Redis),
keyed by (kind, id, version), so a page view does not run dot each time; a cache outage only
costs the render.

Nodes carry stable SVG ids (`dagnode-<hex of the node id>`, see `node_dom_id`) and the class
`dag-node`: the execution page colors them by step status with CSS classes
(`dag-status-<status>`, set by `with_statuses` and then by the live panel's script).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable

from django.core.cache import cache
from django.utils.safestring import SafeString, mark_safe

logger = logging.getLogger(__name__)

DOT_TIMEOUT_SECONDS = 10
MAX_DOT_SOURCE_BYTES = 512 * 1024
MAX_SVG_BYTES = 4 * 1024 * 1024
MAX_NODES = 500
CACHE_SECONDS = 7 * 24 * 3600
# Part of every cache key: a change of how pictures are drawn must not serve old ones.
DRAWING_VERSION = 1

FONT = "Helvetica,Arial,sans-serif"
INVALID_COLOR = "#ba2121"
NODE_FILL = "#f4f8fa"
NODE_STROKE = "#417690"


class PictureError(Exception):
    """dot could not draw the picture (missing, too slow, too big, failed)."""


@dataclass
class Picture:
    """What a page shows: the SVG (None when it could not be drawn), the validation errors of
    the definition ({"node", "field", "message"}), and why there is no SVG, if there is none."""

    svg: str | None
    errors: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"svg": self.svg, "errors": self.errors, "problem": self.problem}


def node_dom_id(node_id: Any) -> str:
    """The SVG id of a node: any text a node id may hold becomes a valid, unique id attribute."""
    return "dagnode-" + str(node_id).encode("utf-8").hex()


def dot_string(text: Any) -> str:
    """A dot double-quoted string holding `text` literally: backslashes (dot's escapes such as
    \\N, \\G, \\l) and quotes are escaped, `&` too (dot reads HTML entities in labels), control
    characters become spaces."""
    value = re.sub(r"[\x00-\x1f\x7f]", " ", str(text))
    value = value.replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;")
    return f'"{value}"'


def _label(*lines: Any) -> str:
    # Lines joined with dot's centred line break; each part escaped on its own.
    return '"' + "\\n".join(dot_string(line)[1:-1] for line in lines if line not in (None, "")) + '"'


def _shorten(text: Any, limit: int = 60) -> str:
    value = str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _graph_header(name: str) -> list[str]:
    return [
        f"digraph {dot_string(name)} {{",
        "  rankdir=LR; bgcolor=transparent; nodesep=0.35; ranksep=0.55;",
        f'  node [shape=box, style="rounded,filled", fontname={dot_string(FONT)}, fontsize=11, '
        f'fillcolor="{NODE_FILL}", color="{NODE_STROKE}", penwidth=1.2, margin="0.15,0.06"];',
        f'  edge [color="#667788", arrowsize=0.7, fontname={dot_string(FONT)}, fontsize=9];',
    ]


def _invalid_attrs() -> str:
    return f', color="{INVALID_COLOR}", penwidth=2.5, fontcolor="{INVALID_COLOR}", class="dag-node dag-invalid"'


def pipeline_dot(definition: Any, *, errors: list[dict[str, Any]] | None = None) -> str:
    """dot source of a pipeline definition. Tolerates a definition that does not validate: nodes
    named by `errors` are drawn in red, edges to nodes that are not there end at a dashed
    'missing' node. Labels: node id, then component name and version."""
    errors = errors or []
    bad = {str(e["node"]) for e in errors if e.get("node") is not None}
    nodes = definition.get("nodes") if isinstance(definition, dict) else None
    edges = definition.get("edges") if isinstance(definition, dict) else None
    nodes = [n for n in nodes if isinstance(n, dict)] if isinstance(nodes, list) else []
    edges = [e for e in edges if isinstance(e, dict)] if isinstance(edges, list) else []
    lines = _graph_header("pipeline")
    known: set[str] = set()
    for node in nodes[:MAX_NODES]:
        node_id = str(node.get("id", ""))
        if node_id in known:
            continue
        known.add(node_id)
        component = node.get("component")
        if isinstance(component, dict):
            comp = f"{component.get('name', '?')} {component.get('version', '')}".strip()
        else:
            comp = "no component" if component is None else str(component)
        attrs = f"id={dot_string(node_dom_id(node_id))}, label={_label(_shorten(node_id), _shorten(comp))}"
        attrs += _invalid_attrs() if node_id in bad else ', class="dag-node"'
        lines.append(f"  {dot_string('n:' + node_id)} [{attrs}];")
    missing: set[str] = set()
    for edge in edges[: MAX_NODES * 4]:
        parent, child = edge.get("from", edge.get("source")), edge.get("to", edge.get("target"))
        for end in (parent, child):
            end = str(end)
            if end not in known and end not in missing:
                missing.add(end)
                lines.append(f"  {dot_string('n:' + end)} [id={dot_string(node_dom_id(end))}, "
                             f"label={_label(_shorten(end), 'missing')}, style=\"rounded,dashed\", "
                             f'color="{INVALID_COLOR}", fontcolor="{INVALID_COLOR}", class="dag-node dag-missing"];')
        label = ""
        if isinstance(edge.get("outputs"), list):
            label = f", label={dot_string('outputs ' + ','.join(str(i) for i in edge['outputs'][:10]))}"
        lines.append(f"  {dot_string('n:' + str(parent))} -> {dot_string('n:' + str(child))} [class=\"dag-edge\"{label}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def workflow_dot(document: dict[str, Any], *, cycle: list[str] | None = None) -> str:
    """dot source of a workflow document (registry/interchange.py format): nodes labelled with
    name and type, edges parent -> child; nodes on `cycle` (keys) are drawn in red."""
    on_cycle = {str(key) for key in cycle or []}
    lines = _graph_header("workflow")
    known: set[str] = set()
    for node in (document.get("nodes") or [])[:MAX_NODES]:
        key = str(node.get("key", ""))
        known.add(key)
        attrs = (f"id={dot_string(node_dom_id(key))}, "
                 f"label={_label(_shorten(node.get('name') or key), _shorten(node.get('node_type') or ''))}")
        attrs += _invalid_attrs() if key in on_cycle else ', class="dag-node"'
        lines.append(f"  {dot_string('n:' + key)} [{attrs}];")
    for edge in (document.get("edges") or [])[: MAX_NODES * 4]:
        parent, child = str(edge.get("parent")), str(edge.get("child"))
        if parent in known and child in known:
            lines.append(f"  {dot_string('n:' + parent)} -> {dot_string('n:' + child)} [class=\"dag-edge\"];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(source: str, *, timeout: float = DOT_TIMEOUT_SECONDS, max_bytes: int = MAX_SVG_BYTES) -> str:
    """`dot -Tsvg` of `source`: the <svg> element alone (no XML prolog, doctype or comments),
    ready to be put inline in a page. Raises PictureError when dot is missing, slow, fails or
    draws more than `max_bytes`."""
    data = source.encode("utf-8")
    if len(data) > MAX_DOT_SOURCE_BYTES:
        raise PictureError("the graph is too big to draw.")
    try:
        done = subprocess.run(["dot", "-Tsvg"], input=data, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise PictureError("Graphviz (dot) is not installed: run scripts/setup.sh.") from None
    except subprocess.TimeoutExpired:
        raise PictureError(f"dot took more than {timeout:g} s.") from None
    if done.returncode != 0:
        raise PictureError("dot failed: " + done.stderr.decode("utf-8", "replace")[:300])
    if len(done.stdout) > max_bytes:
        raise PictureError("the picture is too big to show.")
    svg = done.stdout.decode("utf-8", "replace")
    start = svg.find("<svg")
    if start < 0:
        raise PictureError("dot drew no SVG.")
    svg = re.sub(r"<!--.*?-->\n?", "", svg[start:], flags=re.S)
    # Scale to the page's width rather than dot's fixed points.
    return svg.replace("<svg width=", '<svg class="dag-picture" style="max-width:100%;height:auto" width=', 1)


def definition_errors(definition: Any) -> list[dict[str, Any]]:
    """registry.dag's errors for a definition ({"node", "field", "message"}), [] when it validates."""
    from registry.dag import DagValidationError, validate_definition

    try:
        validate_definition(definition)
    except DagValidationError as exc:
        return list(exc.errors)
    except Exception as exc:  # a definition so broken that the validator itself gives up
        return [{"node": None, "field": "definition", "message": str(exc)}]
    return []


def _cache_get(key: str) -> Any:
    try:
        return cache.get(key)
    except Exception:  # Redis down: draw it again, the page still works
        logger.warning("dag picture cache unavailable (get %s)", key, exc_info=True)
        return None


def _cache_set(key: str, value: Any, seconds: int) -> None:
    try:
        cache.set(key, value, seconds)
    except Exception:
        logger.warning("dag picture cache unavailable (set %s)", key, exc_info=True)


def cache_key(kind: str, object_id: Any, version: Any) -> str:
    return f"dag-picture:{DRAWING_VERSION}:{kind}:{object_id}:{version}"


def picture(kind: str, object_id: Any, version: Any, build: Callable[[], tuple[str, list[dict]]], *,
            seconds: int = CACHE_SECONDS) -> Picture:
    """The picture of (kind, id, version), from the cache or drawn now. `build` returns the dot
    source and the errors to list; it is only called when the cache does not have the picture."""
    key = cache_key(kind, object_id, version)
    found = _cache_get(key)
    if isinstance(found, dict) and "svg" in found:
        return Picture(svg=found["svg"], errors=found.get("errors") or [], problem=found.get("problem") or "")
    source, errors = build()
    try:
        drawn = Picture(svg=render_svg(source), errors=errors)
    except PictureError as exc:
        return Picture(svg=None, errors=errors, problem=str(exc))  # not cached: may work next time
    _cache_set(key, drawn.as_dict(), seconds)
    return drawn


def _pipeline_build(definition: Any) -> Callable[[], tuple[str, list[dict]]]:
    def build():
        errors = definition_errors(definition)
        return pipeline_dot(definition, errors=errors), errors
    return build


def pipeline_picture(*, kind: str, object_id: Any, version: Any, definition: Any) -> Picture:
    """The picture of a stored pipeline definition (pipeline, pipeline version, execution)."""
    return picture(kind, object_id, version, _pipeline_build(definition))


def definition_preview(definition: Any) -> Picture:
    """The picture of a definition being edited (not stored), keyed by its content. Its errors
    also depend on the registered components, so the entry is short-lived."""
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()
    return picture("preview", digest, "-", _pipeline_build(definition), seconds=60)


def workflow_picture(*, kind: str, object_id: Any, version: Any,
                     document: dict[str, Any] | Callable[[], dict[str, Any]]) -> Picture:
    """The picture of a workflow document (workflow, workflow version); a cycle is drawn in red.
    `document` may be a function, called only when the cache does not have the picture."""
    from registry.workflow_document import describe_cycle, document_cycle

    def build():
        nonlocal document
        if callable(document):
            document = document()
        nodes = [n for n in document.get("nodes") or [] if isinstance(n, dict) and "key" in n]
        keys = {n["key"] for n in nodes}
        edges = [e for e in document.get("edges") or [] if isinstance(e, dict)
                 and e.get("parent") in keys and e.get("child") in keys]
        cycle = document_cycle({"nodes": nodes, "edges": edges})
        errors = []
        if cycle:
            errors = [{"node": None, "field": "edges",
                       "message": f"cycle: {describe_cycle(cycle)}; a workflow with a cycle cannot be applied."}]
        return workflow_dot(document, cycle=[n["key"] for n in cycle or []]), errors
    return picture(kind, object_id, version, build)


def with_statuses(svg: str, statuses: dict[str, str]) -> str:
    """The SVG with each node's step status as a class (`dag-status-completed`), for the
    execution page's first paint; the live panel's script moves the classes on from there."""
    for node_id, status in statuses.items():
        dom_id = node_dom_id(node_id).replace("-", "&#45;", 1)
        safe_status = re.sub(r"[^a-z_]", "", str(status).lower())
        svg = svg.replace(f'<g id="{dom_id}" class="node dag&#45;node',
                          f'<g id="{dom_id}" class="node dag&#45;node dag&#45;status&#45;{safe_status}', 1)
    return svg


def as_html(pic: Picture, *, extra_class: str = "") -> SafeString:
    """The picture block of a page: the SVG (dot's output, its text already escaped by dot), the
    errors listed under it (escaped here), or why there is no picture."""
    from django.utils.html import format_html, format_html_join

    errors_html = ""
    if pic.errors:
        errors_html = format_html(
            '<ul class="dag-errors errorlist">{}</ul>',
            format_html_join("", "<li>{}{}: {}</li>",
                             ((format_html("node <b>{}</b>: ", e["node"]) if e.get("node") is not None else "",
                               e.get("field", ""), e.get("message", "")) for e in pic.errors[:50])))
    body = mark_safe(pic.svg) if pic.svg else format_html('<p class="dag-problem">No picture: {}</p>', pic.problem)
    return format_html('<div class="dag-picture-block {}">{}{}</div>', extra_class, body, errors_html)
