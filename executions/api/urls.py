from django.urls import path
from rest_framework.routers import SimpleRouter

from .automation import ScheduleViewSet, TriggerViewSet, WebhookDeliveryViewSet, WebhookSubscriptionViewSet
from .cache_views import StepCacheStatsView
from .lineage import FileLineageView
from .views import ExecutionViewSet, PipelineRunView

router = SimpleRouter()
router.register("executions", ExecutionViewSet, basename="execution")
router.register("webhooks", WebhookSubscriptionViewSet, basename="webhook")
router.register("webhook-deliveries", WebhookDeliveryViewSet, basename="webhook-delivery")
router.register("triggers", TriggerViewSet, basename="trigger")
router.register("schedules", ScheduleViewSet, basename="schedule")

urlpatterns = [
    path("pipelines/<uuid:pk>/run/", PipelineRunView.as_view(), name="pipeline-run"),
    # The lineage is the engine's record (executions.models.FileLineage), so its view is here.
    path("files/<uuid:pk>/lineage/", FileLineageView.as_view(), name="file-lineage"),
    path("cache/", StepCacheStatsView.as_view(), name="step-cache"),
    *router.urls,
]
