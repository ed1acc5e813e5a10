"""The search-side shape of an execution log record.

Records live in monthly indices `<prefix>-logs-YYYY.MM`, created on first write from a
composable index template that carries the explicit mapping below and puts every such index
behind the read alias `<prefix>-logs`. Searches go through the alias; writes go to the concrete
monthly index of the record's timestamp (an alias over several indices takes no writes).
"""

from __future__ import annotations

from datetime import datetime

from elasticsearch import Elasticsearch
from elasticsearch_dsl import Date, Document, Index, Keyword, Long, MetaField, Object, Text

from imageflow.search import get_client, index_name

TEMPLATE_SUFFIX = "logs-template"
ALIAS_SUFFIX = "logs"


class LogRecordDocument(Document):
    """One log line. `_id` is its run's id and the durable buffer's row id
    (`shipping.document_id`): a record shipped twice is stored once, and deployments sharing a
    cluster never overwrite each other's records."""

    record_id = Long()
    execution_id = Keyword()
    pipeline_id = Keyword()
    pipeline_name = Keyword()
    owner_id = Keyword()
    step_id = Keyword()
    node_id = Keyword()
    component = Keyword()
    level = Keyword()
    message = Text(analyzer="standard", fields={"raw": Keyword(ignore_above=256)})
    timestamp = Date()
    # Kept in _source and returned, not indexed: free-form keys must not grow the mapping.
    extra = Object(dynamic=False)

    class Meta:
        # An unknown top-level field is an error, not a silent new mapping.
        dynamic = MetaField("strict")


def alias_name() -> str:
    return index_name(ALIAS_SUFFIX)


def monthly_index_name(timestamp: datetime) -> str:
    return index_name(f"logs-{timestamp:%Y.%m}")


def _index_definition() -> Index:
    index = Index(alias_name())
    index.document(LogRecordDocument)
    index.settings(number_of_shards=1, number_of_replicas=0, refresh_interval="1s")
    index.aliases(**{alias_name(): {}})
    return index


def template_body() -> dict:
    """The composable template for `<prefix>-logs-*`: mapping, settings and the read alias."""
    template = _index_definition().as_composable_template(index_name(TEMPLATE_SUFFIX), pattern=index_name("logs-*"))
    return template.to_dict()


def ensure_template(client: Elasticsearch | None = None) -> None:
    """Idempotent: (re)puts the index template, so a fresh or restarted server gets it back
    before the first record of a month creates its index."""
    es = client or get_client()
    body = template_body()
    es.indices.put_index_template(name=index_name(TEMPLATE_SUFFIX), **body)


def delete_log_indices(client: Elasticsearch | None = None) -> None:
    """Deletes this prefix's monthly indices by name: Elasticsearch 8 refuses a wildcard delete
    (`action.destructive_requires_name` is on by default)."""
    es = client or get_client()
    names = sorted(es.indices.get(index=index_name("logs-*"), expand_wildcards="all", allow_no_indices=True,
                                  ignore_unavailable=True))
    if names:
        es.options(ignore_status=404).indices.delete(index=",".join(names))
