"""Camera metadata (EXIF, GPS, IPTC, XMP) as JSON that PostgreSQL always accepts, and the EXIF an
output carries under a pipeline's `metadata` policy.

Camera firmware writes whatever it likes: NULs inside strings, bytes that are not UTF-8, rationals
over zero, MakerNote blobs of tens of kilobytes, orientation values outside 1-8. Every value goes
through `json_safe`, whose rules (one per kind of hostile value) are listed in docs/images.md;
they are written so that a value is either kept as the JSON a reader expects or replaced by a
short, typed stand-in, never dropped without a trace and never able to make the row unstorable.
The fields a user looks for (camera, lens, date taken, exposure, GPS in decimal degrees,
orientation, size as shown) are derived once here, from the raw tags, into named keys.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from fractions import Fraction
from typing import Any

from PIL import ExifTags, Image, IptcImagePlugin, TiffImagePlugin

# Text longer than this is cut (with TEXT_CUT_MARK), so one tag cannot bloat a row.
MAX_TEXT_CHARS = 4096
# An XMP packet is stored as text up to this length (longer packets are cut the same way).
MAX_XMP_CHARS = 65536
# Bytes that are not text: up to this many are kept as a list of integers, longer ones summarized.
MAX_BYTE_LIST = 64
# Lists and nested dictionaries keep at most this many items; the rest is counted, not stored.
MAX_ITEMS = 256
# Nesting deeper than this is summarized (a hostile IFD can point into itself).
MAX_DEPTH = 8
# Numbers outside JavaScript's exact integer range are stored as decimal strings (they survive
# jsonb and a JavaScript client unchanged that way).
MAX_SAFE_INTEGER = 2**53 - 1
TEXT_CUT_MARK = "…"

VALID_ORIENTATIONS = range(1, 9)
# Orientations 5-8 are stored turned by 90 degrees: a viewer swaps width and height.
SWAPPED_ORIENTATIONS = {5, 6, 7, 8}

# Vendor blobs: never parsed, never stored whole (they are private formats, often tens of KB).
_BLOB_TAGS = {0x927C: "MakerNote", 0xC4A5: "PrintImageMatching"}
# Serial numbers of the body and lens: removed with the GPS block by `strip_location`.
SERIAL_TAGS = {0xA431: "BodySerialNumber", 0xA435: "LensSerialNumber", 0xC62F: "CameraSerialNumber"}
_SURROGATES = re.compile("[\ud800-\udfff]")
_UNICODE_PREFIXES = {b"ASCII\x00\x00\x00": "ascii", b"UNICODE\x00": "utf-16", b"JIS\x00\x00\x00\x00\x00": "shift_jis",
                     b"\x00" * 8: "ascii"}
_IPTC_NAMES = {
    (2, 5): "ObjectName", (2, 15): "Category", (2, 25): "Keywords", (2, 40): "SpecialInstructions",
    (2, 55): "DateCreated", (2, 60): "TimeCreated", (2, 80): "Byline", (2, 85): "BylineTitle",
    (2, 90): "City", (2, 92): "Sublocation", (2, 95): "ProvinceState", (2, 100): "CountryCode",
    (2, 101): "Country", (2, 103): "OriginalTransmissionReference", (2, 105): "Headline", (2, 110): "Credit",
    (2, 115): "Source", (2, 116): "CopyrightNotice", (2, 120): "Caption", (2, 122): "CaptionWriter",
}
# IPTC datasets that name a place: left out of an output's metadata with the GPS block.
IPTC_LOCATION = {"City", "Sublocation", "ProvinceState", "CountryCode", "Country"}


def clean_text(text: str) -> str:
    """The text a camera meant: a C string ends at its first NUL (the rest is firmware padding or
    garbage, as every EXIF reader treats it), lone surrogates become U+FFFD (PostgreSQL stores
    only valid UTF-8), surrounding blanks go, and very long text is cut."""
    text = text.split("\x00", 1)[0]
    text = _SURROGATES.sub("\ufffd", text).strip()
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS] + TEXT_CUT_MARK
    return text


def _is_text(text: str) -> bool:
    return all(ch.isprintable() or ch in "\t\n\r" for ch in text)


def bytes_value(value: bytes) -> Any:
    """Bytes as text when they are text (UTF-8, a C string), else the bytes themselves when short
    (a list of integers: GPSVersionID, ComponentsConfiguration), else a summary of their size."""
    head = value[:8]
    if head in _UNICODE_PREFIXES and len(value) > 8:  # UserComment: an 8-byte charset, then text
        try:
            return clean_text(value[8:].decode(_UNICODE_PREFIXES[head]))
        except UnicodeDecodeError:
            pass
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        cut = clean_text(text)
        if _is_text(cut) and (cut or not value.strip(b"\x00 ")):
            return cut
    if len(value) <= MAX_BYTE_LIST:
        return list(value)
    return {"binary_bytes": len(value)}


def _number(value: float | int | Fraction) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, Fraction):
        if value.denominator == 0:
            return None
        value = float(value) if abs(value) < 1e300 else math.inf
    if not math.isfinite(value):
        return None
    if abs(value) > MAX_SAFE_INTEGER:
        # jsonb keeps numbers as decimals: 7.1e16 would come back as the integer 71449302857936030.
        return repr(value)
    return value


def json_safe(value: Any, *, depth: int = 0) -> Any:
    """A JSON value PostgreSQL's jsonb accepts, for any value an image library can hand back.
    The rule for each kind of value is in docs/images.md ("Metadata JSON")."""
    if depth > MAX_DEPTH:
        return {"nested_too_deep": True}
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, TiffImagePlugin.IFDRational):
        if value.denominator == 0:  # 0/0 and n/0: "unknown" in EXIF practice
            return None
        return _number(Fraction(value.numerator, value.denominator))
    if isinstance(value, (int, float, Fraction)):
        return _number(value)
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes_value(bytes(value))
    if isinstance(value, (tuple, list)):
        items = [json_safe(v, depth=depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append({"more_items": len(value) - MAX_ITEMS})
        return items
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_ITEMS:
                result["more_items"] = len(value) - MAX_ITEMS
                break
            name = clean_text(key if isinstance(key, str) else str(key)) or "(empty)"
            result[name] = json_safe(item, depth=depth + 1)
        return result
    return clean_text(str(value))


def _tag_name(tag: int, names: dict[int, str]) -> str:
    return names.get(tag) or f"0x{tag:04x}"


def _ifd(exif: Image.Exif, ifd: int) -> dict:
    try:
        return dict(exif.get_ifd(ifd))
    except Exception:  # a damaged pointer: the block is unreadable, the rest of EXIF is not
        return {}


def exif_tags(exif: Image.Exif) -> dict[str, Any]:
    """Every readable tag of IFD0, the Exif IFD and the GPS IFD, by its EXIF name (GPS names
    already start with "GPS": they are not prefixed again). IFD pointers and the thumbnail IFD
    are structure, not information; vendor blobs are summarized by size."""
    result: dict[str, Any] = {}
    pointers = {int(ExifTags.IFD.Exif), int(ExifTags.IFD.GPSInfo), int(ExifTags.IFD.Interop)}
    blocks = [(dict(exif), ExifTags.TAGS), (_ifd(exif, ExifTags.IFD.Exif), ExifTags.TAGS),
              (_ifd(exif, ExifTags.IFD.GPSInfo), ExifTags.GPSTAGS)]
    for block, names in blocks:
        for tag, value in block.items():
            if names is ExifTags.TAGS and tag in pointers:
                continue
            name = _tag_name(tag, names) if isinstance(tag, int) else str(tag)
            if tag in _BLOB_TAGS and isinstance(value, (bytes, bytearray)):
                result[name] = {"binary_bytes": len(value)}
                continue
            safe = json_safe(value)
            if safe is not None:
                result[clean_text(name)] = safe
    return result


def orientation_of(exif: Image.Exif) -> int:
    """EXIF orientation 1-8; a missing or invalid value counts as 1 (no viewer turns it)."""
    value = exif.get(ExifTags.Base.Orientation)
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if value in VALID_ORIENTATIONS else 1


def oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in SWAPPED_ORIENTATIONS else size


def _text(raw: dict, tag: int) -> str | None:
    value = raw.get(tag)
    if isinstance(value, bytes):
        value = bytes_value(value)
    if isinstance(value, str):
        value = clean_text(value)
        return value or None
    return None


def _float(raw: dict, tag: int) -> float | None:
    value = raw.get(tag)
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    safe = json_safe(value)
    return float(safe) if isinstance(safe, (int, float)) and not isinstance(safe, bool) else None


def _int(raw: dict, tag: int) -> int | None:
    value = _float(raw, tag)
    return int(value) if value is not None and abs(value) <= MAX_SAFE_INTEGER else None


def _taken_at(raw: dict) -> str | None:
    """DateTimeOriginal (else Digitized, else DateTime) as ISO 8601, with the EXIF 2.31 offset
    when the camera wrote one; a camera clock without an offset is local time of unknown zone."""
    for tag, offset_tag in ((0x9003, 0x9011), (0x9004, 0x9012), (0x0132, 0x9010)):
        text = _text(raw, tag)
        if not text:
            continue
        try:
            moment = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
        except ValueError:
            continue
        offset = _text(raw, offset_tag) or ""
        return moment.isoformat() + (offset if re.fullmatch(r"[+-]\d\d:\d\d", offset) else "")
    return None


def _exposure_time(raw: dict) -> str | None:
    value = raw.get(0x829A)
    if isinstance(value, TiffImagePlugin.IFDRational) and value.denominator and value.numerator:
        seconds = Fraction(value.numerator, value.denominator)
        return f"1/{round(1 / seconds)}" if seconds < 1 else f"{float(seconds):g}"
    return None


def _dms(value: Any) -> float | None:
    if not isinstance(value, (tuple, list)) or not value:
        return None
    parts = []
    for part in list(value)[:3]:
        safe = json_safe(part)
        if not isinstance(safe, (int, float)) or isinstance(safe, bool):
            return None
        parts.append(float(safe))
    parts += [0.0] * (3 - len(parts))
    return parts[0] + parts[1] / 60 + parts[2] / 3600


def _gps(gps: dict) -> dict[str, Any] | None:
    """GPS as decimal degrees (south and west negative), altitude in metres (below sea level
    negative); coordinates out of range are left out rather than stored wrong."""
    latitude, longitude = _dms(gps.get(2)), _dms(gps.get(4))
    result: dict[str, Any] = {}
    if latitude is not None and longitude is not None and latitude <= 90 and longitude <= 180:
        if (_text(gps, 1) or "N").upper().startswith("S"):
            latitude = -latitude
        if (_text(gps, 3) or "E").upper().startswith("W"):
            longitude = -longitude
        result["latitude"], result["longitude"] = round(latitude, 7), round(longitude, 7)
    altitude = _float(gps, 6)
    if altitude is not None:
        below = gps.get(5) in (1, b"\x01")
        result["altitude_m"] = round(-altitude if below else altitude, 2)
    direction = _float(gps, 17)
    if direction is not None:
        result["direction_deg"] = round(direction, 2)
    date, time = _text(gps, 29), gps.get(7)
    if date and isinstance(time, (tuple, list)) and len(time) == 3:
        hms = [json_safe(t) for t in time]
        if all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in hms):
            result["timestamp"] = f"{date.replace(':', '-')}T{int(hms[0]):02d}:{int(hms[1]):02d}:{int(hms[2]):02d}Z"
    return result or None


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def exif_summary(exif: Image.Exif) -> dict[str, Any]:
    """The fields people look for, named once: camera, lens, taken_at, exposure, gps."""
    base = dict(exif)
    sub = _ifd(exif, ExifTags.IFD.Exif)
    raw = {**base, **sub}
    summary: dict[str, Any] = {}
    camera = _drop_none({"make": _text(raw, 0x010F), "model": _text(raw, 0x0110), "serial": _text(raw, 0xA431),
                         "software": _text(raw, 0x0131), "artist": _text(raw, 0x013B),
                         "copyright": _text(raw, 0x8298)})
    if camera:
        summary["camera"] = camera
    lens_spec = json_safe(raw.get(0xA432))
    lens = _drop_none({"make": _text(raw, 0xA433), "model": _text(raw, 0xA434), "serial": _text(raw, 0xA435),
                       "specification": lens_spec if isinstance(lens_spec, list) else None})
    if lens:
        summary["lens"] = lens
    taken = _taken_at(raw)
    if taken:
        summary["taken_at"] = taken
    exposure = _drop_none({
        "exposure_time": _exposure_time(raw), "exposure_seconds": _float(raw, 0x829A), "f_number": _float(raw, 0x829D),
        "iso": _int(raw, 0x8827), "focal_length_mm": _float(raw, 0x920A), "focal_length_35mm": _int(raw, 0xA405),
        "exposure_bias_ev": _float(raw, 0x9204), "flash_fired": (bool(_int(raw, 0x9209) & 1)
                                                              if _int(raw, 0x9209) is not None else None),
    })
    if exposure:
        summary["exposure"] = exposure
    gps = _gps(_ifd(exif, ExifTags.IFD.GPSInfo))
    if gps:
        summary["gps"] = gps
    return summary


def iptc_of(image: Image.Image) -> dict[str, Any]:
    try:
        info = IptcImagePlugin.getiptcinfo(image) or {}
    except Exception:  # a malformed IPTC block is unreadable, not fatal
        return {}
    result: dict[str, Any] = {}
    for key, value in info.items():
        name = _IPTC_NAMES.get(key) or (f"{key[0]}:{key[1]}" if isinstance(key, tuple) and len(key) == 2 else str(key))
        result[name] = json_safe(value)
    return result


def xmp_of(image: Image.Image) -> str | None:
    packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if not packet:
        return None
    if isinstance(packet, (bytes, bytearray)):
        packet = bytes(packet).decode("utf-8", "replace")
    text = _SURROGATES.sub("\ufffd", str(packet).replace("\x00", ""))
    return text[:MAX_XMP_CHARS] + TEXT_CUT_MARK if len(text) > MAX_XMP_CHARS else text


def icc_color_space(icc: bytes | None) -> str | None:
    """The data color space of an ICC profile (header bytes 16-19): "RGB", "GRAY", "CMYK", ..."""
    if not icc or len(icc) < 20:
        return None
    return icc[16:20].decode("ascii", "replace").strip() or None


def icc_summary(icc: bytes | None) -> dict[str, Any] | None:
    if not icc:
        return None
    summary: dict[str, Any] = {"bytes": len(icc), "color_space": icc_color_space(icc)}
    try:
        from PIL import ImageCms

        summary["description"] = clean_text(ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(_bytes_io(icc))))
    except Exception:  # an unreadable profile is still kept on outputs; only its name is unknown
        pass
    return json_safe(summary)


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


def image_metadata(image: Image.Image, *, image_format: str) -> dict[str, Any]:
    """The `metadata` JSON of a stored image (shape in docs/images.md), from an opened image."""
    try:
        exif = image.getexif()
    except Exception:  # damaged EXIF: the pixels are still an image
        exif = Image.Exif()
    orientation = orientation_of(exif)
    if image_format == "HEIF":
        # pillow-heif applies the HEIF transforms when decoding; the stored size is already as shown
        orientation = 1
    width, height = image.size
    shown_width, shown_height = oriented_size((width, height), orientation)
    metadata: dict[str, Any] = {
        "format": image_format, "width": width, "height": height, "mode": image.mode,
        "orientation": orientation, "oriented_width": shown_width, "oriented_height": shown_height,
    }
    try:
        tags = exif_tags(exif)
        summary = exif_summary(exif)
    except Exception as exc:  # a block Pillow cannot walk: say so instead of failing the upload
        tags, summary = {}, {}
        metadata["exif_error"] = clean_text(f"{exc.__class__.__name__}: {exc}")
    metadata.update(summary)
    metadata["exif"] = tags
    iptc = iptc_of(image)
    if iptc:
        metadata["iptc"] = iptc
    xmp = xmp_of(image)
    if xmp:
        metadata["xmp"] = xmp
    icc = icc_summary(image.info.get("icc_profile"))
    if icc:
        metadata["icc_profile"] = icc
    return metadata


# --- outputs ---------------------------------------------------------------------------------------

METADATA_POLICIES = ("keep", "strip", "strip_location")
DEFAULT_METADATA_POLICY = "strip_location"
_THUMBNAIL_TAGS = (0x0201, 0x0202)  # JPEGInterchangeFormat(Length): the embedded preview
# A TIFF's EXIF is its first IFD: the tags that describe its pixel layout (sizes, strips, tiles,
# bit depth, compression, color map) and blocks the writer emits itself (ICC, XMP, IPTC,
# Photoshop) would describe the wrong image in an output; they are never copied.
_LAYOUT_TAGS = (256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325, 338, 339,
                347, 530, 700, 33723, 34377, 34675)


def exif_for_output(exif: Image.Exif | None, *, policy: str, size: tuple[int, int]) -> bytes | None:
    """The EXIF block an output carries: `keep` copies the source's EXIF less its orientation
    (the output's pixels are already turned: Orientation 1) and its thumbnail (it would show the
    old picture); `strip_location` also removes the GPS block, serial numbers and vendor blobs
    (MakerNotes hold serials and sometimes positions in private formats that cannot be scrubbed);
    `strip` writes none. Pixel dimensions are the output's."""
    if policy == "strip" or exif is None or not len(exif):
        return None
    out = Image.Exif()
    try:
        out.load(exif.tobytes())
    except Exception:  # a block Pillow cannot re-read: rebuild it from the readable IFD0 tags
        out = Image.Exif()
        for tag, value in dict(exif).items():
            if tag not in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.Interop):
                out[tag] = value
    out[ExifTags.Base.Orientation] = 1
    for tag in (*_THUMBNAIL_TAGS, *_LAYOUT_TAGS):
        out.pop(tag, None)
    sub = out.get_ifd(ExifTags.IFD.Exif)
    if sub:
        sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight] = size
    if policy == "strip_location":
        out.pop(ExifTags.IFD.GPSInfo, None)
        out.get_ifd(ExifTags.IFD.GPSInfo).clear()
        for block in (out, sub):
            for tag in (*SERIAL_TAGS, *_BLOB_TAGS):
                block.pop(tag, None)
    for attempt in range(2):
        try:
            data = out.tobytes()
        except Exception:
            data = None
        if data is not None and len(data) < 65000:  # a JPEG APP1 segment holds at most 64 KiB
            return data
        for block in (out, sub):  # too big or unwritable: the vendor blobs go first
            for tag in _BLOB_TAGS:
                block.pop(tag, None)
    return None


def xmp_for_output(xmp: bytes | str | None, *, policy: str) -> bytes | None:
    """XMP travels only under `keep` (it may repeat GPS and serials in any namespace, which cannot
    be scrubbed reliably), with its orientation set to 1 like the EXIF's."""
    if policy != "keep" or not xmp:
        return None
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, (bytes, bytearray)) else str(xmp)
    text = re.sub(r'tiff:Orientation="\d"', 'tiff:Orientation="1"', text)
    text = re.sub(r"<tiff:Orientation>\d</tiff:Orientation>", "<tiff:Orientation>1</tiff:Orientation>", text)
    return text.encode("utf-8")
