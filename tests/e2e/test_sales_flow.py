"""The sales team's day in a real browser: find, filter, save a view, work a contact, move it on the board."""

import re

import pytest
from playwright.sync_api import expect

from contacts import services
from contacts.models import Note, Source
from crm_hub.actors import Actor
from tests.contacts.factories import TagFactory, UserFactory
from tests.contacts.ui_helpers import make_contact, sales_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "e2e-pass-word-1"


@pytest.fixture
def crm(transactional_db):
    seller = UserFactory(username="seller", first_name="Sam", last_name="Seller", is_staff=True, password=PASSWORD)
    TagFactory(name="vip", color="#d97706")
    TagFactory(name="newsletter")
    pipeline, (lead, qualified, won) = sales_pipeline()
    actor = Actor.for_user(seller)
    ana = make_contact(seller, name="Ana Lima", phone="+1 202 555 0101", email="ana@acme.com", company="Acme",
                       owner=seller, tags=["vip"])
    bo = make_contact(seller, name="Bo Chen", phone="+1 202 555 0102", company="Globex", tags=["vip"])
    cy = make_contact(seller, name="Cy Diaz", email="cy@initech.com", tags=["newsletter"])
    services.move_to_stage(contact=ana, pipeline=pipeline, stage=lead, actor=actor, source=Source.MANUAL)
    services.move_to_stage(contact=bo, pipeline=pipeline, stage=qualified, actor=actor, source=Source.MANUAL)
    services.move_to_stage(contact=cy, pipeline=pipeline, stage=lead, actor=actor, source=Source.MANUAL)
    return {"seller": seller, "ana": ana, "lead": lead, "qualified": qualified}


def login(page, live_server, username="seller"):
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/contacts/$"))


def table_names(page) -> list[str]:
    return page.locator("#contact-table a.cell-main").all_inner_texts()


def drag(page, source, target):
    """Drag with real mouse moves, as a person does (SortableJS listens to pointer and drag events)."""
    box, goal = source.bounding_box(), target.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    steps = 12
    for i in range(1, steps + 1):
        page.mouse.move(
            box["x"] + box["width"] / 2 + (goal["x"] + goal["width"] / 2 - box["x"] - box["width"] / 2) * i / steps,
            box["y"] + box["height"] / 2 + (goal["y"] + 40 - box["y"] - box["height"] / 2) * i / steps,
        )
        page.wait_for_timeout(30)
    page.mouse.up()


def test_sales_user_day(page, live_server, crm, shoot, browser_errors):
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    shoot("01-login")
    login(page, live_server)
    expect(page.locator("#contact-table")).to_be_visible()
    shoot("02-contact-list")

    # Search by a phone typed in another format.
    page.fill('input[type="search"][name="q"]', "(202) 555-0101")
    page.press('input[type="search"][name="q"]', "Enter")
    expect(page.locator("#contact-table a.cell-main")).to_have_text(["Ana Lima"])
    shoot("03-search-by-phone")

    # Filter by tag and stage.
    page.fill('input[name="q"]', "")
    page.click("summary:has-text('Filters')")
    page.select_option("#f-tag", label="vip")
    page.select_option("#f-stage", label="Lead")
    page.click("button:has-text('Apply filters')")
    expect(page.locator("#contact-table a.cell-main")).to_have_text(["Ana Lima"])
    shoot("04-filter-tag-stage")

    # Save the view, leave it, reopen it.
    page.click("summary:has-text('Save view')")
    page.fill("#view-name", "VIP leads")
    page.click("form[action$='/contacts/views/'] button[type=submit]")
    expect(page.locator("h1")).to_have_text("VIP leads")
    page.click("a.chip:has-text('All contacts')")
    expect(page.locator("#contact-table a.cell-main")).to_have_count(3)
    page.click("a.chip:has-text('VIP leads')")
    expect(page.locator("#contact-table a.cell-main")).to_have_text(["Ana Lima"])
    shoot("05-saved-view")

    # Open the contact.
    page.click("#contact-table a.cell-main:has-text('Ana Lima')")
    expect(page.get_by_test_id("contact-name")).to_have_text("Ana Lima")
    expect(page.get_by_test_id("source")).to_have_text("via Manual")

    # Edit a field in place (HTMX swaps the details card for the form); a bad email is refused on its field.
    page.get_by_test_id("edit-inline").click()
    page.fill("#contact-form #id_email", "not-an-email")
    page.click("#contact-form button[type=submit]")
    expect(page.locator("#contact-form .field-errors")).to_contain_text("is not a valid email address")
    page.fill("#contact-form #id_email", "ana@acme.com")
    page.fill("#contact-form #id_company", "Acme Corp")
    page.click("#contact-form button[type=submit]")
    expect(page.locator('[data-field="company"]')).to_have_text("Acme Corp")

    # A note with bold text through the rich-text editor.
    bold = page.locator('trix-toolbar button[data-trix-attribute="bold"]')
    expect(bold).to_be_visible()  # Trix has started
    page.locator("trix-editor").click()
    page.keyboard.type("Call went well. ")
    bold.click()
    page.keyboard.type("Budget approved")
    page.click("#note-form button[type=submit]")
    expect(page.locator(".note-body strong")).to_have_text("Budget approved")
    assert "<strong>Budget approved</strong>" in Note.objects.get(contact=crm["ana"]).body

    # Upload a file; the limits are shown.
    page.click("#tab-file")
    expect(page.locator("#panel-file .help")).to_contain_text("Up to 10 MB. Accepted: PDF")
    page.set_input_files("#file-input", files=[{"name": "proposal.txt", "mimeType": "text/plain", "buffer": b"Proposal v1"}])
    page.click("#file-form button[type=submit]")
    expect(page.locator('.timeline-item[data-kind="file"]')).to_contain_text("proposal.txt")

    # Add a task, then complete it.
    page.click("#tab-task")
    page.fill("#task-title", "Send contract")
    page.fill("#task-due", "2030-05-01T10:00")
    page.click("#task-form button[type=submit]")
    task = page.locator('.timeline-item[data-kind="task"]').filter(has_text="Send contract")
    expect(task).to_be_visible()
    task.get_by_role("button", name="Mark Send contract done").click()
    expect(task.locator(".badge-success")).to_contain_text("Done")
    shoot("06-contact-page")

    # My tasks lists open tasks only: the completed one is gone.
    page.click("nav >> text=My tasks")
    expect(page.locator("h1")).to_have_text("My tasks")
    expect(page.locator(".task-title", has_text="Send contract")).to_have_count(0)
    shoot("07-my-tasks")

    # Drag the card on the pipeline board to the next stage.
    page.click("nav >> text=Pipeline")
    card = page.get_by_test_id(f"card-{crm['ana'].pk}")
    target = page.locator(f'.board-cards[data-stage="{crm["qualified"].pk}"]')
    expect(card).to_be_visible()
    drag(page, card, target)
    expect(target.locator(f'[data-contact="{crm["ana"].pk}"][data-moved="true"]')).to_be_visible()
    expect(page.locator(f'[data-count-for="{crm["qualified"].pk}"]')).to_have_text("2")
    shoot("08-board-after-drag")

    # The contact's history shows the move.
    page.goto(f"{live_server.url}/contacts/{crm['ana'].pk}/")
    change = page.locator('.timeline-item[data-action="stage_changed"]').first
    expect(change).to_contain_text("Sales: Lead → Qualified")
    expect(change).to_contain_text("by Sam Seller")
    shoot("09-history-after-drag")
    assert crm["ana"].stage_memberships.get().stage == crm["qualified"]

    # The same list on a phone.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/contacts/")
    page.click(".nav-toggle")
    expect(page.locator("#mainnav")).to_be_visible()
    shoot("10-phone-list")
    assert browser_errors == {"dialogs": [], "console": [], "page": []}


def test_hostile_note_runs_no_script(page, live_server, crm, shoot, browser_errors):
    payload = '<p>Hi <img src=x onerror=alert(1)><script>alert(2)</script><img src=x onerror="window.__xss=1"></p>'
    services.add_note(contact=crm["ana"], body=payload, actor=Actor.for_user(crm["seller"]), source=Source.API)
    # A row written around the service (e.g. a raw data migration) must not run either.
    Note.objects.create(contact=crm["ana"], body=payload, source=Source.IMPORT)
    login(page, live_server)
    page.goto(f"{live_server.url}/contacts/{crm['ana'].pk}/")
    expect(page.locator(".note-body").first).to_contain_text("Hi")
    page.wait_for_timeout(500)  # give any injected handler time to fire
    assert page.evaluate("window.__xss") is None
    assert page.locator(".note-body img, .note-body script").count() == 0
    shoot("01-contact-with-hostile-note")

    # Error pages keep the app's look.
    response = page.goto(f"{live_server.url}/contacts/999999/")
    assert response.status == 404
    expect(page.locator(".error-code")).to_have_text("404")
    shoot("02-not-found")
    assert browser_errors["dialogs"] == [] and browser_errors["page"] == []
    # The only console error allowed is the deliberate 404 page load.
    assert all("404" in message for message in browser_errors["console"])
