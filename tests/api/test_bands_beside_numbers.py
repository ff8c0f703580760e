"""Every answer that carries a contact shows a number's band label beside it (issue 4: "the UI and API show
the label beside the number")."""

import pytest

pytestmark = pytest.mark.django_db


def test_intake_upsert_list_and_detail_all_name_the_band(bot, taxonomy):
    intake = bot.post("intake", {"contact": {"name": "Scored", "email": "scored@example.com"},
                                 "custom": {"intent": 0.82, "budget": 5000}})
    assert intake.status_code in (200, 201), intake.json()
    contact = intake.json()["contact"]
    assert contact["custom"] == {"intent": "0.82", "budget": 5000}  # a decimal keeps its digits as text
    assert contact["custom_bands"] == {"intent": "Hot"}  # budget has no bands
    upsert = bot.post("contacts/upsert", {"email": "SCORED@example.com", "custom": {"intent": 0.5}}).json()
    assert upsert["contact"]["custom_bands"] == {"intent": "Warm"}
    listed = bot.get("contacts", {"email": "scored@example.com"}).json()["results"][0]
    assert listed["custom_bands"] == {"intent": "Warm"}
    detail = bot.get(f"contacts/{contact['id']}").json()
    assert detail["custom_bands"] == {"intent": "Warm"}
    bands = {f["key"]: f["band"] for f in detail["custom_fields"]}
    assert bands == {"intent": "Warm", "budget": None}  # "no band" is null, as on conversations


def test_a_value_outside_every_band_has_none(bot, taxonomy):
    contact = bot.post("contacts/upsert", {"name": "Off scale", "custom": {"intent": 5}}).json()["contact"]
    assert contact["custom_bands"] == {}
