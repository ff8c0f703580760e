"""Forms, seventh outside-in round: where answers go, what a deleted form leaves, and what visitors are told."""

import re
from decimal import Decimal

import pytest
from django.contrib.admin.sites import site
from django.test import Client, RequestFactory

from contacts.models import Contact, ContactFile
from crm_hub.errors import InputRejected
from forms_app import services
from forms_app.models import Form, Submission
from tests.contacts.factories import CustomFieldFactory, UserFactory
from tests.forms_app.factories import CONTACT_FIELDS, make_form

pytestmark = pytest.mark.django_db

NAME, EMAIL, PHONE = (dict(f) for f in CONTACT_FIELDS[:3])


def token_of(response) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', response.content.decode()).group(1)


def test_a_file_field_always_goes_to_the_contacts_files():
    form = make_form(fields=[NAME, {"id": "fdoc", "type": "file", "label": "Doc", "maps_to": ""}])
    assert form.current_version.fields[1]["maps_to"] == "contact.files"
    with pytest.raises(InputRejected) as refused:
        make_form(fields=[NAME, {"id": "fdoc", "type": "file", "label": "Doc", "maps_to": "custom.nothing"}])
    assert refused.value.errors[0].field == "fields.fdoc.maps_to" and "contact's files" in refused.value.errors[0].message


def test_a_number_field_cannot_fill_a_contact_field_and_old_forms_keep_the_typed_zip():
    with pytest.raises(InputRejected) as refused:
        make_form(fields=[NAME, {"id": "fzip", "type": "number", "label": "ZIP", "maps_to": "contact.zip_code"}])
    assert "Short text" in refused.value.errors[0].message
    form = make_form(fields=[NAME, {"id": "fzip", "type": "text", "label": "ZIP", "maps_to": "contact.zip_code"}])
    # A version saved before the rule: the definition is stored as it was.
    version = form.current_version
    version.fields[1]["type"] = "number"
    version.save()
    result = services.submit_form(form=form, data={"fname": "Zed", "fzip": "02134"})
    assert result.contact.zip_code == "02134"
    with pytest.raises(InputRejected):
        services.submit_form(form=form, data={"fname": "Zed", "fzip": "ten"})  # still a number field


def test_a_long_decimal_answer_keeps_its_digits():
    CustomFieldFactory(key="budget", label="Budget", type="decimal")
    form = make_form(fields=[NAME, {"id": "fb", "type": "number", "label": "Budget", "maps_to": "custom.budget"}])
    result = services.submit_form(form=form, data={"fname": "Rich", "fb": "12345678901234567.89"})
    assert Decimal(result.contact.custom["budget"]) == Decimal("12345678901234567.89")
    assert result.submission.answers["fb"] == "12345678901234567.89"
    small = services.submit_form(form=form, data={"fname": "Small", "fb": "1250.50"}).submission
    assert small.answers["fb"] == 1250.5  # a number where a float holds it exactly


def test_an_empty_draft_form_can_be_deleted_in_admin_but_not_one_people_answered(admin_client):
    draft = make_form(title="Typo draft", publish=False)
    response = admin_client.post(f"/admin/forms_app/form/{draft.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not Form.objects.filter(pk=draft.pk).exists()
    answered = make_form(title="Used")
    services.submit_form(form=answered, data={"fname": "Ana", "femail": "ana@example.com"})
    refused = admin_client.post(f"/admin/forms_app/form/{answered.pk}/delete/", {"post": "yes"}, follow=True)
    assert "people answered it" in refused.content.decode()
    other_draft = make_form(title="Another draft", publish=False)
    bulk = admin_client.post("/admin/forms_app/form/", {"action": "delete_selected", "post": "yes",
                                                         "_selected_action": [answered.pk, other_draft.pk]}, follow=True)
    assert "people answered it" in bulk.content.decode()
    assert not Form.objects.filter(pk=other_draft.pk).exists()
    assert Form.objects.filter(pk=answered.pk).exists() and Submission.objects.count() == 1
    request = RequestFactory().get("/")
    request.user = UserFactory(username="root", is_superuser=True, is_staff=True)
    assert not site._registry[Submission].has_delete_permission(request, Submission.objects.get())


def test_a_deactivated_form_owner_gets_no_new_leads_and_the_form_page_says_so(client):
    seller = UserFactory(username="gone", is_staff=True)
    form = make_form(owner=seller)
    seller.is_active = False
    seller.save()
    contact = services.submit_form(form=form, data={"fname": "Orphan", "femail": "o@example.com"}).contact
    assert contact.owner_id is None
    client.force_login(UserFactory(username="boss", is_superuser=True, is_staff=True))
    assert 'data-testid="inactive-owner"' in client.get(f"/forms/{form.pk}/").content.decode()


def test_an_unticked_box_does_not_withdraw_a_known_persons_yes():
    CustomFieldFactory(key="consent", label="Marketing consent", type="boolean")
    form = make_form(fields=[NAME, EMAIL, {"id": "fok", "type": "checkbox", "label": "News please", "maps_to": "custom.consent"}])
    first = services.submit_form(form=form, data={"fname": "Jose", "femail": "jose@example.com", "fok": "on"}).contact
    assert first.custom["consent"] is True
    services.submit_form(form=form, data={"fname": "Jose", "femail": "JOSE@example.com"})
    first.refresh_from_db()
    assert first.custom["consent"] is True
    new = services.submit_form(form=form, data={"fname": "Nina", "femail": "nina@example.com"}).contact
    assert new.custom["consent"] is False  # a new person's unticked box is their "no"


def test_a_forged_token_is_not_called_an_old_page():
    form = make_form()
    visitor = Client(REMOTE_ADDR="203.0.113.40")
    response = visitor.post(f"/f/{form.slug}/", {"form_token": "forged", "fname": "Ana", "femail": "a@example.com"})
    assert response.status_code == 400
    text = response.content.decode()
    assert "could not be checked" in text and "open for too long" not in text
    assert not Contact.objects.exists()


def test_a_long_extension_is_told_as_such_and_a_name_field_is_as_long_as_a_name(client):
    form = make_form(fields=[NAME, PHONE])
    with pytest.raises(InputRejected) as refused:
        services.submit_form(form=form, data={"fname": "Ext", "fphone": "+1 212 555 0191 ext 1234567890123"})
    assert "extension has at most" in refused.value.errors[0].message
    page = Client().get(f"/f/{form.slug}/").content.decode()
    assert re.search(r'id="f-fname"[^>]*maxlength="200"', page) or re.search(r'maxlength="200"[^>]*id="f-fname"', page)
    with pytest.raises(InputRejected) as too_long:
        services.submit_form(form=form, data={"fname": "x" * 201})
    assert too_long.value.errors[0].field == "fname" and "200" in too_long.value.errors[0].message
    assert not ContactFile.objects.exists()


def test_the_form_page_lists_its_automations_and_offers_to_add_one(admin_client):
    from tests.automations.factories import RuleFactory

    form = make_form(title="Demo request")
    other = make_form(title="Other")
    mine = RuleFactory(name="Call demo leads", trigger="form_submitted", form_id=form.pk)
    every = RuleFactory(name="Welcome everyone", trigger="form_submitted")
    RuleFactory(name="For the other form", trigger="form_submitted", form_id=other.pk)
    RuleFactory(name="Switched off", trigger="form_submitted", form_id=form.pk, active=False)
    page = admin_client.get(f"/forms/{form.pk}/").content.decode()
    listed = page.split('data-testid="form-automations"')[1].split("</dd>")[0]
    assert mine.name in listed and every.name in listed and "(every form)" in listed
    assert "For the other form" not in listed and "Switched off" not in listed
    add = re.search(r'href="([^"]+)">Add an automation for this form', listed).group(1).replace("&amp;", "&")
    form_page = admin_client.get(add).content.decode()
    assert f'name="form_id" value="{form.pk}"' in form_page


def test_an_open_form_cannot_be_saved_with_no_fields():
    form = make_form()
    with pytest.raises(InputRejected) as refused:
        services.save_form(form=form, settings_in=services.FormSettings(title=form.title), fields=[],
                           actor=services.form_actor(form))
    assert refused.value.errors[0].field == "fields" and "open" in refused.value.errors[0].message
    form.refresh_from_db()
    assert len(form.current_version.fields) == len(CONTACT_FIELDS)


# --- round 8 ------------------------------------------------------------------------------------


def test_an_answer_kept_on_the_submission_only_refuses_control_characters_as_contact_fields_do(client):
    form = make_form()
    page = client.get(f"/f/{form.slug}/")
    response = client.post(f"/f/{form.slug}/", {
        "form_token": token_of(page), "fname": "Ana", "femail": "ana@example.com", "fmsg": "hi\x1b[31m red",
    })
    assert response.status_code == 400
    assert "U+001B" in response.content.decode()
    assert not Submission.objects.exists()


def test_a_post_with_too_many_fields_gets_the_forms_own_page_not_a_bare_400(client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 20
    form = make_form()
    page = client.get(f"/f/{form.slug}/")
    data = {"form_token": token_of(page), "fname": "Ana", "femail": "ana@example.com",
            **{f"x{n}": "1" for n in range(30)}}
    response = client.post(f"/f/{form.slug}/", data)
    assert response.status_code == 400
    body = response.content.decode()
    assert "too many fields" in body and form.title in body
    assert not Submission.objects.exists()


def test_a_multiple_choice_mapped_to_a_single_choice_field_is_told_the_real_reason():
    CustomFieldFactory(key="product_interest", label="Product interest", type="single_choice",
                       choices=["Starter", "Pro", "Enterprise"])
    with pytest.raises(InputRejected) as refused:
        make_form(fields=[NAME, {"id": "fprod", "type": "multiple_choice", "label": "Products",
                                 "choices": ["Pro", "Starter"], "maps_to": "custom.product_interest"}])
    message = refused.value.errors[0].message
    assert "holds one value" in message and "sends several" in message and "cannot store" not in message


def test_a_public_form_with_a_known_phone_fills_what_is_empty_and_renames_no_one(client):
    from contacts import services as contact_services
    from contacts.models import Source
    from crm_hub.actors import Actor

    CustomFieldFactory(key="budget", label="Budget", type="number")
    staff = Actor.for_user(UserFactory(username="owner1", is_staff=True))
    known = contact_services.upsert_contact(
        data={"name": "Mateo Garcia", "phone": "+1 617 555 0119"}, custom={"budget": 5000}, actor=staff, source=Source.MANUAL,
    ).contact
    form = make_form(fields=[NAME, PHONE, {"id": "fco", "type": "text", "label": "Company", "maps_to": "contact.company"},
                             {"id": "fbud", "type": "number", "label": "Budget", "maps_to": "custom.budget"}])
    page = client.get(f"/f/{form.slug}/")
    response = client.post(f"/f/{form.slug}/", {"form_token": token_of(page), "fname": "Totally Different",
                                                 "fphone": "617-555-0119", "fco": "Evil Inc", "fbud": "1"})
    assert response.status_code == 302
    known.refresh_from_db()
    assert (known.name, known.company, known.custom["budget"]) == ("Mateo Garcia", "Evil Inc", 5000)  # company was empty
    submission = Submission.objects.get()
    assert submission.contact_id == known.pk and submission.answers["fname"] == "Totally Different"  # kept on it


def test_a_long_answer_under_the_pages_limit_is_not_refused_for_its_crlf_line_breaks(client, settings):
    settings.FORMS_MAX_LONG_TEXT_CHARS = 100
    form = make_form()
    page = client.get(f"/f/{form.slug}/")
    typed = ("x" * 9 + "\n") * 10  # 100 characters as the browser's maxlength counts them
    response = client.post(f"/f/{form.slug}/", {"form_token": token_of(page), "fname": "Ana", "femail": "ana@example.com",
                                                "fmsg": typed.replace("\n", "\r\n")})
    assert response.status_code == 302
    assert Submission.objects.get().answers["fmsg"] == typed.strip()
