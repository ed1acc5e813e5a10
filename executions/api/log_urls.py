"""Routes of live progress over HTTP and of execution logs (included from imageflow/api/urls.py)."""

from django.urls import path

from .event_views import execution_events
from .log_views import ExecutionLogsView, LogSearchView

urlpatterns = [
    path("executions/<uuid:pk>/logs/", ExecutionLogsView.as_view(), name="execution-logs"),
    path("executions/<uuid:pk>/events/", execution_events, name="execution-events"),
    path("logs/", LogSearchView.as_view(), name="log-search"),
]
