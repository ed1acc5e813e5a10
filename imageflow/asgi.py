"""ASGI entry point: HTTP goes to Django, WebSockets to the Channels routes (live progress).

Served by uvicorn (`scripts/run.sh`): `uvicorn imageflow.asgi:application`.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imageflow.settings")
# Django must be set up before the consumers (and their models) are imported.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from executions.routing import websocket_urlpatterns  # noqa: E402
from imageflow.log_redaction import install_log_redaction  # noqa: E402
from imageflow.metrics import WebSocketClientsMiddleware  # noqa: E402
from imageflow.request_limits import RequestBodyLimitMiddleware  # noqa: E402
from imageflow.ws_auth import BrowserOriginValidator, TokenAuthMiddleware  # noqa: E402

# Credentials in URLs never reach uvicorn's access and handshake log lines in clear.
install_log_redaction()

websocket_application = AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))

application = ProtocolTypeRouter({
    # Body limits are checked before Django spools the body to disk (imageflow/request_limits.py).
    "http": RequestBodyLimitMiddleware(django_asgi_app),
    # imageflow_websocket_clients counts the connections open through this process.
    "websocket": WebSocketClientsMiddleware(BrowserOriginValidator(websocket_application)),
})
