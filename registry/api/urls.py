from rest_framework.routers import SimpleRouter

from .views import ComponentViewSet, PipelineViewSet

router = SimpleRouter()
router.register("components", ComponentViewSet, basename="component")
router.register("pipelines", PipelineViewSet, basename="pipeline")

urlpatterns = router.urls
