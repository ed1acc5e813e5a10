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


_presence = None


@signals.worker_ready.connect
def _announce_queues(sender=None, **kwargs) -> None:
    """The queues this worker consumes, written to the broker's Redis now and every
    WORKER_PRESENCE_SECONDS (executions/engine/presence.py), so a step routed to a queue nobody
    consumes is reported."""
    global _presence
    from executions.engine.presence import PresenceThread

    consumer = sender

    def queues():
        return [queue.name for queue in getattr(consumer.task_consumer, "queues", None) or []] or list(
            consumer.app.amqp.queues.consume_from)

    _presence = PresenceThread(worker=consumer.hostname, queues=queues)
    _presence.start()


@signals.worker_shutdown.connect
def _withdraw_queues(**kwargs) -> None:
    if _presence is not None:
        _presence.stop()
