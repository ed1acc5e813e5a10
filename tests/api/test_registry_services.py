"""registry.services directly: version history under concurrent edits."""

import threading

import pytest
from django.db import connection

from registry import services
from registry.models import PipelineVersion
from tests.api.conftest import definition


@pytest.mark.django_db(transaction=True)
def test_concurrent_definition_changes_get_consecutive_versions(owner, resize):
    # given a pipeline at v1
    pipeline = services.pipeline_create(name="p", definition=definition(width=1), created_by=owner)
    widths = [10, 20, 30, 40]
    barrier = threading.Barrier(len(widths))
    errors = []

    def edit(width):
        try:
            barrier.wait()
            services.pipeline_update(pipeline=pipeline, user=owner, data={"definition": definition(width=width)})
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    # when four different definitions are saved at the same moment
    threads = [threading.Thread(target=edit, args=(w,)) for w in widths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then each got its own version, the history has no gap, and the last one is current
    assert errors == []
    history = list(PipelineVersion.objects.filter(pipeline=pipeline).order_by("version"))
    assert [v.version for v in history] == [1, 2, 3, 4, 5]
    assert sorted(v.definition["nodes"][0]["parameters"]["width"] for v in history[1:]) == widths
    pipeline.refresh_from_db()
    assert pipeline.version == 5 and pipeline.definition == history[-1].definition
