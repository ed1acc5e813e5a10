"""`GET /cache/`: the step cache's statistics (executions/engine/cache.py)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from executions.engine.cache import cache_stats


class StepCacheStatsSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="STEP_CACHE_ENABLED: whether new items are looked up and recorded.")
    entries = serializers.IntegerField(help_text="Items whose outputs the cache holds.")
    bytes = serializers.IntegerField(help_text="Their outputs' sizes summed.")
    max_bytes = serializers.IntegerField(help_text="STEP_CACHE_MAX_BYTES: eviction brings `bytes` back under it.")
    hits = serializers.IntegerField(help_text="Items completed from the cache.")
    misses = serializers.IntegerField(help_text="Items looked up and not found (they ran).")
    hit_rate = serializers.FloatField(allow_null=True, help_text="hits / (hits + misses); null before any lookup.")


class StepCacheStatsView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: StepCacheStatsSerializer},
                   summary="Step cache: entries, size against its budget, hits, misses and hit rate",
                   tags=["executions"])
    def get(self, request):
        return Response(StepCacheStatsSerializer(cache_stats()).data)
