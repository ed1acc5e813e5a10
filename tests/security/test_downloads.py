"""Downloads: the API's redirect and the object store's answer both carry a safe attachment
`Content-Disposition` and the sniffed type; the API adds `X-Content-Type-Options: nosniff`."""

from __future__ import annotations

import io
from urllib.parse import unquote

import pytest
import requests

from files.downloads import content_disposition, download_content_type, download_name
from files.models import File
from tests.api.conftest import client_for, png_bytes
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("stored, shown", [
    ("photo.png", "photo.png"),
    ('say "cheese".png', "say 'cheese'.png"),
    ("line\r\nSet-Cookie: x=1.png", "lineSet-Cookie: x=1.png"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\pic.png", "pic.png"),
    ("nul\x00byte\x7f.png", "nulbyte.png"),
    # a right-to-left override would display "invoice\u202egpj.exe" as "invoiceexe.jpg"
    ("invoice\u202egpj.exe", "invoicegpj.exe"),
    ("\u2066isolate\u2069\u200f\ufeff.png", "isolate.png"),
    ("...", "download"),
    ("", "download"),
    (None, "download"),
    ("x" * 1000 + ".png", "x" * 196 + ".png"),
    ("café 東京.jpg", "café 東京.jpg"),
])
def test_download_name_keeps_what_a_person_reads_and_nothing_that_misleads_or_breaks_a_header(stored, shown):
    assert download_name(stored) == shown


def test_content_disposition_is_an_attachment_with_an_ascii_name_and_the_exact_utf8_name():
    header = content_disposition('café "東京"\r\n.jpg')
    assert header == ("attachment; filename=\"cafe '__'.jpg\"; "
                      "filename*=UTF-8''caf%C3%A9%20%27%E6%9D%B1%E4%BA%AC%27.jpg")
    assert "\r" not in header and "\n" not in header
    assert unquote(header.split("filename*=UTF-8''")[1]) == "café '東京'.jpg"


def test_a_name_of_only_non_ascii_letters_has_a_plain_ascii_fallback():
    assert content_disposition("東京.png") == "attachment; filename=\"download.png\"; filename*=UTF-8''%E6%9D%B1%E4%BA%AC.png"


@pytest.mark.parametrize("stored, served", [
    ("image/png", "image/png"),
    ("image/svg+xml", "image/svg+xml"),
    (None, "application/octet-stream"),
    ("text/html; charset=utf-8", "application/octet-stream"),
    ("image/png\r\nX-Evil: 1", "application/octet-stream"),
])
def test_only_a_plain_sniffed_type_is_passed_on(stored, served):
    assert download_content_type(stored) == served


def test_the_redirect_and_the_object_stores_answer_carry_the_safe_headers():
    api = client_for(UserFactory())
    # given a stored PNG whose name (from an older row, or the admin) holds a quote, an RTL
    # override and a line break
    content = png_bytes()
    handle = io.BytesIO(content)
    handle.name = "a.png"
    file_id = api.post("/api/v1/files/", {"file": handle}, format="multipart").json()["id"]
    File.objects.filter(pk=file_id).update(original_name='ev"il\u202egnp.html\r\n.png')
    expected = content_disposition('ev"il\u202egnp.html\r\n.png')
    assert expected == "attachment; filename=\"ev'ilgnp.html.png\"; filename*=UTF-8''ev%27ilgnp.html.png"

    # when it is downloaded
    response = api.get(f"/api/v1/files/{file_id}/download/")
    assert response.status_code == 302
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"] == expected
    assert response["Cache-Control"] == "no-store"

    # then the real object store (SeaweedFS) answers the presigned URL with the same
    # disposition and the type sniffed at upload, whatever it stored the object as
    stored = requests.get(response["Location"], timeout=10)
    assert stored.status_code == 200
    assert stored.content == content
    assert stored.headers["Content-Disposition"] == expected
    assert stored.headers["Content-Type"] == "image/png"
