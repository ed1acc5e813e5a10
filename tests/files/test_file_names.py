"""Stored display names of uploads carry none of the characters the name rule refuses."""

import pytest

from files.inspection import sanitize_file_name
from imageflow.validators import name_problem


@pytest.mark.parametrize("raw, stored", [
    ("invoice\u202egpj.exe", "invoicegpj.exe"),  # RTL override: would display as "invoiceexe.jpg"
    ("a\u2066b\u2069.png", "ab.png"),  # isolates
    ("line\u2028break.jpg", "linebreak.jpg"),
    ("e\u0301te\u0301.jpg", "\u00e9t\u00e9.jpg"),  # NFC first: combining accents become one character
])
def test_sanitize_file_name_strips_bidirectional_and_separator_characters(raw, stored):
    name = sanitize_file_name(raw)
    assert name == stored
    assert name_problem(name, file_name=True) is None


def test_a_name_of_only_unsafe_characters_falls_back():
    assert sanitize_file_name("\u202e\u202d", fallback="upload.jpg") == "upload.jpg"
