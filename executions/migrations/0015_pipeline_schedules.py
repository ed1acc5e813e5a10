"""Schedules: pipelines run at the occurrences of a cron expression in a time zone (docs/automation.md)."""

import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models

from imageflow.triggers import touch_updated_at


class Migration(migrations.Migration):

    dependencies = [
        ('executions', '0014_automation'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='PipelineSchedule',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('name', models.CharField(max_length=255)),
                ('cron', models.CharField(help_text='Five fields: minute hour day-of-month month day-of-week.', max_length=100)),
                ('timezone', models.CharField(default='UTC', help_text='An IANA zone: Europe/Paris.', max_length=64)),
                ('inputs', models.JSONField(blank=True, default=list, help_text='The file ids every run takes.')),
                ('parameters', models.JSONField(blank=True, default=dict, help_text='Per-run parameter overrides.')),
                ('catch_up', models.CharField(choices=[('latest', 'Run the latest missed occurrence once'), ('all', 'Run every missed occurrence (up to SCHEDULE_CATCH_UP_MAX)'), ('none', 'Skip missed occurrences')], default='latest', help_text='What a tick does with occurrences it missed (beat down, schedule paused).', max_length=10)),
                ('active', models.BooleanField(default=True)),
                ('next_run_at', models.DateTimeField(blank=True, null=True)),
                ('last_run_at', models.DateTimeField(blank=True, help_text='The occurrence of the last run started.', null=True)),
                ('last_error', models.TextField(blank=True, default='')),
                ('created_by', models.ForeignKey(db_column='created_by', on_delete=django.db.models.deletion.CASCADE, related_name='pipeline_schedules', to=settings.AUTH_USER_MODEL)),
                ('last_execution', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='executions.pipelineexecution')),
                ('pipeline', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='schedules', to='registry.pipeline')),
            ],
            options={
                'db_table': 'pipeline_schedules',
                'ordering': ['next_run_at'],
                'indexes': [models.Index(condition=models.Q(('active', True)), fields=['next_run_at'], name='pipeline_schedules_due_idx'), models.Index(fields=['created_by'], name='pipeline_schedules_owner_idx')],
                'constraints': [models.CheckConstraint(condition=models.Q(('catch_up__in', ['latest', 'all', 'none'])), name='pipeline_schedules_catch_up_valid')],
            },
        ),
        *touch_updated_at("pipeline_schedules"),
    ]
