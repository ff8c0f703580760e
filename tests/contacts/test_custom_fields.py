import pytest

from contacts import services
from contacts.models import Contact, CustomField, Source
from crm_hub.errors import InputRejected
from tests.contacts.factories import CustomFieldFactory

pytestmark = pytest.mark.django_db
T = CustomField.Type


@pytest.mark.parametrize(
    ("kind", "choices", "raw", "stored"),
    [
        (T.TEXT, [], "  hello ", "hello"),
        (T.NUMBER, [], "42", 42),
        (T.NUMBER, [], 0.75, 0.75),
        (T.DECIMAL, [], "1250.50", "1250.50"),
        (T.BOOLEAN, [], "yes", True),
        (T.BOOLEAN, [], False, False),
        (T.DATE, [], "2026-05-01", "2026-05-01"),
        (T.DATETIME, [], "2026-05-01T14:30:00Z", "2026-05-01T14:30:00+00:00"),
        (T.SINGLE_CHOICE, ["Small", "Large"], "large", "Large"),
        (T.MULTIPLE_CHOICE, ["A", "B", "C"], "a, c", ["A", "C"]),
        (T.EMAIL, [], "X@Y.com", "x@y.com"),
        (T.PHONE, [], "(561) 555-0192", "+15615550192"),
        (T.URL, [], "https://example.com/x", "https://example.com/x"),
    ],
)
def test_custom_values_are_validated_and_normalized_by_type(staff_actor, kind, choices, raw, stored):
    CustomFieldFactory(key="f", type=kind, choices=choices)
    contact = services.upsert_contact(data={"name": "Ana"}, custom={"f": raw}, actor=staff_actor, source=Source.MANUAL).contact
    assert Contact.objects.get(pk=contact.pk).custom == {"f": stored}


@pytest.mark.parametrize(
    ("kind", "choices", "raw", "code"),
    [
        (T.NUMBER, [], "many", "invalid_value"),
        (T.BOOLEAN, [], "maybe", "invalid_value"),
        (T.DATE, [], "01/05/2026", "invalid_value"),
        (T.SINGLE_CHOICE, ["Small", "Large"], "Medium", "invalid_value"),
        (T.EMAIL, [], "nope", "invalid_email"),
        (T.PHONE, [], "123", "invalid_phone"),
        (T.URL, [], "javascript:alert(1)", "invalid_value"),
    ],
)
def test_bad_custom_values_are_refused_naming_the_field(staff_actor, kind, choices, raw, code):
    CustomFieldFactory(key="f", type=kind, choices=choices)
    with pytest.raises(InputRejected) as caught:
        services.upsert_contact(data={"name": "Ana"}, custom={"f": raw}, actor=staff_actor, source=Source.MANUAL)
    error = caught.value.errors[0]
    assert (error.field, error.code) == ("custom.f", code)
    if choices:
        assert error.allowed == choices
    assert Contact.objects.count() == 0


def test_agents_may_not_write_custom_fields_without_allow_for_ai(agent_actor):
    CustomFieldFactory(key="budget", type=T.NUMBER, allow_for_ai=True)
    CustomFieldFactory(key="internal_rating", allow_for_ai=False)
    with pytest.raises(InputRejected) as caught:
        services.upsert_contact(
            data={"name": "Ana"}, custom={"budget": 10, "internal_rating": "A", "nope": 1}, actor=agent_actor, source=Source.API
        )
    codes = {(e.field, e.code) for e in caught.value.errors}
    assert codes == {("custom.internal_rating", "field_not_allowed_for_ai"), ("custom.nope", "unknown_field")}
    assert caught.value.errors[0].allowed == ["budget"]


def test_numeric_bands_label_values():
    field = CustomField(key="intent", type=T.NUMBER, bands=[
        {"min": 0, "max": 0.4, "label": "Low intent"},
        {"min": 0.4, "max": 0.7, "label": "Warm"},
        {"min": 0.7, "max": 1.0, "label": "High intent"},
    ])
    assert [field.band_label(v) for v in (0, 0.39, 0.4, 0.69, 0.7, 1.0, 1.5, None)] == [
        "Low intent", "Low intent", "Warm", "Warm", "High intent", "High intent", "", ""
    ]
