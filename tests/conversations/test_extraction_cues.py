"""Whose email or phone it is when the visitor's and someone else's share a sentence or sit side by side.

A cue ("reach me at", "Direct:", "my colleague", "main line") speaks for the value in its own clause, not
for every value after it in the sentence.
"""

import pytest

from contacts.models import Contact
from conversations.extraction import extract_with_rules
from conversations.models import Conversation
from tests.conversations.test_extraction import end_extract, transcript

pytestmark = pytest.mark.django_db

# The tester's repros: one message each, the visitor's own value written after someone else's.
REPROS = [
    ("my colleague is at bob@example.com, reach me at ana2@example.com", "ana2@example.com", None),
    ("My colleague's email is bob2@example.com. Reach me at ana3@example.com", "ana3@example.com", None),
    ("Our main line is 561-555-0154; direct: 561-555-0155", None, "+15615550155"),
    ("my colleague's number is 561 555 0150, reach me at 561 555 0151", None, "+15615550151"),
]


@pytest.mark.parametrize(("text", "email", "phone"), REPROS)
def test_the_visitors_own_value_wins_over_someone_elses_in_the_same_message(api, text, email, phone):
    conversation_id = transcript(api, text)
    end_extract(api, conversation_id, extractor="rules")
    contact = Contact.objects.get()
    assert (contact.email_normalized or None, contact.phone_e164 or None) == (email, phone)
    extraction = Conversation.objects.get(pk=conversation_id).extraction
    # The other person's value is recorded as left out, not silently lost, and said to be theirs.
    assert [d["reason"] for d in extraction["dropped"]] == [f"said as someone else's {'email' if email else 'phone'}"]


@pytest.mark.parametrize(("text", "email", "phone"), REPROS)
def test_split_into_two_messages_gives_the_same_answer(text, email, phone):
    # Splitting at the clause break was the tester's working case; both shapes must agree.
    for mark in (", ", ". ", "; "):
        if mark in text:
            first, second = text.split(mark, 1)
            break
    contact = extract_with_rules([first, second], definitions=[]).contact
    assert (contact.get("email"), contact.get("phone")) == (email, phone)


@pytest.mark.parametrize(("texts", "email", "phone"), [
    # Another person's value is never the visitor's, even when it is the only one (it made a contact of them).
    (["My colleague Bob suggested I write; his address is bob@example.com"], None, None),
    (["My colleague told me about you. Reach me at ana@example.com"], "ana@example.com", None),
    (["my assistant booked this, her number is (561) 555-0150"], None, None),
    # A shared line is the visitor's organisation's: kept when it is all they gave, not over their own.
    (["you can call our office at (561) 555-0150"], None, "+15615550150"),
    (["our main line is (561) 555-0150, my colleague Bob is on 561 555 0152"], None, "+15615550150"),
    # The visitor's own first and someone else's after: the later "colleague" does not reach back.
    (["my email is ana@example.com, my colleague's is bob@example.com"], "ana@example.com", None),
    (["reach me at ana@example.com, my boss is bob@example.com"], "ana@example.com", None),
    # "My" in "my wife", "my colleague" is no claim of the visitor's own.
    (["My wife's email is wife@example.com. Mine is ana@example.com!"], "ana@example.com", None),
    # "cell", "direct" say what kind of line; a person named earlier in the clause owns it.
    (["her cell is 561 555 0150, mine is 561 555 0151"], None, "+15615550151"),
    (["my colleague's cell is 561 555 0150, my cell is 561 555 0151"], None, "+15615550151"),
    # Phone formats: dots (no sentence end), parentheses, +1, the visitor's own first or last.
    (["Direct: 561.555.0151. Main line: 561.555.0150"], None, "+15615550151"),
    (["Call the office at (561) 555-0150 or my cell +1 561 555 0151"], None, "+15615550151"),
    (["Our main line is +1 (561) 555-0154; direct: 561.555.0155"], None, "+15615550155"),
    (["Our toll-free line is 1-800-356-9377, you can reach me at (561) 555-0155."], None, "+15615550155"),
])
def test_each_cue_speaks_for_its_own_clause(texts, email, phone):
    contact = extract_with_rules(texts, definitions=[]).contact
    assert (contact.get("email"), contact.get("phone")) == (email, phone)


def test_a_sentence_period_ends_the_address_but_an_address_of_dots_is_still_dropped():
    # Leaving the period out of addresses must not let a broken one slip by unrecorded.
    result = extract_with_rules(["contact me at foo@. or ana@example.com."], definitions=[])
    assert result.contact == {"email": "ana@example.com"}
    assert [(d["value"], d["reason"].split(":")[0]) for d in result.dropped] == [("foo@", "invalid_email")]


@pytest.mark.parametrize("text", [
    "Hi, I'm the office manager at Acme Dental: 561-555-0192",
    "I'm the assistant manager here, text 561-555-0192",
    "I am a sales manager, reach me on 561-555-0192",
])
def test_a_visitor_naming_their_own_job_keeps_their_number(text):
    assert extract_with_rules([text], definitions=[]).contact.get("phone") == "+15615550192"
