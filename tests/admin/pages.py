"""Admin pages as a browser posts them: the values of a change form, and a snapshot of every
row the admin can show (to prove that a refused save stored nothing)."""

from __future__ import annotations

from html.parser import HTMLParser

from django.contrib import admin
from django.urls import reverse


def form_fields(html: str, *, form_id: str | None = None) -> dict[str, str | list[str]]:
    """The values a browser would post back for the admin's change form (multiple selects as lists)."""

    class Form(HTMLParser):
        def __init__(self):
            super().__init__()
            self.values: dict[str, str | list[str]] = {}
            self._textarea = self._select = None
            self._multiple = False
            self._inside = form_id is None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "form" and form_id is not None:
                self._inside = attrs.get("id") == form_id
            if not self._inside:
                return
            name = attrs.get("name")
            if tag == "input" and name and attrs.get("type") not in {"submit", "checkbox", "file", "button"}:
                self.values[name] = attrs.get("value") or ""
            elif tag == "input" and name and attrs.get("type") == "checkbox" and "checked" in attrs:
                self.values[name] = "on"
            elif tag == "textarea" and name:
                self._textarea, self.values[name] = name, ""
            elif tag == "select" and name:
                self._select, self._multiple = name, "multiple" in attrs
                if self._multiple:
                    self.values[name] = []
            elif tag == "option" and self._select and "selected" in attrs:
                if self._multiple:
                    self.values[self._select].append(attrs.get("value") or "")
                else:
                    self.values[self._select] = attrs.get("value") or ""

        def handle_endtag(self, tag):
            if tag == "form" and form_id is not None:
                self._inside = False
            if tag == "textarea" and self._textarea:
                # A browser drops the newline that follows <textarea>.
                if self.values[self._textarea].startswith("\n"):
                    self.values[self._textarea] = self.values[self._textarea][1:]
                self._textarea = None
            elif tag == "select":
                self._select = None

        def handle_data(self, data):
            if self._textarea:
                self.values[self._textarea] += data

    parser = Form()
    parser.feed(html)
    return parser.values


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def form_of(client, url: str) -> dict:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    model_name = response.context["opts"].model_name
    return form_fields(response.content.decode(), form_id=f"{model_name}_form")


def snapshot() -> dict[str, list[dict]]:
    """Every row of every model in the admin, field by field."""
    rows = {}
    for model in admin.site._registry:
        rows[model._meta.label_lower] = list(model._default_manager.order_by("pk").values())
    return rows


def errors_of(response) -> str:
    """The error texts of an admin form page (form, fields and inlines), for assertion messages."""
    from html import unescape
    import re

    html = response.content.decode()
    found = re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', html, flags=re.S)
    return unescape(" | ".join(re.sub(r"<[^>]+>", " ", item).strip() for item in found))
