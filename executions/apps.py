from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"
    verbose_name = "Executions"

    def ready(self) -> None:
        from executions import events  # noqa: F401  (connects the progress-event receivers)
        from executions import metrics  # noqa: F401  (the step histogram's receiver, scrape-time collectors)
        from executions import tasks  # noqa: F401  (registers the engine's tasks: delivery sends them by name)
