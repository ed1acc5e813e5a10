import uuid

import pytest
from django.conf import settings
from django.test import override_settings

from executions.logstore.documents import delete_log_indices
from imageflow.search import get_client


@pytest.fixture
def search_prefix():
    """A fresh index prefix per test on the real search server; its indices are deleted after."""
    prefix = f"{settings.ELASTICSEARCH_INDEX_PREFIX}-t{uuid.uuid4().hex[:8]}"
    with override_settings(ELASTICSEARCH_INDEX_PREFIX=prefix):
        yield prefix
        client = get_client()
        delete_log_indices(client)
        client.options(ignore_status=404).indices.delete_index_template(name=f"{prefix}-logs-template")


@pytest.fixture
def es(search_prefix):
    return get_client()
