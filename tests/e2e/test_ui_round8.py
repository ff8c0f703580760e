"""Round 8 in a real browser: an edit sent back with errors puts the keyboard on the first wrong field."""

import pytest
from playwright.sync_api import expect

from contacts.models import Contact
from tests.contacts.ui_helpers import make_contact
from tests.e2e.test_ui_round4 import login, seller  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("inline", [False, True])
def test_a_wrong_phone_on_save_takes_the_focus_to_the_phone_field(page, live_server, seller, shoot, inline):  # noqa: F811
    contact = make_contact(seller, name="Focus Person", phone="+15615557401")
    if inline:
        login(page, live_server, f"/contacts/{contact.pk}/")
        page.click("[data-testid=edit-inline]")
        page.wait_for_selector("#contact-form")
    else:
        login(page, live_server, f"/contacts/{contact.pk}/edit/")
    page.fill("#id_phone", "555")
    page.click("#contact-form button[type=submit]")
    expect(page.locator("#id_phone_error")).to_be_visible()
    expect(page.locator("#id_phone")).to_be_focused()
    shoot("edit-error-focus-inline" if inline else "edit-error-focus")
    assert Contact.objects.get(pk=contact.pk).phone_e164 == "+15615557401"
