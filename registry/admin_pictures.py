"""The picture blocks of the registry's admin pages: DAG pictures of pipelines, pipeline versions,
workflows and workflow versions (registry/dag_picture.py does the drawing and caching), and the
diff of a workflow version against the one before it, as the API's diff computes it."""

from __future__ import annotations

import json
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from registry import dag_picture
from registry.models import Pipeline, PipelineVersion, Workflow, WorkflowVersion
from registry.versioning import diff_workflow_documents

PICTURE_MEDIA_CSS = {"all": ("registry/admin_pictures.css",)}


def pipeline_picture_html(pipeline: Pipeline) -> SafeString:
    pic = dag_picture.pipeline_picture(kind="pipeline", object_id=pipeline.pk, version=pipeline.version,
                                       definition=pipeline.definition)
    return dag_picture.as_html(pic)


def pipeline_version_picture_html(row: PipelineVersion) -> SafeString:
    # The same picture as the pipeline's at that version (one cache entry for both pages).
    pic = dag_picture.pipeline_picture(kind="pipeline", object_id=row.pipeline_id, version=row.version,
                                       definition=row.definition)
    return dag_picture.as_html(pic)


def workflow_picture_html(workflow: Workflow) -> SafeString:
    from registry.workflow_selectors import workflow_document

    pic = dag_picture.workflow_picture(kind="workflow", object_id=workflow.pk, version=workflow.version,
                                       document=lambda: workflow_document(workflow))
    return dag_picture.as_html(pic)


def workflow_version_picture_html(row: WorkflowVersion) -> SafeString:
    pic = dag_picture.workflow_picture(kind="workflow", object_id=row.workflow_id, version=row.version,
                                       document=row.snapshot or {})
    return dag_picture.as_html(pic)


def workflow_version_diff(row: WorkflowVersion) -> dict[str, Any] | None:
    """The API's diff (GET /workflows/{id}/versions/{n-1}/diff/{n}) of this version against the
    version before it; None for the first version."""
    previous = (WorkflowVersion.objects.filter(workflow_id=row.workflow_id, version__lt=row.version)
                .order_by("-version").values_list("version", "snapshot").first())
    if previous is None:
        return None
    return {"from_version": previous[0], "to_version": row.version,
            **diff_workflow_documents(previous[1] or {}, row.snapshot or {})}


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _item_label(collection: str, item: dict[str, Any]) -> str:
    if collection == "nodes":
        return f"{item.get('name', item.get('key'))} ({item.get('key')}, {item.get('node_type')})"
    if collection == "edges":
        return f"{item.get('parent')} → {item.get('child')}"
    return f"{item.get('key')} ({item.get('value_type')})"


def diff_html(diff: dict[str, Any] | None) -> SafeString:
    """The diff as a table: one row per added, removed or changed item, each changed field with
    its value before and after."""
    if diff is None:
        return mark_safe("<p>The first version: nothing to compare with.</p>")
    if diff.get("identical"):
        return format_html("<p>Identical to version {}.</p>", diff["from_version"])
    rows: list[tuple[str, str, str, Any]] = []
    for name, change in diff.get("fields", {}).items():
        rows.append(("changed", "field", name, format_html("{} → {}", _value(change["from"]), _value(change["to"]))))
    for collection in ("nodes", "edges", "params"):
        section = diff.get(collection) or {}
        for item in section.get("added", []):
            rows.append(("added", collection[:-1], _item_label(collection, item), _value(item)))
        for item in section.get("removed", []):
            rows.append(("removed", collection[:-1], _item_label(collection, item), _value(item)))
        for item in section.get("changed", []):
            fields = format_html_join(mark_safe("<br>"), "<b>{}</b>: {} → {}",
                                      ((f, _value(c["from"]), _value(c["to"])) for f, c in item["fields"].items()))
            rows.append(("changed", collection[:-1], str(item["id"]), fields))
    body = format_html_join("", '<tr class="diff-{}"><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>',
                            ((kind, kind, what, label, detail) for kind, what, label, detail in rows))
    return format_html('<p>Changes from version {} to {}:</p><table class="workflow-diff"><thead><tr><th>change</th>'
                       "<th>what</th><th>which</th><th>detail</th></tr></thead><tbody>{}</tbody></table>",
                       diff["from_version"], diff["to_version"], body)
