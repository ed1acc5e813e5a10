"""Triggers on new files and webhooks of run events (issue #16, docs/automation.md)."""

import django.contrib.postgres.fields
import django.db.models.deletion
import django.db.models.functions.datetime
import uuid
from django.conf import settings
from django.db import migrations, models

from imageflow.triggers import touch_updated_at


class Migration(migrations.Migration):

    dependencies = [
        ('executions', '0013_step_cache'),
        ('files', '0005_storage_path_index'),
        ('orgs', '0001_initial'),
        ('registry', '0007_component_kind_deterministic'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Trigger',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('name', models.CharField(max_length=255)),
                ('active', models.BooleanField(default=True)),
                ('match_tag', models.CharField(blank=True, default='', help_text='Only uploads carrying this tag (empty: any).', max_length=100)),
                ('match_mime_type', models.CharField(blank=True, default='', help_text='image/png, or image/* (empty: any).', max_length=100)),
                ('match_name_pattern', models.CharField(blank=True, default='', help_text="A glob over the file's name, case-insensitive: *.jpg, scan-*.tif (empty: any).", max_length=255)),
                ('parameters', models.JSONField(blank=True, default=dict, help_text='Per-run parameter overrides {node_id: {...}}.')),
                ('batch_size', models.PositiveIntegerField(default=1, help_text='1: one run per file; N: one run per N files.')),
                ('batch_window_seconds', models.PositiveIntegerField(default=60, help_text='With batch_size > 1: a batch that is not full starts this long after its first file.')),
                ('created_by', models.ForeignKey(db_column='created_by', on_delete=django.db.models.deletion.CASCADE, related_name='triggers', to=settings.AUTH_USER_MODEL)),
                ('organization', models.ForeignKey(blank=True, help_text="Set: the uploads of every member match, not only the owner's.", null=True, on_delete=django.db.models.deletion.CASCADE, related_name='triggers', to='orgs.organization')),
                ('pipeline', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='triggers', to='registry.pipeline')),
            ],
            options={
                'db_table': 'triggers',
                'ordering': ['-created_at'],
            },
        ),
        migrations.CreateModel(
            name='TriggerFile',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('started', 'Started'), ('failed', 'Failed')], default='pending', max_length=20)),
                ('error_message', models.TextField(blank=True, default='')),
                ('created_at', models.DateTimeField(auto_now_add=True, db_default=django.db.models.functions.datetime.Now())),
                ('execution', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='trigger_files', to='executions.pipelineexecution')),
                ('file', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='trigger_matches', to='files.file')),
                ('trigger', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='matches', to='executions.trigger')),
            ],
            options={
                'db_table': 'trigger_files',
                'ordering': ['trigger', 'id'],
            },
        ),
        migrations.CreateModel(
            name='WebhookDelivery',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('event', models.CharField(choices=[('execution.completed', 'execution.completed'), ('execution.failed', 'execution.failed'), ('execution.cancelled', 'execution.cancelled'), ('step.failed', 'step.failed')], max_length=50)),
                ('event_key', models.CharField(max_length=200)),
                ('step_id', models.UUIDField(blank=True, null=True)),
                ('payload', models.JSONField(blank=True, help_text='The body, built at the first attempt.', null=True)),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('delivered', 'Delivered'), ('failed', 'Failed')], default='pending', max_length=20)),
                ('attempts', models.IntegerField(default=0)),
                ('first_attempt_at', models.DateTimeField(blank=True, help_text='Retries stop WEBHOOK_RETRY_WINDOW_SECONDS after this.', null=True)),
                ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                ('last_status_code', models.IntegerField(blank=True, null=True)),
                ('last_error', models.TextField(blank=True, default='')),
                ('last_duration_ms', models.IntegerField(blank=True, null=True)),
                ('delivered_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True, db_default=django.db.models.functions.datetime.Now())),
                ('execution', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='webhook_deliveries', to='executions.pipelineexecution')),
            ],
            options={
                'db_table': 'webhook_deliveries',
                'ordering': ['-created_at'],
            },
        ),
        migrations.CreateModel(
            name='WebhookAttempt',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('number', models.IntegerField()),
                ('started_at', models.DateTimeField()),
                ('status_code', models.IntegerField(blank=True, null=True)),
                ('duration_ms', models.IntegerField()),
                ('error', models.TextField(blank=True, default='')),
                ('delivery', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='attempt_log', to='executions.webhookdelivery')),
            ],
            options={
                'db_table': 'webhook_attempts',
                'ordering': ['delivery', 'number'],
            },
        ),
        migrations.CreateModel(
            name='WebhookSubscription',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('url', models.URLField(max_length=2000)),
                ('description', models.CharField(blank=True, default='', max_length=255)),
                ('secret', models.CharField(help_text='The HMAC-SHA256 key of the signature header.', max_length=200)),
                ('events', django.contrib.postgres.fields.ArrayField(base_field=models.CharField(choices=[('execution.completed', 'execution.completed'), ('execution.failed', 'execution.failed'), ('execution.cancelled', 'execution.cancelled'), ('step.failed', 'step.failed')], max_length=50), size=None)),
                ('active', models.BooleanField(default=True)),
                ('created_by', models.ForeignKey(db_column='created_by', on_delete=django.db.models.deletion.CASCADE, related_name='webhook_subscriptions', to=settings.AUTH_USER_MODEL)),
                ('organization', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='webhook_subscriptions', to='orgs.organization')),
            ],
            options={
                'db_table': 'webhook_subscriptions',
                'ordering': ['-created_at'],
            },
        ),
        migrations.AddField(
            model_name='webhookdelivery',
            name='subscription',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='executions.webhooksubscription'),
        ),
        migrations.AddIndex(
            model_name='trigger',
            index=models.Index(fields=['created_by'], name='triggers_owner_idx'),
        ),
        migrations.AddIndex(
            model_name='trigger',
            index=models.Index(fields=['organization'], name='triggers_org_idx'),
        ),
        migrations.AddConstraint(
            model_name='trigger',
            constraint=models.CheckConstraint(condition=models.Q(('batch_size__gte', 1), ('batch_size__lte', 1000)), name='triggers_batch_size_range'),
        ),
        migrations.AddIndex(
            model_name='triggerfile',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['trigger', 'id'], name='trigger_files_pending_idx'),
        ),
        migrations.AddConstraint(
            model_name='triggerfile',
            constraint=models.UniqueConstraint(fields=('trigger', 'file'), name='trigger_files_uniq'),
        ),
        migrations.AddConstraint(
            model_name='triggerfile',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['pending', 'started', 'failed'])), name='trigger_files_status_valid'),
        ),
        migrations.AddConstraint(
            model_name='webhookattempt',
            constraint=models.UniqueConstraint(fields=('delivery', 'number'), name='webhook_attempts_uniq'),
        ),
        migrations.AddIndex(
            model_name='webhooksubscription',
            index=models.Index(fields=['created_by'], name='webhooks_owner_idx'),
        ),
        migrations.AddIndex(
            model_name='webhooksubscription',
            index=models.Index(fields=['organization'], name='webhooks_org_idx'),
        ),
        migrations.AddIndex(
            model_name='webhookdelivery',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['next_attempt_at'], name='webhook_deliveries_due_idx'),
        ),
        migrations.AddIndex(
            model_name='webhookdelivery',
            index=models.Index(fields=['subscription', '-created_at'], name='webhook_deliveries_sub_idx'),
        ),
        migrations.AddConstraint(
            model_name='webhookdelivery',
            constraint=models.UniqueConstraint(fields=('subscription', 'event_key'), name='webhook_deliveries_event_uniq'),
        ),
        migrations.AddConstraint(
            model_name='webhookdelivery',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['pending', 'delivered', 'failed'])), name='webhook_deliveries_status_valid'),
        ),
        *touch_updated_at("triggers", "webhook_subscriptions"),
    ]
