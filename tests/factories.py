"""factory_boy factories for every model, in one place."""

import factory
from django.contrib.auth import get_user_model

from executions.models import ComponentExecution, PipelineExecution
from files.models import File
from registry.models import Component, Pipeline, Workflow, WorkflowEdge, WorkflowNode, WorkflowParam


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests-123")


class StaffFactory(UserFactory):
    is_staff = True
    is_superuser = True


class ComponentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Component

    name = factory.Sequence(lambda n: f"component-{n}")
    version = "1.0.0"
    docker_image = factory.LazyAttribute(lambda c: f"example/{c.name}:{c.version}")
    input_schema = factory.LazyFunction(lambda: {"type": "object", "properties": {}})
    output_schema = factory.LazyFunction(lambda: {"type": "object"})
    resource_requirements = factory.LazyFunction(lambda: {"cpu": 1, "memory": "256Mi", "gpu": 0})


class PipelineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pipeline

    name = factory.Sequence(lambda n: f"pipeline-{n}")
    description = "A test pipeline"
    definition = factory.LazyFunction(lambda: {"nodes": [], "edges": []})
    created_by = factory.SubFactory(UserFactory)


class PipelineExecutionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PipelineExecution

    pipeline = factory.SubFactory(PipelineFactory)
    pipeline_version = factory.LazyAttribute(lambda e: e.pipeline.version)
    created_by = factory.LazyAttribute(lambda e: e.pipeline.created_by)
    input_data = factory.LazyFunction(dict)


class ComponentExecutionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ComponentExecution

    execution = factory.SubFactory(PipelineExecutionFactory)
    component = factory.SubFactory(ComponentFactory)
    node_id = factory.Sequence(lambda n: f"node-{n}")


class FileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = File

    original_name = factory.Sequence(lambda n: f"image-{n}.png")
    mime_type = "image/png"
    file_size = 1024
    storage_path = factory.Sequence(lambda n: f"uploads/test/{n}.png")
    checksum = factory.Sequence(lambda n: f"{n:064x}")
    metadata = factory.LazyFunction(lambda: {"format": "PNG", "width": 8, "height": 8})
    created_by = factory.SubFactory(UserFactory)


class WorkflowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workflow

    name = factory.Sequence(lambda n: f"workflow-{n}")
    description = "A generated workflow"
    metadata = factory.LazyFunction(lambda: {"category": "demo"})
    created_by = factory.SubFactory(UserFactory)


class WorkflowNodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkflowNode

    workflow = factory.SubFactory(WorkflowFactory)
    node_type = "agent"
    name = factory.Sequence(lambda n: f"step-{n}")
    parameters = factory.LazyFunction(lambda: {"prompt": "Hello"})
    order_index = factory.Sequence(lambda n: n)


class WorkflowEdgeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkflowEdge

    workflow = factory.SubFactory(WorkflowFactory)
    parent_node = factory.SubFactory(WorkflowNodeFactory, workflow=factory.SelfAttribute("..workflow"))
    child_node = factory.SubFactory(WorkflowNodeFactory, workflow=factory.SelfAttribute("..workflow"))
    handoff_data = factory.LazyFunction(dict)


class WorkflowParamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkflowParam

    workflow = factory.SubFactory(WorkflowFactory)
    key = factory.Sequence(lambda n: f"param_{n}")
    value_type = "string"
    required = False
    default_value = "x"


# --- workflow registry: organizations, tags, versions, access and audit logs -------------------

class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "orgs.Organization"

    name = factory.Sequence(lambda n: f"Organization {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "orgs.Membership"

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)


class TagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "registry.Tag"

    name = factory.Sequence(lambda n: f"tag-{n}")


class WorkflowVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "registry.WorkflowVersion"

    workflow = factory.SubFactory(WorkflowFactory)
    version = 1
    snapshot = factory.LazyAttribute(lambda v: {"name": v.workflow.name, "nodes": [], "edges": [], "params": []})


class WorkflowAccessFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "registry.WorkflowAccess"

    workflow = factory.SubFactory(WorkflowFactory)
    user = factory.SubFactory(UserFactory)
    kind = "read"
    version = 1


class AuditEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "audit.AuditEntry"

    action = "create"
    source = "api"
    object_type = "workflow"
    object_id = factory.Faker("uuid4")
    object_repr = "a workflow"
    after = factory.LazyFunction(lambda: {"name": "a workflow"})


# --- accounts: scoped API tokens ------------------------------------------------------------

class ApiTokenFactory(factory.django.DjangoModelFactory):
    """A token row without a usable secret (tests that call the API with one use
    imageflow.accounts.services.api_token_create, which returns it)."""

    class Meta:
        model = "accounts.ApiToken"

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"token-{n}")
    prefix = factory.Sequence(lambda n: f"ifk_{n:08x}")
    key_hash = factory.Sequence(lambda n: f"{n:064x}")
    scopes = factory.LazyFunction(lambda: ["read"])
