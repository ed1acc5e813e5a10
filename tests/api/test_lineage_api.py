"""The lineage API's contract: `GET /files/{id}/lineage/` (scoping, shape, bounded queries) and
`outputs_by_input` of an execution's detail. Lineage rows are written here as the engine writes
them (tests/executions/test_lineage.py runs the engine itself)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.models import FileLineage, StepStatus
from tests.factories import ComponentExecutionFactory, FileFactory, PipelineExecutionFactory

pytestmark = pytest.mark.django_db


def _chain(owner, length: int, *, width: int = 1):
    """`width` uploads, each the root of a chain of `length` derived files, one step per level;
    returns (uploads, levels: [[file per upload] per step], steps)."""
    uploads = [FileFactory(created_by=owner) for _ in range(width)]
    execution = PipelineExecutionFactory(created_by=owner, input_data={"inputs": [str(f.pk) for f in uploads]})
    levels, steps, previous = [], [], uploads
    for level in range(length):
        made = [FileFactory(created_by=owner) for _ in range(width)]
        step = ComponentExecutionFactory(execution=execution, node_id=f"n{level}", status=StepStatus.COMPLETED,
                                         output_data={"files": [str(f.pk) for f in made]})
        FileLineage.objects.bulk_create(FileLineage(file=f, derived_from=p, step=step) for f, p in zip(made, previous))
        levels.append(made)
        steps.append(step)
        previous = made
    return uploads, levels, steps, execution


def _lineage(client, file, **params):
    return client.get(f"/api/v1/files/{file.pk}/lineage/", params)


def test_someone_elses_file_is_404_and_their_files_are_not_shown(api, stranger_api, staff_api, owner, stranger):
    # given the owner's upload, an output of theirs, and an output of a stranger derived from the
    # owner's output (as a staff member's run on someone's file would make)
    upload = FileFactory(created_by=owner)
    output = FileFactory(created_by=owner)
    theirs = FileFactory(created_by=stranger)
    FileLineage.objects.create(file=output, derived_from=upload)
    FileLineage.objects.create(file=theirs, derived_from=output)
    # then the stranger cannot see the owner's file's lineage at all
    assert _lineage(stranger_api, output).status_code == 404
    # and the owner sees their own files only; the stranger's derived file is neither listed nor followed
    body = _lineage(api, upload).json()
    assert [d["file"]["id"] for d in body["descendants"]] == [str(output.pk)]
    # and the stranger's file names no source of the owner's
    body = _lineage(stranger_api, theirs).json()
    assert body["derived_from"] == [] and body["ancestors"] == []
    # and staff see all of it
    body = _lineage(staff_api, upload).json()
    assert [(d["file"]["id"], d["depth"]) for d in body["descendants"]] == [(str(output.pk), 1), (str(theirs.pk), 2)]


def test_depth_must_be_a_bounded_integer(api, owner):
    upload = FileFactory(created_by=owner)
    assert _lineage(api, upload, depth="0").status_code == 400
    assert _lineage(api, upload, depth="x").status_code == 400
    assert _lineage(api, upload, depth="51").status_code == 400
    assert _lineage(api, upload, depth="50").status_code == 200


def test_a_diamond_lists_each_file_once_at_its_nearest_depth(api, owner):
    # given a -> b -> d and a -> d (d merges a and b)
    a, b, d = (FileFactory(created_by=owner) for _ in range(3))
    FileLineage.objects.bulk_create([FileLineage(file=b, derived_from=a), FileLineage(file=d, derived_from=b),
                                     FileLineage(file=d, derived_from=a)])
    body = _lineage(api, d).json()
    assert [(x["file"]["id"], x["depth"]) for x in body["ancestors"]] == [(str(b.pk), 1), (str(a.pk), 1)] or \
        [(x["file"]["id"], x["depth"]) for x in body["ancestors"]] == [(str(a.pk), 1), (str(b.pk), 1)]
    assert sorted(body["derived_from"]) == sorted([str(a.pk), str(b.pk)])
    body = _lineage(api, a).json()
    assert {(x["file"]["id"], x["depth"]) for x in body["descendants"]} == {(str(b.pk), 1), (str(d.pk), 1)}


def test_lineage_queries_do_not_grow_with_the_files(api, owner):
    # given a short narrow lineage and a long wide one
    small, *_ = _chain(owner, 1, width=1)
    big, levels, *_ = _chain(owner, 8, width=6)
    # when both are asked for
    with CaptureQueriesContext(connection) as few:
        assert len(_lineage(api, small[0]).json()["descendants"]) == 1
    with CaptureQueriesContext(connection) as many:
        body = _lineage(api, levels[3][2]).json()
    # then the answers differ in size but not in queries
    assert len(body["ancestors"]) == 4 and len(body["descendants"]) == 4
    assert len(many) == len(few) <= 6


def test_outputs_by_input_costs_one_query_and_none_without_outputs(api, owner):
    # given a run of 3 inputs through a 2-step chain
    uploads, levels, steps, execution = _chain(owner, 2, width=3)
    url = f"/api/v1/executions/{execution.pk}/"
    with CaptureQueriesContext(connection) as with_outputs:
        body = api.get(url).json()
    # then each input lists its own outputs by node
    assert body["outputs_by_input"] == {
        str(u.pk): {"n0": [str(levels[0][i].pk)], "n1": [str(levels[1][i].pk)]} for i, u in enumerate(uploads)}
    assert sum("file_lineage" in q["sql"] for q in with_outputs.captured_queries) == 1
    # and a run without outputs yet reads no lineage
    ComponentExecutionFactory._meta.model.objects.filter(execution=execution).update(
        status=StepStatus.RUNNING, output_data=None)
    with CaptureQueriesContext(connection) as without:
        body = api.get(url).json()
    assert body["outputs_by_input"] == {str(u.pk): {} for u in uploads}
    assert not any("file_lineage" in q["sql"] for q in without.captured_queries)
    assert len(without) == len(with_outputs) - 1
