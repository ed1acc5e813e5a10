"""Run a pipeline from the command line and follow it with a progress bar."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from executions.models import FINISHED_EXECUTION_STATUSES, ExecutionStatus
from executions.selectors import execution_progress
from executions.services import execution_start
from files.models import File
from files.services import file_store
from registry.dag import DagValidationError
from registry.models import Pipeline


class Command(BaseCommand):
    help = ("Start a run of a pipeline (by id or name) on input files (file ids or local image paths, "
            "which are uploaded first) and wait for it with a progress bar.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("pipeline", help="pipeline id or name")
        parser.add_argument("--input", "-i", action="append", default=[], dest="inputs",
                            help="a file id or a local image path; repeat for several")
        parser.add_argument("--params", default=None,
                            help='JSON parameter overrides per node, e.g. {"resize": {"width": 200}}')
        parser.add_argument("--user", default=settings.DEMO_USERNAME, help="the user the run belongs to")
        parser.add_argument("--no-wait", action="store_true", help="start the run and return")
        parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run")

    def handle(self, *args, **options) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No user {options['user']!r} (manage.py ensure_demo_user creates the demo user).")
        pipeline = self._pipeline(options["pipeline"])
        parameters = None
        if options["params"]:
            try:
                parameters = json.loads(options["params"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--params is not JSON: {exc}") from exc
        inputs = [self._input(value, user) for value in options["inputs"]]
        try:
            execution = execution_start(pipeline=pipeline, inputs=inputs, parameters=parameters, user=user)
        except DagValidationError as exc:
            raise CommandError("\n".join(f"{e['field']}: {e['message']}" for e in exc.errors)) from exc
        except ValidationError as exc:
            raise CommandError(str(exc.message_dict if hasattr(exc, "message_dict") else exc.messages)) from exc
        self.stdout.write(f"Execution {execution.id} of {pipeline.name} v{execution.pipeline_version} started.")
        if options["no_wait"]:
            return
        deadline = time.monotonic() + options["timeout"]
        total = execution_progress(execution)["total"]
        with tqdm(total=total, unit="step", desc=pipeline.name[:30]) as bar:
            while True:
                execution.refresh_from_db()
                progress = execution_progress(execution)
                bar.update(progress["finished"] - bar.n)
                items = (f", {progress['completed_items']}/{progress['total_items']} items"
                         if progress["total_items"] else "")  # a map step's items, as the API counts them
                bar.set_postfix_str(f"{execution.status}{items}")
                if execution.status in FINISHED_EXECUTION_STATUSES:
                    break
                if time.monotonic() > deadline:
                    raise CommandError(f"Execution {execution.id} still {execution.status} after {options['timeout']}s.")
                time.sleep(0.25)
        if execution.status == ExecutionStatus.COMPLETED:
            self.stdout.write(self.style.SUCCESS(f"Completed. Outputs: {json.dumps((execution.output_data or {}).get('outputs'))}"))
        else:
            raise CommandError(f"Execution {execution.id} {execution.status}: {execution.error_message}")

    @staticmethod
    def _pipeline(value: str) -> Pipeline:
        try:
            return Pipeline.objects.get(pk=uuid.UUID(value))
        except (ValueError, Pipeline.DoesNotExist):
            pass
        matches = list(Pipeline.objects.filter(name=value)[:2])
        if len(matches) != 1:
            raise CommandError(f"No pipeline with id or unique name {value!r}.")
        return matches[0]

    @staticmethod
    def _input(value: str, user) -> str:
        try:
            file_id = uuid.UUID(value)
            if File.objects.filter(pk=file_id).exists():
                return str(file_id)
        except ValueError:
            pass
        path = Path(value)
        if not path.is_file():
            raise CommandError(f"{value!r} is neither a file id nor a readable file.")
        try:
            with path.open("rb") as stream:
                return str(file_store(stream=stream, original_name=path.name, created_by=user).id)
        except ValidationError as exc:
            raise CommandError(f"{value}: {' '.join(exc.messages)}") from exc
