from django.urls import path
from rest_framework.routers import SimpleRouter

from .object_events import ObjectEventsView
from .views import FileViewSet

router = SimpleRouter()
router.register("files", FileViewSet, basename="file")

urlpatterns = [path("object-events/", ObjectEventsView.as_view(), name="object-events"), *router.urls]
