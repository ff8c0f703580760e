"""An admin's configuration week, through Django admin: custom fields, pipelines, tags and contacts.

Each test is a bug found from outside: deleting or narrowing a custom field that forms and
rules use, changing its type under stored values, contacts that could not be edited or
deleted, case-only duplicates answered with a 500 or a constraint name.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.db import IntegrityError, transaction
from django.urls import reverse

from automations.models import Rule, Trigger
from contacts import services
from contacts.filters import available_columns, sort_expression
from contacts.importing.mapping import auto_mapping
from contacts.models import (
    Contact,
    ContactStage,
    CustomField,
    HistoryEntry,
    Note,
    Pipeline,
    Source,
    Stage,
    StageChange,
    Tag,
    Task,
)
from crm_hub.actors import Actor
from crm_hub.errors import FieldError, InputRejected
from forms_app import services as form_services
from tests.contacts.factories import (
    ContactFactory,
    CustomFieldFactory,
    PipelineFactory,
    StageFactory,
    UserFactory,
)
from tests.forms_app.factories import make_form

pytestmark = pytest.mark.django_db

SYSTEM = Actor.for_system("test")


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def make(name="Ana", **data):
    return services.upsert_contact(data={"name": name, **data}, actor=SYSTEM, source=Source.IMPORT).contact


def channel_field():
    return CustomFieldFactory(
        key="channel", label="Preferred channel", type=CustomField.Type.SINGLE_CHOICE, choices=["Phone", "WhatsApp"]
    )


def channel_form(title="Contact us"):
    return make_form(title=title, fields=[
        {"id": "fname", "type": "text", "label": "Full name", "required": True, "maps_to": "contact.name"},
        {"id": "fchannel", "type": "single_choice", "label": "Channel", "required": False,
         "choices": ["Phone", "WhatsApp"], "maps_to": "custom.channel"},
    ])


def field_post(definition: CustomField, **changes) -> dict:
    data = {
        "label": definition.label, "type": definition.type, "choices": json.dumps(definition.choices),
        "bands": json.dumps(definition.bands), "help_text": definition.help_text,
        "position": definition.position, **({"allow_for_ai": "on"} if definition.allow_for_ai else {}),
    }
    data.update(changes)
    return data


def change_field(client, definition, **changes):
    return client.post(reverse("admin:contacts_customfield_change", args=[definition.pk]), field_post(definition, **changes))


def page_errors(response) -> str:
    return str(response.context["adminform"].form.errors)


# --- 1. Custom fields that forms and rules use --------------------------------------------


def test_deleting_a_custom_field_a_published_form_fills_is_refused_naming_the_form(admin_client):
    field = channel_field()
    form = channel_form()
    url = reverse("admin:contacts_customfield_delete", args=[field.pk])

    page = admin_client.get(url)
    assert page.status_code == 200
    assert "Contact us" in page.content.decode()
    assert "Cannot delete" in page.content.decode()

    admin_client.post(url, {"post": "yes"})
    assert CustomField.objects.filter(pk=field.pk).exists()
    # The form still takes the answers it offers.
    form_services.submit_form(form=form, data={"fname": "Ana", "fchannel": "WhatsApp"})
    assert Contact.objects.get().custom == {"channel": "WhatsApp"}


def test_deleting_a_custom_field_a_rule_tests_is_refused_naming_the_rule(admin_client):
    field = channel_field()
    Rule.objects.create(name="WhatsApp leads", trigger=Trigger.CONTACT_CREATED, custom_field_key="channel",
                        custom_field_value="WhatsApp")
    url = reverse("admin:contacts_customfield_delete", args=[field.pk])
    assert "WhatsApp leads" in admin_client.get(url).content.decode()
    admin_client.post(url, {"post": "yes"})
    assert CustomField.objects.filter(pk=field.pk).exists()


def test_delete_selected_action_refuses_fields_in_use_and_deletes_unused_ones(admin_client):
    used = channel_field()
    channel_form()
    unused = CustomFieldFactory(key="spare")
    changelist = reverse("admin:contacts_customfield_changelist")

    page = admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [used.pk, unused.pk], "post": "yes"})
    assert page.status_code == 200
    assert "Contact us" in page.content.decode()
    assert CustomField.objects.count() == 2

    admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [unused.pk], "post": "yes"})
    assert list(CustomField.objects.values_list("key", flat=True)) == ["channel"]


def test_removing_a_choice_a_form_offers_is_refused_naming_the_form(admin_client):
    field = channel_field()
    form = channel_form()
    response = change_field(admin_client, field, choices=json.dumps(["Phone"]))
    assert response.status_code == 200
    assert "Contact us" in page_errors(response) and "WhatsApp" in page_errors(response)
    field.refresh_from_db()
    assert field.choices == ["Phone", "WhatsApp"]
    form_services.submit_form(form=form, data={"fname": "Ana", "fchannel": "WhatsApp"})


def test_removing_a_choice_a_rule_tests_is_refused_naming_the_rule(admin_client):
    field = channel_field()
    Rule.objects.create(name="WhatsApp leads", trigger=Trigger.CONTACT_CREATED, custom_field_key="channel",
                        custom_field_value="WhatsApp")
    response = change_field(admin_client, field, choices=json.dumps(["Phone", "Email"]))
    assert response.status_code == 200
    assert "WhatsApp leads" in page_errors(response)
    field.refresh_from_db()
    assert field.choices == ["Phone", "WhatsApp"]


def test_removing_a_choice_nothing_uses_and_adding_one_are_saved(admin_client):
    field = channel_field()
    channel_form()
    field.choices = ["Phone", "WhatsApp", "Fax"]
    field.save()
    response = change_field(admin_client, field, choices=json.dumps(["phone", "WhatsApp", "Email"]))
    assert response.status_code == 302, page_errors(response)
    field.refresh_from_db()
    assert field.choices == ["phone", "WhatsApp", "Email"]


# --- 2. Type changes under stored values; sorting what does not fit -------------------------


def test_changing_the_type_while_contacts_hold_values_is_refused(admin_client):
    field = CustomFieldFactory(key="level", type=CustomField.Type.TEXT)
    make("Ana", phone="+15615550192")
    services.update_contact(contact=Contact.objects.get(), data={}, custom={"level": "lower"}, actor=SYSTEM, source=Source.API)
    response = change_field(admin_client, field, type=CustomField.Type.NUMBER)
    assert response.status_code == 200
    assert "Create a new field instead" in page_errors(response)
    field.refresh_from_db()
    assert field.type == CustomField.Type.TEXT


def test_changing_the_type_of_a_field_nobody_holds_a_value_for_is_saved(admin_client):
    field = CustomFieldFactory(key="level", type=CustomField.Type.TEXT)
    make("Ana", phone="+15615550192")
    response = change_field(admin_client, field, type=CustomField.Type.NUMBER)
    assert response.status_code == 302, page_errors(response)
    field.refresh_from_db()
    assert field.type == CustomField.Type.NUMBER


def test_changing_the_type_so_a_form_could_no_longer_fill_the_field_is_refused(admin_client):
    field = CustomFieldFactory(key="level", label="Level", type=CustomField.Type.TEXT)
    make_form(title="Survey", fields=[
        {"id": "fname", "type": "text", "label": "Full name", "required": True, "maps_to": "contact.name"},
        {"id": "flevel", "type": "text", "label": "Your level", "required": False, "maps_to": "custom.level"},
    ])
    response = change_field(admin_client, field, type=CustomField.Type.NUMBER)
    assert response.status_code == 200
    assert "Survey" in page_errors(response) and "Your level" in page_errors(response)
    field.refresh_from_db()
    assert field.type == CustomField.Type.TEXT


def test_a_stored_value_that_is_no_number_sorts_as_empty_instead_of_failing(client):
    score = CustomFieldFactory(key="score", type=CustomField.Type.NUMBER)
    ContactFactory(name="Twelve", custom={"score": 12})
    ContactFactory(name="Five", custom={"score": "5.5"})
    ContactFactory(name="Lower", custom={"score": "lower"})  # left from when the field was text
    ContactFactory(name="Huge", custom={"score": "1e999"})
    ContactFactory(name="None")
    column = available_columns([score])["cf.score"]
    rows = list(
        Contact.objects.annotate(v=sort_expression(column)).order_by("v", "name").values_list("name", "v")
    )
    numbers = [(name, value) for name, value in rows if value is not None]
    assert numbers == [("Five", 5.5), ("Twelve", 12.0)]
    assert {name for name, value in rows if value is None} == {"Lower", "Huge", "None"}

    client.force_login(UserFactory(username="sales", is_staff=True))
    page = client.get("/contacts/", {"sort": "cf.score", "cols": "cf.score"})
    assert page.status_code == 200
    export = client.get("/contacts/export/", {"sort": "-cf.score", "cols": "cf.score", "format": "csv"})
    assert export.status_code == 200
    body = b"".join(export.streaming_content if export.streaming else [export.content]).decode("utf-8-sig")
    assert all(name in body for name in ("Twelve", "Five", "Lower", "Huge", "None"))


# --- 3. Editing contacts that hold stale custom values ---------------------------------------


def inline_management() -> dict:
    data = {}
    for prefix in ["stage_memberships", "notes", "tasks", "files", "history"]:
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0",
                     f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"})
    return data


def contact_post(contact: Contact, **changes) -> dict:
    data = {f: getattr(contact, f) or "" for f in services.STANDARD_FIELDS if f != "birthday"}
    data.update({"birthday": contact.birthday or "", "owner": contact.owner_id or "", "custom": json.dumps(contact.custom)})
    data.update(inline_management())
    data.update(changes)
    return data


def edit_contact(client, contact, **changes):
    return client.post(reverse("admin:contacts_contact_change", args=[contact.pk]), contact_post(contact, **changes))


def test_a_contact_holding_a_deleted_fields_value_can_still_be_edited(admin_client):
    CustomFieldFactory(key="gone", type=CustomField.Type.TEXT)
    contact = make("Ana", phone="+15615550192")
    services.update_contact(contact=contact, data={}, custom={"gone": "x"}, actor=SYSTEM, source=Source.API)
    CustomField.objects.filter(key="gone").delete()
    contact.refresh_from_db()

    response = edit_contact(admin_client, contact, company="Acme")
    assert response.status_code == 302, page_errors(response)
    contact.refresh_from_db()
    assert (contact.company, contact.custom) == ("Acme", {"gone": "x"})


def test_a_contact_holding_a_removed_choice_can_still_be_edited(admin_client):
    field = channel_field()
    contact = make("Ana", phone="+15615550192")
    services.update_contact(contact=contact, data={}, custom={"channel": "WhatsApp"}, actor=SYSTEM, source=Source.API)
    field.choices = ["Phone"]
    field.save()
    contact.refresh_from_db()

    response = edit_contact(admin_client, contact, company="Acme")
    assert response.status_code == 302, page_errors(response)
    contact.refresh_from_db()
    assert (contact.company, contact.custom) == ("Acme", {"channel": "WhatsApp"})


def test_a_key_removed_from_the_json_is_removed_from_the_contact(admin_client):
    CustomFieldFactory(key="budget", type=CustomField.Type.NUMBER)
    CustomFieldFactory(key="note", type=CustomField.Type.TEXT)
    contact = make("Ana", phone="+15615550192")
    services.update_contact(contact=contact, data={}, custom={"budget": 5, "note": "hi"}, actor=SYSTEM, source=Source.API)
    contact.refresh_from_db()

    response = edit_contact(admin_client, contact, custom=json.dumps({"note": "hello"}))
    assert response.status_code == 302, page_errors(response)
    contact.refresh_from_db()
    assert contact.custom == {"note": "hello"}
    entry = contact.history.filter(action=HistoryEntry.Action.UPDATED, actor_label="root").get()
    assert entry.changes == {"custom.budget": [5, None], "custom.note": ["hi", "hello"]}


def test_a_changed_custom_value_is_still_validated(admin_client):
    CustomFieldFactory(key="budget", type=CustomField.Type.NUMBER)
    contact = make("Ana", phone="+15615550192")
    response = edit_contact(admin_client, contact, custom=json.dumps({"budget": "lots"}))
    assert response.status_code == 200
    assert "custom" in response.context["adminform"].form.errors


def test_a_deleted_fields_key_can_be_removed_from_the_json(admin_client):
    CustomFieldFactory(key="gone", type=CustomField.Type.TEXT)
    contact = make("Ana", phone="+15615550192")
    services.update_contact(contact=contact, data={}, custom={"gone": "x"}, actor=SYSTEM, source=Source.API)
    CustomField.objects.filter(key="gone").delete()
    contact.refresh_from_db()
    response = edit_contact(admin_client, contact, custom="{}")
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.custom == {}


# --- 4. Deleting contacts, stages and pipelines -----------------------------------------------


def contact_with_a_past():
    pipeline = PipelineFactory(name="Sales")
    new, won = StageFactory(pipeline=pipeline, name="New"), StageFactory(pipeline=pipeline, name="Won")
    contact = make("Ana", phone="+15615550192")
    services.move_to_stage(contact=contact, pipeline=pipeline, stage=new, actor=SYSTEM, source=Source.MANUAL)
    services.move_to_stage(contact=contact, pipeline=pipeline, stage=won, actor=SYSTEM, source=Source.MANUAL)
    services.add_note(contact=contact, body="Called", actor=SYSTEM, source=Source.MANUAL)
    services.create_task(contact=contact, title="Call back", due_at="2030-01-01T10:00:00Z", actor=SYSTEM,
                         source=Source.MANUAL)
    return contact, pipeline, new, won


@pytest.mark.parametrize("superuser", [True, False])
def test_a_contact_is_deleted_with_its_history_moves_notes_and_tasks(client, superuser):
    user = UserFactory(username="eraser", is_staff=True, is_superuser=superuser)
    if not superuser:
        user.user_permissions.add(*Permission.objects.filter(
            content_type__app_label="contacts", codename__in=["view_contact", "delete_contact"]
        ))
    client.force_login(user)
    contact, *_ = contact_with_a_past()
    assert StageChange.objects.exists() and HistoryEntry.objects.exists()
    url = reverse("admin:contacts_contact_delete", args=[contact.pk])

    page = client.get(url)
    assert page.status_code == 200
    assert not page.context["perms_lacking"] and not page.context["protected"]
    response = client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Contact.objects.exists()
    for model in (HistoryEntry, StageChange, Note, Task, ContactStage):
        assert not model.objects.exists(), model


def test_erasing_a_contact_removes_its_stored_files_and_its_name_from_the_admin_log(
    admin_client, django_capture_on_commit_callbacks
):
    from django.contrib.admin.models import LogEntry
    from django.core.files.uploadedfile import SimpleUploadedFile

    contact = make("Ana Erased", phone="+15615550192")
    admin_client.post(reverse("admin:contacts_contact_change", args=[contact.pk]),
                      contact_post(contact, company="Acme"))
    stored = services.add_file(contact=contact, upload=SimpleUploadedFile("id.txt", b"passport 123", content_type="text/plain"),
                               actor=SYSTEM, source=Source.MANUAL)
    storage, name = stored.file.storage, stored.file.name
    assert storage.exists(name)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:contacts_contact_delete", args=[contact.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not storage.exists(name)
    assert LogEntry.objects.count() == 2  # the edit and the deletion
    assert not LogEntry.objects.filter(object_repr__contains="Ana").exists()


def test_bulk_delete_of_contacts_works_too(admin_client):
    contact, *_ = contact_with_a_past()
    other = make("Bo", phone="+15615550100")
    admin_client.post(reverse("admin:contacts_contact_changelist"),
                      {"action": "delete_selected", "_selected_action": [contact.pk, other.pk], "post": "yes"})
    assert not Contact.objects.exists()


def pipeline_post(pipeline: Pipeline, rows: list[dict], **changes) -> dict:
    data = {"name": pipeline.name, "description": pipeline.description, "position": pipeline.position,
            "stages-TOTAL_FORMS": str(len(rows)), "stages-INITIAL_FORMS": str(sum(1 for r in rows if r.get("id"))),
            "stages-MIN_NUM_FORMS": "0", "stages-MAX_NUM_FORMS": "1000"}
    for index, row in enumerate(rows):
        row = {"pipeline": pipeline.pk, "position": 0, "color": "#94a3b8", **row}
        data.update({f"stages-{index}-{key}": value for key, value in row.items()})
    data.update(changes)
    return data


def stage_rows(pipeline, **extra_by_name):
    return [{"id": s.pk, "name": s.name, "position": s.position, "color": s.color, **extra_by_name.get(s.name, {})}
            for s in pipeline.stages.all()]


def test_a_stage_nobody_is_in_any_more_can_be_deleted_and_history_keeps_its_name(admin_client):
    contact, pipeline, new, won = contact_with_a_past()
    response = admin_client.post(
        reverse("admin:contacts_pipeline_change", args=[pipeline.pk]),
        pipeline_post(pipeline, stage_rows(pipeline, New={"DELETE": "on"})),
    )
    assert response.status_code == 302, response.context and response.context.get("inline_admin_formsets")
    assert list(pipeline.stages.values_list("name", flat=True)) == ["Won"]
    move = StageChange.objects.get(to_stage=won)
    assert move.from_stage is None
    assert StageChange.objects.filter(to_stage=None).count() == 1
    assert contact.history.filter(action=HistoryEntry.Action.STAGE_CHANGED, summary="Sales: New → Won").exists()


def test_a_stage_a_contact_is_in_cannot_be_deleted(admin_client):
    _contact, pipeline, _new, won = contact_with_a_past()
    response = admin_client.post(
        reverse("admin:contacts_pipeline_change", args=[pipeline.pk]),
        pipeline_post(pipeline, stage_rows(pipeline, Won={"DELETE": "on"})),
    )
    assert response.status_code == 200
    assert Stage.objects.filter(pk=won.pk).exists()


def test_a_stage_a_form_sets_cannot_be_deleted_silently(admin_client):
    pipeline = PipelineFactory(name="Sales")
    stage = StageFactory(pipeline=pipeline, name="New")
    make_form(title="Newsletter", stage=stage)
    response = admin_client.post(
        reverse("admin:contacts_pipeline_change", args=[pipeline.pk]),
        pipeline_post(pipeline, stage_rows(pipeline, New={"DELETE": "on"})),
    )
    assert response.status_code == 200
    assert "Newsletter" in response.content.decode()
    assert Stage.objects.filter(pk=stage.pk).exists()


def test_a_pipeline_nobody_is_in_any_more_can_be_deleted(admin_client):
    contact, pipeline, _new, _won = contact_with_a_past()
    ContactStage.objects.filter(contact=contact).delete()  # the contact left the pipeline
    url = reverse("admin:contacts_pipeline_delete", args=[pipeline.pk])
    page = admin_client.get(url)
    assert not page.context["perms_lacking"] and not page.context["protected"]
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Pipeline.objects.exists() and not StageChange.objects.exists()
    assert contact.history.filter(action=HistoryEntry.Action.STAGE_CHANGED).count() == 2


def test_a_pipeline_someone_is_in_cannot_be_deleted(admin_client):
    _contact, pipeline, _new, _won = contact_with_a_past()
    url = reverse("admin:contacts_pipeline_delete", args=[pipeline.pk])
    assert admin_client.get(url).context["protected"]
    admin_client.post(url, {"post": "yes"})
    assert Pipeline.objects.filter(pk=pipeline.pk).exists()


# --- 5. Stage names differing only in case --------------------------------------------------


def test_two_new_stages_differing_only_in_case_are_refused_with_a_message(admin_client):
    pipeline = PipelineFactory(name="Sales")
    response = admin_client.post(
        reverse("admin:contacts_pipeline_change", args=[pipeline.pk]),
        pipeline_post(pipeline, [{"name": "Won"}, {"name": "won"}]),
    )
    assert response.status_code == 200
    assert "differ only in case" in response.content.decode()
    assert not pipeline.stages.exists()


def test_a_new_stage_named_like_an_existing_one_in_another_case_is_refused(admin_client):
    pipeline = PipelineFactory(name="Sales")
    StageFactory(pipeline=pipeline, name="Won")
    response = admin_client.post(
        reverse("admin:contacts_pipeline_change", args=[pipeline.pk]),
        pipeline_post(pipeline, [*stage_rows(pipeline), {"name": "WON"}]),
    )
    assert response.status_code == 200
    assert "differ only in case" in response.content.decode()
    assert pipeline.stages.count() == 1


def test_a_new_pipeline_with_case_only_duplicate_stages_is_refused(admin_client):
    data = {"name": "Sales", "description": "", "position": 0,
            "stages-TOTAL_FORMS": "2", "stages-INITIAL_FORMS": "0", "stages-MIN_NUM_FORMS": "0",
            "stages-MAX_NUM_FORMS": "1000", "stages-0-name": "Won", "stages-0-position": "0",
            "stages-0-color": "#94a3b8", "stages-1-name": "WON", "stages-1-position": "1", "stages-1-color": "#94a3b8"}
    response = admin_client.post(reverse("admin:contacts_pipeline_add"), data)
    assert response.status_code == 200
    assert not Pipeline.objects.exists()


# --- 6. Adding a contact with only a company --------------------------------------------------


def test_adding_a_contact_with_only_a_company_shows_an_error(admin_client):
    response = admin_client.post(reverse("admin:contacts_contact_add"),
                                 {"company": "Acme", "custom": "{}", **inline_management()})
    assert response.status_code == 200
    assert "Give at least a name, a phone or an email." in str(response.context["adminform"].form.non_field_errors())
    assert not Contact.objects.exists()


def test_a_refusal_from_the_write_itself_is_shown_on_the_form(admin_client, monkeypatch):
    # As when another writer takes the phone between the form's check and the write.
    def refuse(**kwargs):
        raise InputRejected([FieldError("phone", "already_exists", "Contact #9 took this phone a moment ago.")])

    monkeypatch.setattr(services, "upsert_contact", refuse)
    response = admin_client.post(reverse("admin:contacts_contact_add"),
                                 {"name": "Ana", "phone": "(561) 555-0192", "custom": "{}", **inline_management()})
    assert response.status_code == 200
    assert "took this phone a moment ago" in str(response.context["adminform"].form.errors["phone"])
    assert not Contact.objects.exists()


# --- 8. Custom field keys -------------------------------------------------------------------


def add_field(client, **data):
    post = {"key": "", "label": "A field", "type": "text", "choices": "[]", "bands": "[]", "help_text": "", "position": 0}
    post.update(data)
    return client.post(reverse("admin:contacts_customfield_add"), post)


def test_a_key_differing_only_in_case_from_another_is_refused(admin_client):
    CustomFieldFactory(key="source_note")
    response = add_field(admin_client, key="Source_Note")
    assert response.status_code == 200
    assert "keys are compared without case" in page_errors(response)
    assert CustomField.objects.count() == 1


@pytest.mark.parametrize("key", ["phone", "Email", "name", "tags", "zip-code", "owner", "first_name"])
def test_a_key_naming_a_standard_field_is_refused(admin_client, key):
    response = add_field(admin_client, key=key)
    assert response.status_code == 200
    assert "standard contact field" in page_errors(response)
    assert not CustomField.objects.exists()


def test_the_database_refuses_case_only_duplicate_keys():
    CustomField.objects.create(key="budget", label="Budget")
    with pytest.raises(IntegrityError), transaction.atomic():
        CustomField.objects.create(key="Budget", label="Budget again")


def test_import_auto_mapping_prefers_standard_fields_over_custom_keys():
    # Saved before such keys were refused.
    CustomField.objects.create(key="phone", label="Phone")
    CustomField.objects.create(key="region", label="Region")
    mapping = auto_mapping(["Phone", "E-mail", "Region", "custom.phone"])
    assert mapping == {"Phone": "phone", "E-mail": "email", "Region": "custom.region", "custom.phone": "custom.phone"}


# --- 9 and 10. Tags, pipelines: messages, separators, colours --------------------------------


def test_case_only_duplicate_tag_and_pipeline_names_get_a_readable_message(admin_client):
    Tag.objects.create(name="VIP")
    response = admin_client.post(reverse("admin:contacts_tag_add"), {"name": "vip", "color": "#2563eb", "description": ""})
    assert response.status_code == 200
    text = response.content.decode()
    assert "A tag with this name already exists (names are compared without case)." in text
    assert "tag_unique_name_ci" not in text

    PipelineFactory(name="Sales")
    response = admin_client.post(reverse("admin:contacts_pipeline_add"), {
        "name": "SALES", "description": "", "position": 0, "stages-TOTAL_FORMS": "0", "stages-INITIAL_FORMS": "0",
        "stages-MIN_NUM_FORMS": "0", "stages-MAX_NUM_FORMS": "1000",
    })
    assert response.status_code == 200
    assert "A pipeline with this name already exists" in response.content.decode()


@pytest.mark.parametrize(("name", "color", "field"), [
    ("hot, warm", "#2563eb", "name"),
    ("hot;warm", "#2563eb", "name"),
    ("hot", "red", "color"),
    ("hot", "#12345", "color"),
])
def test_tag_names_with_separators_and_colours_that_are_not_rrggbb_are_refused(admin_client, name, color, field):
    response = admin_client.post(reverse("admin:contacts_tag_add"), {"name": name, "color": color, "description": ""})
    assert response.status_code == 200
    assert field in page_errors(response)
    assert not Tag.objects.exists()


def test_a_well_formed_tag_is_saved(admin_client):
    response = admin_client.post(reverse("admin:contacts_tag_add"), {"name": "Hot lead", "color": "#12345a", "description": ""})
    assert response.status_code == 302
    assert Tag.objects.get().color == "#12345a"
