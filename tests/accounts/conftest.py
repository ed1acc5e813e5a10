import pytest
from rest_framework.test import APIClient

from imageflow.accounts.services import api_token_create
from tests.api.conftest import api, owner, resize, stranger  # noqa: F401 - the API tests' users and clients


def client_with(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


@pytest.fixture
def scoped():
    """scoped(user, "read", "run", organization=None, expires_at=None) -> (ApiToken, APIClient)."""

    def make(user, *scopes, organization=None, expires_at=None, name=None):
        issued = api_token_create(user=user, name=name or "-".join(scopes) or "token", scopes=scopes,
                                  organization=organization, expires_at=expires_at)
        return issued.token, client_with(issued.secret)

    return make
