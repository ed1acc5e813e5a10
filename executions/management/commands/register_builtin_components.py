from django.core.management.base import BaseCommand

from executions.catalogue import builtin_components_register


class Command(BaseCommand):
    help = "Register the built-in Pillow operations as components (runner=builtin); safe to run again."

    def handle(self, *args, **options) -> None:
        result = builtin_components_register()
        self.stdout.write(self.style.SUCCESS(
            f"Built-in components: {result['created']} created, {result['updated']} updated, {result['total']} in all."))
