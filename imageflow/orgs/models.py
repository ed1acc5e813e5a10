"""Organizations: users belong to organizations; workflows and pipelines belong to one."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from imageflow.models import UUIDModel, choices_check


class MembershipRole(models.TextChoices):
    MEMBER = "member", "Member"
    ADMIN = "admin", "Administrator"


class Organization(UUIDModel):
    name = models.CharField(max_length=255)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="organizations")

    class Meta:
        db_table = "organizations"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(UUIDModel):
    Role = MembershipRole

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "organization_memberships"
        ordering = ["organization", "user"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="org_membership_uniq"),
            choices_check(field="role", choices=MembershipRole, name="org_membership_role_valid"),
        ]
        indexes = [models.Index(fields=["user", "organization"], name="org_membership_user_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.organization_id} ({self.role})"
