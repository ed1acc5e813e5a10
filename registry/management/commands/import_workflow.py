"""`manage.py import_workflow FILE [--format imageflow|n8n] --user NAME`: create a workflow from
an ImageFlow export (JSON or YAML) or an n8n workflow JSON (what could not be mapped is listed
and kept in the workflow's metadata). With --pipeline, FILE is a pipeline export."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from imageflow.audit.context import acting
from registry import interchange
from registry.workflow_services import workflow_create


class Command(BaseCommand):
    help = "Import a workflow from an ImageFlow export (JSON/YAML) or an n8n workflow JSON."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", help="the document ('-' reads stdin)")
        parser.add_argument("--format", choices=["imageflow", "n8n"], default="imageflow")
        parser.add_argument("--user", required=True, help="username recorded as the creator")
        parser.add_argument("--request-id", help="idempotency: a repeat with the same id returns the first workflow")
        parser.add_argument("--pipeline", action="store_true", help="the file is a pipeline export")

    def handle(self, *args, **options) -> None:
        import sys

        try:
            user = get_user_model().objects.get(username=options["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user {options['user']!r}") from None
        try:
            text = sys.stdin.read() if options["path"] == "-" else Path(options["path"]).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {options['path']}: {exc}") from None
        try:
            with acting(user=user, source="command"):
                if options["pipeline"]:
                    pipeline = interchange.pipeline_import(document=interchange.load(text), user=user)
                    self.stdout.write(f"pipeline {pipeline.pk} v{pipeline.version} {pipeline.name!r}")
                    return
                document, unmapped = interchange.import_document(document=text, fmt=options["format"])
                workflow, created = workflow_create(user=user, data=document, request_id=options["request_id"],
                                                    change="import")
        except ValidationError as exc:
            details = exc.message_dict if hasattr(exc, "error_dict") else {"document": exc.messages}
            raise CommandError("invalid document: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in details.items()))
        for item in unmapped:
            self.stderr.write(f"not mapped: {item['path']}: {item['reason']}")
        verb = "created" if created else "exists (same request id)"
        self.stdout.write(f"workflow {workflow.pk} v{workflow.version} {workflow.name!r} {verb}: "
                          f"{len(document['nodes'])} nodes, {len(document['edges'])} edges, "
                          f"{len(document['params'])} params")
