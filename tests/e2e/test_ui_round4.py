"""Round 4 in a real browser: what only JavaScript (HTMX, app.js) and CSS decide.

Columns of the board load more cards when scrolled, a form is sent once however often its button
is clicked, a bulk action asks before changing every matching contact and shows only its own value
control, Move waits for a stage, the save-view panel fits a phone, task counts follow "done", and
"← Contacts" returns to the list this tab showed.
"""

import datetime as dt
import re
from urllib.parse import quote

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from contacts import services
from contacts.models import Contact, Source
from contacts.selectors import BOARD_COLUMN_SIZE
from crm_hub.actors import Actor
from tests.contacts.factories import TagFactory, UserFactory
from tests.contacts.ui_helpers import make_contact, sales_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "e2e-pass-word-4"


@pytest.fixture
def seller(transactional_db):
    return UserFactory(username="seller4", first_name="Sam", last_name="Seller", is_staff=True, password=PASSWORD)


def login(page, live_server, next_path="/contacts/"):
    page.goto(f"{live_server.url}/accounts/login/?next={quote(next_path)}")
    page.fill("#id_username", "seller4")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(next_path) + "$"))


# --- 1. Board columns scroll -----------------------------------------------------------------------


def test_scrolling_a_board_column_loads_its_further_cards(page, live_server, seller, shoot, browser_errors):
    pipeline, (lead, qualified, _won) = sales_pipeline()
    actor = Actor.for_user(seller)
    extra = 7
    for stage, prefix in ((lead, "L"), (qualified, "Q")):
        for i in range(BOARD_COLUMN_SIZE + extra):
            contact = make_contact(seller, name=f"{prefix}{i:02d}")
            services.move_to_stage(contact=contact, pipeline=pipeline, stage=stage, actor=actor, source=Source.MANUAL)
    page.set_viewport_size({"width": 1366, "height": 900})
    login(page, live_server, "/pipeline/")
    lead_cards = page.locator(f'.board-cards[data-stage="{lead.pk}"] .board-card')
    qualified_cards = page.locator(f'.board-cards[data-stage="{qualified.pk}"] .board-card')
    expect(lead_cards).to_have_count(BOARD_COLUMN_SIZE)
    page.wait_for_timeout(300)  # nothing loads before the column is scrolled
    expect(lead_cards).to_have_count(BOARD_COLUMN_SIZE)
    shoot("01-board-first-cards")

    # Scroll the second column only: its own cards come, the first column's do not.
    page.locator(f'.board-cards[data-stage="{qualified.pk}"]').evaluate("el => el.scrollTop = el.scrollHeight")
    expect(qualified_cards).to_have_count(BOARD_COLUMN_SIZE + extra)
    expect(lead_cards).to_have_count(BOARD_COLUMN_SIZE)
    page.locator(f'.board-cards[data-stage="{lead.pk}"]').evaluate("el => el.scrollTop = el.scrollHeight")
    expect(lead_cards).to_have_count(BOARD_COLUMN_SIZE + extra)
    expect(page.locator(".board-more")).to_have_count(0)
    names = lead_cards.locator(".name").all_inner_texts()
    assert sorted(names) == [f"L{i:02d}" for i in range(BOARD_COLUMN_SIZE + extra)]
    shoot("02-board-after-scrolling-columns")
    assert browser_errors["page"] == [] and browser_errors["console"] == []


# --- 2. A form is sent once ---------------------------------------------------------------------------


def test_a_second_click_while_the_form_is_on_its_way_sends_nothing(page, live_server, seller, shoot, browser_errors):
    login(page, live_server, "/contacts/new/")
    posts = []

    def answer(route):
        # "204 No Content" keeps the browser on the page, as a slow answer would for a while.
        if route.request.method == "POST":
            posts.append(route.request.post_data)
            route.fulfill(status=204)
        else:
            route.continue_()

    page.route("**/contacts/new/", answer)
    page.fill("#id_name", "Dora Double")
    button = page.locator("#contact-form button[type=submit]")
    button.click()
    expect(button).to_be_disabled()
    shoot("01-create-button-disabled-while-sending")
    page.evaluate("document.getElementById('contact-form').requestSubmit()")  # Enter in a field, say
    page.wait_for_timeout(300)
    assert len(posts) == 1 and "name=Dora+Double" in posts[0]
    sent_token = re.search(r"submission_token=([^&]+)", posts[0]).group(1)

    # Back to the form from history: usable again, with a token that was not sent yet.
    page.unroute("**/contacts/new/")
    page.goto(f"{live_server.url}/contacts/")
    page.go_back()
    expect(button).to_be_enabled()
    assert page.locator('input[name="submission_token"]').input_value() != sent_token
    assert browser_errors["page"] == []


def test_the_clicked_button_still_says_which_one_it_was(page, live_server, seller):
    seller.is_superuser = True
    seller.save(update_fields=["is_superuser"])
    login(page, live_server, "/forms/new/")
    posts = []

    def answer(route):
        if route.request.method == "POST":
            posts.append(route.request.post_data)
            route.fulfill(status=204)
        else:
            route.continue_()

    page.route("**/forms/new/", answer)
    page.fill("#id_title", "Newsletter")
    publish = page.locator(".form-actions button[value=publish]")
    publish.click()
    expect(publish).to_be_disabled()
    page.wait_for_timeout(200)
    assert len(posts) == 1 and "action=publish" in posts[0]


# --- 3. Move waits for a stage ------------------------------------------------------------------------


def test_move_is_disabled_until_a_stage_is_chosen(page, live_server, seller, shoot):
    pipeline, (_lead, qualified, _won) = sales_pipeline()
    contact = make_contact(seller, name="Ana")
    login(page, live_server, f"/contacts/{contact.pk}/")
    move = page.locator(f'button[data-needs-value="#stage-{pipeline.pk}"]')
    expect(move).to_be_disabled()
    shoot("01-move-disabled")
    page.select_option(f"#stage-{pipeline.pk}", label="Qualified")
    expect(move).to_be_enabled()
    move.click()
    expect(page.locator(".message-success")).to_contain_text("Moved to Sales: Qualified")
    assert contact.stage_memberships.get().stage == qualified


# --- 4. Bulk actions ask first -------------------------------------------------------------------------


def test_bulk_action_shows_its_own_value_and_asks_with_the_count_before_changing_all(page, live_server, seller, shoot):
    TagFactory(name="vip")
    for name in ("Ana", "Bo", "Cy"):
        make_contact(seller, name=name, owner=seller)
    page.set_viewport_size({"width": 1366, "height": 900})
    login(page, live_server)
    bulk = page.locator("#bulk-form")
    owner, tag, stage = (bulk.locator(f'select[name="{n}"]') for n in ("owner", "tag", "stage"))
    for control in (owner, tag, stage):
        expect(control).to_be_hidden()
    expect(bulk.locator('select[name="action"]')).to_have_value("")

    # Apply with no action chosen: the browser asks for one, nothing is sent.
    bulk.locator("input[name=scope][value=all]").check()
    bulk.locator("button[type=submit]").click()
    page.wait_for_timeout(300)
    assert page.url.endswith("/contacts/")

    bulk.locator('select[name="action"]').select_option("add_tag")
    expect(tag).to_be_visible()
    expect(owner).to_be_hidden()
    bulk.locator('select[name="action"]').select_option("assign_owner")
    expect(owner).to_be_visible()
    expect(tag).to_be_hidden()
    owner.select_option("none")
    shoot("01-bulk-assign-owner-chosen")

    asked = []

    def answer(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", answer)
    bulk.locator("button[type=submit]").click()
    page.wait_for_timeout(300)
    assert asked == ["Set the owner of 3 matching contacts to “Nobody (remove the owner)”? "
                     "This changes every one of them at once."]
    assert Contact.objects.filter(owner=seller).count() == 3


# --- 8. The save-view panel on a phone ---------------------------------------------------------------------


def test_save_view_panel_fits_a_phone_screen(page, live_server, seller, shoot):
    make_contact(seller, name="Ana")
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, live_server)
    page.click("summary:has-text('Save view')")
    panel = page.get_by_test_id("save-view-panel")
    expect(panel).to_be_visible()
    box = panel.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shoot("01-save-view-panel-phone")


# --- 6. Task counts follow "done" ------------------------------------------------------------------------------


def test_marking_a_task_done_updates_the_heading_and_section_counts(page, live_server, seller, shoot):
    contact = make_contact(seller, name="Ana")
    actor = Actor.for_user(seller)
    now = timezone.now()
    for title, delta in (("Late call", -3), ("Old email", -2), ("Next week", 7)):
        services.create_task(contact=contact, title=title, due_at=now + dt.timedelta(days=delta), assignee=seller.pk,
                             actor=actor, source=Source.MANUAL)
    login(page, live_server, "/tasks/")
    expect(page.locator("#tasks-total")).to_have_text("3 open tasks")
    expect(page.locator("#count-overdue")).to_have_text("2")
    page.get_by_role("button", name="Mark Late call done").click()
    expect(page.locator("#tasks-total")).to_have_text("2 open tasks")
    expect(page.locator("#count-overdue")).to_have_text("1")
    expect(page.locator("#count-upcoming")).to_have_text("1")
    shoot("01-task-done-counts")
    # The row's form still points at this page, and Reopen works from it.
    assert page.locator('.task.done input[name="next"]').get_attribute("value") == "/tasks/"
    page.get_by_role("button", name="Reopen Late call").click()
    expect(page.locator("#tasks-total")).to_have_text("3 open tasks")
    expect(page.locator("#count-overdue")).to_have_text("2")


# --- 9. Back to the list as it was ------------------------------------------------------------------------------


def test_back_to_contacts_keeps_the_filters_after_working_on_the_contact(page, live_server, seller, shoot):
    vip = TagFactory(name="vip")
    ana = make_contact(seller, name="Ana", tags=["vip"])
    make_contact(seller, name="Bo")
    login(page, live_server, f"/contacts/?tag={vip.pk}&sort=name")
    page.click("#contact-table a.cell-main:has-text('Ana')")
    expect(page.get_by_test_id("contact-name")).to_have_text("Ana")
    back = page.locator("a[data-back-to-list]")
    expect(back).to_have_attribute("href", f"/contacts/?tag={vip.pk}&sort=name")
    # After an action the page reloads from the action's redirect: the link still knows the list.
    page.click("#tab-task")
    page.fill("#task-title", "Call back")
    page.click("#task-form button[type=submit]")
    expect(page.locator(".message-success")).to_contain_text("Task added.")
    expect(back).to_have_attribute("href", f"/contacts/?tag={vip.pk}&sort=name")
    back.click()
    expect(page.locator("#contact-table a.cell-main")).to_have_text(["Ana"])
    assert ana.tasks.count() == 1


# --- Pages whose server-side answers changed, as a person sees them ------------------------------------------


def test_refusals_and_warnings_read_as_sentences(page, live_server, seller, shoot, settings):
    settings.CRM_MAX_UPLOAD_BYTES = 1024
    vip = TagFactory(name="vip")
    for i in range(3):
        make_contact(seller, name=f"Person {i}", phone=f"+1 202 555 01{i:02d}", email=f"person.{i}@example.com",
                     tags=["vip"])
    ana = make_contact(seller, name="Ana Lima", phone="+1 202 555 0199")
    view = services.save_view(owner=seller, name="VIPs", query=f"tag={vip.pk}")
    page.set_viewport_size({"width": 1366, "height": 900})
    login(page, live_server, "/contacts/?stage=999")
    expect(page.get_by_test_id("filter-problems")).to_contain_text(
        "The stage filter refers to a stage that no longer exists.")
    expect(page.locator("#contact-table")).to_have_count(0)
    shoot("01-list-with-a-filter-that-cannot-be-applied")

    page.goto(f"{live_server.url}/contacts/?view={view.pk}")
    page.click("#contact-table th a:has-text('Name')")
    expect(page.locator("h1")).to_have_text("VIPs")
    expect(page.get_by_test_id("view-modified")).to_be_visible()
    expect(page.locator("#contact-table a.cell-main")).to_have_text(["Person 0", "Person 1", "Person 2"])
    shoot("02-saved-view-sorted-by-a-header")

    page.goto(f"{live_server.url}/contacts/{ana.pk}/")
    page.click("#tab-task")
    page.fill("#task-title", "Send the quote")
    page.evaluate("document.getElementById('task-due').removeAttribute('required')")
    page.fill("#task-due", "")
    page.click("#task-form button[type=submit]")
    expect(page.get_by_test_id("task-errors")).to_contain_text("Due: This field is required.")
    expect(page.locator("#task-title")).to_have_value("Send the quote")
    expect(page.locator("#panel-task")).to_be_visible()
    shoot("03-task-refused-keeps-the-title")

    page.click("#tab-file")
    page.set_input_files("#file-input", files=[{"name": "setup.exe", "mimeType": "application/octet-stream",
                                                "buffer": b"MZ" + b"\x00" * 60}])
    page.click("#file-form button[type=submit]")
    expect(page.get_by_test_id("file-errors")).to_contain_text("Files of this kind (.exe) are not accepted.")
    shoot("04-file-refused-in-words")

    page.goto(f"{live_server.url}/contacts/{ana.pk}/")
    page.get_by_test_id("edit-inline").click()
    page.fill("#contact-form #id_phone", "(202) 555-0100")
    page.click("#contact-form button[type=submit]")
    expect(page.locator("#contact-form .field-errors")).to_contain_text("Already used by Person 0")
    shoot("05-phone-already-used-by")


@pytest.mark.urls("tests.contacts.test_ui_round4")
def test_opening_the_logout_address_asks_then_signs_out(page, live_server, seller, shoot):
    login(page, live_server)
    response = page.goto(f"{live_server.url}/accounts/logout/")
    assert response.status == 200
    shoot("01-sign-out-question")
    page.get_by_test_id("sign-out").click()
    expect(page.locator(".message-info")).to_have_text(re.compile("You are signed out."))
    expect(page.locator("h1")).to_have_text("Sign in")
    shoot("02-signed-out")
