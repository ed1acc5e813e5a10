from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"
    verbose_name = "Executions"

    def ready(self) -> None:
        from executions import events  # noqa: F401  (connects the progress-event receivers)
        from executions import metrics  # noqa: F401  (the step histogram's receiver, scrape-time collectors)
        from executions import tasks  # noqa: F401  (registers the engine's tasks: delivery sends them by name)
        from executions.admin_actions import run_pipelines
        from executions.workflow_apply import workflow_apply
        from registry.engine_hooks import engine_hooks_provide

        # The registry's apply endpoint and its admin's Apply and Run actions start runs here.
        engine_hooks_provide(workflow_apply=workflow_apply, run_pipelines_action=run_pipelines)
