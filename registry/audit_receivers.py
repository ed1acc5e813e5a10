"""Components and pipelines are audited from model signals, so every write path (the API's
services, the admin, commands) is covered without each of them remembering to. Workflows are
audited by their services instead, with the whole nested document as before/after.

The registry connects these itself (registry/apps.py): the audit app below it knows no registry
model."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from imageflow.audit.services import audit_record, model_state
from registry.models import Component, Pipeline

AUDITED = {Component: "component", Pipeline: "pipeline"}
IGNORED_FIELDS = {"updated_at", "created_at"}


def _changed(before: dict, after: dict) -> bool:
    keys = (set(before) | set(after)) - IGNORED_FIELDS
    return any(before.get(k) != after.get(k) for k in keys)


@receiver(pre_save)
def _remember_before(sender, instance, raw=False, **kwargs) -> None:
    if sender not in AUDITED or raw or instance._state.adding:
        return
    previous = sender.objects.filter(pk=instance.pk).first()
    instance._audit_before = model_state(previous) if previous is not None else None


@receiver(post_save)
def _record_save(sender, instance, created, raw=False, **kwargs) -> None:
    if sender not in AUDITED or raw:
        return
    after = model_state(instance)
    before = None if created else getattr(instance, "_audit_before", None)
    if before is not None and not _changed(before, after):
        return
    audit_record(
        action="create" if created or before is None else "update",
        object_type=AUDITED[sender], object_id=instance.pk, object_repr=str(instance),
        before=before, after=after,
    )
    instance._audit_before = after


@receiver(post_delete)
def _record_delete(sender, instance, **kwargs) -> None:
    if sender not in AUDITED:
        return
    audit_record(action="delete", object_type=AUDITED[sender], object_id=instance.pk,
                 object_repr=str(instance), before=model_state(instance))
