from django.conf import settings
from django.core.management.base import BaseCommand

from imageflow.accounts.services import user_ensure_staff


class Command(BaseCommand):
    help = "Create (or reset) the demo staff user and print its credentials."

    def handle(self, *args, **options) -> None:
        user = user_ensure_staff(username=settings.DEMO_USERNAME, password=settings.DEMO_PASSWORD)
        self.stdout.write(
            self.style.SUCCESS(f"Demo staff user: username={user.username} password={settings.DEMO_PASSWORD}")
        )
