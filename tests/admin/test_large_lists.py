"""The lists of the tables that grow without bound (files, runs, steps): an unfiltered list takes
its row count from PostgreSQL's estimate once the table is big, a filtered one counts exactly,
and no list counts its whole table a second time for "(N total)"."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from files.models import File
from imageflow.admin_utils import EstimatedCountPaginator
from tests import factories
from tests.admin.pages import admin_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def files_analyzed_at_three(db):
    """Three files when ANALYZE ran (pg_class.reltuples = 3), five now."""
    for n in range(3):
        factories.FileFactory(original_name=f"before-{n}.jpg")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE files")
    for n in range(2):
        factories.FileFactory(original_name=f"after-{n}.jpg")


def test_a_big_tables_unfiltered_list_shows_the_estimate(staff_client, files_analyzed_at_three, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "EXACT_BELOW", 1)  # "big" from one row on
    response = staff_client.get(admin_url(File, "changelist"))
    assert response.context["cl"].result_count == 3


def test_a_filtered_list_and_a_small_table_count_exactly(staff_client, files_analyzed_at_three, monkeypatch):
    assert staff_client.get(admin_url(File, "changelist")).context["cl"].result_count == 5  # under 50,000 rows
    monkeypatch.setattr(EstimatedCountPaginator, "EXACT_BELOW", 1)
    searched = staff_client.get(admin_url(File, "changelist"), {"q": "after"})
    assert searched.context["cl"].result_count == 2


def test_a_filtered_list_does_not_count_the_whole_table_again(staff_client, files_analyzed_at_three):
    staff_client.get(admin_url(File, "changelist"))
    with CaptureQueriesContext(connection) as queries:
        staff_client.get(admin_url(File, "changelist"), {"q": "after"})
    whole_table_counts = [q["sql"] for q in queries.captured_queries
                          if q["sql"].startswith('SELECT COUNT(*) AS "__count" FROM "files"') and "WHERE" not in q["sql"]]
    assert whole_table_counts == []
