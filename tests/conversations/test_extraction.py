import json

import pytest

from contacts.models import Contact, Note, Source
from contacts.services import upsert_contact
from conversations.extraction import extract_with_rules
from conversations.models import Conversation
from crm_hub.actors import Actor
from tests.contacts.factories import CustomFieldFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/conversations"


def transcript(api, *visitor_lines, agent_lines=(), external_id="t"):
    messages = [{"role": "visitor", "content": line} for line in visitor_lines]
    messages += [{"role": "agent", "content": line} for line in agent_lines]
    response = api.post(URL, {"external_id": external_id, "messages": messages}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["conversation"]["id"]


def end_extract(api, conversation_id, **options):
    response = api.post(f"{URL}/{conversation_id}/end", {"extract": True, **options}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


# --- deterministic extractor ------------------------------------------------------------------


def test_rules_fill_phone_and_email_and_match_the_contact_holding_that_phone(api):
    existing = upsert_contact(data={"name": "Marcus Reed", "phone": "(561) 555-0192"},
                              actor=Actor.for_agent(api.agent), source=Source.API).contact
    conversation_id = transcript(api, "Hi there", "call me on 561 555 0192 or marcus@email.com",
                                 agent_lines=["Our office is 212 555 0100, sales@ourshop.com"])
    body = end_extract(api, conversation_id, summary="Wants a callback.")
    existing.refresh_from_db()
    assert Contact.objects.count() == 1
    assert existing.phone_e164 == "+15615550192" and existing.email_normalized == "marcus@email.com"
    assert body["matched_by"] == "phone" and body["contact"]["id"] == existing.pk
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.contact == existing and conversation.status == "ended"
    assert conversation.extraction["extractor"] == "rules"
    assert conversation.extraction["found"] == {"phone": "+15615550192", "email": "marcus@email.com"}
    assert conversation.extraction["dropped"] == [] and conversation.extraction["error"] is None
    assert Note.objects.get().conversation == conversation  # the summary became the note
    assert existing.history.filter(conversation=conversation, summary__contains="ended").exists()


def test_rules_create_a_contact_from_phone_alone(api):
    conversation_id = transcript(api, "you can reach me at +44 20 7946 0958")
    body = end_extract(api, conversation_id, extractor="rules")
    assert body["created"] is True
    assert Contact.objects.get().phone_e164 == "+442079460958"


def test_transcript_without_name_phone_or_email_creates_no_contact_and_stays_unlinked(api):
    CustomFieldFactory(key="plan", type="single_choice", choices=["Basic", "Pro"], allow_for_ai=True)
    conversation_id = transcript(api, "just browsing, maybe the Pro plan", "bye")
    body = end_extract(api, conversation_id)
    assert body["contact"] is None and Contact.objects.count() == 0
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.contact is None and conversation.status == "ended"
    assert conversation.extraction["dropped"] == [
        {"field": "custom.plan", "value": "Pro", "reason": "no_contact: the transcript has no name, phone or email to attach it to"}
    ]
    unlinked = api.get(URL, {"linked": "false"}).json()["results"]
    assert [c["id"] for c in unlinked] == [conversation_id]


def test_rules_drop_an_invalid_email_with_a_reason(api):
    conversation_id = transcript(api, "my email is marcus@@email..com, phone 561-555-0192")
    end_extract(api, conversation_id)
    contact = Contact.objects.get()
    assert contact.email == "" and contact.phone_e164 == "+15615550192"
    dropped = Conversation.objects.get(pk=conversation_id).extraction["dropped"]
    assert [(d["field"], d["reason"].split(":")[0]) for d in dropped] == [("email", "invalid_email")]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Hi, my name is Marcus Reed and I need help", "Marcus Reed"),
        ("I'm Ana. Call me tomorrow", "Ana"),
        ("i am Jean-Luc Picard", "Jean-Luc Picard"),
        ("I'm looking for a quote", ""),
        ("I'm Interested in the Pro plan", ""),
        ("my name is marcus", ""),
        ("This is great", ""),
        ("This is Acme Corp calling", ""),
        ("I'm not sure. My name is Li Wei.", "Li Wei"),
        ("Hello! I am interested. My name is Anna Berg", "Anna Berg"),
        ("I'm Bob. My name is Robert Fox", "Robert Fox"),
        ("I am Dr. Jane Doe, 561.555.0310", "Jane Doe"),
        ("I am Mr. Smith", "Smith"),
        ("Hi I'm J. R. Smith", "J. R. Smith"),
        ("I'm Dr.", ""),
    ],
)
def test_rules_read_a_name_only_from_a_clear_introduction(text, name):
    assert extract_with_rules([text], definitions=[]).contact.get("name", "") == name


def test_rules_fill_pattern_typed_ai_custom_fields_and_leave_others(db):
    website = CustomFieldFactory(key="website", label="Website", type="url", allow_for_ai=True)
    plan = CustomFieldFactory(key="plan", label="Plan", type="single_choice", choices=["Basic", "Pro"], allow_for_ai=True)
    size = CustomFieldFactory(key="size", label="Size", type="single_choice", choices=["Small", "Large"], allow_for_ai=True)
    budget = CustomFieldFactory(key="budget", label="Budget", type="number", allow_for_ai=True)
    result = extract_with_rules(
        ["Our website is https://acme.example/about. We want Pro.", "small or large, not sure. Budget 5000"],
        definitions=[website, plan, size, budget],
    )
    assert result.custom == {"website": "https://acme.example/about", "plan": "Pro"}
    assert [d["field"] for d in result.dropped] == ["custom.size"]


@pytest.mark.parametrize(("text", "channel"), [
    ("My email is lena@example.com", None),
    ("Email: lena@example.com, phone number 561 555 0192", None),
    ("my WhatsApp is +44 20 7946 0958", None),
    ("Please email me the quote", "Email"),
    ("call me on 561 556 6966 or nora@email.com", None),
    ("Phone 813 645 7851", None),
    ("email is nora@example.com", None),
    ("I prefer email.", "Email"),
    ("WhatsApp is best for me", "WhatsApp"),
])
def test_a_channel_named_to_give_a_detail_is_no_preference(db, text, channel):
    preferred = CustomFieldFactory(
        key="preferred_channel", type="single_choice", choices=["Email", "Phone", "WhatsApp"], allow_for_ai=True,
    )
    assert extract_with_rules([text], definitions=[preferred]).custom.get("preferred_channel") == channel


@pytest.mark.parametrize("text", [
    "Hi, I'm Head of Operations at Acme", "I am the Sales Director", "I'm Marketing of Acme", "I'm CTO at Acme",
])
def test_a_job_title_is_not_a_name(text):
    assert extract_with_rules([text], definitions=[]).contact.get("name", "") == ""


def test_extraction_writes_only_ai_custom_fields_that_validate(api):
    CustomFieldFactory(key="website", label="Website", type="url", allow_for_ai=True)
    conversation_id = transcript(api, "I'm Ana, website: https://ana.example", "phone 561 555 0192")
    end_extract(api, conversation_id)
    contact = Contact.objects.get()
    assert contact.name == "Ana" and contact.custom == {"website": "https://ana.example"}


def test_extract_on_a_linked_conversation_without_identity_writes_to_the_linked_contact(api, fake_llm):
    CustomFieldFactory(key="intent_score", type="number", allow_for_ai=True)
    contact = upsert_contact(data={"name": "Ana", "email": "ana@example.com"}, actor=Actor.for_agent(api.agent),
                             source=Source.API).contact
    response = api.post(URL, {"external_id": "k", "contact_id": contact.pk,
                              "messages": [{"role": "visitor", "content": "I'd buy today"}]}, format="json")
    fake_llm.reply_json({"contact": {"name": None, "phone": None, "email": None}, "custom": {"intent_score": 0.9}})
    body = end_extract(api, response.json()["conversation"]["id"])
    contact.refresh_from_db()
    assert contact.custom == {"intent_score": 0.9} and body["contact"]["id"] == contact.pk
    assert Contact.objects.count() == 1


# --- LLM extractor against a local chat-completions server ---------------------------------------


def test_llm_good_reply_is_validated_and_written(api, fake_llm):
    CustomFieldFactory(key="objection", label="Objection type", type="single_choice",
                       choices=["price", "timing", "trust"], allow_for_ai=True)
    CustomFieldFactory(key="internal_rating", type="number", allow_for_ai=False)
    fake_llm.reply_json({
        "contact": {"name": "Marcus Reed", "phone": "561.555.0192", "email": "Marcus@Email.com", "company": "Acme",
                    "city": None},
        "custom": {"objection": "price"},
    })
    conversation_id = transcript(api, "I'm Marcus from Acme, 561.555.0192, Marcus@Email.com; too pricey though",
                                 agent_lines=["Call us at 212 555 0100"])
    body = end_extract(api, conversation_id)  # the LLM is the default once CRM_LLM_BASE_URL is set
    contact = Contact.objects.get()
    assert (contact.name, contact.phone_e164, contact.email_normalized, contact.company) == (
        "Marcus Reed", "+15615550192", "marcus@email.com", "Acme")
    assert contact.custom == {"objection": "price"}
    extraction = Conversation.objects.get(pk=conversation_id).extraction
    assert extraction["extractor"] == "llm" and extraction["error"] is None and extraction["dropped"] == []
    assert body["extraction"] == extraction

    (request,) = fake_llm.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer test-key"
    sent = request["body"]
    assert sent["model"] == "test-model"
    schema = sent["response_format"]["json_schema"]["schema"]
    assert sent["response_format"]["type"] == "json_schema"
    assert set(schema["properties"]["custom"]["properties"]) == {"objection"}
    assert schema["properties"]["custom"]["properties"]["objection"]["enum"] == ["price", "timing", "trust", None]
    assert "identity" not in schema["properties"]["contact"]["properties"]
    user_text = sent["messages"][-1]["content"]
    assert "too pricey" in user_text and "212 555 0100" not in user_text  # only what the visitor wrote


def test_llm_reply_that_is_not_json_is_recorded_and_nothing_bad_is_stored(api, fake_llm):
    fake_llm.content = "Sure! The visitor is Marcus, phone 561 555 0192."
    conversation_id = transcript(api, "hello, just a question about opening hours")
    end_extract(api, conversation_id)
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.status == "ended" and conversation.contact is None
    assert conversation.extraction["error"]["code"] == "llm_invalid_json"
    assert "not JSON" in conversation.extraction["error"]["message"]
    assert conversation.extraction["fallback"] == "rules" and conversation.extraction["found"] == {}
    assert Contact.objects.count() == 0


def test_llm_reply_with_invalid_email_and_phone_drops_them_with_reasons(api, fake_llm):
    CustomFieldFactory(key="locked", type="text", allow_for_ai=False)
    fake_llm.reply_json({
        "contact": {"name": "Marcus", "phone": "call me maybe", "email": "marcus(at)email", "company": "Acme"},
        "custom": {"locked": "x", "nope": "y"},
    })
    conversation_id = transcript(api, "I'm Marcus")
    end_extract(api, conversation_id)
    contact = Contact.objects.get()
    assert (contact.name, contact.company, contact.phone, contact.email, contact.custom) == ("Marcus", "Acme", "", "", {})
    extraction = Conversation.objects.get(pk=conversation_id).extraction
    reasons = {d["field"]: d["reason"].split(":")[0] for d in extraction["dropped"]}
    assert reasons == {"phone": "invalid_phone", "email": "invalid_email", "custom.locked": "field_not_allowed_for_ai",
                       "custom.nope": "unknown_field"}
    assert extraction["found"] == {"name": "Marcus", "company": "Acme"}
    assert "marcus(at)email" not in json.dumps(list(Contact.objects.values()), default=str)


def test_llm_timeout_is_recorded_and_the_rules_still_read_the_transcript(api, fake_llm, settings):
    settings.CRM_LLM_TIMEOUT_SECONDS = 0.3
    fake_llm.delay = 5
    conversation_id = transcript(api, "call me on 561 555 0192")
    end_extract(api, conversation_id)
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.extraction["error"] == {"code": "llm_timeout", "message": "The LLM did not answer within 0.3 s."}
    assert conversation.extraction["fallback"] == "rules"
    assert conversation.contact.phone_e164 == "+15615550192"


def test_llm_http_error_is_recorded(api, fake_llm):
    fake_llm.status = 500
    conversation_id = transcript(api, "hi")
    end_extract(api, conversation_id, extractor="llm")
    assert Conversation.objects.get(pk=conversation_id).extraction["error"]["code"] == "llm_http_error"


def test_rules_can_be_chosen_even_when_an_llm_is_configured(api, fake_llm):
    conversation_id = transcript(api, "marcus@email.com")
    end_extract(api, conversation_id, extractor="rules")
    assert fake_llm.requests == []
    assert Contact.objects.get().email_normalized == "marcus@email.com"


def test_a_second_end_does_not_call_the_llm_again(api, fake_llm):
    conversation_id = transcript(api, "hi")
    end_extract(api, conversation_id)
    again = api.post(f"{URL}/{conversation_id}/end", {"extract": True}, format="json")
    assert again.status_code == 409 and len(fake_llm.requests) == 1


def test_a_transcript_without_visitor_text_does_not_call_the_llm(api, fake_llm):
    response = api.post(URL, {"external_id": "silent", "messages": [{"role": "agent", "content": "Hello? 561 555 0192"}]},
                        format="json")
    body = end_extract(api, response.json()["conversation"]["id"])
    assert fake_llm.requests == [] and body["contact"] is None
    assert body["extraction"] == {"extractor": "llm", "found": {}, "dropped": [], "error": None}


@pytest.mark.django_db(transaction=True)
def test_the_llm_is_called_with_no_database_transaction_open(api, fake_llm, monkeypatch):
    from django.db import connection

    from conversations import extraction

    seen = []
    original = extraction._call_llm

    def spy(texts, definitions):
        seen.append(connection.in_atomic_block)
        return original(texts, definitions)

    monkeypatch.setattr(extraction, "_call_llm", spy)
    fake_llm.reply_json({"contact": {"name": "Ana", "email": "ana@example.com"}})
    conversation_id = transcript(api, "I'm Ana, ana@example.com")
    end_extract(api, conversation_id)
    assert seen == [False]
    assert Contact.objects.get().email_normalized == "ana@example.com"


# --- the visitor's own email and phone among several -------------------------------------------


@pytest.mark.parametrize(("texts", "email", "phone"), [
    (["My colleague Priya Dubois (priya.dubois2@example.com, 415-555-0100) suggested I write. I'm Chloe Dubois, "
      "you can reach me at chloe.dubois@gmail.com or (954) 306-4078."],
     "chloe.dubois@gmail.com", "+19543064078"),
    (["You can reach me at sam@gmail.co", "Oops, typo - it's actually sam@gmail.com"], "sam@gmail.com", None),
    (["Call me on 561 555 0192", "sorry, it's actually 904-678-8870"], None, "+19046788870"),
    (["Thanks!\n--\nSam Reed\nAcme Inc. main line 1-800-356-9377\nDirect: (561) 555-0192"], None, "+15615550192"),
    (["Yes, Tuesday works. Sam\n\nOn Mon, 3 May 2026, Acme Support <support@acmehelp.com> wrote:\n> How can we help?"],
     None, None),
    (["> from: old@example.com\nMy email is new@example.com"], "new@example.com", None),
    (["Email me at a@example.com or b@example.com"], "a@example.com", None),
    (["My number is 561 555 0192", "Sorry, my wife's number is 904-678-8870 too"], None, "+15615550192"),
])
def test_the_visitors_own_details_win_over_others_and_corrections_over_typos(texts, email, phone):
    contact = extract_with_rules(texts, definitions=[]).contact
    assert (contact.get("email"), contact.get("phone")) == (email, phone)
