"""The API of triggers, schedules and webhooks (docs/automation.md): thin views over
executions/triggers.py, executions/schedules.py and executions/webhooks.py, scoped like every
owned row (a user's own, their organizations', staff all; anybody else's is a 404)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from executions import schedules, triggers, webhooks
from executions.automation_models import (
    CatchUp,
    DeliveryStatus,
    PipelineSchedule,
    Trigger,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
from imageflow.api.mixins import OwnedQuerysetMixin
from imageflow.api.parsers import DepthLimitedJSONParser
from imageflow.api.ownership import scope_to_user
from imageflow.api.permissions import IsOwnerOrStaff
from imageflow.api.schema import ERROR_RESPONSES
from imageflow.orgs.models import Organization
from registry.models import Pipeline


# --- serializers ---------------------------------------------------------------------------------

class WebhookSubscriptionSerializer(serializers.ModelSerializer):
    events = serializers.ListField(child=serializers.ChoiceField(choices=WebhookEvent.choices), allow_empty=False,
                                   help_text="execution.completed, execution.failed, execution.cancelled, "
                                             "step.failed")
    organization = serializers.PrimaryKeyRelatedField(queryset=Organization.objects.all(), allow_null=True,
                                                      required=False)
    secret = serializers.CharField(write_only=True, required=False, min_length=16, max_length=200,
                                   help_text="The HMAC key; made for you when left out. Shown once, in the "
                                             "answer of the create.")
    created_by = serializers.UUIDField(source="created_by_id", read_only=True)

    class Meta:
        model = WebhookSubscription
        fields = ["id", "url", "description", "events", "active", "organization", "secret", "created_by",
                  "created_at", "updated_at"]
        read_only_fields = ["id", "created_by", "created_at", "updated_at"]


class WebhookSubscriptionCreatedSerializer(WebhookSubscriptionSerializer):
    secret = serializers.CharField(read_only=True, help_text="Keep it: it is not shown again.")


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "started_at", "status_code", "duration_ms", "error"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, read_only=True)
    event = serializers.ChoiceField(choices=WebhookEvent.choices, read_only=True)
    execution = serializers.UUIDField(source="execution_id", read_only=True, allow_null=True)
    subscription = serializers.UUIDField(source="subscription_id", read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = ["id", "subscription", "event", "execution", "step_id", "status", "attempts", "last_status_code",
                  "last_error", "last_duration_ms", "first_attempt_at", "next_attempt_at", "delivered_at",
                  "created_at"]
        read_only_fields = fields


class WebhookDeliveryDetailSerializer(WebhookDeliverySerializer):
    attempt_log = WebhookAttemptSerializer(many=True, read_only=True)
    payload = serializers.JSONField(read_only=True, allow_null=True)

    class Meta(WebhookDeliverySerializer.Meta):
        fields = [*WebhookDeliverySerializer.Meta.fields, "payload", "attempt_log"]
        read_only_fields = fields


class TriggerSerializer(serializers.ModelSerializer):
    pipeline = serializers.PrimaryKeyRelatedField(queryset=Pipeline.objects.all())
    organization = serializers.PrimaryKeyRelatedField(queryset=Organization.objects.all(), allow_null=True,
                                                      required=False)
    parameters = serializers.JSONField(required=False, help_text="Per-run parameter overrides {node_id: {...}}.")
    batch_size = serializers.IntegerField(min_value=1, max_value=1000, required=False)
    batch_window_seconds = serializers.IntegerField(min_value=0, max_value=86400, required=False)
    created_by = serializers.UUIDField(source="created_by_id", read_only=True)

    class Meta:
        model = Trigger
        fields = ["id", "name", "pipeline", "organization", "active", "match_tag", "match_mime_type",
                  "match_name_pattern", "parameters", "batch_size", "batch_window_seconds", "created_by",
                  "created_at", "updated_at"]
        read_only_fields = ["id", "created_by", "created_at", "updated_at"]


# --- views ---------------------------------------------------------------------------------------

_CRUD_SCHEMA = dict(
    create=extend_schema(responses={201: WebhookSubscriptionCreatedSerializer, **ERROR_RESPONSES(400)}),
    update=extend_schema(responses={200: WebhookSubscriptionSerializer, **ERROR_RESPONSES(400, 404)}),
    partial_update=extend_schema(responses={200: WebhookSubscriptionSerializer, **ERROR_RESPONSES(400, 404)}),
    destroy=extend_schema(responses={204: None, **ERROR_RESPONSES(404)}),
)


@extend_schema_view(list=extend_schema(summary="Webhook subscriptions"), **_CRUD_SCHEMA)
class WebhookSubscriptionViewSet(OwnedQuerysetMixin, viewsets.ModelViewSet):
    """Where run events are POSTed, signed (docs/automation.md#webhooks)."""

    parser_classes = [DepthLimitedJSONParser]  # JSON bodies only
    serializer_class = WebhookSubscriptionSerializer
    permission_classes = [IsAuthenticated, IsOwnerOrStaff]
    queryset = WebhookSubscription.objects.all()

    def create(self, request, *args, **kwargs):
        serializer = WebhookSubscriptionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        subscription = webhooks.webhook_subscription_create(user=request.user, **serializer.validated_data)
        return Response(WebhookSubscriptionCreatedSerializer(subscription).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        subscription = self.get_object()
        serializer = WebhookSubscriptionSerializer(subscription, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        subscription = webhooks.webhook_subscription_update(subscription=subscription, user=request.user,
                                                            data=serializer.validated_data)
        return Response(WebhookSubscriptionSerializer(subscription).data)

    def destroy(self, request, *args, **kwargs):
        webhooks.webhook_subscription_delete(subscription=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={200: WebhookDeliverySerializer(many=True), **ERROR_RESPONSES(404)},
                   summary="The subscription's deliveries, newest first")
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        subscription = self.get_object()
        page = self.paginate_queryset(WebhookDelivery.objects.filter(subscription=subscription)
                                      .order_by("-created_at", "-id"))
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


@extend_schema_view(list=extend_schema(summary="Webhook deliveries, newest first"),
                    retrieve=extend_schema(responses={200: WebhookDeliveryDetailSerializer, **ERROR_RESPONSES(404)},
                                           summary="One delivery with its body and attempts"))
class WebhookDeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The delivery log: status, attempts, the receiver's answers and their times."""

    serializer_class = WebhookDeliverySerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        subscriptions = scope_to_user(WebhookSubscription.objects.all(), user=self.request.user)
        queryset = WebhookDelivery.objects.filter(subscription__in=subscriptions).order_by("-created_at", "-id")
        return queryset.prefetch_related("attempt_log") if self.action == "retrieve" else queryset

    def get_serializer_class(self):
        return WebhookDeliveryDetailSerializer if self.action == "retrieve" else WebhookDeliverySerializer

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer, **ERROR_RESPONSES(404)},
                   summary="Send the delivery again (same body, new signature)")
    @action(detail=True, methods=["post"])
    def redeliver(self, request, pk=None):
        delivery = webhooks.webhook_redeliver(delivery=self.get_object())
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    list=extend_schema(summary="Triggers: pipelines run on new uploads"),
    create=extend_schema(responses={201: TriggerSerializer, **ERROR_RESPONSES(400)}),
    update=extend_schema(responses={200: TriggerSerializer, **ERROR_RESPONSES(400, 404)}),
    partial_update=extend_schema(responses={200: TriggerSerializer, **ERROR_RESPONSES(400, 404)}),
    destroy=extend_schema(responses={204: None, **ERROR_RESPONSES(404)}),
)
class TriggerViewSet(OwnedQuerysetMixin, viewsets.ModelViewSet):
    """Run a pipeline on uploads that match a rule (docs/automation.md#triggers)."""

    parser_classes = [DepthLimitedJSONParser]  # JSON bodies only
    serializer_class = TriggerSerializer
    permission_classes = [IsAuthenticated, IsOwnerOrStaff]
    queryset = Trigger.objects.all()

    def create(self, request, *args, **kwargs):
        serializer = TriggerSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        trigger = triggers.trigger_create(user=request.user, **serializer.validated_data)
        return Response(TriggerSerializer(trigger).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        trigger = self.get_object()
        serializer = TriggerSerializer(trigger, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        trigger = triggers.trigger_update(trigger=trigger, user=request.user, data=serializer.validated_data)
        return Response(TriggerSerializer(trigger).data)

    def destroy(self, request, *args, **kwargs):
        triggers.trigger_delete(trigger=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class ScheduleSerializer(serializers.ModelSerializer):
    pipeline = serializers.PrimaryKeyRelatedField(queryset=Pipeline.objects.all())
    inputs = serializers.ListField(child=serializers.UUIDField(), allow_empty=False, max_length=100)
    parameters = serializers.JSONField(required=False, help_text="Per-run parameter overrides {node_id: {...}}.")
    catch_up = serializers.ChoiceField(choices=CatchUp.choices, required=False)
    created_by = serializers.UUIDField(source="created_by_id", read_only=True)
    last_execution = serializers.UUIDField(source="last_execution_id", read_only=True, allow_null=True)

    class Meta:
        model = PipelineSchedule
        fields = ["id", "name", "pipeline", "cron", "timezone", "inputs", "parameters", "catch_up", "active",
                  "next_run_at", "last_run_at", "last_execution", "last_error", "created_by", "created_at",
                  "updated_at"]
        read_only_fields = ["id", "next_run_at", "last_run_at", "last_execution", "last_error", "created_by",
                            "created_at", "updated_at"]


@extend_schema_view(
    list=extend_schema(summary="Schedules: pipelines run at the occurrences of a cron expression"),
    create=extend_schema(responses={201: ScheduleSerializer, **ERROR_RESPONSES(400)}),
    update=extend_schema(responses={200: ScheduleSerializer, **ERROR_RESPONSES(400, 404)}),
    partial_update=extend_schema(responses={200: ScheduleSerializer, **ERROR_RESPONSES(400, 404)}),
    destroy=extend_schema(responses={204: None, **ERROR_RESPONSES(404)}),
)
class ScheduleViewSet(OwnedQuerysetMixin, viewsets.ModelViewSet):
    """Run a pipeline on its inputs at every occurrence of a cron expression in a time zone
    (docs/automation.md#schedules)."""

    parser_classes = [DepthLimitedJSONParser]  # JSON bodies only
    serializer_class = ScheduleSerializer
    permission_classes = [IsAuthenticated, IsOwnerOrStaff]
    queryset = PipelineSchedule.objects.all()

    def create(self, request, *args, **kwargs):
        serializer = ScheduleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        schedule = schedules.schedule_create(user=request.user, **serializer.validated_data)
        return Response(ScheduleSerializer(schedule).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        schedule = self.get_object()
        serializer = ScheduleSerializer(schedule, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        schedule = schedules.schedule_update(schedule=schedule, user=request.user, data=serializer.validated_data)
        return Response(ScheduleSerializer(schedule).data)

    def destroy(self, request, *args, **kwargs):
        schedules.schedule_delete(schedule=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
