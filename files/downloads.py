"""How a stored file is named and typed when it is downloaded (docs/security.md, "Downloads").

A stored name came from a user. Put into a `Content-Disposition` header unchanged it could end
the header (CR/LF), end the quoted string (`"`), point into a directory (`/`, `\\`), or show a
different extension than the real one (`invoice\u202egpj.exe` is displayed as `invoiceexe.jpg`).
`download_name` removes all of that; `content_disposition` writes the RFC 6266 header with an
ASCII `filename` for old clients and the exact name as RFC 5987 `filename*` (UTF-8,
percent-encoded), always as an attachment so a browser never renders a user's bytes as a page of
this site.
"""

from __future__ import annotations

import os
import re
import unicodedata
from urllib.parse import quote

DEFAULT_NAME = "download"
MAX_NAME_LENGTH = 200
# RFC 5987 attr-char: letters, digits and these are sent as they are; everything else %XX.
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"
_UNSAFE_ASCII = re.compile(r'["\\;%*?<>|:]')


def _is_displayable(char: str) -> bool:
    # Cc: control characters (CR, LF, NUL, ...); Cf: format characters, among them the
    # bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069), U+200E/F, zero-width
    # joiners and the BOM; Zl/Zp: line and paragraph separators.
    return unicodedata.category(char) not in {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def download_name(name: str | None, *, fallback: str = DEFAULT_NAME) -> str:
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if _is_displayable(c))
    name = re.sub(r"\s+", " ", name.replace('"', "'")).strip().strip(".").strip()
    if not name:
        name = fallback
    stem, ext = os.path.splitext(name)
    ext = ext[:20]
    return stem[: MAX_NAME_LENGTH - len(ext)] + ext


def _ascii_fallback(name: str) -> str:
    # Accents fold to their letters (é -> e); any other non-ASCII character is one "_".
    folded = "".join(c if c.isascii() else "_" for c in unicodedata.normalize("NFKD", name)
                     if unicodedata.category(c) != "Mn")
    folded = _UNSAFE_ASCII.sub("_", folded).strip()
    stem, ext = os.path.splitext(folded)
    return folded if stem.strip(" ._") else DEFAULT_NAME + (ext if ext.strip(".") else "")


def content_disposition(name: str | None) -> str:
    """`attachment; filename="<ascii>"; filename*=UTF-8''<exact, percent-encoded>`."""
    safe = download_name(name)
    return f"attachment; filename=\"{_ascii_fallback(safe)}\"; filename*=UTF-8''{quote(safe, safe=_ATTR_CHAR_SAFE)}"


def download_content_type(mime_type: str | None) -> str:
    """The type sniffed at upload (files.inspection), or bytes of no particular type. Only a
    plain `type/subtype` is passed on, so a stored value can never add header parameters."""
    if mime_type and re.fullmatch(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*", mime_type):
        return mime_type
    return "application/octet-stream"
