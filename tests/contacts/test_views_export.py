"""CSV/XLSX export of the contact list: filtered, streamed, and neutralized against formula injection."""

import csv
import io

import pytest
from openpyxl import load_workbook

from contacts.exporting import neutralize_cell
from tests.contacts.factories import TagFactory
from tests.contacts.ui_helpers import make_contact

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
        ("+1 202 555", "'+1 202 555"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("Ana = Bob", "Ana = Bob"),
        ("", ""),
        (42, 42),
        (None, None),
    ],
)
def test_neutralize_cell(raw, shown):
    assert neutralize_cell(raw) == shown


@pytest.fixture
def exported(client, staff_user):
    TagFactory(name="vip")
    make_contact(staff_user, name="=cmd|' /C calc'!A0", company="@evil", tags=["vip"])
    make_contact(staff_user, name="Plain Person", company="Acme")
    client.force_login(staff_user)
    return client


def test_csv_export_streams_filtered_rows_with_chosen_columns_neutralized(exported):
    vip = TagFactory(name="vip")
    response = exported.get("/contacts/export/", {"format": "csv", "tag": vip.pk, "cols": ["company", "tags"]})
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert rows == [["Name", "Company", "Tags"], ["'=cmd|' /C calc'!A0", "'@evil", "vip"]]


def test_xlsx_export_is_a_workbook_with_neutralized_cells(exported):
    response = exported.get("/contacts/export/", {"format": "xlsx", "cols": ["company"], "sort": "name"})
    assert response["Content-Type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active
    values = sorted(tuple(row) for row in sheet.iter_rows(min_row=2, values_only=True))
    assert [c.value for c in sheet[1]] == ["Name", "Company"]
    assert values == [("'=cmd|' /C calc'!A0", "'@evil"), ("Plain Person", "Acme")]
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)


def test_negative_decimals_export_as_numbers_not_neutralized_text(client, staff_user):
    # A decimal is stored as text ("-1250.50"); exported as text it started with "-" and was turned into
    # "'-1250.50", which is no number when the file comes back in.
    from decimal import Decimal

    from django.test import Client

    from contacts import services
    from contacts.models import Source
    from crm_hub.actors import Actor
    from tests.contacts.factories import CustomFieldFactory, UserFactory
    from tests.contacts.test_export import export_via_admin

    admin_user_client = Client()
    admin_user_client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))

    CustomFieldFactory(key="balance", label="Balance", type="decimal")
    services.upsert_contact(data={"name": "Debtor"}, custom={"balance": "-1250.50"}, actor=Actor.for_user(staff_user),
                            source=Source.MANUAL)
    client.force_login(staff_user)
    response = client.get("/contacts/export/", {"format": "csv", "cols": ["cf.balance"]})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert rows == [["Name", "Balance"], ["Debtor", "-1250.50"]]
    response = client.get("/contacts/export/", {"format": "xlsx", "cols": ["cf.balance"]})
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active
    cell = sheet["B2"]
    assert cell.data_type == "n" and cell.value == -1250.5

    text = export_via_admin(admin_user_client, "csv").decode("utf-8-sig")
    assert next(csv.DictReader(io.StringIO(text)))["custom.balance"] == "-1250.50"
    sheet = load_workbook(io.BytesIO(export_via_admin(admin_user_client, "xlsx"))).active
    header = [c.value for c in sheet[1]]
    cell = sheet.cell(row=2, column=header.index("custom.balance") + 1)
    assert cell.data_type == "n" and Decimal(str(cell.value)) == Decimal("-1250.5")


def test_custom_dates_export_as_date_cells_and_iso_text(client, staff_user):
    import datetime as dt

    from contacts import services
    from contacts.models import Source
    from crm_hub.actors import Actor
    from tests.contacts.factories import CustomFieldFactory

    CustomFieldFactory(key="renewal", label="Renewal", type="date")
    services.upsert_contact(data={"name": "Renewing"}, custom={"renewal": "2027-03-31"}, actor=Actor.for_user(staff_user),
                            source=Source.MANUAL)
    client.force_login(staff_user)
    response = client.get("/contacts/export/", {"format": "xlsx", "cols": ["cf.renewal"]})
    cell = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active["B2"]
    assert cell.is_date and cell.value.date() == dt.date(2027, 3, 31)
    response = client.get("/contacts/export/", {"format": "csv", "cols": ["cf.renewal"]})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert rows == [["Name", "Renewal"], ["Renewing", "2027-03-31"]]


@pytest.mark.parametrize("file_format", ["csv", "xlsx"])
def test_admin_export_streams_every_contact_in_chunks(admin_client, staff_user, file_format, monkeypatch):
    """The stock admin export built the whole file as one in-memory Dataset; ours is a streamed response
    that reads contacts a chunk at a time, each chunk with its tags."""
    from django.urls import reverse

    from contacts import services
    from contacts.models import Source, Tag
    from crm_hub.actors import Actor

    monkeypatch.setattr("contacts.importing.resources.EXPORT_CHUNK", 2)
    Tag.objects.create(name="VIP")
    for i in range(5):
        services.upsert_contact(data={"name": f"Person {i}", "email": f"p{i}@example.com"}, tags=["VIP"],
                                actor=Actor.for_user(staff_user), source=Source.MANUAL)
    url = reverse("admin:contacts_contact_export")
    form = admin_client.get(url).context["form"]
    formats = {label.lower(): value for value, label in form.fields["format"].choices if value != ""}
    data = {"format": formats[file_format], "resource": form.fields["resource"].initial or 0}
    data.update({name: "on" for name, field in form.fields.items() if getattr(field, "is_selectable_field", False)})
    response = admin_client.post(url, data)
    assert response.status_code == 200 and response.streaming
    body = b"".join(response.streaming_content)
    if file_format == "csv":
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    else:
        sheet = load_workbook(io.BytesIO(body)).active
        values = [[c.value for c in row] for row in sheet.iter_rows()]
        rows = [dict(zip(values[0], row, strict=True)) for row in values[1:]]
    assert sorted(r["name"] for r in rows) == [f"Person {i}" for i in range(5)]
    assert {r["tags"] for r in rows} == {"VIP"}
