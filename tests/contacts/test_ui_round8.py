"""Web UI, eighth outside-in round: an edit saves what the user changed, nothing they did not touch."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.test import Client

from contacts.models import Contact
from tests.api.factories import AgentClient, make_agent
from tests.contacts.factories import CustomFieldFactory
from tests.contacts.ui_helpers import make_contact

pytestmark = pytest.mark.django_db


class _FormValues(HTMLParser):
    """What a browser would submit from the page's contact form (inputs, selects, textareas)."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, list[str]] = {}
        self._select = None
        self._textarea = None
        self._in_form = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == "contact-form":
            self._in_form = True
        if not self._in_form:
            return
        name = attrs.get("name")
        if tag == "input" and name:
            if attrs.get("type") in ("checkbox", "radio") and "checked" not in attrs:
                return
            self.values.setdefault(name, []).append(attrs.get("value", ""))
        elif tag == "select" and name:
            self._select = name
            self.values.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in attrs:
            self.values[self._select].append(attrs.get("value", ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = [""]

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea][0] += data

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self._in_form = False


def loaded_form(client, contact) -> dict[str, list[str]]:
    parser = _FormValues()
    parser.feed(client.get(f"/contacts/{contact.pk}/edit/").content.decode())
    return parser.values


@pytest.fixture
def seller(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def test_saving_a_form_opened_before_an_agents_write_keeps_what_the_agent_wrote(seller, staff_user):
    CustomFieldFactory(key="budget", type="number", allow_for_ai=True)
    contact = make_contact(staff_user, name="Globex Buyer", phone="+15615557301", company="Globex")
    form = loaded_form(seller, contact)
    _agent, token = make_agent("editor-bot", scopes=["contacts:read", "contacts:write"])
    patched = AgentClient(token).patch(f"contacts/{contact.pk}", {"company": "Agent Corp", "custom": {"budget": "12000"}})
    assert patched.status_code == 200
    form["city"] = ["Denver"]
    response = seller.post(f"/contacts/{contact.pk}/edit/", form)
    assert response.status_code == 302
    contact.refresh_from_db()
    assert (contact.company, contact.city, contact.custom.get("budget")) == ("Agent Corp", "Denver", 12000)


def test_a_field_both_changed_is_a_question_and_saving_again_keeps_the_users_value(seller, staff_user):
    contact = make_contact(staff_user, name="Ana", phone="+15615557302", city="Seattle")
    form = loaded_form(seller, contact)
    Contact.objects.filter(pk=contact.pk).update(city="Boston")  # a colleague saved first
    form["city"] = ["Denver"]
    form["company"] = ["Acme"]
    answer = seller.post(f"/contacts/{contact.pk}/edit/", form)
    assert answer.status_code == 200
    assert "Changed by someone else while you were editing: it is now “Boston”" in answer.content.decode()
    contact.refresh_from_db()
    assert (contact.city, contact.company) == ("Boston", "")  # nothing written until the user decides
    again = _FormValues()
    again.feed(answer.content.decode())
    assert again.values["city"] == ["Denver"]
    assert seller.post(f"/contacts/{contact.pk}/edit/", again.values).status_code == 302
    contact.refresh_from_db()
    assert (contact.city, contact.company) == ("Denver", "Acme")


def test_form_errors_are_tied_to_their_field_for_screen_readers(seller, staff_user):
    contact = make_contact(staff_user, name="Ana", phone="+15615557303")
    form = loaded_form(seller, contact)
    form["phone"] = ["555"]
    html = seller.post(f"/contacts/{contact.pk}/edit/", form).content.decode()
    assert 'aria-describedby="id_phone_error"' in html and 'id="id_phone_error"' in html
