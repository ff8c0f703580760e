"""submit_form: one transaction from answers to a contact through the contacts write path."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from contacts.models import ChangeRequest, Contact, ContactStage, HistoryEntry, Source
from contacts.services import upsert_contact
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected
from forms_app import services
from forms_app.models import Form, Submission
from tests.contacts.factories import UserFactory
from tests.forms_app.factories import CONTACT_FIELDS, make_form

pytestmark = pytest.mark.django_db


def lead_form(lead_setup, **kwargs):
    fields = [dict(f) for f in CONTACT_FIELDS] + [
        {"id": "fbudget", "type": "number", "label": "Budget", "maps_to": "custom.budget"},
    ]
    return make_form(fields=fields, tags=lead_setup["tags"], stage=lead_setup["stage"], **kwargs)


def test_submission_creates_contact_with_source_form_tags_stage_and_owner(lead_setup):
    owner = UserFactory(username="olga")
    form = lead_form(lead_setup, owner=owner)
    result = services.submit_form(
        form=form,
        data={"fname": "Ana Souza", "femail": "Ana@Example.com", "fphone": "(561) 555-0192", "fmsg": "Hi", "fbudget": "1250,5"},
        ip_hash="abc",
    )
    contact = Contact.objects.get()
    assert result.created and result.contact == contact
    assert contact.source == Source.FORM
    assert contact.phone_e164 == "+15615550192" and contact.email_normalized == "ana@example.com"
    assert contact.custom == {"budget": 1250.5}
    assert sorted(contact.tags.values_list("name", flat=True)) == ["Newsletter", "Web lead"]
    assert ContactStage.objects.get(contact=contact).stage == lead_setup["stage"]
    assert contact.owner == owner
    submission = Submission.objects.get()
    assert submission.answers["fmsg"] == "Hi" and submission.version == form.current_version
    assert submission.outcome == Submission.Outcome.CREATED
    assert HistoryEntry.objects.filter(contact=contact, action="form_submitted").exists()


def test_same_phone_in_another_format_updates_the_same_contact(lead_setup):
    form = lead_form(lead_setup)
    services.submit_form(form=form, data={"fname": "Ana", "femail": "ana@example.com", "fphone": "(561) 555-0192"})
    second = services.submit_form(
        form=form, data={"fname": "Ana Souza", "femail": "ANA@example.com", "fphone": "+1 561-555-0192"}
    )
    assert Contact.objects.count() == 1
    assert not second.created and second.submission.outcome == Submission.Outcome.UPDATED
    assert Contact.objects.get().name == "Ana Souza"
    assert Submission.objects.filter(contact=second.contact).count() == 2


def test_existing_person_email_is_not_overwritten_but_queued_for_approval(lead_setup):
    form = lead_form(lead_setup)
    upsert_contact(data={"name": "Ana", "phone": "5615550192", "email": "ana@old.com"}, actor=Actor.for_system("seed"), source=Source.MANUAL)
    services.submit_form(form=form, data={"fname": "Ana", "femail": "ana@new.com", "fphone": "561 555 0192"})
    contact = Contact.objects.get()
    assert contact.email == "ana@old.com" and contact.source == Source.MANUAL
    assert ChangeRequest.objects.get(contact=contact, field="email").new_value == "ana@new.com"


def test_owner_is_only_given_to_contacts_without_one(lead_setup):
    first_owner, form_owner = UserFactory(username="first"), UserFactory(username="formowner")
    upsert_contact(data={"name": "Bo", "email": "bo@example.com", "owner": first_owner}, actor=Actor.for_system("seed"), source=Source.MANUAL)
    form = lead_form(lead_setup, owner=form_owner)
    services.submit_form(form=form, data={"fname": "Bo", "femail": "bo@example.com"})
    assert Contact.objects.get().owner == first_owner


def test_errors_name_the_form_fields_and_nothing_is_written(lead_setup):
    form = lead_form(lead_setup)
    with pytest.raises(InputRejected) as caught:
        services.submit_form(
            form=form, data={"fname": "", "femail": "not-an-email", "fphone": "12", "fbudget": "lots"}
        )
    assert {e.field: e.code for e in caught.value.errors} == {
        "fname": "required", "femail": "invalid_email", "fphone": "invalid_phone", "fbudget": "invalid_number",
    }
    assert not Contact.objects.exists() and not Submission.objects.exists()


def test_custom_field_rejected_by_the_contact_service_points_at_its_form_field(lead_setup):
    from tests.contacts.factories import CustomFieldFactory

    plan = CustomFieldFactory(key="plan", label="Plan", type="single_choice", choices=["Basic", "Pro", "Enterprise"])
    fields = [
        dict(CONTACT_FIELDS[0]),
        {"id": "fplan", "type": "single_choice", "label": "Plan", "choices": ["Pro", "Enterprise"], "maps_to": "custom.plan"},
    ]
    form = make_form(fields=fields)
    # The admin narrows the custom field after the form was published.
    plan.choices = ["Basic", "Pro"]
    plan.save(update_fields=["choices"])
    with pytest.raises(InputRejected) as caught:
        services.submit_form(form=form, data={"fname": "Cy", "fplan": "Enterprise"})
    assert [(e.field, e.code) for e in caught.value.errors] == [("fplan", "invalid_value")]
    assert caught.value.errors[0].allowed == ["Basic", "Pro"]


def test_closed_or_draft_form_accepts_nothing(lead_setup):
    form = lead_form(lead_setup)
    services.set_form_status(form=form, status=Form.Status.CLOSED, actor=Actor.for_system("t"))
    draft = make_form(title="Draft", publish=False)
    for closed in (Form.objects.get(pk=form.pk), draft):
        with pytest.raises(InputRejected) as caught:
            services.submit_form(form=closed, data={"fname": "Ana", "femail": "ana@example.com"})
        assert caught.value.errors[0].code == "form_closed"
    assert not Contact.objects.exists() and not Submission.objects.exists()


def test_uploaded_file_goes_to_the_contact_and_oversize_is_refused(lead_setup, settings):
    settings.FORMS_MAX_FILE_BYTES = 1000
    fields = [dict(CONTACT_FIELDS[0]), {"id": "fcv", "type": "file", "label": "CV", "maps_to": "contact.files"}]
    form = make_form(fields=fields)
    with pytest.raises(InputRejected) as caught:
        services.submit_form(
            form=form, data={"fname": "Di"}, files={"fcv": SimpleUploadedFile("cv.pdf", b"x" * 1001, "application/pdf")}
        )
    assert caught.value.errors[0].field == "fcv" and caught.value.errors[0].code == "file_too_large"
    assert "limit" in caught.value.errors[0].message
    result = services.submit_form(
        form=form, data={"fname": "Di"}, files={"fcv": SimpleUploadedFile("cv.pdf", b"%PDF-1.4\n" + b"x" * 991, "application/pdf")}
    )
    stored = result.contact.files.get()
    assert result.submission.answers["fcv"] == {"name": "cv.pdf", "size": 1000, "file_id": stored.pk}


def test_text_longer_than_the_limit_is_refused(lead_setup, settings):
    settings.FORMS_MAX_LONG_TEXT_CHARS = 50
    form = lead_form(lead_setup)
    with pytest.raises(InputRejected) as caught:
        services.submit_form(form=form, data={"fname": "Ed", "femail": "ed@example.com", "fmsg": "y" * 51})
    assert [(e.field, e.code) for e in caught.value.errors] == [("fmsg", "too_long")]


def test_contact_created_rules_see_the_tags_the_form_adds():
    from automations.models import RuleRun
    from contacts.models import Tag, Task
    from tests.automations.factories import RuleFactory

    vip = Tag.objects.get_or_create(name="vip")[0]
    RuleFactory(trigger="contact_created", tag=vip, task_title="New VIP welcome", task_due_amount=1)
    form = make_form(tags=[vip])
    services.submit_form(form=form, data={"fname": "Ana", "femail": "ana@example.com"})
    assert Task.objects.filter(title="New VIP welcome").count() == 1
    assert RuleRun.objects.filter(status="applied").count() == 1
    # A returning person gets the tag as before (once), and no second welcome.
    services.submit_form(form=form, data={"fname": "Ana", "femail": "ana@example.com"})
    assert Task.objects.filter(title="New VIP welcome").count() == 1
