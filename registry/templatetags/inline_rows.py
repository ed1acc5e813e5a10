"""The rows of a tabular inline written in Python: the markup of the <tbody> of Django's
admin/edit_inline/tabular.html (same elements, classes, ids, cells and fields; only the
template's whitespace differs), from the same helper objects (InlineAdminForm, its fieldsets,
lines and fields). The template spent more time walking each cell than the widgets did drawing
it: on the workflow page (a form for every node, edge and param) it was half of the rendering.
tests/admin/test_workflow_page.py compares the two renderings."""

from __future__ import annotations

from django import template
from django.contrib.admin.helpers import InlineAdminFormSet
from django.contrib.admin.templatetags.admin_modify import cell_count
from django.contrib.admin.templatetags.admin_urls import admin_urlname, admin_urlquote
from django.urls import reverse
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

register = template.Library()


def _is_hidden(field) -> bool:
    try:
        return bool(field.field.is_hidden)
    except AttributeError:
        return bool(field.field.get("is_hidden"))


def _field_name(field) -> str:
    try:
        return field.field.name or ""
    except AttributeError:
        return field.field.get("name") or ""


def _original_cell(formset: InlineAdminFormSet, form) -> str:
    parts = ['<td class="original">']
    if form.original or form.show_url:
        parts.append("<p>")
        if form.original:
            parts.append(conditional_escape(form.original))
            model_admin = form.model_admin
            if model_admin.show_change_link and model_admin.has_registered_model:
                url = reverse(admin_urlname(model_admin.opts, "change"), args=[admin_urlquote(form.original.pk)],
                              current_app=model_admin.admin_site.name)
                can_change = formset.has_change_permission
                parts.append(format_html('<a href="{}" class="{}">{}</a>', url,
                                         "inlinechangelink" if can_change else "inlineviewlink",
                                         gettext("Change") if can_change else gettext("View")))
        if form.show_url:
            parts.append(format_html('<a href="{}">{}</a>', form.absolute_url, gettext("View on site")))
        parts.append("</p>")
    if form.needs_explicit_pk_field():
        parts.append(str(form.pk_field().field))
    if form.fk_field():
        parts.append(str(form.fk_field().field))
    parts.append("</td>")
    return "".join(parts)


@register.simple_tag
def inline_rows(formset: InlineAdminFormSet) -> SafeString:
    rows = []
    prefix = formset.formset.prefix
    forms = list(formset)
    can_delete = formset.formset.can_delete and formset.has_delete_permission
    for index, form in enumerate(forms):
        last_empty = index == len(forms) - 1 and formset.has_add_permission
        if form.form.non_field_errors():
            rows.append(format_html('<tr class="row-form-errors"><td colspan="{}">{}</td></tr>', cell_count(form),
                                    form.form.non_field_errors()))
        classes = "form-row " + ("has_original" if form.original or form.show_url else "") + \
                  (" empty-form" if last_empty else "")
        cells = [format_html('<tr class="{}" id="{}-{}">', classes, prefix, "empty" if last_empty else index),
                 _original_cell(formset, form)]
        for fieldset in form:
            for line in fieldset:
                for field in line:
                    name = _field_name(field)
                    cls = (f"field-{name}" if name else "") + (" hidden" if _is_hidden(field) else "")
                    if field.is_readonly:
                        content = format_html("<p>{}</p>", field.contents())
                    else:
                        content = mark_safe(f"{field.field.errors.as_ul()}{field.field}")
                    cells.append(format_html('<td class="{}">{}</td>', cls, content))
        deletion = str(form.deletion_field().field) if can_delete and form.original else ""
        cells.append(format_html('<td class="delete">{}</td></tr>', mark_safe(deletion)))
        rows.append("".join(cells))
    return mark_safe("\n".join(rows))
