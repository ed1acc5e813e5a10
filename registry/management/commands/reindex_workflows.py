"""`manage.py reindex_workflows`: recompute every workflow's full-text search vector and
similarity columns from its rows (after changing WORKFLOW_SEARCH_CONFIG, or for old rows)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from registry.models import Workflow
from registry.workflow_services import workflow_reindex


class Command(BaseCommand):
    help = "Recompute search vectors and similarity columns of all workflows."

    def handle(self, *args, **options) -> None:
        count = 0
        for workflow in Workflow.objects.only("id").iterator(chunk_size=500):
            workflow_reindex(workflow=workflow)
            count += 1
        self.stdout.write(f"reindexed {count} workflows")
