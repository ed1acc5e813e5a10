"""Full-text search and similar-workflow lookup return the expected ranking on a prepared set."""

import pytest

from registry.models import Component
from registry.similarity import TrigramStructureBackend, build_query, feature_embedding, find_similar
from registry.workflow_selectors import workflow_document, workflow_list
from registry.workflow_services import workflow_create
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db


def chain(name, description, steps, **extra):
    """A linear workflow from (key, node_type, node name, parameters) tuples."""
    nodes = [{"key": k, "node_type": t, "name": n, "parameters": p, "order_index": i}
             for i, (k, t, n, p) in enumerate(steps)]
    edges = [{"parent": a["key"], "child": b["key"]} for a, b in zip(nodes, nodes[1:])]
    return {"name": name, "description": description, "nodes": nodes, "edges": edges, "params": [], **extra}


@pytest.fixture
def prepared(user):
    Component.objects.create(name="resize", version="1.0.0", docker_image="x", runner="builtin")
    Component.objects.create(name="grayscale", version="1.0.0", docker_image="x", runner="builtin")
    made = {}
    for key, doc in {
        "web": sample_document(),
        "news": chain("Summarize news articles", "Pull the morning news and summarize them for the team.",
                      [("rss", "tool", "Read RSS feed", {}), ("sum", "agent", "Summarize articles", {}),
                       ("mail", "tool", "Send email digest", {})]),
        "photos": chain("Resize product photos", "Make catalogue thumbnails in grey.",
                        [("resize", "resize", "Resize to 320", {"width": 320}),
                         ("gray", "grayscale", "Grayscale", {})]),
        "translate": chain("Translate support tickets", "Translate incoming tickets to English.",
                           [("read", "tool", "Read ticket", {"queue": "support"}),
                            ("tr", "agent", "Translate", {"target_language": "english"})]),
        "invoice": chain("Invoice extraction", "Extract totals from PDF invoices.",
                         [("ocr", "tool", "OCR the PDF", {"engine": "tesseract", "note": "summarize totals"}),
                          ("store", "tool", "Store totals", {})]),
    }.items():
        made[key], _ = workflow_create(user=user, data=doc)
    return made


def names(rows, made):
    by_id = {w.pk: k for k, w in made.items()}
    return [by_id[r.workflow_id] for r in rows]


def test_search_ranks_name_matches_above_parameter_matches(user, prepared):
    ranked = [w.name for w in workflow_list(user=user, search="summarize")]
    # "summarize" is in two names/descriptions and only in a parameter of the invoice workflow
    assert ranked[-1] == "Invoice extraction"
    assert set(ranked[:2]) == {"Summarize a web page", "Summarize news articles"}
    assert len(ranked) == 3


def test_search_covers_node_names_and_parameters_with_stemming(user, prepared):
    assert [w.name for w in workflow_list(user=user, search="tesseract")] == ["Invoice extraction"]
    assert [w.name for w in workflow_list(user=user, search="thumbnail")] == ["Resize product photos"]
    assert [w.name for w in workflow_list(user=user, search="translating")] == ["Translate support tickets"]
    assert list(workflow_list(user=user, search="kubernetes")) == []


def test_search_api_returns_rank(api, prepared):
    rows = api.get("/api/v1/workflows/?search=summarize").json()["results"]
    assert rows[0]["rank"] >= rows[1]["rank"] >= rows[2]["rank"] > 0


def test_similar_to_a_draft_graph_prefers_the_same_graph_then_same_shape(user, prepared):
    draft = sample_document(name="Summarise web pages", description="Fetch a page and summarize it.")
    from registry.workflow_document import clean_document

    found = find_similar(queryset=workflow_list(user=user), query=build_query(document=clean_document(draft)))
    ranking = names(found, prepared)
    assert ranking[0] == "web"
    assert ranking[1] == "news"  # same tool -> agent -> tool shape, related words
    # the image workflow shares no name word and no node type: not even a candidate
    assert "photos" not in ranking
    assert found[0].score > found[1].score > 0
    assert found[0].structure_score == 1.0


def test_similar_to_plain_text_uses_text_only(user, prepared):
    found = find_similar(queryset=workflow_list(user=user), query=build_query(text="translate tickets"))
    assert names(found, prepared)[0] == "translate"
    assert all(r.structure_score == 0.0 for r in found)
    assert found[0].text_score == found[0].score


def test_similar_components_count_as_structure(user, prepared):
    draft = chain("Thumbnails", "", [("a", "resize", "Resize", {"width": 100}), ("b", "grayscale", "Grey", {})])
    from registry.workflow_document import clean_document

    found = find_similar(queryset=workflow_list(user=user), query=build_query(document=clean_document(draft)))
    assert names(found, prepared)[0] == "photos" and found[0].structure_score == 1.0


def test_candidate_search_agrees_with_exact_scoring(user, prepared):
    query = build_query(document=workflow_document(prepared["web"]), exclude_id=prepared["web"].pk)
    backend = TrigramStructureBackend()
    fast = backend.similar(queryset=workflow_list(user=user), query=query, limit=3)
    exact = backend.exact(queryset=workflow_list(user=user), query=query, limit=3)
    assert [r.workflow_id for r in fast] == [r.workflow_id for r in exact]


def test_similar_api_for_stored_workflow_and_scope(api, other_api, prepared, user):
    # prepared rows belong to `user`, whose client is `api`
    response = api.get(f"/api/v1/workflows/{prepared['web'].pk}/similar/?limit=2")
    assert response.status_code == 200
    assert [r["name"] for r in response.json()][0] == "Summarize news articles"
    assert other_api.post("/api/v1/workflows/similar/", {"text": "summarize"}, format="json").json() == []
    both = api.post("/api/v1/workflows/similar/", {"text": "x", "workflow": str(prepared["web"].pk)}, format="json")
    assert both.status_code == 400


def test_feature_embedding_is_a_unit_vector_that_tracks_overlap():
    a = feature_embedding(["t:agent", "t:tool", "e:tool>agent"])
    b = feature_embedding(["t:agent", "t:tool", "e:tool>agent"])
    c = feature_embedding(["c:resize"])
    assert a == b and abs(sum(v * v for v in a) - 1) < 1e-9
    assert sum(x * y for x, y in zip(a, b)) > sum(x * y for x, y in zip(a, c))


def test_reindex_command_makes_rows_written_without_services_searchable(user):
    from io import StringIO

    from django.core.management import call_command

    from tests.factories import WorkflowFactory, WorkflowNodeFactory

    workflow = WorkflowFactory(created_by=user, name="Legacy invoice robot")
    WorkflowNodeFactory(workflow=workflow, node_type="tool", name="Parse ledger", parameters={"engine": "abacus"})
    assert list(workflow_list(user=user, search="abacus")) == []
    out = StringIO()
    call_command("reindex_workflows", stdout=out)
    assert "reindexed 1 workflows" in out.getvalue()
    assert [w.pk for w in workflow_list(user=user, search="abacus")] == [workflow.pk]
    assert [w.pk for w in workflow_list(user=user, search="ledger")] == [workflow.pk]
