import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory


def sample_document(**overrides):
    document = {
        "name": "Summarize a web page",
        "description": "Fetch a page, summarize it with an agent and post the summary to chat.",
        "category": "content",
        "tags": ["Summaries", "web"],
        "metadata": {"origin": "nl-generator", "prompt": "summarize this page and post it"},
        "nodes": [
            {"key": "fetch", "node_type": "tool", "name": "Fetch page", "parameters": {"url": "{{params.url}}"},
             "order_index": 0},
            {"key": "summarize", "node_type": "agent", "name": "Summarize text",
             "parameters": {"prompt": "Summarize in {{params.sentences}} sentences", "model": "small"},
             "order_index": 1},
            {"key": "post", "node_type": "tool", "name": "Post to chat", "parameters": {"channel": "#news"},
             "order_index": 2},
        ],
        "edges": [
            {"parent": "fetch", "child": "summarize", "handoff_data": {"field": "html"}},
            {"parent": "summarize", "child": "post", "handoff_data": {"field": "summary"}},
        ],
        "params": [
            {"key": "url", "value_type": "string", "required": True, "default_value": None, "metadata": None},
            {"key": "sentences", "value_type": "int", "required": False, "default_value": "3",
             "metadata": {"help": "length of the summary"}},
        ],
    }
    document.update(overrides)
    return document


@pytest.fixture
def document():
    return sample_document()


@pytest.fixture
def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def other_api(db):
    client = APIClient()
    client.force_authenticate(UserFactory())
    return client
