from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.contrib.auth import get_user_model

from executions.demo import demo_load


class Command(BaseCommand):
    help = "Register the built-in components, upload a generated demo image and create a demo pipeline (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", default=settings.DEMO_USERNAME, help="owner of the demo image and pipeline")

    def handle(self, *args, **options) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No user {options['user']!r} (manage.py ensure_demo_user creates the demo user).")
        result = demo_load(user=user)
        pipeline, image = result["pipeline"], result["file"]
        self.stdout.write(self.style.SUCCESS(
            f"Demo: {result['components']['total']} built-in components; image {image.id}; "
            f"pipeline {pipeline.id} ({pipeline.name}).\n"
            f"Run it: python manage.py run_pipeline {pipeline.id} --input {image.id}"))
