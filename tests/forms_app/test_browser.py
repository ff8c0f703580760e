"""In a real browser: build a form, publish it, fill it in from its link and from an embed on another site."""

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from contacts.models import Contact, ContactStage
from forms_app.models import Form, Submission
from tests.contacts.factories import UserFactory
from tests.forms_app.conftest import CHROMIUM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Chromium not installed at {CHROMIUM}"),
]

expect = pytest.importorskip("playwright.sync_api").expect


def screenshot_dir() -> Path:
    path = Path(os.environ.get("CRM_ARTIFACTS_DIR", "test-artifacts")) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def other_site():
    """A second web server on 127.0.0.1 (the CRM runs on localhost): another site that embeds the form."""
    page = {"html": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's spelling)
            body = page["html"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("FORMS_E2E_EMBED_PORT", "0"))), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield page, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def drag(page, source, target):
    """Drag with real mouse moves (SortableJS runs in fallback mode, driven by pointer events)."""
    source.scroll_into_view_if_needed()
    start, end = source.bounding_box(), target.bounding_box()
    x, y = start["x"] + start["width"] / 2, start["y"] + start["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y - 6, steps=3)
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + 4, steps=12)
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + 2, steps=2)
    page.mouse.up()


def test_build_publish_and_submit_a_form_from_its_link_and_an_embed(live_server, browser, other_site, lead_setup):
    shots = screenshot_dir()
    UserFactory(username="admin", is_staff=True, is_superuser=True, password="pw-secret-123")

    # --- An admin builds the form ----------------------------------------------------------
    staff = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = staff.new_page()
    page.set_default_timeout(10_000)
    page.goto(f"{live_server.url}/accounts/login/?next=/forms/new/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw-secret-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/forms/new/")
    page.fill("#id_title", "Website leads")
    page.fill("#id_description", "Tell us about your project and we will call you back.")
    cards = page.locator(".fb-field")
    plan = [
        ("text", "Full name", "contact.name"),
        ("email", "Email", "contact.email"),
        ("phone", "Phone", "contact.phone"),
        ("number", "Budget", "custom.budget"),
        ("long_text", "Message", ""),
    ]
    for kind, label, target in plan:
        page.click(f'[data-add-type="{kind}"]')
        card = cards.last
        card.get_by_label("Label").fill(label)
        card.get_by_label("Goes to").select_option(target)
    cards.nth(0).get_by_label("Required").check()
    cards.nth(1).get_by_label("Required").check()
    cards.nth(2).get_by_label("Help text").fill("Any format, e.g. (561) 555-0192.")
    expect(cards).to_have_count(5)

    # Drag "Message" above "Budget".
    drag(page, cards.nth(4).locator(".fb-handle"), cards.nth(3))
    expect(page.locator(".fb-field-title")).to_have_text(["Full name", "Email", "Phone", "Message", "Budget"])

    page.select_option("#id_tags", label=["Web lead", "Newsletter"])
    page.select_option("#id_stage", label="Sales → New lead")
    page.fill("#id_success_message", "Thanks! A specialist will call you within one business day.")
    preview = page.locator("#fb-preview")
    expect(preview.locator(".pf-field")).to_have_count(5)
    expect(preview.locator(".pf-label").nth(3)).to_contain_text("Message")
    page.evaluate("window.scrollTo(0, 0)")  # sticky header and preview then sit where a person sees them
    page.screenshot(path=str(shots / "forms-builder.png"), full_page=True)

    page.get_by_role("button", name="Save and publish").first.click()
    page.wait_for_url(re.compile(r"/forms/\d+/$"))
    form = Form.objects.get()
    assert form.is_open
    assert [f["label"] for f in form.current_version.fields] == ["Full name", "Email", "Phone", "Message", "Budget"]
    assert [f["maps_to"] for f in form.current_version.fields] == [
        "contact.name", "contact.email", "contact.phone", "", "custom.budget",
    ]
    public_url = page.locator("#share-link").input_value()
    snippet = page.locator("#embed-snippet").input_value()
    assert public_url == f"{live_server.url}/f/{form.slug}/" and "<iframe" in snippet

    # --- An anonymous visitor fills it in from the public link -----------------------------
    visitor = browser.new_context(viewport={"width": 420, "height": 900}, is_mobile=True)
    public = visitor.new_page()
    public.set_default_timeout(10_000)
    public.goto(public_url)
    public.get_by_label("Full name").fill("Ana")
    public.get_by_label("Email").fill("ana@example")
    public.get_by_label("Phone").fill("(561) 555-0192")
    public.get_by_label("Budget").fill("1200")
    public.get_by_label("Message").fill("Please call me in the morning.")
    public.get_by_role("button", name="Send").click()
    email = public.get_by_label("Email")
    expect(email).to_have_attribute("aria-invalid", "true")
    error_id = email.get_attribute("aria-describedby")
    expect(public.locator(f"#{error_id}")).to_contain_text("Enter a valid email address")
    expect(public.get_by_label("Phone")).to_have_value("(561) 555-0192")
    public.screenshot(path=str(shots / "forms-public-error.png"), full_page=True)
    assert not Contact.objects.exists()

    email.fill("ana@example.com")
    public.get_by_role("button", name="Send").click()
    expect(public.get_by_text("A specialist will call you within one business day.")).to_be_visible()
    public.screenshot(path=str(shots / "forms-public-success.png"), full_page=True)

    # --- ... and again through the embed snippet on another site ------------------------------
    other_page, other_url = other_site
    other_page["html"] = (
        '<!doctype html><meta name="viewport" content="width=device-width, initial-scale=1"><title>Acme</title>'
        f"<h1>Acme Inc.</h1><p>Talk to us:</p>{snippet}"
    )
    second_visitor = browser.new_context(viewport={"width": 1024, "height": 900})
    embedded = second_visitor.new_page()
    embedded.set_default_timeout(10_000)
    embedded.goto(other_url)
    frame = embedded.frame_locator("iframe")
    frame.get_by_label("Full name").fill("Ana Souza")
    frame.get_by_label("Email").fill("ana@example.com")
    frame.get_by_label("Phone").fill("+1 561-555-0192")
    embedded.screenshot(path=str(shots / "forms-embedded.png"), full_page=True)
    frame.get_by_role("button", name="Send").click()
    expect(frame.get_by_text("A specialist will call you within one business day.")).to_be_visible()

    # --- One contact, from the form, with the tags and the stage -------------------------------
    contact = Contact.objects.get()
    assert contact.phone_e164 == "+15615550192" and contact.name == "Ana Souza"
    assert contact.source == "form" and contact.custom == {"budget": 1200}
    assert sorted(contact.tags.values_list("name", flat=True)) == ["Newsletter", "Web lead"]
    assert ContactStage.objects.get(contact=contact).stage.name == "New lead"
    assert Submission.objects.filter(contact=contact).count() == 2

    latest = Submission.objects.filter(contact=contact).first()
    page.goto(f"{live_server.url}/forms/submissions/{latest.pk}/")
    expect(page.locator('[data-contact="source"]')).to_have_text("Form")
    expect(page.locator('[data-contact="tags"]')).to_contain_text("Web lead")
    expect(page.locator('[data-contact="stages"]')).to_contain_text("Sales → New lead")
    page.goto(f"{live_server.url}/forms/{form.pk}/")
    expect(page.locator('[data-stat="submissions"]')).to_have_text("2")
    page.screenshot(path=str(shots / "forms-detail.png"), full_page=True)
    staff.close()
    visitor.close()
    second_visitor.close()
