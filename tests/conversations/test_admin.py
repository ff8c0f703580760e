import pytest

from tests.contacts.factories import ContactFactory, UserFactory
from tests.conversations.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_changelist_filters_by_linked_channel_and_status(admin_client, agent):
    linked = ConversationFactory(external_id="with-contact", contact=ContactFactory(), agent=agent, channel="sms")
    unlinked = ConversationFactory(external_id="no-contact", channel="voice", extraction={
        "extractor": "llm", "found": {}, "dropped": [], "error": {"code": "llm_timeout", "message": "late"},
        "fallback": "rules",
    })
    url = "/admin/conversations/conversation/"
    page = admin_client.get(url).content.decode()
    assert "with-contact" in page and "no-contact" in page
    assert "llm; fell back to rules; error llm_timeout; found nothing" in page
    only_unlinked = admin_client.get(url, {"linked": "no"}).content.decode()
    assert "no-contact" in only_unlinked and "with-contact</a>" not in only_unlinked
    assert "with-contact" in admin_client.get(url, {"linked": "yes"}).content.decode()
    assert "no-contact" not in admin_client.get(url, {"channel": "sms"}).content.decode()
    assert "with-contact" in admin_client.get(url, {"agent__id__exact": agent.pk}).content.decode()
    assert "with-contact" in admin_client.get(url, {"status": "open"}).content.decode()
    assert linked.pk and unlinked.pk


def test_conversation_page_shows_messages_read_only_and_the_extraction(admin_client):
    conversation = ConversationFactory(extraction={
        "extractor": "rules", "found": {"phone": "+15615550192"},
        "dropped": [{"field": "email", "value": "bad@@x", "reason": "invalid_email: not a valid email address"}],
        "error": None,
    })
    MessageFactory(conversation=conversation, content="call me on 561 555 0192")
    response = admin_client.get(f"/admin/conversations/conversation/{conversation.pk}/change/")
    page = response.content.decode()
    assert response.status_code == 200
    assert "call me on 561 555 0192" in page
    assert "bad@@x" in page and "invalid_email" in page and "found phone" in page
    assert 'name="messages-0-content"' not in page  # no editable inputs for messages
    assert admin_client.get("/admin/conversations/conversation/add/").status_code == 403
