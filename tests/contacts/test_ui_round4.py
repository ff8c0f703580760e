"""Web UI, round 4: the server side of what a browser test of a sales user's day found.

Double submissions, a move without a stage, bulk actions without a chosen action, sorting inside a
saved view, task counts after "done", refused tasks/notes/files keeping what was typed, the way
back to the list, field labels instead of keys, filters that cannot be applied, and signing out.
(The JavaScript side is in tests/e2e/test_ui_round4.py.)
"""

import datetime as dt
import json
import re
import threading

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import include, path
from django.utils import timezone

from contacts import services
from contacts.models import Contact, HistoryEntry, Note, SavedView, Source, Task
from contacts.views import SUBMISSION_TOKEN_FIELD, LogoutView
from crm_hub.actors import Actor
from forms_app.models import Form
from tests.contacts.factories import CustomFieldFactory, TagFactory
from tests.contacts.ui_helpers import make_contact, names_in, sales_pipeline, team
from tests.forms_app.factories import CONTACT_FIELDS

pytestmark = pytest.mark.django_db

TOKEN = "tok_" + "a" * 20


def flashed(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- 2. One save per submission --------------------------------------------------------------------


def test_pages_with_save_forms_carry_a_fresh_submission_token(signed_in, staff_user):
    contact = make_contact(staff_user, name="Ana")

    def tokens(url):
        html = signed_in.get(url).content.decode()
        return re.findall(rf'name="{SUBMISSION_TOKEN_FIELD}" value="([A-Za-z0-9_-]{{16,}})"', html)

    assert len(tokens(f"/contacts/{contact.pk}/")) == 3  # note, task and file forms
    first, second = tokens("/contacts/new/"), tokens("/contacts/new/")
    assert len(first) == len(second) == 1 and first != second


def test_a_double_post_of_the_new_contact_form_creates_one_contact(signed_in):
    data = {"name": "Dora Double", "phone": "", "email": "", SUBMISSION_TOKEN_FIELD: TOKEN}
    first = signed_in.post("/contacts/new/", data)
    second = signed_in.post("/contacts/new/", data, follow=True)
    contact = Contact.objects.get()
    assert first.status_code == 302 and first["Location"] == contact.get_absolute_url()
    assert second.redirect_chain[0][0] == contact.get_absolute_url()
    assert "That form was sent twice; it was saved once." in flashed(second)


def test_a_double_post_of_a_note_or_a_task_adds_it_once(signed_in, staff_user):
    contact = make_contact(staff_user, name="Ana")
    note = {"body": "<div>Called</div>", SUBMISSION_TOKEN_FIELD: TOKEN}
    task = {"title": "Call back", "due_at": "2030-05-01T14:30", "priority": "normal", "assignee": "",
            SUBMISSION_TOKEN_FIELD: TOKEN}
    for _ in range(2):
        assert signed_in.post(f"/contacts/{contact.pk}/notes/", note)["Location"] == contact.get_absolute_url()
        assert signed_in.post(f"/contacts/{contact.pk}/tasks/", task)["Location"] == contact.get_absolute_url()
    assert Note.objects.count() == 1 and Task.objects.count() == 1


def test_a_double_post_of_save_and_publish_saves_one_form(client, admin_user):
    client.force_login(admin_user)
    data = {"title": "Newsletter", "fields_json": json.dumps([dict(f) for f in CONTACT_FIELDS]), "action": "publish",
            SUBMISSION_TOKEN_FIELD: TOKEN}
    first = client.post("/forms/new/", data)
    second = client.post("/forms/new/", data)
    form = Form.objects.get()
    assert first["Location"] == second["Location"] == form.get_absolute_url()
    assert 'name="submission_token"' in client.get(f"/forms/{form.pk}/edit/").content.decode()


def test_a_repeat_that_arrives_while_the_first_is_still_saving_waits_for_its_result(signed_in, staff_user):
    contact = make_contact(staff_user, name="Ana")
    url = f"/contacts/{contact.pk}/notes/"
    key = f"crm:submission:{staff_user.pk}:{url}:{TOKEN}"
    cache.add(key, "pending", 60)  # the first POST claimed the token and is still running
    threading.Timer(0.3, lambda: cache.set(key, contact.get_absolute_url(), 60)).start()
    response = signed_in.post(url, {"body": "twice", SUBMISSION_TOKEN_FIELD: TOKEN})
    assert response["Location"] == contact.get_absolute_url()
    assert not Note.objects.exists()


def test_a_refused_post_frees_its_token_and_posts_without_a_token_still_work(signed_in, staff_user):
    contact = make_contact(staff_user, name="Ana")
    url = f"/contacts/{contact.pk}/tasks/"
    refused = signed_in.post(url, {"title": "", "due_at": "", "priority": "normal", SUBMISSION_TOKEN_FIELD: TOKEN})
    assert refused.status_code == 400
    fixed = signed_in.post(url, {"title": "Call", "due_at": "2030-05-01T14:30", "priority": "normal",
                                 SUBMISSION_TOKEN_FIELD: TOKEN})
    assert fixed.status_code == 302 and Task.objects.count() == 1
    for _ in range(2):
        signed_in.post(url, {"title": "No token", "due_at": "2030-05-01T14:30", "priority": "normal"})
    assert Task.objects.filter(title="No token").count() == 2


def test_a_token_is_only_replayed_for_the_user_who_sent_it(client, staff_user):
    _admin, alice, bob = team()
    contact = make_contact(alice, name="Ana")
    for user in (alice, bob):
        client.force_login(user)
        client.post(f"/contacts/{contact.pk}/notes/", {"body": f"from {user.username}", SUBMISSION_TOKEN_FIELD: TOKEN})
    assert sorted(Note.objects.values_list("body", flat=True)) == ["<p>from alice</p>", "<p>from bob</p>"]


# --- 3. Move without a stage ------------------------------------------------------------------------


def test_move_with_not_in_this_pipeline_chosen_says_so_on_the_contact_page(signed_in, staff_user):
    pipeline, _stages = sales_pipeline()
    contact = make_contact(staff_user, name="Ana")
    response = signed_in.post(f"/contacts/{contact.pk}/stage/", {"stage": "", "pipeline": pipeline.pk}, follow=True)
    assert response.redirect_chain == [(contact.get_absolute_url(), 302)]
    assert flashed(response) == ["Choose a stage in Sales to move Ana to; nothing was changed."]
    assert not contact.stage_memberships.exists()
    htmx = signed_in.post(f"/contacts/{contact.pk}/stage/", {"stage": ""}, HTTP_HX_REQUEST="true")
    assert htmx.status_code == 204 and htmx["HX-Redirect"] == contact.get_absolute_url()


def test_move_button_waits_for_a_stage(signed_in, staff_user):
    pipeline, _stages = sales_pipeline()
    contact = make_contact(staff_user, name="Ana")
    html = signed_in.get(f"/contacts/{contact.pk}/").content.decode()
    assert f'data-needs-value="#stage-{pipeline.pk}"' in html
    assert f'<input type="hidden" name="pipeline" value="{pipeline.pk}">' in html


# --- 4. Bulk actions never run a default ---------------------------------------------------------------


@pytest.fixture
def owned(staff_user):
    _admin, alice, _bob = team()
    return [make_contact(staff_user, name=f"Owned {i}", owner=alice) for i in range(3)], alice


def test_bulk_on_all_matching_without_a_chosen_action_changes_nothing(signed_in, owned):
    contacts, alice = owned
    response = signed_in.post("/contacts/bulk/", {"scope": "all", "query": "", "owner": "none"}, follow=True)
    assert "Choose a bulk action first; nothing was changed." in flashed(response)
    assert Contact.objects.filter(owner=alice).count() == 3
    assert not HistoryEntry.objects.filter(summary__startswith="Owner set").exists()


def test_bulk_assign_owner_needs_an_owner_chosen(signed_in, owned):
    contacts, alice = owned
    response = signed_in.post("/contacts/bulk/", {"scope": "all", "query": "", "action": "assign_owner", "owner": ""},
                              follow=True)
    assert any(m.startswith("Choose the owner to assign") for m in flashed(response))
    assert Contact.objects.filter(owner=alice).count() == 3
    signed_in.post("/contacts/bulk/", {"scope": "all", "query": "", "action": "assign_owner", "owner": "none"})
    assert not Contact.objects.filter(owner__isnull=False).exists()  # "Nobody", chosen on purpose


def test_bulk_bar_has_no_default_action_and_ties_each_value_to_its_action(signed_in, owned):
    html = signed_in.get("/contacts/").content.decode()
    action = re.search(r'<select name="action"[^>]*>(.*?)</select>', html, re.S)
    assert 'required' in action.group(0)
    assert re.search(r'<option value="" selected>Choose an action…</option>', action.group(1))
    assert html.count('data-bulk-for="') == 3 and 'data-bulk-for="add_tag remove_tag"' in html
    assert 'data-total="3"' in html and 'data-total-exact="1"' in html
    owner = re.search(r'<select name="owner" aria-label="Owner"[^>]*>(.*?)</select>', html, re.S).group(1)
    assert owner.startswith('<option value="">Choose an owner…</option>')


# --- 5. Sorting and filtering inside a saved view -------------------------------------------------------


@pytest.fixture
def vip_view(staff_user):
    vip = TagFactory(name="vip")
    for name in ("Zoe", "Adam", "Mia"):
        make_contact(staff_user, name=name, tags=["vip"])
    make_contact(staff_user, name="Outsider")
    view = services.save_view(owner=staff_user, name="VIPs", query=f"tag={vip.pk}&sort=-created")
    return view, vip


def test_a_column_header_inside_a_saved_view_sorts_and_keeps_the_view(signed_in, vip_view):
    view, _vip = vip_view
    saved = signed_in.get(f"/contacts/?view={view.pk}")
    assert names_in(saved) == ["Mia", "Adam", "Zoe"] and 'data-testid="view-modified"' not in saved.content.decode()
    header = re.search(r'<th scope="col"><a href="\?([^"]+)"[^>]*>Name', saved.content.decode()).group(1)
    sorted_page = signed_in.get("/contacts/?" + header.replace("&amp;", "&"))
    html = sorted_page.content.decode()
    assert names_in(sorted_page) == ["Adam", "Mia", "Zoe"]
    assert "<h1>VIPs</h1>" in html and 'data-testid="view-modified"' in html
    assert 'data-testid="update-view"' in html  # the owner can save the change into the view
    assert names_in(signed_in.get(f"/contacts/?view={view.pk}&sort=name")) == ["Adam", "Mia", "Zoe"]


def test_an_empty_parameter_in_the_url_clears_what_the_view_saved(signed_in, vip_view):
    view, _vip = vip_view
    response = signed_in.get(f"/contacts/?view={view.pk}&tag=&sort=name")
    assert names_in(response) == ["Adam", "Mia", "Outsider", "Zoe"]
    html = response.content.decode()
    # The page's links (here the export's) keep the override, so the next page does not bring the tag back.
    assert f"export/?tag=&amp;sort=name&amp;view={view.pk}&amp;format=csv" in html
    assert f'<input type="hidden" name="view" value="{view.pk}">' in html


def test_updating_the_view_from_the_modified_list_saves_the_new_sort(signed_in, vip_view, staff_user):
    view, vip = vip_view
    html = signed_in.get(f"/contacts/?view={view.pk}&sort=name").content.decode()
    form = re.search(r'<form method="post" action="/contacts/views/" class="inline-form">(.*?)</form>', html, re.S).group(1)
    data = dict(re.findall(r'name="(query|name)" value="([^"]*)"', form))
    signed_in.post("/contacts/views/", {**data, "query": data["query"].replace("&amp;", "&")})
    view.refresh_from_db()
    assert SavedView.objects.count() == 1 and "sort=name" in view.query and f"tag={vip.pk}" in view.query


# --- 6. My tasks: counts follow "done" ------------------------------------------------------------------


def test_marking_a_task_done_updates_the_counts_and_keeps_next_on_the_page(signed_in, staff_user):
    contact = make_contact(staff_user, name="Ana")
    actor = Actor.for_user(staff_user)
    now = timezone.localtime()
    late = services.create_task(contact=contact, title="Late", due_at=now - dt.timedelta(days=2),
                                assignee=staff_user.pk, actor=actor, source=Source.MANUAL)
    services.create_task(contact=contact, title="Later", due_at=now + dt.timedelta(days=3),
                         assignee=staff_user.pk, actor=actor, source=Source.MANUAL)
    page = signed_in.get("/tasks/").content.decode()
    assert '<p class="subtitle" id="tasks-total">2 open tasks</p>' in page
    response = signed_in.post(f"/tasks/{late.pk}/toggle/", {"done": "1", "show_contact": "1", "next": "/tasks/"},
                              HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'class="task done"' in html
    assert '<input type="hidden" name="next" value="/tasks/">' in html
    assert re.search(r'id="tasks-total" hx-swap-oob="true">1 open task<', html)
    assert re.search(r'id="count-overdue" hx-swap-oob="true">0<', html)
    assert re.search(r'id="count-upcoming" hx-swap-oob="true">1<', html)
    reopened = signed_in.post(f"/tasks/{late.pk}/toggle/", {"done": "0", "show_contact": "1", "next": "/tasks/"},
                              HTTP_HX_REQUEST="true").content.decode()
    assert re.search(r'id="tasks-total" hx-swap-oob="true">2 open tasks<', reopened)


def test_toggling_on_the_contact_page_sends_no_counts(signed_in, staff_user):
    contact = make_contact(staff_user, name="Ana")
    task = services.create_task(contact=contact, title="Call", due_at=timezone.now(), actor=Actor.for_user(staff_user),
                                source=Source.MANUAL)
    html = signed_in.post(f"/tasks/{task.pk}/toggle/", {"done": "1", "show_contact": "0", "next": contact.get_absolute_url()},
                          HTTP_HX_REQUEST="true").content.decode()
    assert "hx-swap-oob" not in html and f'name="next" value="{contact.get_absolute_url()}"' in html


# --- 7. A refused task, note or file comes back with what was typed --------------------------------------


def test_a_refused_task_comes_back_in_its_tab_with_the_title_and_labelled_errors(signed_in, staff_user):
    contact = make_contact(staff_user, name="Ana")
    response = signed_in.post(f"/contacts/{contact.pk}/tasks/", {"title": "Send the quote", "due_at": "", "priority": "high"})
    html = response.content.decode()
    assert response.status_code == 400
    assert 'value="Send the quote"' in html
    assert "Due: This field is required." in html and "due_at" not in re.search(
        r'data-testid="task-errors">(.*?)</div>', html, re.S).group(1)
    assert re.search(r'id="panel-task" aria-labelledby="tab-task">', html)  # open, not hidden
    assert re.search(r'id="panel-note" aria-labelledby="tab-note" hidden>', html)
    assert '<option value="high" selected>High</option>' in html
    assert not Task.objects.exists()


def test_a_refused_note_keeps_its_text(signed_in, staff_user):
    contact = make_contact(staff_user, name="Ana")
    response = signed_in.post(f"/contacts/{contact.pk}/notes/", {"body": "<div>   </div>"})
    html = response.content.decode()
    assert response.status_code == 400
    assert 'data-testid="note-errors"' in html and 'value="&lt;div&gt;   &lt;/div&gt;"' in html


def test_a_refused_file_is_explained_in_the_file_tab_in_megabytes_and_kinds(signed_in, staff_user, settings):
    settings.CRM_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
    contact = make_contact(staff_user, name="Ana")
    big = SimpleUploadedFile("big.txt", b"x" * (10 * 1024 * 1024 + 1), content_type="text/plain")
    html = signed_in.post(f"/contacts/{contact.pk}/files/", {"file": big}).content.decode()
    errors = re.search(r'data-testid="file-errors">(.*?)</span>', html, re.S).group(1)
    # Just over the limit, both round to "10 MB": the message tells them apart in bytes.
    assert "This file is 10,485,761 bytes; the limit is 10,485,760 bytes." in errors
    bigger = SimpleUploadedFile("bigger.txt", b"x" * (12 * 1024 * 1024), content_type="text/plain")
    more = signed_in.post(f"/contacts/{contact.pk}/files/", {"file": bigger}).content.decode()
    assert "This file is 12 MB; the limit is 10 MB." in more
    assert re.search(r'id="panel-file" aria-labelledby="tab-file">', html)
    exe = SimpleUploadedFile("setup.exe", b"MZ\x90\x00" + b"\x00" * 60, content_type="application/octet-stream")
    errors = re.search(r'data-testid="file-errors">(.*?)</span>',
                       signed_in.post(f"/contacts/{contact.pk}/files/", {"file": exe}).content.decode(), re.S).group(1)
    assert errors.startswith("Files of this kind (.exe) are not accepted. Allowed: PDF, images (PNG, JPEG")
    assert "application/" not in errors


# --- 9. The way back to the list ----------------------------------------------------------------------


def test_back_to_contacts_returns_to_the_list_the_user_came_from(signed_in, staff_user):
    contact = make_contact(staff_user, name="Ana")
    page = f"/contacts/{contact.pk}/"
    from_list = signed_in.get(page, HTTP_REFERER="http://testserver/contacts/?tag=1&sort=name").content.decode()
    assert 'href="/contacts/?tag=1&amp;sort=name" data-back-to-list data-back-given' in from_list
    explicit = signed_in.get(page, {"back": "/contacts/?view=3&sort=-created"}).content.decode()
    assert 'href="/contacts/?view=3&amp;sort=-created" data-back-to-list data-back-given' in explicit
    for bad in ("https://evil.example/contacts/", "//evil.example/contacts/", "/admin/", "javascript:alert(1)",
                "/contacts/4/"):
        html = signed_in.get(page, {"back": bad}).content.decode()
        assert 'href="/contacts/" data-back-to-list>' in html
    other_site = signed_in.get(page, HTTP_REFERER="https://evil.example/contacts/?q=x").content.decode()
    assert 'href="/contacts/" data-back-to-list>' in other_site


# --- 10. Labels, not keys --------------------------------------------------------------------------------


def test_saved_message_and_timeline_name_fields_by_their_labels(signed_in, staff_user):
    CustomFieldFactory(key="intent_score", label="Intent score", type="number")
    contact = make_contact(staff_user, name="Ana")
    response = signed_in.post(f"/contacts/{contact.pk}/edit/", {"name": "Ana", "company": "Acme", "cf_intent_score": "7"},
                              follow=True)
    assert "Saved: Company and Intent score changed." in flashed(response)
    html = response.content.decode()
    assert "Updated Company, Intent score" in html and "custom.intent_score" not in html
    assert re.search(r'<span class="muted">Intent score:</span>\s*<ins>7</ins>', html)


def test_a_phone_another_contact_has_names_that_contact_with_a_link(signed_in, staff_user):
    other = make_contact(staff_user, name="John Johnson", phone="+1 202 555 0199")
    contact = make_contact(staff_user, name="Ana")
    html = signed_in.post(f"/contacts/{contact.pk}/edit/", {"name": "Ana", "phone": "(202) 555-0199"}).content.decode()
    assert f'Already used by <a href="/contacts/{other.pk}/">John Johnson (#{other.pk})</a>.' in html


def test_a_phone_held_by_a_contact_the_user_cannot_see_is_not_named(client, settings):
    settings.CRM_SALES_SEE_OWN_ONLY = True
    _admin, alice, bob = team()
    make_contact(alice, name="Secret Sam", phone="+1 202 555 0177", owner=alice)
    mine = make_contact(bob, name="Bo", owner=bob)
    client.force_login(bob)
    html = client.post(f"/contacts/{mine.pk}/edit/", {"name": "Bo", "phone": "2025550177", "owner": bob.pk}).content.decode()
    assert "Already used by another contact you cannot see" in html and "Secret Sam" not in html


# --- 11. Filters that cannot be applied -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("stage=999", "The stage filter refers to a stage that no longer exists."),
        ("tag=999", "The tag filter refers to a tag that no longer exists."),
        ("created_after=notadate", "The “Created” date filter is not a date (use YYYY-MM-DD)."),
        ("cf_plan=Gold", "The “Plan” filter has a value that is not one of its choices."),
    ],
)
def test_a_filter_that_cannot_be_applied_lists_nothing_and_says_which(signed_in, staff_user, query, message):
    CustomFieldFactory(key="plan", label="Plan", type="single_choice", choices=["Starter", "Pro"])
    make_contact(staff_user, name="Ana")
    html = signed_in.get(f"/contacts/?{query}&q=").content.decode()
    assert names_in(signed_in.get(f"/contacts/?{query}")) == []
    warning = re.search(r'data-testid="filter-problems">(.*?)</div>\s*</div>', html, re.S).group(1)
    assert message in warning and "Remove this filter" in warning
    assert "No contacts shown" in html and "Select a valid choice" not in html


def test_bulk_and_export_refuse_a_filter_that_cannot_be_applied(signed_in, staff_user):
    make_contact(staff_user, name="Ana", tags=[])
    TagFactory(name="vip")
    response = signed_in.post("/contacts/bulk/", {"scope": "all", "query": "stage=999", "action": "add_tag", "tag": "vip"},
                              follow=True)
    assert any("stage that no longer exists" in m for m in flashed(response))
    assert not Contact.objects.filter(tags__name="vip").exists()
    export = signed_in.get("/contacts/export/", {"stage": "999", "format": "csv"})
    assert export.status_code == 302 and export["Location"] == "/contacts/?stage=999"


# --- 12. Cells and footer ---------------------------------------------------------------------------------


def test_phone_and_email_cells_do_not_wrap_and_the_footer_counts_contacts(signed_in, staff_user, monkeypatch):
    monkeypatch.setattr("contacts.views.PAGE_SIZE", 2)
    for i in range(3):
        make_contact(staff_user, name=f"P{i}", phone=f"+1 202 555 010{i}", email=f"p{i}@example.com")
    first = signed_in.get("/contacts/").content.decode()
    assert '<td class="cell-phone">(202) 555-0102</td>' in first and '<td class="cell-email">p2@example.com</td>' in first
    assert "Showing 2 contacts (2 per page)" in first
    next_url = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "Showing 1 contact (2 per page)" in signed_in.get("/contacts/" + next_url).content.decode()


# --- 8. The save-view panel is styled by a class, not an inline width ----------------------------------------


def test_save_view_panel_has_no_inline_position(signed_in):
    html = signed_in.get("/contacts/").content.decode()
    panel = re.search(r'<div class="([^"]*)" data-testid="save-view-panel"([^>]*)>', html)
    assert "dropdown-panel" in panel.group(1) and "style" not in panel.group(2)


# --- 13. Signing out ------------------------------------------------------------------------------------------

# crm_hub/urls.py is not changed here; these tests mount contacts.views.LogoutView the way it should be.
urlpatterns = [
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("", include("crm_hub.urls")),
]


@pytest.mark.urls("tests.contacts.test_ui_round4")
def test_get_on_logout_asks_to_sign_out_and_post_signs_out_with_a_message(client, staff_user):
    client.force_login(staff_user)
    page = client.get("/accounts/logout/")
    assert page.status_code == 200
    assert re.search(r'<form method="post" action="/accounts/logout/">\s*<input type="hidden" name="csrfmiddlewaretoken"',
                     page.content.decode())
    response = client.post("/accounts/logout/", follow=True)
    assert response.redirect_chain[-1][0] == "/accounts/login/"
    assert "You are signed out." in response.content.decode()
    assert client.get("/contacts/").status_code == 302
    # Signed out already: the login page, not a question.
    assert client.get("/accounts/logout/")["Location"] == "/accounts/login/"


def test_a_saved_view_naming_a_deleted_stage_warns_and_its_remove_link_overrides_the_view(signed_in, staff_user):
    make_contact(staff_user, name="Ana")
    view = services.save_view(owner=staff_user, name="Leads", query="stage=99999&sort=name")
    html = signed_in.get(f"/contacts/?view={view.pk}").content.decode()
    assert "The stage filter refers to a stage that no longer exists." in html
    link = re.search(r'<a href="/contacts/\?([^"]+)">Remove this filter</a>', html).group(1).replace("&amp;", "&")
    removed = signed_in.get("/contacts/?" + link)
    assert names_in(removed) == ["Ana"] and "<h1>Leads</h1>" in removed.content.decode()
