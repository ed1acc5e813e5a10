from django.db import transaction

from .models import User


def user_ensure_staff(*, username: str, password: str) -> User:
    """Create the staff superuser `username` or reset its password; idempotent."""
    with transaction.atomic():
        user, _ = User.objects.select_for_update().get_or_create(username=username)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()
    return user
