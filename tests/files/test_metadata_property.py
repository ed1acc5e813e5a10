"""Property: whatever a camera writes into EXIF, the metadata JSON stores in PostgreSQL and comes
back through the API unchanged (NULs, lone surrogates, invalid UTF-8, huge and zero-denominator
rationals, NaN, 10,000-entry maker notes and IFDs)."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, TiffImagePlugin

from files.metadata import exif_summary, exif_tags, json_safe
from files.models import File
from files.services import file_store
from tests.api.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

hostile_text = st.text(alphabet=st.sampled_from(["\x00", "\ud800", "\udfff", "a", "é", "\u202e", "\x1f", " ", "漢",
                                                 "\ufffd", "\\", '"']), max_size=40)
rationals = st.builds(lambda n, d: TiffImagePlugin.IFDRational(n, d),
                      st.integers(min_value=-(2**40), max_value=2**64), st.integers(min_value=0, max_value=2**64))
scalars = st.one_of(
    hostile_text,
    st.binary(max_size=80),
    rationals,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5).map(tuple),
                                                       st.dictionaries(st.integers(0, 0xFFFF), inner, max_size=5)),
                      max_leaves=12)
tags = st.one_of(st.sampled_from([0x010F, 0x0110, 0x0112, 0x0132, 0x9003, 0x829A, 0x829D, 0x8827, 0x920A]),
                 st.integers(min_value=1, max_value=0xFFFF))
exif_dicts = st.dictionaries(tags, values, max_size=12)
gps_dicts = st.dictionaries(st.integers(min_value=0, max_value=31), values, max_size=8)


def _exif(base: dict, gps: dict, makernote: bytes | None, big_ifd: bool) -> Image.Exif:
    exif = Image.Exif()
    for tag, value in base.items():
        if tag not in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.Interop):
            exif[tag] = value
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(gps)
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    if makernote is not None:
        sub[0x927C] = makernote
    if big_ifd:  # a vendor IFD of 10,000 entries
        sub[0xC000] = {index: index for index in range(10_000)}
    return exif


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=exif_dicts, gps=gps_dicts,
       makernote=st.one_of(st.none(), st.just(bytes(range(256)) * 470)),  # 10,000 12-byte entries
       big_ifd=st.booleans())
def test_any_exif_stores_and_round_trips_through_the_api(user, base, gps, makernote, big_ifd):
    exif = _exif(base, gps, makernote, big_ifd)
    metadata = {"exif": exif_tags(exif), **exif_summary(exif)}
    json.dumps(metadata, allow_nan=False)  # valid JSON: no NaN or Infinity
    assert "\\u0000" not in json.dumps(metadata) and "\\ud8" not in json.dumps(metadata)
    row = File.objects.create(storage_path="uploads/none.jpg", metadata=metadata, created_by=user,
                              original_name="hostile.jpg")
    body = client_for(user).get(f"/api/v1/files/{row.pk}/").json()
    assert body["metadata"] == metadata
    assert File.objects.get(pk=row.pk).metadata == metadata
    if makernote is not None:
        assert metadata["exif"]["MakerNote"] == {"binary_bytes": len(makernote)}
    if big_ifd:
        assert metadata["exif"]["0xc000"]["more_items"] == 10_000 - 256


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=exif_dicts, gps=gps_dicts)
def test_a_jpeg_carrying_any_writable_exif_uploads(user, base, gps):
    # The same values written into a real file (where Pillow can write them) and uploaded whole.
    exif = _exif(base, gps, None, False)
    try:
        block = exif.tobytes()
    except Exception:  # not a block any camera could have written either
        return
    buffer = io.BytesIO()
    try:
        Image.new("RGB", (16, 12), (1, 2, 3)).save(buffer, "JPEG", exif=block)
    except (ValueError, OSError):  # over the 64 KiB a JPEG segment holds
        return
    stored = file_store(stream=io.BytesIO(buffer.getvalue()), original_name="hostile.jpg", created_by=user)
    body = client_for(user).get(f"/api/v1/files/{stored.pk}/").json()
    assert body["metadata"] == File.objects.get(pk=stored.pk).metadata
    assert body["metadata"]["width"] == 16


@pytest.mark.parametrize("value, expected", [
    ("ION230\x00F", "ION230"),  # a C string ends at its NUL
    ("\x00", ""),
    ("a\ud800b", "a\ufffdb"),
    (b"0221", "0221"),
    (b"\x01\x02\x03\x00", [1, 2, 3, 0]),
    (b"\xff" * 100, {"binary_bytes": 100}),
    (b"ASCII\x00\x00\x00Hello\x00", "Hello"),
    (TiffImagePlugin.IFDRational(1, 0), None),
    (TiffImagePlugin.IFDRational(7, 2), 3.5),
    (2**60, str(2**60)),
    (float("nan"), None),
    (tuple(range(300)), list(range(256)) + [{"more_items": 44}]),
])
def test_json_safe_rules(value, expected):
    assert json_safe(value) == expected
