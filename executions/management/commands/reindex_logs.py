"""Rebuild the execution-log search index from the durable buffer (PostgreSQL).

    manage.py reindex_logs                  # every record, into the existing indices
    manage.py reindex_logs --recreate       # drop this deployment's log indices first
    manage.py reindex_logs --execution ID   # one run's records
"""

from __future__ import annotations

import time
import uuid

from django.core.management.base import BaseCommand, CommandError

from executions.logstore.documents import delete_log_indices
from executions.logstore.shipping import SearchUnavailable, reindex, search_errors_as_unavailable
from executions.models import PipelineExecution
from imageflow.search import get_client


class Command(BaseCommand):
    help = "Rebuild the execution-log search index from the durable log buffer in PostgreSQL."

    def add_arguments(self, parser):
        parser.add_argument("--execution", help="Only this execution's records (UUID).")
        parser.add_argument("--recreate", action="store_true",
                            help="Delete this deployment's log indices first (not with --execution).")
        parser.add_argument("--batch-size", type=int, default=2000)

    def handle(self, *args, execution=None, recreate=False, batch_size=2000, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        execution_id = None
        if execution:
            try:
                execution_id = uuid.UUID(execution)
            except ValueError:
                raise CommandError(f"--execution {execution!r} is not a UUID.") from None
            if not PipelineExecution.objects.filter(id=execution_id).exists():
                raise CommandError(f"No execution {execution_id}.")
            if recreate:
                raise CommandError("--recreate drops every log index; it cannot be combined with --execution.")
        started = time.monotonic()
        try:
            if recreate:
                with search_errors_as_unavailable():
                    delete_log_indices(get_client())
            sent = reindex(batch_size=batch_size, execution_id=execution_id)
        except SearchUnavailable as exc:
            raise CommandError(f"The search server is unavailable: {exc}") from exc
        elapsed = time.monotonic() - started
        self.stdout.write(self.style.SUCCESS(f"Reindexed {sent} log records in {elapsed:.1f}s."))
