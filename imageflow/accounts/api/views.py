"""`/api/v1/tokens/`: the caller's own API tokens: list (with last use and the rate limit's
count), create (the secret in that answer only), show, revoke (DELETE)."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from imageflow.accounts import rate_limit
from imageflow.accounts.models import ApiToken
from imageflow.accounts.selectors import api_token_list
from imageflow.accounts.services import api_token_create, api_token_revoke
from imageflow.orgs.models import Organization
from imageflow.api.errors import django_validation_error_fields
from imageflow.api.schema import ERROR_RESPONSES

from .serializers import ApiTokenCreatedSerializer, ApiTokenSerializer


@extend_schema_view(
    list=extend_schema(summary="List your API tokens", tags=["auth"]),
    retrieve=extend_schema(summary="Show one of your API tokens", tags=["auth"]),
    create=extend_schema(summary="Create an API token (the secret is shown once)", tags=["auth"],
                         responses={201: ApiTokenCreatedSerializer, **ERROR_RESPONSES(400, 403)}),
    destroy=extend_schema(summary="Revoke an API token", tags=["auth"],
                          responses={204: None, **ERROR_RESPONSES(403)}),
)
class ApiTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                      mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = ApiTokenSerializer
    queryset = ApiToken.objects.none()  # the schema's model; requests get get_queryset()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return api_token_list(user=self.request.user)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "usage": getattr(self, "_usage", None)}

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        rows = page if page is not None else list(queryset)
        self._usage = rate_limit.usage(rows)
        data = self.get_serializer(rows, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def retrieve(self, request, *args, **kwargs):
        token = self.get_object()
        self._usage = rate_limit.usage([token])
        return Response(self.get_serializer(token).data)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        organization_id = serializer.validated_data.get("organization_id")
        try:
            organization = None
            if organization_id is not None:
                # A missing organization and one the caller is not a member of get one message.
                organization = Organization.objects.filter(pk=organization_id).first() or Organization(pk=organization_id)
            issued = api_token_create(user=request.user, name=serializer.validated_data["name"],
                                      scopes=serializer.validated_data["scopes"], organization=organization,
                                      expires_at=serializer.validated_data.get("expires_at"))
        except DjangoValidationError as exc:
            raise ValidationError(django_validation_error_fields(exc)) from None
        self._usage = {issued.token.pk: 0}
        body = ApiTokenCreatedSerializer(issued.token, context=self.get_serializer_context()).data
        body["token"] = issued.secret
        response = Response(body, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response

    def destroy(self, request, *args, **kwargs):
        api_token_revoke(token=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
