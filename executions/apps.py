from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"
    verbose_name = "Executions"

    def ready(self) -> None:
        from executions import events  # noqa: F401  (connects the progress-event receivers)
        from executions import metrics  # noqa: F401  (the step histogram's receiver, scrape-time collectors)
        from executions import tasks  # noqa: F401  (registers the engine's tasks: delivery sends them by name)
        from executions.admin_actions import run_pipelines
        from executions.engine.cache import cache_referenced_paths
        from executions.workflow_apply import workflow_apply
        from files.services import file_object_referrer_provide
        from registry.engine_hooks import engine_hooks_provide

        # The registry's apply endpoint and its admin's Apply and Run actions start runs here.
        engine_hooks_provide(workflow_apply=workflow_apply, run_pipelines_action=run_pipelines)
        # A step cache entry keeps its objects alive: file_delete asks before deleting one.
        file_object_referrer_provide(cache_referenced_paths)
        # Triggers and webhooks (docs/automation.md): uploads are matched in their transaction;
        # run events become signed deliveries (receivers connected on import), sent by tasks.
        from executions import automation_tasks  # noqa: F401
        from executions import webhooks  # noqa: F401
        from executions.triggers import trigger_file_uploaded
        from files.services import file_upload_hook_provide

        file_upload_hook_provide(trigger_file_uploaded)
