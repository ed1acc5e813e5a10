import uuid

from django.contrib.auth.models import AbstractUser
from django.contrib.postgres.fields import ArrayField
from django.db import models


class User(AbstractUser):
    """The seeds reference users(id) UUID, so the primary key is a UUID from the first migration."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)

    class Meta:
        db_table = "users"
        ordering = ["username"]


class TokenScope(models.TextChoices):
    """What an API token may do; each request needs one (imageflow/accounts/scopes.py decides which)."""

    READ = "read", "Read"
    RUN = "run", "Run"
    WRITE = "write", "Write"
    ADMIN = "admin", "Administer"


class ApiToken(models.Model):
    """A named API token limited to scopes, optionally to one organization, until `expires_at`.

    The secret is shown once, when the token is created; the row keeps only its SHA-256 (a
    random 32-byte secret needs no slow hash: there is nothing to guess) and a short visible
    `prefix` that names the token in lists and logs. The legacy single token
    (rest_framework.authtoken) keeps working as a full-scope token."""

    Scope = TokenScope

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = ArrayField(models.CharField(max_length=10, choices=TokenScope.choices))
    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, null=True, blank=True,
                                     related_name="api_tokens")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        db_table = "api_tokens"
        ordering = ["-created_at"]
        verbose_name = "API token"
        constraints = [
            models.CheckConstraint(condition=models.Q(scopes__contained_by=TokenScope.values)
                                   & models.Q(scopes__len__gt=0), name="api_token_scopes_valid"),
            models.UniqueConstraint(fields=["user", "name"], condition=models.Q(revoked_at__isnull=True),
                                    name="api_token_active_name_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
