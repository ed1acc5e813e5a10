import io

import pytest
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import ComponentFactory, StaffFactory, UserFactory


def client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def owner(db):
    return UserFactory()


@pytest.fixture
def stranger(db):
    return UserFactory()


@pytest.fixture
def staff(db):
    return StaffFactory()


@pytest.fixture
def api(owner):
    return client_for(owner)


@pytest.fixture
def stranger_api(stranger):
    return client_for(stranger)


@pytest.fixture
def staff_api(staff):
    return client_for(staff)


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture
def resize(db):
    return ComponentFactory(
        name="resize", version="1.0.0", runner="builtin",
        input_schema={"type": "object", "properties": {"width": {"type": "integer", "minimum": 1},
                                                      "height": {"type": "integer", "minimum": 1}},
                      "required": ["width"], "additionalProperties": False},
    )


def definition(width=64):
    return {"nodes": [{"id": "shrink", "component": {"name": "resize", "version": "1.0.0"},
                       "parameters": {"width": width}}], "edges": []}


def png_bytes(size=(32, 16), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_with_exif(size=(40, 30)) -> bytes:
    image = Image.new("RGB", size, (10, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "ImageFlow Camera"  # Make
    exif[0x0110] = "Model X"  # Model
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()
