from django.db import migrations

from imageflow.triggers import touch_updated_at


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial")]
    operations = touch_updated_at("components", "pipelines", "workflow")
