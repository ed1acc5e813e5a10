"""`POST /api/v1/auth/token/`: exchange a username and password for an API token."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from .schema import ERROR_RESPONSES

TokenResponse = inline_serializer("TokenResponse", {"token": serializers.CharField()})


class TokenObtainView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(request=AuthTokenSerializer, responses={200: TokenResponse, **ERROR_RESPONSES(400)},
                   auth=[], summary="Get an API token", tags=["auth"])
    def post(self, request):
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        token, _ = Token.objects.get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key}, status=status.HTTP_200_OK)

    @extend_schema(request=None, responses={204: None, **ERROR_RESPONSES(401)},
                   summary="Revoke the token presented (a scoped one, or the legacy token)", tags=["auth"])
    def delete(self, request):
        if not request.user.is_authenticated:
            from rest_framework.exceptions import NotAuthenticated

            raise NotAuthenticated()
        from imageflow.accounts.models import ApiToken
        from imageflow.accounts.services import api_token_revoke

        if isinstance(request.auth, ApiToken):  # a scoped token revokes itself, not the legacy one
            api_token_revoke(token=request.auth)
        else:
            Token.objects.filter(user=request.user).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    def get_authenticators(self):
        if getattr(self, "request", None) is not None and self.request.method == "DELETE":
            from imageflow.accounts.authentication import ApiTokenAuthentication

            return [ApiTokenAuthentication()]
        return []


WsTicketResponse = inline_serializer("WsTicketResponse", {
    "ticket": serializers.CharField(), "expires_in": serializers.IntegerField(help_text="Seconds.")})


class WsTicketView(APIView):
    """`POST /api/v1/ws-tickets/`: a single-use ticket for one WebSocket or event-stream
    connection (`?ticket=`), so the long-lived token stays out of URLs (docs/security.md)."""

    @extend_schema(request=None, responses={201: WsTicketResponse, **ERROR_RESPONSES(401)},
                   summary="Get a single-use ticket for a WebSocket or event-stream URL", tags=["auth"])
    def post(self, request):
        from django.conf import settings

        from imageflow.accounts.services import ws_ticket_issue

        ticket = ws_ticket_issue(user=request.user)
        response = Response({"ticket": ticket, "expires_in": settings.WS_TICKET_TTL_SECONDS},
                            status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response
