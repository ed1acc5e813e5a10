"""Where the registry starts work in the engine above it, without importing it.

The registry's pages offer to run what it holds (the API's workflow apply endpoint, the admin's
Apply and Run actions), but a run is the executions app's. Apps depend downward only
(executions -> registry -> files -> imageflow), so the registry declares these hooks and the
executions app provides them when it is ready (executions/apps.py). Until then (an app that is not
installed) calling one is an ImproperlyConfigured, not a silent no-op.
"""

from __future__ import annotations

from typing import Any, Callable

from django.core.exceptions import ImproperlyConfigured

_providers: dict[str, Callable[..., Any]] = {}


def engine_hooks_provide(*, workflow_apply: Callable[..., Any], run_pipelines_action: Callable[..., Any]) -> None:
    """Called once by the engine's app: the functions behind the hooks below."""
    _providers.update(workflow_apply=workflow_apply, run_pipelines=run_pipelines_action)
    # The admin reads an action's label and permissions from the function it lists (the hook
    # below, whose name is the action's name): they are the provider's.
    for attribute in ("short_description", "allowed_permissions"):
        if hasattr(run_pipelines_action, attribute):
            setattr(run_pipelines, attribute, getattr(run_pipelines_action, attribute))


def _provider(name: str) -> Callable[..., Any]:
    try:
        return _providers[name]
    except KeyError:
        raise ImproperlyConfigured(f"no provider of registry.engine_hooks.{name}: "
                                   "the executions app is not installed or not ready") from None


def workflow_apply(*, workflow, user, params: Any = None, inputs: list | None = None,
                   idempotency_key: str | None = None):
    """Validate params against the workflow's declared params and start a run of its current
    version (executions/workflow_apply.py). Returns (the pending PipelineExecution, the resolved
    params)."""
    return _provider("workflow_apply")(workflow=workflow, user=user, params=params, inputs=inputs,
                                       idempotency_key=idempotency_key)


def run_pipelines(modeladmin, request, queryset):
    """The pipeline list's Run action: the run form (inputs, parameters), then the runs
    (executions/admin_actions.py)."""
    return _provider("run_pipelines")(modeladmin, request, queryset)
