"""Building forms: field validation, mapping rules and versions that keep old submissions readable."""

import pytest

from crm_hub.actors import Actor
from crm_hub.errors import InputRejected
from forms_app import services
from forms_app.models import FormVersion, Submission
from tests.forms_app.factories import CONTACT_FIELDS, make_form

pytestmark = pytest.mark.django_db


def edit(form, fields, **settings):
    return services.save_form(
        form=form,
        settings_in=services.FormSettings(title=settings.pop("title", form.title), slug=form.slug, **settings),
        fields=fields,
        actor=Actor.for_system("test"),
    )


def test_new_form_gets_a_slug_and_version_one():
    form = make_form(title="Contact us!")
    again = make_form(title="Contact us!")
    assert form.slug == "contact-us" and again.slug.startswith("contact-us-")
    assert form.current_version.number == 1 and form.is_open


def test_field_errors_are_named_by_field_id_and_part():
    fields = [
        {"id": "fa", "type": "text", "label": "", "maps_to": "contact.name"},
        {"id": "fb", "type": "single_choice", "label": "Plan", "choices": [], "maps_to": ""},
        {"id": "fc", "type": "text", "label": "Mail", "maps_to": "contact.email"},
        {"id": "fd", "type": "text", "label": "Other name", "maps_to": "contact.name"},
        {"id": "fe", "type": "multiple_choice", "label": "Topics", "choices": ["a"], "maps_to": "contact.city"},
        {"id": "website", "type": "text", "label": "Site", "maps_to": ""},
        {"id": "ff", "type": "text", "label": "X", "maps_to": "custom.nope"},
    ]
    with pytest.raises(InputRejected) as caught:
        make_form(fields=fields)
    assert set(caught.value.fields) == {
        "fields.fa.label", "fields.fb.choices", "fields.fc.maps_to", "fields.fd.maps_to", "fields.fe.maps_to",
        "fields.website.id", "fields.ff.maps_to",
    }


def test_a_form_must_identify_the_person():
    with pytest.raises(InputRejected) as caught:
        make_form(fields=[{"id": "fmsg", "type": "long_text", "label": "Message", "maps_to": ""}])
    assert caught.value.fields == ["fields"]


def test_editing_a_form_without_submissions_keeps_one_version():
    form = make_form()
    fields = [dict(f) for f in CONTACT_FIELDS]
    fields[0]["label"] = "Your name"
    form = edit(form, fields)
    assert FormVersion.objects.filter(form=form).count() == 1
    assert form.current_version.fields[0]["label"] == "Your name"


def test_editing_a_form_with_submissions_makes_a_new_version_and_old_submissions_keep_their_fields():
    form = make_form()
    old = services.submit_form(form=form, data={"fname": "Ana", "femail": "ana@example.com", "fmsg": "Call me"}).submission
    fields = [dict(f) for f in CONTACT_FIELDS if f["id"] != "fmsg"]
    fields[0]["label"] = "Your name"
    fields.append({"id": "fsize", "type": "single_choice", "label": "Team size", "choices": ["1-10", "11+"], "maps_to": ""})
    form = edit(form, fields)
    assert form.current_version.number == 2
    new = services.submit_form(form=form, data={"fname": "Bo", "femail": "bo@example.com", "fsize": "11+"}).submission
    old = Submission.objects.get(pk=old.pk)
    assert [(d["label"], a) for d, a in old.answer_rows()] == [
        ("Full name", "Ana"), ("Email", "ana@example.com"), ("Phone", None), ("Message", "Call me"),
    ]
    assert [d["label"] for d, _ in new.answer_rows()] == ["Your name", "Email", "Phone", "Team size"]
    # Saving the same fields again changes nothing.
    assert edit(form, form.current_version.fields).current_version.number == 2


def test_settings_are_validated():
    form = make_form()
    with pytest.raises(InputRejected) as caught:
        services.save_form(
            form=None,
            settings_in=services.FormSettings(title="", slug=form.slug, redirect_url="javascript:alert(1)"),
            fields=[dict(f) for f in CONTACT_FIELDS],
            actor=Actor.for_system("t"),
        )
    assert set(caught.value.fields) == {"title", "slug", "redirect_url"}


def test_an_empty_form_cannot_be_published():
    with pytest.raises(InputRejected):
        make_form(fields=[], publish=True)
    draft = make_form(fields=[], publish=False)
    with pytest.raises(InputRejected):
        services.set_form_status(form=draft, status="open", actor=Actor.for_system("t"))
