"""Contact page: header, provenance, merged timeline, notes, files, tasks, tags, stages; create and edit by hand."""

import datetime as dt
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts import selectors, services
from contacts.models import Contact, HistoryEntry, Note, Source, Task
from contacts.selectors import TimelineItem, contact_timeline, register_timeline_source
from crm_hub.actors import Actor
from tests.contacts.factories import CustomFieldFactory, TagFactory
from tests.contacts.ui_helpers import make_contact, sales_pipeline

pytestmark = pytest.mark.django_db


def intake(agent_actor, *, phone="+1 202 555 0199", n_messages=2):
    return services.record_intake(
        contact={"name": "Chat Person", "phone": phone, "custom": {"budget": 500}},
        actor=agent_actor,
        source=Source.CHAT,
        note="<p>Asked about <b>pricing</b></p>",
        task={"title": "Send quote", "due_at": "2030-01-01T10:00:00Z"},
        conversation={
            "external_id": f"conv-{phone}",
            "channel": "whatsapp",
            "messages": [{"role": "visitor", "content": f"Hello {i}"} for i in range(n_messages)],
        },
    )


@pytest.fixture
def page(client, staff_user):
    client.force_login(staff_user)
    return client


def test_contact_page_shows_header_source_and_merged_timeline(page, agent_actor, staff_user):
    CustomFieldFactory(key="budget", label="Budget", type="number", allow_for_ai=True)
    contact = intake(agent_actor).upsert.contact
    services.add_file(
        contact=contact, upload=SimpleUploadedFile("quote.pdf", b"%PDF-1.4", content_type="application/pdf"),
        actor=Actor.for_user(staff_user), source=Source.MANUAL,
    )
    html = page.get(f"/contacts/{contact.pk}/").content.decode()
    assert "Chat Person" in html and "via Chat" in html and "(202) 555-0199" in html
    kinds = re.findall(r'class="timeline-item" data-kind="(\w+)"', html)
    assert {"note", "conversation", "file", "task", "change"} <= set(kinds)
    assert kinds[0] == "file"  # newest first
    assert "<b>pricing</b>" in html
    assert "Transcript (2 messages)" in html and "Hello 1" in html
    assert "quote.pdf" in html


def test_field_provenance_names_agent_source_and_conversation(page, agent_actor):
    CustomFieldFactory(key="budget", label="Budget", type="number", allow_for_ai=True)
    result = intake(agent_actor)
    html = page.get(f"/contacts/{result.upsert.contact.pk}/").content.decode()
    phone_title = re.search(r'class="provenance" title="([^"]+)" data-field="phone"', html).group(1)
    assert "agent test-bot" in phone_title and "via Chat" in phone_title
    assert f"conversation #{result.conversation.pk}" in phone_title
    assert re.search(r'class="provenance" title="Set by agent test-bot via Chat[^"]*">500<', html)


def test_timeline_selector_uses_fixed_queries_whatever_the_rows(agent_actor, staff_user, django_assert_num_queries):
    CustomFieldFactory(key="budget", label="Budget", type="number", allow_for_ai=True)
    small = intake(agent_actor, phone="+1 202 555 0101", n_messages=1).upsert.contact
    with CaptureQueriesContext(connection) as one:
        contact_timeline(small)
    big = intake(agent_actor, phone="+1 202 555 0102", n_messages=5).upsert.contact
    actor = Actor.for_user(staff_user)
    for i in range(6):
        services.add_note(contact=big, body=f"note {i}", actor=actor, source=Source.MANUAL)
        services.create_task(contact=big, title=f"t{i}", due_at="2030-01-01T10:00:00Z", actor=actor, source=Source.MANUAL)
        services.update_contact(contact=big, data={"company": f"Co {i}"}, actor=actor, source=Source.MANUAL)
    with django_assert_num_queries(len(one.captured_queries)):
        items = contact_timeline(big, limit=10)
    assert len(items) == 10
    assert [i.at for i in items] == sorted((i.at for i in items), reverse=True)


def test_timeline_takes_one_more_source(staff_user, monkeypatch):
    contact = make_contact(staff_user, name="Ana")
    monkeypatch.setattr(selectors, "TIMELINE_SOURCES", list(selectors.TIMELINE_SOURCES))
    monkeypatch.setattr(selectors, "TIMELINE_HISTORY_SHOWN_ELSEWHERE", set(selectors.TIMELINE_HISTORY_SHOWN_ELSEWHERE))
    future = timezone.now() + dt.timedelta(days=1)
    register_timeline_source(
        lambda c, limit, before: [TimelineItem("form_submission", future, {"form": "Contact us"})],
        replaces_history_actions=[HistoryEntry.Action.CREATED],
    )
    items = contact_timeline(contact)
    assert items[0].kind == "form_submission"
    assert all(not (i.kind == "change" and i.obj.action == "created") for i in items)


def test_contact_page_renders_with_fixed_number_of_queries(page, agent_actor, staff_user, django_assert_num_queries):
    CustomFieldFactory(key="budget", label="Budget", type="number", allow_for_ai=True)
    TagFactory(name="vip")
    sales_pipeline()
    small = intake(agent_actor, phone="+1 202 555 0101", n_messages=1).upsert.contact
    with CaptureQueriesContext(connection) as one:
        page.get(f"/contacts/{small.pk}/")
    big = intake(agent_actor, phone="+1 202 555 0102", n_messages=6).upsert.contact
    actor = Actor.for_user(staff_user)
    services.add_tags(contact=big, tags=["vip"], actor=actor, source=Source.MANUAL)
    for i in range(5):
        services.add_note(contact=big, body=f"note {i}", actor=actor, source=Source.MANUAL)
        services.create_task(contact=big, title=f"t{i}", due_at="2030-01-01T10:00:00Z", actor=actor, source=Source.MANUAL)
        services.add_file(contact=big, upload=SimpleUploadedFile(f"f{i}.txt", b"x", content_type="text/plain"),
                          actor=actor, source=Source.MANUAL)
    with django_assert_num_queries(len(one.captured_queries)):
        response = page.get(f"/contacts/{big.pk}/")
    assert response.content.decode().count('data-kind="note"') == 6


def test_note_with_script_is_stored_and_shown_without_it(page, staff_user):
    contact = make_contact(staff_user, name="Ana")
    page.post(f"/contacts/{contact.pk}/notes/", {"body": '<div><strong>Bold</strong> <img src=x onerror=alert(1)><script>alert(2)</script></div>'})
    html = page.get(f"/contacts/{contact.pk}/").content.decode()
    note_html = re.search(r'class="timeline-body note-body">(.*?)</div>\s*</div>\s*</li>', html, re.S).group(1)
    assert "<strong>Bold</strong>" in note_html
    assert "onerror" not in note_html and "<script" not in note_html and "<img" not in note_html


def test_note_written_around_the_service_is_sanitized_at_display(page, staff_user):
    contact = make_contact(staff_user, name="Ana")
    Note.objects.create(contact=contact, body="<img src=x onerror=alert(1)>ok", source=Source.IMPORT)
    html = page.get(f"/contacts/{contact.pk}/").content.decode()
    assert "onerror" not in html and ">ok<" in html


def test_upload_file_within_limits_and_refuse_too_large_or_wrong_type(page, staff_user, settings):
    settings.CRM_MAX_UPLOAD_BYTES = 100
    contact = make_contact(staff_user, name="Ana")
    ok = page.post(f"/contacts/{contact.pk}/files/", {"file": SimpleUploadedFile("a.txt", b"hi", content_type="text/plain")}, follow=True)
    assert "Uploaded a.txt" in ok.content.decode()
    big = page.post(f"/contacts/{contact.pk}/files/", {"file": SimpleUploadedFile("b.txt", b"x" * 101, content_type="text/plain")}, follow=True)
    assert "the limit is 100 bytes" in big.content.decode()
    bad = page.post(f"/contacts/{contact.pk}/files/", {"file": SimpleUploadedFile("c.html", b"<b>", content_type="text/html")}, follow=True)
    assert "Files of this kind (.html) are not accepted." in bad.content.decode()
    assert list(contact.files.values_list("name", flat=True)) == ["a.txt"]
    download = page.get(f"/contacts/{contact.pk}/files/{contact.files.get().pk}/")
    assert download["Content-Disposition"].startswith("attachment") and b"".join(download.streaming_content) == b"hi"


def test_add_task_then_mark_done_and_reopen(page, staff_user):
    contact = make_contact(staff_user, name="Ana", owner=staff_user)
    page.post(f"/contacts/{contact.pk}/tasks/", {"title": "Call back", "due_at": "2030-05-01T14:30", "priority": "high", "assignee": ""})
    task = Task.objects.get()
    assert (task.title, task.assignee, task.priority, task.source) == ("Call back", staff_user, "high", "manual")
    response = page.post(f"/tasks/{task.pk}/toggle/", {"done": "1"}, HTTP_HX_REQUEST="true")
    assert 'class="task done"' in response.content.decode()
    task.refresh_from_db()
    assert task.status == "done"
    page.post(f"/tasks/{task.pk}/toggle/", {"done": "0"})
    task.refresh_from_db()
    assert task.status == "open"


def test_task_form_errors_are_shown(page, staff_user):
    contact = make_contact(staff_user, name="Ana")
    response = page.post(f"/contacts/{contact.pk}/tasks/", {"title": "", "due_at": "", "priority": "normal"}, follow=True)
    assert "This field is required" in response.content.decode()
    assert not Task.objects.exists()


def test_tags_and_stage_changes_from_the_page_are_recorded(page, staff_user):
    TagFactory(name="vip")
    _pipeline, (_lead, qualified, _won) = sales_pipeline()
    contact = make_contact(staff_user, name="Ana")
    page.post(f"/contacts/{contact.pk}/tags/", {"tag": "vip"})
    assert list(contact.tags.values_list("name", flat=True)) == ["vip"]
    page.post(f"/contacts/{contact.pk}/tags/", {"remove": "vip"})
    assert not contact.tags.exists()
    page.post(f"/contacts/{contact.pk}/stage/", {"stage": qualified.pk})
    html = page.get(f"/contacts/{contact.pk}/").content.decode()
    assert "Sales: — → Qualified" in html
    assert HistoryEntry.objects.filter(contact=contact, action="stage_changed", source="manual").exists()


def test_create_contact_by_hand_has_source_manual(page, staff_user):
    TagFactory(name="vip")
    CustomFieldFactory(key="plan", label="Plan", type="single_choice", choices=["Pro"], allow_for_ai=False)
    response = page.post("/contacts/new/", {"name": "New Person", "phone": "(202) 555-0188", "email": "NEW@x.com",
                                           "owner": staff_user.pk, "cf_plan": "Pro", "tags": ["vip"]})
    contact = Contact.objects.get()
    assert response["Location"] == f"/contacts/{contact.pk}/"
    assert (contact.source, contact.phone_e164, contact.email_normalized, contact.owner) == ("manual", "+12025550188", "new@x.com", staff_user)
    assert contact.custom == {"plan": "Pro"} and [t.name for t in contact.tags.all()] == ["vip"]


def test_create_with_a_phone_another_contact_has_offers_to_open_it(page, staff_user):
    existing = make_contact(staff_user, name="Ana", phone="+1 202 555 0101")
    response = page.post("/contacts/new/", {"name": "Ana again", "phone": "202-555-0101"})
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="existing-contact"' in html and f'href="/contacts/{existing.pk}/"' in html
    assert Contact.objects.count() == 1 and Contact.objects.get().name == "Ana"


def test_create_shows_service_validation_errors_on_fields(page):
    CustomFieldFactory(key="age", label="Age", type="number")
    response = page.post("/contacts/new/", {"name": "X", "phone": "123", "email": "nope", "cf_age": "old"})
    html = response.content.decode()
    assert "is not a valid phone number" in html and "is not a valid email address" in html
    assert re.search(r'id="id_cf_age".*?<ul class="field-errors"[^>]*><li>Expected a number', html, re.S)
    assert not Contact.objects.exists()


def test_required_custom_fields_must_be_filled_when_editing_by_hand(page, staff_user, agent_actor):
    CustomFieldFactory(key="plan", label="Plan", type="single_choice", choices=["Pro", "Free"], required=True)
    CustomFieldFactory(key="renewal", label="Renewal", type="boolean", required=True)
    CustomFieldFactory(key="memo", label="Memo", type="text")
    form = page.get("/contacts/new/").content.decode()
    assert re.search(r'for="id_cf_plan">Plan <span class="required-mark">\(required\)</span>', form)
    assert "Memo <span" not in form
    response = page.post("/contacts/new/", {"name": "New Person", "cf_plan": "", "cf_renewal": ""})
    html = response.content.decode()
    assert response.status_code == 200 and not Contact.objects.exists()
    assert "Plan is required: fill it in to save." in html and "Renewal is required" in html
    # "No" is an answer, not a blank.
    assert page.post("/contacts/new/", {"name": "New Person", "cf_plan": "Pro", "cf_renewal": "false"}).status_code == 302
    assert Contact.objects.get().custom == {"plan": "Pro", "renewal": False}
    # An agent may leave it empty; the person editing that contact by hand is asked for it.
    agent_made = services.upsert_contact(data={"name": "From chat"}, actor=agent_actor, source=Source.CHAT).contact
    refused = page.post(f"/contacts/{agent_made.pk}/edit/", {"name": "From chat", "company": "Acme"})
    assert "Plan is required" in refused.content.decode()
    agent_made.refresh_from_db()
    assert agent_made.company == ""


def test_edit_records_changes_and_refuses_a_phone_held_by_another(page, staff_user):
    other = make_contact(staff_user, name="Bo", phone="+1 202 555 0102")
    contact = make_contact(staff_user, name="Ana", phone="+1 202 555 0101", company="Old")
    form = page.get(f"/contacts/{contact.pk}/edit/").content.decode()
    assert 'value="Old"' in form
    page.post(f"/contacts/{contact.pk}/edit/", {"name": "Ana", "phone": "+1 202 555 0101", "company": "New Co"})
    contact.refresh_from_db()
    assert contact.company == "New Co"
    entry = HistoryEntry.objects.filter(contact=contact, action="updated").latest("id")
    assert entry.changes["company"] == ["Old", "New Co"] and entry.source == "manual"
    response = page.post(f"/contacts/{contact.pk}/edit/", {"name": "Ana", "phone": "(202) 555-0102"})
    html = response.content.decode()
    assert "already has this phone" in html and f'href="/contacts/{other.pk}/"' in html
    contact.refresh_from_db()
    assert contact.phone_e164 == "+12025550101"


def test_inline_edit_over_htmx_returns_the_form_then_redirects_or_shows_errors(page, staff_user):
    contact = make_contact(staff_user, name="Ana", company="Old")
    form = page.get(f"/contacts/{contact.pk}/edit/", HTTP_HX_REQUEST="true").content.decode()
    assert form.startswith('<div id="contact-form-wrap">') and f'hx-post="/contacts/{contact.pk}/edit/"' in form
    bad = page.post(f"/contacts/{contact.pk}/edit/", {"name": "Ana", "email": "not-an-email"}, HTTP_HX_REQUEST="true")
    assert "is not a valid email address" in bad.content.decode() and "<html" not in bad.content.decode()
    ok = page.post(f"/contacts/{contact.pk}/edit/", {"name": "Ana", "company": "New"}, HTTP_HX_REQUEST="true")
    assert ok.status_code == 204 and ok["HX-Redirect"] == f"/contacts/{contact.pk}/"
    contact.refresh_from_db()
    assert contact.company == "New"


def test_a_colleague_saving_the_same_phone_first_is_offered_not_overwritten(page, staff_user, monkeypatch):
    """Two people creating one contact at once: the check for an existing contact ran before the other
    save committed, and the later save silently overwrote the first one's name and company."""
    from contacts import views

    first = make_contact(staff_user, name="Racer 0", phone="+1 646 555 0199", company="First Co")
    monkeypatch.setattr(views, "_existing_match", lambda cleaned: None)  # the other save lands after this check
    response = page.post("/contacts/new/", {"name": "Racer 1", "phone": "(646) 555-0199", "company": "Second Co"})
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="existing-contact"' in html and f'href="/contacts/{first.pk}/"' in html
    first.refresh_from_db()
    assert (first.name, first.company) == ("Racer 0", "First Co")
    assert Contact.objects.count() == 1


def test_a_file_name_with_quotes_as_a_browser_sends_it_downloads_with_its_own_name(page, staff_user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from contacts.models import ContactFile

    contact = make_contact(staff_user, name="Ana")
    upload = SimpleUploadedFile('名前 with spaces & %22quotes%22.txt', b"hello", content_type="text/plain")
    page.post(f"/contacts/{contact.pk}/files/", {"file": upload})
    stored = ContactFile.objects.get()
    assert stored.name == '名前 with spaces & "quotes".txt'
    response = page.get(f"/contacts/{contact.pk}/files/{stored.pk}/")
    assert "%2522" not in response["Content-Disposition"] and "%22quotes%22" in response["Content-Disposition"]


def test_a_tag_deleted_while_the_form_was_open_is_named_not_silently_refused(page):
    TagFactory(name="vip")
    response = page.post("/contacts/new/", {"name": "New Person", "email": "np@example.com", "tags": ["nonexistent"]})
    html = response.content.decode()
    assert response.status_code == 200 and 'data-testid="tags-errors"' in html
    assert "nonexistent is not one of the available choices" in html
    assert not Contact.objects.exists()
