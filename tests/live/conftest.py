import pytest
from django.db import transaction
from django.utils import timezone

from executions import signals
from executions.models import ComponentExecution, PipelineExecution


def commit_execution_status(execution_id, *, expected: str, to: str) -> None:
    """A guarded transition as the engine commits it: conditional UPDATE, signal after commit."""
    with transaction.atomic():
        fields = {"status": to}
        if to == "running":
            fields["started_at"] = timezone.now()
        elif to in ("completed", "failed", "cancelled"):
            fields["completed_at"] = timezone.now()
        won = PipelineExecution.objects.filter(id=execution_id, status=expected).update(**fields)
        assert won == 1
        transaction.on_commit(lambda: signals.execution_status_changed.send(
            sender=PipelineExecution, execution_id=execution_id, status=to, previous_status=expected))


def commit_step_status(step, *, expected: str, to: str) -> None:
    with transaction.atomic():
        won = ComponentExecution.objects.filter(id=step.id, status=expected).update(status=to)
        assert won == 1
        transaction.on_commit(lambda: signals.step_status_changed.send(
            sender=PipelineExecution, execution_id=step.execution_id, step_id=step.id, node_id=step.node_id,
            status=to, previous_status=expected))


@pytest.fixture
def token_for():
    from rest_framework.authtoken.models import Token

    def make(user) -> str:
        return Token.objects.get_or_create(user=user)[0].key

    return make
