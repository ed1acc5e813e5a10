"""Celery tasks of files: thin wrappers that take ids and call files.services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="files.tasks.file_thumbnails_make", acks_late=True, ignore_result=True,
             autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def file_thumbnails_make(file_id: str) -> None:
    from django.db import close_old_connections

    from files.services import file_thumbnails_generate

    close_old_connections()  # CONN_MAX_AGE and broken connections (Celery's per-task close is off)
    file_thumbnails_generate(file_id=file_id)
