from tests.executions.conftest import builtins, pipeline_of  # noqa: F401  (fixtures)
