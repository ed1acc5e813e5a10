from django.urls import path

from executions.consumers import ExecutionProgressConsumer

websocket_urlpatterns = [
    path("ws/executions/<str:execution_id>/", ExecutionProgressConsumer.as_asgi()),
]
