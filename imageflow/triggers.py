"""updated_at maintained by PostgreSQL too (the seed: "updated_at: trigger-managed")."""

from django.db import migrations

FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION imageflow_touch_updated_at() RETURNS trigger AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at = clock_timestamp();
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
"""


def touch_updated_at(*tables: str) -> list[migrations.RunSQL]:
    operations = [migrations.RunSQL(FUNCTION_SQL, reverse_sql=migrations.RunSQL.noop)]
    for table in tables:
        operations.append(
            migrations.RunSQL(
                f'CREATE TRIGGER "{table}_touch_updated_at" BEFORE UPDATE ON "{table}" '
                f"FOR EACH ROW EXECUTE FUNCTION imageflow_touch_updated_at();",
                reverse_sql=f'DROP TRIGGER IF EXISTS "{table}_touch_updated_at" ON "{table}";',
            )
        )
    return operations
