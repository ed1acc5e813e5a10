"""Routes of the workflow registry (included in /api/v1/ before the pipeline router, so
`pipelines/import/` is not taken for a pipeline id)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .workflows import (
    AuditLogView,
    OrganizationListView,
    PipelineExportView,
    PipelineImportView,
    PipelineLabelsView,
    PipelineVersionDiffView,
    WorkflowViewSet,
)

router = SimpleRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")

urlpatterns = [
    path("pipelines/import/", PipelineImportView.as_view(), name="pipeline-import"),
    path("pipelines/<uuid:pk>/export/", PipelineExportView.as_view(), name="pipeline-export"),
    path("pipelines/<uuid:pk>/labels/", PipelineLabelsView.as_view(), name="pipeline-labels"),
    path("pipelines/<uuid:pk>/versions/<int:a>/diff/<int:b>/", PipelineVersionDiffView.as_view(),
         name="pipeline-version-diff"),
    path("audit-log/", AuditLogView.as_view(), name="audit-log"),
    path("organizations/", OrganizationListView.as_view(), name="organization-list"),
    *router.urls,
]
