"""The images of runs on admin pages, from the rows alone (the files' `thumbnails` records):
no object-store request and no decode on a page view, and a fixed number of queries per page.

- `{% run_images original %}` on an execution's page: its inputs, then each step's inputs and
  outputs side by side (before / after), each thumbnail linked to its file's page.
- `{% file_origin file %}` on a file's page: the run and step that produced it and the file(s) it
  was derived from (a map step's output comes from the input at the same position).

Template tags, so that the execution's admin (executions/admin.py) and the file admin need not
know each other: files stays below executions (docs: STYLE.md, "dependencies one way")."""

from __future__ import annotations

from dataclasses import dataclass, field

from django import template
from django.urls import reverse

from executions.models import ComponentExecution, PipelineExecution
from files.admin_display import thumbnail_html
from files.models import File

register = template.Library()

THUMB_BOX = 120


@dataclass
class Shown:
    id: str
    name: str
    url: str | None
    html: str
    results: str = ""  # a line of the image's results (metadata["results"]: ONNX, privacy, annotate)


def results_summary(results) -> str:
    """One line of an image's results: top labels, detections or classes."""
    if not isinstance(results, dict):
        return ""

    def named(entry) -> str:
        label = entry.get("label") or (f"class {entry['class_id']}" if entry.get("class_id") is not None else "?")
        score = entry.get("score")
        return f"{label} {score:.2f}" if isinstance(score, (int, float)) else label

    if isinstance(results.get("labels"), list):
        return ", ".join(named(e) for e in results["labels"][:3])
    if isinstance(results.get("detections"), list):
        found = results["detections"]
        return f"{len(found)} found" + (": " + ", ".join(named(e) for e in found[:3]) if found else "")
    if isinstance(results.get("classes"), list):
        return ", ".join(f"{e.get('label') or e.get('class_id')} {e.get('fraction', 0):.0%}"
                         for e in results["classes"][:3])
    return ""


@dataclass
class Pair:
    before: list[Shown] = field(default_factory=list)
    after: list[Shown] = field(default_factory=list)


def _step_kind(step: ComponentExecution) -> str:
    """map (output i from input i), merge, passthrough, or other (container and HTTP steps)."""
    from executions.engine.runners.builtin import BUILTIN_OPERATIONS
    from registry.models import ComponentRunner

    if step.component.runner == ComponentRunner.BUILTIN and step.component.name in BUILTIN_OPERATIONS:
        return BUILTIN_OPERATIONS[step.component.name].kind
    if step.component.runner == ComponentRunner.ONNX:  # one output image per input
        return "map"
    return "other"


def _shown(files: dict[str, File], file_id: str) -> Shown:
    file = files.get(str(file_id))
    if file is None:  # deleted since the run
        return Shown(id=str(file_id), name=f"{file_id} (deleted)", url=None, html="")
    return Shown(id=str(file.pk), name=file.original_name or str(file.pk),
                 url=reverse("admin:files_file_change", args=[file.pk]), html=thumbnail_html(file, size=THUMB_BOX),
                 results=results_summary(getattr(file, "results", None)))


def _files_by_id(ids: set[str]) -> dict[str, File]:
    import uuid

    valid = []
    for value in ids:
        try:
            valid.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    from django.db.models.fields.json import KeyTransform

    # Only the results of the metadata (not the EXIF): what a figure's caption says.
    return {str(f.pk): f for f in File.objects.filter(pk__in=valid).only("id", "original_name", "thumbnails")
            .annotate(results=KeyTransform("results", "metadata"))}


def _ids(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


@register.inclusion_tag("admin/executions/run_images.html")
def run_images(execution: PipelineExecution) -> dict:
    inputs = _ids((execution.input_data or {}).get("inputs"))
    steps = list(ComponentExecution.objects.filter(execution=execution).select_related("component")
                 .only("id", "node_id", "status", "input_data", "output_data", "created_at",
                       "component__name", "component__version", "component__runner").order_by("created_at"))
    wanted = set(inputs)
    for step in steps:
        wanted.update(_ids((step.input_data or {}).get("inputs")))
        wanted.update(_ids((step.output_data or {}).get("files")))
    files = _files_by_id(wanted)
    rows = []
    for step in steps:
        before = _ids((step.input_data or {}).get("inputs"))
        after = _ids((step.output_data or {}).get("files"))
        if _step_kind(step) == "map" and before and len(before) == len(after):
            pairs = [Pair([_shown(files, b)], [_shown(files, a)]) for b, a in zip(before, after)]
        else:
            pairs = [Pair([_shown(files, b) for b in before], [_shown(files, a) for a in after])]
        rows.append({"step": step, "url": reverse("admin:executions_componentexecution_change", args=[step.pk]),
                     "pairs": pairs, "has_images": bool(before or after)})
    return {"inputs": [_shown(files, i) for i in inputs], "rows": rows}


@register.inclusion_tag("admin/executions/file_origin.html")
def file_origin(file: File) -> dict:
    meta = file.metadata or {}
    step_id = meta.get("step_id")
    if not step_id:
        return {"step": None}
    step = (ComponentExecution.objects.filter(pk=step_id).select_related("component", "execution")
            .only("id", "node_id", "input_data", "output_data", "execution_id", "execution__id",
                  "component__name", "component__version", "component__runner").first())
    if step is None:
        return {"step": None, "gone": meta}
    inputs = _ids((step.input_data or {}).get("inputs"))
    outputs = _ids((step.output_data or {}).get("files"))
    kind = _step_kind(step)
    if kind == "map" and str(file.pk) in outputs and len(inputs) == len(outputs):
        sources = [inputs[outputs.index(str(file.pk))]]
    else:
        sources = inputs
    files = _files_by_id(set(sources))
    return {
        "step": step, "kind": kind, "sources": [_shown(files, s) for s in sources],
        "step_url": reverse("admin:executions_componentexecution_change", args=[step.pk]),
        "execution_url": reverse("admin:executions_pipelineexecution_change", args=[step.execution_id]),
    }
