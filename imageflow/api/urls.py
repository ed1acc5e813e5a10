"""`/api/v1/`: every app's API routes. Apps add one `path(..., include(...))` line each."""

from django.urls import include, path

from .auth import TokenObtainView, WsTicketView

app_name = "api"

urlpatterns = [
    path("auth/token/", TokenObtainView.as_view(), name="token"),
    path("ws-tickets/", WsTicketView.as_view(), name="ws-ticket"),
    path("", include("imageflow.accounts.api.urls")),
    path("", include("registry.api.workflow_urls")),
    path("", include("registry.api.urls")),
    path("", include("files.api.urls")),
    path("", include("executions.api.urls")),
    path("", include("executions.api.log_urls")),
]
