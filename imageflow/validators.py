"""The name rule: what a name a person gives a thing may contain (docs/reliability-design.md,
"Hostile requests and the security matrix").

A name (of a pipeline, component, workflow or workflow node, and a file's original name) is
shown in lists, logs, the admin and download dialogs. It is refused when it holds

- a control character (C0 and C1, NUL included, and the Unicode line/paragraph separators):
  PostgreSQL cannot store NUL in text, and the others forge log lines or terminal output;
- a bidirectional embedding, override or isolate (U+202A-U+202E, U+2066-U+2069): they make
  "invoice\u202egnp.exe" display as "invoiceexe.png". The plain direction marks (U+200E, U+200F,
  U+061C) stay allowed, because right-to-left text uses them legitimately and they reorder nothing;
- a `..` path segment (between slashes or backslashes, or alone): a name is never a path, and
  traversal has no innocent use. A slash on its own is fine in a display name ("Resize / crop").

A file's name is held to the same rule plus no path separators at all; uploads are not refused
for their name but reduced to a safe basename (files/inspection.py, `sanitize_file_name`).
Length is the field's own `max_length`.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError

UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SEPARATORS = re.compile(r"[\\/]")


def name_problem(value: str, *, file_name: bool = False) -> str | None:
    """Why `value` is not an acceptable name, or None."""
    found = UNSAFE_CHARACTERS.search(value)
    if found:
        return f"must not contain the control or bidirectional-formatting character U+{ord(found.group()):04X}."
    if any(segment.strip() == ".." for segment in _SEPARATORS.split(value)):
        return "must not contain a '..' path segment."
    if file_name and _SEPARATORS.search(value):
        return "must not contain a path separator (/ or \\)."
    return None


def validate_name(value: str) -> None:
    """Model-field and serializer validator of display names."""
    if isinstance(value, str):
        problem = name_problem(value)
        if problem:
            raise ValidationError(problem, code="unsafe_name")


def validate_file_name(value: str) -> None:
    """Model-field validator of a stored file's original name (a basename)."""
    if isinstance(value, str):
        problem = name_problem(value, file_name=True)
        if problem:
            raise ValidationError(problem, code="unsafe_name")


def json_nul_path(value: Any, *, root: str = "") -> str | None:
    """The dotted path of the first key or string of a JSON value holding U+0000, or None.

    PostgreSQL stores neither a NUL in `text` nor a `\\u0000` in `jsonb`: a body carrying one
    would otherwise fail in the database (a 500) instead of being refused with the field named.
    Iterative, so a deep value cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path or "value"
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and "\x00" in key:
                    return child_path.replace("\x00", "\\u0000")
                stack.append((child_path, child))
        elif isinstance(item, list):
            stack.extend((f"{path}.{index}" if path else str(index), child) for index, child in enumerate(item))
    return None


NUL_MESSAGE = "must not contain the NUL character (U+0000)."


def strip_unsafe_characters(value: str) -> str:
    """`value` without the characters the name rule refuses (for sanitizing uploads' names)."""
    return UNSAFE_CHARACTERS.sub("", value)
