from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from imageflow.health import healthz, livez, readyz
from imageflow.metrics import metrics_view

admin.site.site_header = "ImageFlow administration"
admin.site.site_title = "ImageFlow"
admin.site.index_title = "Components, pipelines, workflows and runs"


def _dashboard(request):
    from executions.admin_dashboard import dashboard_view

    return dashboard_view(request)


urlpatterns = [
    path("admin/dashboard/", admin.site.admin_view(_dashboard), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    # Probes and metrics (docs/deployment.md); imageflow.health.ProbeMiddleware answers them first.
    path("livez", livez, name="livez"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include("imageflow.api.urls")),
]

handler404 = "imageflow.api.errors.handler404"
handler500 = "imageflow.api.errors.handler500"
