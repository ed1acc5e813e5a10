"""Triggers, schedules and webhooks in the admin (docs/automation.md): subscriptions, triggers and
schedules are edited through their services (the forms run the services' checks, so a refusal is a form error); the
delivery log is read-only, with a "Redeliver" action that calls webhooks.webhook_redeliver."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from imageflow.admin_utils import ImageFlowModelAdmin, ReadOnlyAdminMixin, ServiceDeleteMixin, pretty_json
from imageflow.exceptions import DagValidationError

from . import schedules, triggers, webhooks
from .automation_models import (
    PipelineSchedule,
    Trigger,
    TriggerFile,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)


class _RequestForm(forms.ModelForm):
    """A model form that knows who edits (the services check membership and visibility)."""

    request_user = None

    def _add_errors(self, exc: ValidationError) -> None:
        if hasattr(exc, "error_dict"):
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        else:
            self.add_error(None, exc.messages)


class WebhookSubscriptionForm(_RequestForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(choices=WebhookEvent.choices)
    secret = forms.CharField(required=False, help_text="Leave empty to keep it (or, for a new subscription, to "
                                                       "have one made).", widget=forms.PasswordInput(render_value=False))

    class Meta:
        model = WebhookSubscription
        fields = ["url", "description", "events", "active", "organization", "secret"]

    def clean(self):
        data = super().clean()
        try:
            webhooks.webhook_subscription_check(url=data.get("url") or "", events=data.get("events"),
                                                organization=data.get("organization"), user=self.request_user,
                                                secret=data.get("secret") or None)
        except ValidationError as exc:
            self._add_errors(exc)
        return data

    def _post_clean(self):  # the model's own full_clean runs in the service
        pass


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = ("number", "started_at", "status_code", "duration_ms", "error")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(ServiceDeleteMixin, ImageFlowModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ("url", "events", "active", "created_by", "organization", "created_at")
    list_filter = ("active",)
    search_fields = ("url", "description")

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.request_user = request.user
        return form

    def save_model(self, request, obj, form, change):
        data = {key: form.cleaned_data.get(key) for key in ("url", "description", "events", "active", "organization")}
        secret = form.cleaned_data.get("secret") or None
        if change:
            if secret:
                data["secret"] = secret
            saved = webhooks.webhook_subscription_update(subscription=WebhookSubscription.objects.get(pk=obj.pk),
                                                         user=request.user, data=data)
        else:
            saved = webhooks.webhook_subscription_create(user=request.user, secret=secret, **data)
            messages.info(request, f"The subscription's secret (shown once): {saved.secret}")
        obj.pk = saved.pk
        obj.refresh_from_db()

    def service_delete(self, request, obj) -> None:
        webhooks.webhook_subscription_delete(subscription=obj)


@admin.action(description="Redeliver the selected deliveries")
def redeliver(modeladmin, request, queryset):
    count = 0
    for delivery in queryset:
        webhooks.webhook_redeliver(delivery=delivery)
        count += 1
    modeladmin.message_user(request, f"{count} deliveries sent again.", messages.SUCCESS)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, ImageFlowModelAdmin):
    list_display = ("event", "subscription", "status", "attempts", "last_status_code", "last_duration_ms",
                    "created_at", "delivered_at")
    list_filter = ("status", "event")
    readonly_fields = ("subscription", "event", "event_key", "execution", "step_id", "status", "attempts",
                       "first_attempt_at", "next_attempt_at", "last_status_code", "last_error", "last_duration_ms",
                       "delivered_at", "created_at", "payload_json")
    exclude = ("payload",)
    inlines = [WebhookAttemptInline]
    actions = [redeliver]

    @admin.display(description="payload")
    def payload_json(self, obj):
        return pretty_json(obj.payload)


class TriggerForm(_RequestForm):
    class Meta:
        model = Trigger
        fields = list(triggers.TRIGGER_FIELDS)

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        candidate = Trigger(created_by=self.request_user, **{k: data.get(k) for k in triggers.TRIGGER_FIELDS
                                                             if k in data})
        try:
            triggers.trigger_check(candidate, user=self.request_user)
        except ValidationError as exc:
            self._add_errors(exc)
        except DagValidationError as exc:  # the pipeline with these parameters does not validate
            self.add_error("parameters", str(exc))
        return data


@admin.register(Trigger)
class TriggerAdmin(ServiceDeleteMixin, ImageFlowModelAdmin):
    form = TriggerForm
    list_display = ("name", "pipeline", "active", "batch_size", "match_mime_type", "match_name_pattern", "match_tag",
                    "created_by", "organization")
    list_filter = ("active",)
    search_fields = ("name",)
    raw_id_fields = ("pipeline",)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.request_user = request.user
        return form

    def save_model(self, request, obj, form, change):
        data = {key: form.cleaned_data.get(key) for key in triggers.TRIGGER_FIELDS if key in form.cleaned_data}
        if change:
            saved = triggers.trigger_update(trigger=Trigger.objects.get(pk=obj.pk), user=request.user, data=data)
        else:
            saved = triggers.trigger_create(user=request.user, **data)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def service_delete(self, request, obj) -> None:
        triggers.trigger_delete(trigger=obj)


@admin.register(TriggerFile)
class TriggerFileAdmin(ReadOnlyAdminMixin, ImageFlowModelAdmin):
    list_display = ("file", "trigger", "status", "execution", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("file", "execution")


class ScheduleForm(_RequestForm):
    class Meta:
        model = PipelineSchedule
        fields = list(schedules.SCHEDULE_FIELDS)

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        candidate = PipelineSchedule(created_by=self.request_user,
                                     **{k: data.get(k) for k in schedules.SCHEDULE_FIELDS if k in data})
        try:
            schedules.schedule_check(candidate, user=self.request_user)
        except ValidationError as exc:
            self._add_errors(exc)
        except DagValidationError as exc:
            self.add_error("parameters", str(exc))
        return data


@admin.register(PipelineSchedule)
class PipelineScheduleAdmin(ServiceDeleteMixin, ImageFlowModelAdmin):
    form = ScheduleForm
    list_display = ("name", "pipeline", "cron", "timezone", "catch_up", "active", "next_run_at", "last_run_at",
                    "created_by")
    list_filter = ("active", "catch_up")
    search_fields = ("name",)
    raw_id_fields = ("pipeline",)
    readonly_fields = ("next_run_at", "last_run_at", "last_execution", "last_error")

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.request_user = request.user
        return form

    def save_model(self, request, obj, form, change):
        data = {key: form.cleaned_data.get(key) for key in schedules.SCHEDULE_FIELDS if key in form.cleaned_data}
        if change:
            saved = schedules.schedule_update(schedule=PipelineSchedule.objects.get(pk=obj.pk), user=request.user,
                                              data=data)
        else:
            saved = schedules.schedule_create(user=request.user, **data)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def service_delete(self, request, obj) -> None:
        schedules.schedule_delete(schedule=obj)
