import pytest
from django.urls import reverse

from contacts import services
from contacts.models import ChangeRequest, Contact, HistoryEntry, Source
from crm_hub.actors import Actor
from tests.contacts.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def make(name, phone="", email=""):
    return services.upsert_contact(
        data={"name": name, "phone": phone, "email": email}, actor=Actor.for_system("test"), source=Source.IMPORT
    ).contact


@pytest.mark.parametrize("typed", ["(561) 555-0192", "561.555.0192", "+1 561 555 0192", "5615550192"])
def test_admin_search_finds_contact_by_phone_in_any_format(admin_client, typed):
    marcus = make("Marcus", phone="561-555-0192")
    make("Other", phone="+1 212 555 0100")
    page = admin_client.get(reverse("admin:contacts_contact_changelist"), {"q": typed})
    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [marcus]


def test_admin_search_by_email_and_name(admin_client):
    marcus = make("Marcus Silva", email="Marcus@Email.com")
    make("Ana")
    changelist = reverse("admin:contacts_contact_changelist")
    assert list(admin_client.get(changelist, {"q": "MARCUS@email.com"}).context["cl"].result_list) == [marcus]
    assert list(admin_client.get(changelist, {"q": "silva"}).context["cl"].result_list) == [marcus]


def test_admin_changelist_filters_and_pages_render(admin_client):
    make("Marcus", phone="561-555-0192")
    for params in [{"source__exact": "import"}, {"tag": "1"}, {"stage": "1"}, {"created_at__gte": "2020-01-01"}]:
        assert admin_client.get(reverse("admin:contacts_contact_changelist"), params).status_code == 200
    for name in ["tag", "pipeline", "customfield", "note", "task", "historyentry", "changerequest", "possibleduplicate"]:
        assert admin_client.get(reverse(f"admin:contacts_{name}_changelist")).status_code == 200


def test_admin_add_goes_through_the_write_path(admin_client):
    response = admin_client.post(
        reverse("admin:contacts_contact_add"),
        {"name": "Ana", "phone": "(561) 555-0192", "email": "ANA@Example.com", "custom": "{}",
         **inline_management()},
    )
    assert response.status_code == 302, response.content[:2000]
    contact = Contact.objects.get()
    assert (contact.phone_e164, contact.email_normalized, contact.source) == ("+15615550192", "ana@example.com", "manual")
    assert contact.history.get().actor_label == "root"


def test_admin_add_with_bad_phone_shows_error_beside_field(admin_client):
    response = admin_client.post(
        reverse("admin:contacts_contact_add"),
        {"name": "Ana", "phone": "12", "custom": "{}", **inline_management()},
    )
    assert response.status_code == 200
    assert "phone" in response.context["adminform"].form.errors
    assert Contact.objects.count() == 0


def test_admin_edit_records_history_with_before_and_after(admin_client):
    contact = make("Ana", phone="+15615550192")
    response = admin_client.post(
        reverse("admin:contacts_contact_change", args=[contact.pk]),
        {"name": "Ana Maria", "phone": "+15615550192", "custom": "{}", **inline_management()},
    )
    assert response.status_code == 302, response.content[:2000]
    entry = contact.history.filter(action=HistoryEntry.Action.UPDATED).get()
    assert entry.changes == {"name": ["Ana", "Ana Maria"]}


def test_admin_approves_pending_change_request(admin_client):
    contact = make("Ana", email="ana@example.com")
    agent_actor = Actor.for_system("form")
    result = services.upsert_contact(data={"email": "ana@example.com", "identity": "1"}, actor=agent_actor, source=Source.FORM)
    assert not result.pending_changes  # identity was empty: filled directly
    result = services.upsert_contact(data={"email": "ana@example.com", "identity": "2"}, actor=agent_actor, source=Source.FORM)
    request = result.pending_changes[0]
    admin_client.post(
        reverse("admin:contacts_changerequest_changelist"),
        {"action": "approve", "_selected_action": [request.pk]},
    )
    contact.refresh_from_db()
    assert contact.identity == "2"
    assert ChangeRequest.objects.get().status == "approved"


def inline_management():
    data = {}
    for prefix in ["stage_memberships", "notes", "tasks", "files", "history"]:
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0",
                     f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"})
    return data


def test_admin_add_with_phone_of_existing_contact_links_to_it_instead_of_duplicating(admin_client):
    existing = make("Marcus", phone="561-555-0192")
    response = admin_client.post(
        reverse("admin:contacts_contact_add"),
        {"name": "Marcus again", "phone": "(561) 555 0192", "custom": "{}", **inline_management()},
    )
    assert response.status_code == 200
    error = str(response.context["adminform"].form.errors["phone"])
    assert f"/admin/contacts/contact/{existing.pk}/change/" in error
    assert Contact.objects.count() == 1


def test_contact_file_admin_links_to_the_staff_only_download(admin_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    contact = Contact.objects.create(name="Filed", source=Source.MANUAL)
    stored = services.add_file(
        contact=contact, upload=SimpleUploadedFile("quote.pdf", b"%PDF-1.4 tiny", content_type="application/pdf"),
        actor=Actor.for_system("test"), source=Source.MANUAL,
    )
    page = admin_client.get(reverse("admin:contacts_contactfile_change", args=[stored.pk])).content.decode()
    assert f'href="{reverse("contacts:file", args=[contact.pk, stored.pk])}"' in page
    assert "/media/" not in page


def test_admin_refuses_to_save_a_contact_with_a_required_custom_field_left_empty(admin_client):
    from tests.contacts.factories import CustomFieldFactory

    CustomFieldFactory(key="plan", label="Plan", type="text", required=True)
    CustomFieldFactory(key="notes_extra", label="Extra", type="text")  # not required: may stay empty
    contact = make("Ana", phone="+15615550192")  # an import may leave it empty
    url = reverse("admin:contacts_contact_change", args=[contact.pk])
    for custom in ("{}", '{"plan": "  "}'):
        response = admin_client.post(url, {"name": "Ana Maria", "phone": "+15615550192", "custom": custom,
                                           **inline_management()})
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors["custom"]
        assert 'Plan ("plan")' in errors[0] and "Extra" not in errors[0]
    contact.refresh_from_db()
    assert contact.name == "Ana"
    response = admin_client.post(url, {"name": "Ana Maria", "phone": "+15615550192", "custom": '{"plan": "Pro"}',
                                       **inline_management()})
    assert response.status_code == 302, response.content[:2000]
    contact.refresh_from_db()
    assert (contact.name, contact.custom) == ("Ana Maria", {"plan": "Pro"})
