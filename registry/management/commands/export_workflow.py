"""`manage.py export_workflow <id> [--format json|yaml] [--output FILE]`: a workflow (or, with
--pipeline, a pipeline) as a self-contained document, to stdout or a file."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registry import interchange
from registry.models import Pipeline, Workflow


class Command(BaseCommand):
    help = "Export a workflow (or a pipeline) as JSON or YAML."

    def add_arguments(self, parser) -> None:
        parser.add_argument("id", help="workflow id (pipeline id with --pipeline)")
        parser.add_argument("--format", choices=interchange.FORMATS, default="json")
        parser.add_argument("--output", "-o", help="file to write (default: stdout)")
        parser.add_argument("--pipeline", action="store_true", help="export a pipeline instead of a workflow")

    def handle(self, *args, **options) -> None:
        model = Pipeline if options["pipeline"] else Workflow
        try:
            obj = model.objects.get(pk=options["id"])
        except (model.DoesNotExist, ValueError, ValidationError):
            raise CommandError(f"no {model._meta.verbose_name} with id {options['id']!r}") from None
        document = (interchange.pipeline_export_document(obj) if options["pipeline"]
                    else interchange.workflow_export_document(obj))
        text = interchange.dump(document, fmt=options["format"])
        if options["output"]:
            Path(options["output"]).write_text(text, encoding="utf-8")
            self.stderr.write(f"wrote {options['output']}")
        else:
            self.stdout.write(text, ending="")
