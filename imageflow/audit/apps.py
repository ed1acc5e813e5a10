from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "imageflow.audit"
    label = "audit"
    verbose_name = "Audit and access logs"
