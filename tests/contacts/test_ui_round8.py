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


def test_a_user_who_sees_only_their_contacts_is_not_offered_other_owners_lists(client, settings):
    from contacts.models import SavedView
    from tests.contacts.ui_helpers import sales_pipeline, team

    settings.CRM_SALES_SEE_OWN_ONLY = True
    admin, alice, bob = team()
    sales_pipeline()
    SavedView.objects.create(name="Alice's accounts", owner=admin, shared=True, query=f"owner={alice.pk}")
    SavedView.objects.create(name="Hot leads", owner=admin, shared=True, query="q=hot")
    client.force_login(bob)
    listing = client.get("/contacts/").content.decode()
    assert 'data-testid="own-only"' in listing and 'id="f-owner"' in listing
    assert '<select name="owner" id="f-owner">' not in listing
    assert "Hot leads" in listing and "Alice&#x27;s accounts" not in listing and "Alice's accounts" not in listing
    board = client.get("/pipeline/").content.decode()
    assert 'data-testid="own-only"' in board and 'aria-label="Owner"' not in board
    client.force_login(admin)  # everyone else still chooses
    assert '<select name="owner" id="f-owner">' in client.get("/contacts/").content.decode()
    assert 'aria-label="Owner"' in client.get("/pipeline/").content.decode()


def test_a_date_range_the_wrong_way_round_is_named_not_answered_with_zero(seller, staff_user):
    make_contact(staff_user, name="Ana", phone="+15615557304")
    html = seller.get("/contacts/?created_after=2026-11-23&created_before=2026-11-21").content.decode()
    assert "The “Created” dates are the wrong way round" in html
    same_day = seller.get("/contacts/?created_after=2020-01-01&created_before=2020-01-01").content.decode()
    assert "wrong way round" not in same_day


def test_an_export_in_an_unknown_format_is_refused_and_upper_case_is_understood(seller, staff_user):
    make_contact(staff_user, name="Ana", phone="+15615557305")
    refused = seller.get("/contacts/export/?format=pdf")
    assert refused.status_code == 302 and "format" not in refused.url
    workbook = seller.get("/contacts/export/?format=XLSX")
    assert workbook.status_code == 200 and workbook["Content-Type"].startswith("application/vnd.openxmlformats")


def test_an_xlsx_export_streams_its_first_bytes_before_the_last_row_is_read_and_keeps_cell_types():
    import datetime as dt
    import io
    from decimal import Decimal

    from openpyxl import load_workbook

    from contacts.exporting import XLSX_ROWS_PER_CHUNK, xlsx_response

    consumed = {"rows": 0}
    total = XLSX_ROWS_PER_CHUNK * 4

    def rows():
        yield ["Name", "Budget", "Born", "Seen", "VIP", "Note"]
        yield ["'=HYPERLINK(\"x\")", Decimal("-12.50"), dt.date(1990, 5, 17), dt.datetime(2026, 1, 2, 3, 4, 5), True, "a\x0bb"]
        for n in range(total):
            consumed["rows"] += 1
            yield [f"Person {n}", n, None, None, False, ""]

    response = xlsx_response(rows(), filename="contacts.xlsx")
    chunks = iter(response.streaming_content)
    first = next(chunks)
    assert first.startswith(b"PK") and consumed["rows"] < total  # sent before the rows ran out
    body = first + b"".join(chunks)
    sheet = load_workbook(io.BytesIO(body)).active
    values = list(sheet.iter_rows(values_only=True))
    assert values[0] == ("Name", "Budget", "Born", "Seen", "VIP", "Note")
    assert values[1] == ("'=HYPERLINK(\"x\")", -12.5, dt.datetime(1990, 5, 17), dt.datetime(2026, 1, 2, 3, 4, 5), True, "ab")
    assert sheet.cell(row=2, column=3).number_format == "yyyy-mm-dd"
    assert values[2] == ("Person 0", 0, None, None, False, None)
    assert len(values) == total + 2


def _as_browser_sends(form: dict[str, list[str]]) -> dict[str, list[str]]:
    # Form submission turns every line break into CRLF, in hidden copies as in textareas.
    return {k: [v.replace("\r\n", "\n").replace("\n", "\r\n") for v in values] for k, values in form.items()}


def test_number_long_text_and_date_fields_are_edited_without_a_false_clash(seller, staff_user):
    CustomFieldFactory(key="intent", label="Intent", type="decimal")
    CustomFieldFactory(key="score", label="Score", type="number")
    CustomFieldFactory(key="bio", label="Bio", type="long_text")
    contact = make_contact(staff_user, name="Ana", phone="+15615557306")
    Contact.objects.filter(pk=contact.pk).update(custom={"intent": "0.05", "score": 3, "bio": "line one\nline two"})
    form = loaded_form(seller, contact)
    form.update({"cf_intent": ["0.5"], "cf_score": ["4"], "cf_bio": ["one\ntwo\nthree"], "birthday": [""]})
    response = seller.post(f"/contacts/{contact.pk}/edit/", _as_browser_sends(form))
    assert response.status_code == 302, response.content.decode()[-3000:]
    contact.refresh_from_db()
    assert contact.custom == {"intent": "0.5", "score": 4, "bio": "one\ntwo\nthree"}


def test_a_birthday_emptied_on_the_form_is_cleared(seller, staff_user):
    import datetime as dt

    contact = make_contact(staff_user, name="Ana", phone="+15615557307")
    Contact.objects.filter(pk=contact.pk).update(birthday=dt.date(1990, 5, 17))
    form = loaded_form(seller, contact)
    form["birthday"] = [""]
    assert seller.post(f"/contacts/{contact.pk}/edit/", form).status_code == 302
    contact.refresh_from_db()
    assert contact.birthday is None


def test_a_multiple_choice_loaded_empty_and_ticked_by_someone_else_survives_an_unrelated_save(seller, staff_user):
    CustomFieldFactory(key="languages", label="Languages", type="multiple_choice", choices=["Spanish", "English"])
    contact = make_contact(staff_user, name="Ana", phone="+15615557308")
    form = loaded_form(seller, contact)
    Contact.objects.filter(pk=contact.pk).update(custom={"languages": ["Spanish", "English"]})
    form["company"] = ["Acme"]
    assert seller.post(f"/contacts/{contact.pk}/edit/", form).status_code == 302
    contact.refresh_from_db()
    assert (contact.company, contact.custom) == ("Acme", {"languages": ["Spanish", "English"]})


def test_an_owner_who_can_no_longer_sign_in_stays_when_another_field_is_saved(seller, staff_user):
    from tests.contacts.factories import UserFactory

    gone = UserFactory(username="rep2", is_staff=True)
    contact = make_contact(staff_user, name="Ana", phone="+15615557309", owner=gone)
    gone.is_active = False  # left the company after
    gone.save()
    form = loaded_form(seller, contact)
    assert form["owner"] == [str(gone.pk)]
    form["city"] = ["Denver"]
    assert seller.post(f"/contacts/{contact.pk}/edit/", form).status_code == 302
    contact.refresh_from_db()
    assert (contact.city, contact.owner_id) == ("Denver", gone.pk)


def test_the_same_phone_typed_in_another_format_by_both_is_no_clash(seller, staff_user):
    contact = make_contact(staff_user, name="Ana", phone="+15615557310")
    form = loaded_form(seller, contact)
    Contact.objects.filter(pk=contact.pk).update(phone="415-867-5320", phone_e164="+14158675320")
    form["phone"] = ["+1 415 867 5320"]
    assert seller.post(f"/contacts/{contact.pk}/edit/", form).status_code == 302


def test_a_user_who_sees_only_their_contacts_cannot_bulk_assign_them_away(client, settings):
    from tests.contacts.ui_helpers import team

    settings.CRM_SALES_SEE_OWN_ONLY = True
    admin, alice, bob = team()
    mine = [make_contact(bob, name=f"Mine {n}", phone=f"+1561555732{n}", owner=bob) for n in range(2)]
    client.force_login(bob)
    listing = client.get("/contacts/").content.decode()
    assert 'value="none">Nobody (remove the owner)' not in listing and f'<option value="{alice.pk}">' not in listing
    response = client.post("/contacts/bulk/", {"action": "assign_owner", "owner": str(alice.pk),
                                              "ids": [str(c.pk) for c in mine], "query": "owner=me"}, follow=True)
    assert "you can assign them only to yourself" in response.content.decode()
    assert set(Contact.objects.filter(pk__in=[c.pk for c in mine]).values_list("owner_id", flat=True)) == {bob.pk}
