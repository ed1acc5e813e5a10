"""The Python widget renderer writes the markup of Django's widget templates, character for
character, escaping included: a page that uses it looks and posts as it did."""

from __future__ import annotations

import pytest
from django import forms
from django.forms.renderers import DjangoTemplates

from imageflow.admin_widgets import PYTHON_WIDGETS

HOSTILE = '<script>alert("x")</script> & \' onerror=alert(1)'

WIDGETS = [
    ("text", forms.TextInput(attrs={"class": "vTextField", "maxlength": 200}), HOSTILE),
    ("text, empty", forms.TextInput(), None),
    ("number", forms.NumberInput(attrs={"min": 0}), 7),
    ("hidden", forms.HiddenInput(), "8f1c-uuid"),
    ("checkbox, checked", forms.CheckboxInput(), True),
    ("checkbox, unchecked", forms.CheckboxInput(attrs={"disabled": False}), False),
    ("textarea", forms.Textarea(attrs={"rows": 12, "cols": 90, "style": "font-family: monospace;"}),
     '{\n  "label": "' + HOSTILE + '"\n}'),
    ("textarea, empty", forms.Textarea(), ""),
    ("select", forms.Select(choices=[("", "---------"), ("a", HOSTILE), ("b", "B"), (3, 4)]), "b"),
    ("select, optgroups", forms.Select(choices=[("group <1>", [("x", "X"), ("y", "Y")]), ("z", "Z")]), "y"),
    ("select, nothing selected", forms.Select(choices=[("a", "A")]), None),
    ("select multiple", forms.SelectMultiple(choices=[("a", "A"), ("b", "B")]), ["a", "b"]),
]


@pytest.mark.parametrize(("label", "widget", "value"), WIDGETS, ids=[w[0] for w in WIDGETS])
def test_a_widget_renders_as_its_django_template_does(label, widget, value):
    # given a widget and a value (hostile text among them)
    attrs = {"id": "id_field", "required": True}
    # when it is rendered by Django's template renderer and by the Python one
    by_template = widget.render("nodes-0-field", value, attrs=attrs, renderer=DjangoTemplates())
    by_python = widget.render("nodes-0-field", value, attrs=attrs, renderer=PYTHON_WIDGETS)
    # then the markup is the same, and hostile text is escaped in it
    assert by_python == by_template
    assert "<script>" not in by_python


@pytest.mark.parametrize("errors", [[], ["a param's default must parse as its type: <b>'big'</b>"]],
                         ids=["no errors", "an error"])
def test_a_field_error_list_renders_as_its_django_template_does(errors):
    # given a bound form field with or without errors
    class Form(forms.Form):
        name = forms.CharField()

    by_template = Form(data={"name": "x"}, renderer=DjangoTemplates())
    by_python = Form(data={"name": "x"}, renderer=PYTHON_WIDGETS)
    for form in (by_template, by_python):
        form.is_valid()
        for message in errors:
            form.add_error("name", message)
    # when its error list is rendered by each renderer, then the markup is the same
    assert str(by_python["name"].errors) == str(by_template["name"].errors)
    assert by_python["name"].errors.as_ul() == by_template["name"].errors.as_ul()
    assert ("<b>" in str(by_python["name"].errors)) is False


@pytest.mark.parametrize(("label", "attrs", "suffix"), [
    (HOSTILE, {"class": "required", "title": HOSTILE}, ":"), ("Name", None, None), ("Tags", {"hidden": True}, "")],
    ids=["hostile", "plain", "bare attribute"])
def test_a_field_label_renders_as_its_django_template_does(label, attrs, suffix):
    # given a form field's label, with or without an id (no id: no <label> tag)
    class Form(forms.Form):
        name = forms.CharField(label=label)

    for auto_id in ("id_%s", False):
        by_template = Form(auto_id=auto_id, renderer=DjangoTemplates())["name"]
        by_python = Form(auto_id=auto_id, renderer=PYTHON_WIDGETS)["name"]
        # when the label is rendered by each renderer, then the markup is the same and escaped
        assert by_python.label_tag(attrs=attrs, label_suffix=suffix) == by_template.label_tag(
            attrs=attrs, label_suffix=suffix)
        assert by_python.legend_tag(attrs=attrs) == by_template.legend_tag(attrs=attrs)
        assert "<script>" not in by_python.label_tag(attrs=attrs)
