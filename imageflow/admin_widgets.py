"""Django's form widgets rendered in Python, with the markup of their templates.

A widget renders through a template (and its option and attribute templates through more
templates): about 1 ms a widget. A page of many inline rows (the workflow page: every node, edge
and param row is a form) spends most of its time there. `PythonWidgetRenderer` renders the
common widgets (the <input> family, <textarea>, <select> and its options), field labels and empty error lists
with the same markup, character for character (tests/admin/test_widget_renderer.py compares them), and hands every
other template to Django's renderer. A form uses it with `default_renderer = PYTHON_WIDGETS`.
"""

from __future__ import annotations

from typing import Any, Callable

from django.forms.renderers import DjangoTemplates
from django.utils.formats import localize
from django.utils.html import conditional_escape, escape
from django.utils.safestring import SafeString, mark_safe


def _attrs(attrs: dict[str, Any]) -> str:
    # django/forms/widgets/attrs.html: False leaves the attribute out, True writes it bare.
    return "".join(f" {escape(name)}" if value is True else f' {escape(name)}="{escape(value)}"'
                   for name, value in attrs.items() if value is not False)


def _input(widget: dict[str, Any]) -> str:
    value = "" if widget["value"] is None else f' value="{escape(widget["value"])}"'
    return f'<input type="{conditional_escape(widget["type"])}" name="{conditional_escape(widget["name"])}"' \
           f'{value}{_attrs(widget["attrs"])}>'


def _textarea(widget: dict[str, Any]) -> str:
    value = conditional_escape(localize(widget["value"])) if widget["value"] else ""
    # The template's newline after <textarea> (a browser drops it) is kept.
    return f'<textarea name="{conditional_escape(widget["name"])}"{_attrs(widget["attrs"])}>\n{value}</textarea>'


def _option(option: dict[str, Any]) -> str:
    return f'<option value="{escape(option["value"])}"{_attrs(option["attrs"])}>' \
           f'{conditional_escape(localize(option["label"]))}</option>'


def _select(widget: dict[str, Any]) -> str:
    parts = [f'<select name="{conditional_escape(widget["name"])}"{_attrs(widget["attrs"])}>']
    for group_name, group_choices, _index in widget["optgroups"]:
        if group_name:
            parts.append(f'\n  <optgroup label="{conditional_escape(localize(group_name))}">')
        for option in group_choices:
            # Included, not rendered alone: the option template's closing newline stays.
            render = _RENDERERS.get(option["template_name"])
            parts.append("\n  " + (render(option) + "\n" if render else _template(option["template_name"], option)))
        if group_name:
            parts.append("\n  </optgroup>")
    parts.append("\n</select>")
    return "".join(parts)


_INPUT_TEMPLATES = ("input", "text", "number", "email", "url", "password", "hidden", "checkbox", "date",
                    "datetime", "time", "color", "search", "tel")
_RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    **{f"django/forms/widgets/{name}.html": _input for name in _INPUT_TEMPLATES},
    "django/forms/widgets/textarea.html": _textarea,
    "django/forms/widgets/select.html": _select,
    "django/forms/widgets/select_option.html": _option,
}

# An error list renders nothing when empty (`{% if errors %}`): every field of every row asks.
_ERROR_LIST_TEMPLATES = {"django/forms/errors/list/default.html", "django/forms/errors/list/ul.html"}


def _label(context: dict[str, Any]) -> str:
    # django/forms/label.html (BoundField.label_tag): the label is already escaped there.
    label = conditional_escape(context["label"])
    if not context["use_tag"]:
        return label
    tag = conditional_escape(context["tag"])
    return f"<{tag}{_attrs(context['attrs'])}>{label}</{tag}>"


_LABEL_TEMPLATE = "django/forms/label.html"


def _template(template_name: str, option: dict[str, Any]) -> str:
    return PYTHON_WIDGETS.get_template(template_name).render({"widget": option})


class PythonWidgetRenderer(DjangoTemplates):
    """Django's template renderer, except for the widgets above."""

    def render(self, template_name: str, context: dict[str, Any], request=None) -> SafeString:
        if template_name in _ERROR_LIST_TEMPLATES and not context.get("errors"):
            return mark_safe("")  # the template writes nothing for a field without errors
        if template_name == _LABEL_TEMPLATE:
            return mark_safe(_label(context))
        render = _RENDERERS.get(template_name)
        if render is None:
            return super().render(template_name, context, request=request)
        return mark_safe(render(context["widget"]))


# One instance: its template engine is made once, not for every form.
PYTHON_WIDGETS = PythonWidgetRenderer()
