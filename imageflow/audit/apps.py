from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "imageflow.audit"
    label = "audit"
    verbose_name = "Audit and access logs"

    def ready(self) -> None:
        from imageflow.audit import receivers  # noqa: F401  (connects the model-change receivers)
