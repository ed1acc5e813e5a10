from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import ExecutionViewSet, PipelineRunView

router = SimpleRouter()
router.register("executions", ExecutionViewSet, basename="execution")

urlpatterns = [
    path("pipelines/<uuid:pk>/run/", PipelineRunView.as_view(), name="pipeline-run"),
    *router.urls,
]
