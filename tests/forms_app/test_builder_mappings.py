"""The builder refuses a field mapping whose answers the contact's custom field could never store."""

import json

import pytest

from contacts.models import Contact
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected
from forms_app import services
from forms_app.models import Form
from tests.contacts.factories import CustomFieldFactory, UserFactory
from tests.forms_app.factories import CONTACT_FIELDS, make_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def targets(db):
    """One custom field of each type a lead form is likely to fill."""
    return {
        "consent": CustomFieldFactory(key="consent", label="Marketing consent", type="boolean"),
        "tier": CustomFieldFactory(key="tier", label="Tier", type="single_choice", choices=["A", "B", "C"]),
        "topics": CustomFieldFactory(key="topics", label="Topics", type="multiple_choice", choices=["Sales", "Support"]),
        "budget": CustomFieldFactory(key="budget", label="Budget", type="number"),
        "start": CustomFieldFactory(key="start", label="Start", type="date"),
        "notes": CustomFieldFactory(key="notes", label="Notes", type="text"),
        "site": CustomFieldFactory(key="site", label="Website", type="url"),
    }


def with_name(*fields):
    return [dict(CONTACT_FIELDS[0]), *fields]


def field(fid, kind, target, choices=(), required=False):
    return {
        "id": fid, "type": kind, "label": fid.title(), "choices": list(choices), "required": required,
        "maps_to": f"custom.{target}",
    }


def test_builder_page_refuses_choices_a_yes_no_field_cannot_store(client, targets):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    fields = with_name(field("fconsent", "single_choice", "consent", ["Yes please", "No thanks"], required=True))

    response = client.post("/forms/new/", {"title": "Newsletter", "fields_json": json.dumps(fields), "action": "publish"})

    assert response.status_code == 400
    message = response.context["field_errors"]["fields.fconsent.maps_to"]
    assert "Marketing consent" in message and "Checkbox" in message and "“Yes please”" in message
    assert b"fields.fconsent.maps_to" in response.content  # handed to the builder script beside the field
    assert not Form.objects.exists()


def test_each_impossible_mapping_is_named_and_the_possible_ones_pass(targets):
    fields = with_name(
        # Refused: some answer the field offers can never be stored.
        field("fgold", "single_choice", "tier", ["Gold", "Silver"]),
        field("fbudget", "text", "budget"),
        field("fstart", "text", "start"),
        field("fsubjects", "multiple_choice", "notes", ["Sales", "Support"]),
        field("fticked", "checkbox", "topics"),
        # Accepted: every answer is stored, in the target's own spelling for choices.
        field("fconsent", "checkbox", "consent"),
        field("ftier", "single_choice", "tier", ["a", "B"]),
        field("ftopics", "multiple_choice", "topics", ["sales", "Support"]),
        field("famount", "number", "budget"),
        field("fday", "date", "start"),
        field("fnote", "long_text", "notes"),
        field("fsite", "text", "site"),
    )
    with pytest.raises(InputRejected) as caught:
        make_form(fields=fields)

    assert set(caught.value.fields) == {
        "fields.fgold.maps_to", "fields.fbudget.maps_to", "fields.fstart.maps_to", "fields.fsubjects.maps_to",
        "fields.fticked.maps_to",
    }
    messages = {e.field: e.message for e in caught.value.errors}
    assert "A, B, C" in messages["fields.fgold.maps_to"] and "“Gold”, “Silver”" in messages["fields.fgold.maps_to"]
    assert "use a Number field" in messages["fields.fbudget.maps_to"]
    assert "use a Date field" in messages["fields.fstart.maps_to"]


@pytest.mark.parametrize(
    ("choices", "answer", "stored"),
    [(["Yes", "No"], "Yes", True), (["Sim", "Não"], "Não", False)],
)
def test_choices_that_read_as_yes_or_no_fill_a_yes_no_field_but_others_do_not(targets, choices, answer, stored):
    with pytest.raises(InputRejected):
        make_form(fields=with_name(field("fconsent", "single_choice", "consent", [*choices, "Maybe"])))
    form = make_form(fields=with_name(field("fconsent", "single_choice", "consent", choices, required=True)))

    services.submit_form(form=form, data={"fname": "Ana", "fconsent": answer})

    assert Contact.objects.get().custom == {"consent": stored}


def test_existing_form_with_an_impossible_mapping_still_takes_fitting_answers_until_it_is_edited(targets):
    form = make_form(fields=with_name(field("fbudget", "text", "notes")))
    # As saved before the builder checked mappings: a text box feeding the number field.
    version = form.current_version
    version.fields[1]["maps_to"] = "custom.budget"
    version.save(update_fields=["fields"])
    form = Form.objects.get(pk=form.pk)

    services.submit_form(form=form, data={"fname": "Ana", "fbudget": "1200"})
    assert Contact.objects.get().custom == {"budget": 1200}

    with pytest.raises(InputRejected) as caught:
        services.save_form(
            form=form, settings_in=services.FormSettings(title="Renamed", slug=form.slug),
            fields=version.fields, actor=Actor.for_system("test"),
        )
    assert caught.value.fields == ["fields.fbudget.maps_to"]
