from django.apps import AppConfig


class FilesConfig(AppConfig):
    name = "files"
    verbose_name = "Files"

    def ready(self) -> None:
        from files import tasks  # noqa: F401  (registers the thumbnail task: services send it by name)
