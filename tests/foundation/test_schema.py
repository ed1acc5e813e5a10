"""The database schema holds every table and column of both seed documents."""

import pytest
from django.db import connection

# Table -> {column: information_schema data_type}, transcribed from shared/seeds/.
SEED_TABLES = {
    "pipelines": {
        "id": "uuid", "name": "character varying", "description": "text", "definition": "jsonb",
        "version": "integer", "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone", "created_by": "uuid",
    },
    "pipeline_executions": {
        "id": "uuid", "pipeline_id": "uuid", "status": "character varying", "input_data": "jsonb",
        "output_data": "jsonb", "error_message": "text", "started_at": "timestamp with time zone",
        "completed_at": "timestamp with time zone", "created_by": "uuid",
    },
    "components": {
        "id": "uuid", "name": "character varying", "description": "text",
        "docker_image": "character varying", "version": "character varying", "input_schema": "jsonb",
        "output_schema": "jsonb", "resource_requirements": "jsonb",
        "created_at": "timestamp with time zone", "updated_at": "timestamp with time zone",
    },
    "component_executions": {
        "id": "uuid", "execution_id": "uuid", "component_id": "uuid", "status": "character varying",
        "input_data": "jsonb", "output_data": "jsonb", "execution_time_ms": "integer",
        "resource_usage": "jsonb", "started_at": "timestamp with time zone",
        "completed_at": "timestamp with time zone",
    },
    "files": {
        "id": "uuid", "original_name": "character varying", "mime_type": "character varying",
        "file_size": "bigint", "storage_path": "character varying", "checksum": "character varying",
        "metadata": "jsonb", "created_at": "timestamp with time zone", "created_by": "uuid",
    },
    "workflow": {
        "id": "uuid", "name": "character varying", "version": "integer", "description": "text",
        "created_at": "timestamp with time zone", "updated_at": "timestamp with time zone",
        "metadata": "jsonb",
    },
    "workflow_nodes": {
        "id": "uuid", "workflow_id": "uuid", "node_type": "character varying",
        "name": "character varying", "parameters": "jsonb", "order_index": "integer",
    },
    "workflow_edges": {
        "id": "uuid", "workflow_id": "uuid", "parent_node_id": "uuid", "child_node_id": "uuid",
        "handoff_data": "jsonb",
    },
    "workflow_params": {
        "id": "uuid", "workflow_id": "uuid", "key": "character varying",
        "value_type": "character varying", "required": "boolean", "default_value": "text",
        "metadata": "jsonb",
    },
    "users": {"id": "uuid"},
}

# Seed lengths of the VARCHAR columns.
SEED_LENGTHS = {
    ("pipelines", "name"): 255, ("pipeline_executions", "status"): 50, ("components", "name"): 255,
    ("components", "docker_image"): 500, ("components", "version"): 50,
    ("component_executions", "status"): 50, ("files", "original_name"): 500,
    ("files", "mime_type"): 100, ("files", "storage_path"): 1000, ("files", "checksum"): 64,
    ("workflow", "name"): 255, ("workflow_nodes", "node_type"): 100, ("workflow_nodes", "name"): 255,
    ("workflow_params", "key"): 100, ("workflow_params", "value_type"): 50,
}

# (table, column) -> referenced table, from the seeds' REFERENCES / FK notes.
SEED_FOREIGN_KEYS = {
    ("pipelines", "created_by"): "users",
    ("pipeline_executions", "pipeline_id"): "pipelines",
    ("pipeline_executions", "created_by"): "users",
    ("component_executions", "execution_id"): "pipeline_executions",
    ("component_executions", "component_id"): "components",
    ("files", "created_by"): "users",
    ("workflow_nodes", "workflow_id"): "workflow",
    ("workflow_edges", "workflow_id"): "workflow",
    ("workflow_edges", "parent_node_id"): "workflow_nodes",
    ("workflow_edges", "child_node_id"): "workflow_nodes",
    ("workflow_params", "workflow_id"): "workflow",
}


def _columns(table):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable "
            "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
            [table],
        )
        return {name: (dtype, length, nullable) for name, dtype, length, nullable in cursor.fetchall()}


@pytest.mark.django_db
@pytest.mark.parametrize("table", sorted(SEED_TABLES))
def test_seed_table_has_every_column_with_its_type(table):
    columns = _columns(table)
    assert columns, f"table {table} does not exist"
    for column, dtype in SEED_TABLES[table].items():
        assert column in columns, f"{table}.{column} is missing"
        assert columns[column][0] == dtype, f"{table}.{column} is {columns[column][0]}, seed says {dtype}"


@pytest.mark.django_db
def test_varchar_lengths_match_the_seed():
    for (table, column), length in SEED_LENGTHS.items():
        assert _columns(table)[column][1] == length, f"{table}.{column}"


@pytest.mark.django_db
def test_seed_not_null_columns_are_not_null():
    not_null = [("pipelines", "name"), ("pipelines", "definition"), ("pipeline_executions", "status"),
                ("components", "docker_image"), ("components", "version"), ("components", "name"),
                ("component_executions", "status"), ("files", "storage_path")]
    for table, column in not_null:
        assert _columns(table)[column][2] == "NO", f"{table}.{column} should be NOT NULL"


@pytest.mark.django_db
def test_seed_foreign_keys_exist():
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT kcu.table_name, kcu.column_name, ccu.table_name
            FROM information_schema.table_constraints tc
            JOIN information_schema.key_column_usage kcu ON tc.constraint_name = kcu.constraint_name
            JOIN information_schema.constraint_column_usage ccu ON tc.constraint_name = ccu.constraint_name
            WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = 'public'
            """
        )
        found = {(table, column): target for table, column, target in cursor.fetchall()}
    for key, target in SEED_FOREIGN_KEYS.items():
        assert found.get(key) == target, f"{key} should reference {target}, found {found.get(key)}"


def _index_columns():
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'")
        return cursor.fetchall()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "table, fragment",
    [
        ("pipelines", "(updated_at DESC, id)"),
        ("pipeline_executions", "(status, created_at DESC, id DESC)"),
        ("pipeline_executions", "(status, started_at DESC)"),
        ("component_executions", "(execution_id)"),
        ("files", "(checksum)"),
        ("components", "(name, version)"),
    ],
)
def test_access_pattern_indexes_exist(table, fragment):
    definitions = [d for t, d in _index_columns() if t == table]
    assert any(fragment in d for d in definitions), f"no index on {table} {fragment}: {definitions}"
