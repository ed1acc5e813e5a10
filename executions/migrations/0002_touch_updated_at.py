from django.db import migrations

from imageflow.triggers import touch_updated_at


class Migration(migrations.Migration):
    dependencies = [("executions", "0001_initial")]
    operations = touch_updated_at("pipeline_executions", "component_executions")
