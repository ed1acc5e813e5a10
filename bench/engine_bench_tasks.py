"""The bare Celery task the overhead benchmark chains (included into its worker)."""

from celery import shared_task


@shared_task(name="engine_bench.noop")
def noop(*args, **kwargs) -> None:
    return None
