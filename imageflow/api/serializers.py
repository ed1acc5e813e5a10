"""Serializer building blocks shared by the apps' APIs."""

from __future__ import annotations

import copy

from rest_framework import serializers


class IntrospectedOnceMixin:
    """A ModelSerializer that introspects its model once per class instead of once per instance.

    DRF builds a ModelSerializer's fields from the model's metadata every time a serializer is
    made, and a status poll makes two of them. The fields built the first time are kept on the
    class, unbound, and each instance gets its own deep copy (fields are bound to one parent, so
    they can't be shared), which is what DRF does with declared fields anyway.
    """

    def get_fields(self):
        cls = type(self)
        template = cls.__dict__.get("_introspected_fields")
        if template is None:
            template = super().get_fields()
            cls._introspected_fields = template
        return copy.deepcopy(template)


class ModelSerializer(IntrospectedOnceMixin, serializers.ModelSerializer):
    pass
