"""Included into the benchmark's worker: the bare Celery task the overhead benchmark chains, and,
with ENGINE_BENCH_NO_PROGRESS=1, the live-progress receivers disconnected (to attribute the
engine's per-step time: its own bookkeeping vs progress publishing); with
ENGINE_BENCH_NO_THUMBNAILS=1, the thumbnail task a no-op (to attribute the workers' time spent on
thumbnails of every stored output)."""

import os

from celery import shared_task


@shared_task(name="engine_bench.noop")
def noop(*args, **kwargs) -> None:
    return None


if os.environ.get("ENGINE_BENCH_NO_THUMBNAILS") == "1":
    # The thumbnail task every stored file asks for is still sent and delivered, but makes
    # nothing: what the workers spend on thumbnails of the benchmark's outputs, attributed.
    from files import services as _file_services

    _file_services.file_thumbnails_generate = lambda *, file_id: None

if os.environ.get("ENGINE_BENCH_NO_PROGRESS") == "1":
    from executions import signals

    signals.execution_status_changed.disconnect(dispatch_uid="executions.events.on_execution_status_changed")
    signals.step_status_changed.disconnect(dispatch_uid="executions.events.on_step_status_changed")


@shared_task(name="engine_bench.image_step")
def image_step(file_id: str, operation: str, parameters: dict) -> str:
    """One image operation as a plain Celery task, no engine: the same Pillow work and object-store
    reads and writes as a built-in step (the throughput benchmark's ceiling for any engine that
    runs each step as a Celery task)."""
    from executions.engine.runners.builtin import BUILTIN_OPERATIONS, _encode, _open
    from files.models import File
    from files.services import file_read_bytes, file_store_bytes

    source = File.objects.get(pk=file_id)
    # the same decode and encode as a built-in step (executions.engine.runners.builtin)
    decoded = _open(file_read_bytes(source), source.original_name or "", BUILTIN_OPERATIONS[operation], parameters)
    result = BUILTIN_OPERATIONS[operation].apply(decoded.image, parameters)
    content, extension = _encode(result, source=decoded, parameters=parameters, operation=operation)
    stored = file_store_bytes(content=content, original_name=f"celery-{operation}{extension}",
                              created_by_id=source.created_by_id)
    return str(stored.id)
