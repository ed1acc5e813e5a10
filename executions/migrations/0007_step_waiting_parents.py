from django.db import migrations, models

# Pending steps of runs in flight get their count from their parents' statuses. Deploy the new
# workers with this migration: an old worker completing a parent does not count its children down
# (they would wait for the sweep), and a step an old process inserts gets 0 from the column's
# database default (its children become ready with every parent; the claim checks the parents).
COUNT_WAITING_PARENTS = """
UPDATE component_executions AS child
   SET waiting_parents = (
       SELECT count(*) FROM component_executions AS parent
        WHERE parent.execution_id = child.execution_id AND parent.status <> 'completed'
          AND parent.node_id IN (SELECT jsonb_array_elements_text(child.input_data -> 'parents')))
 WHERE child.status = 'pending' AND jsonb_typeof(child.input_data -> 'parents') = 'array'
"""


class Migration(migrations.Migration):

    dependencies = [
        ("executions", "0006_execution_owner_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="componentexecution",
            name="waiting_parents",
            field=models.IntegerField(
                default=0,
                db_default=0,
                help_text="Parents of a pending step not completed yet: each parent's completion counts it down "
                          "in the same statement, and the one that reaches 0 enqueues the step (a row lock, so two "
                          "parents finishing at once cannot both miss it). The claim still checks the parents.",
            ),
        ),
        migrations.RunSQL(COUNT_WAITING_PARENTS, reverse_sql=migrations.RunSQL.noop),
    ]
