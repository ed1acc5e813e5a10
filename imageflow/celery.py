import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imageflow.settings")

app = Celery("imageflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
def _configure_worker(**kwargs) -> None:
    from executions.worker import configure_worker_sessions

    configure_worker_sessions()
    from django.conf import settings

    if settings.WORKER_NICENESS:
        os.nice(settings.WORKER_NICENESS)  # before the pool forks: its processes inherit it

    if settings.WORKER_METRICS_PORT:
        from imageflow.metrics import start_worker_exporter

        start_worker_exporter(settings.WORKER_METRICS_PORT)
