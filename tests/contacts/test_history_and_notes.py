import pytest

from contacts import services
from contacts.models import HistoryEntry, Source
from contacts.selectors import field_provenance
from crm_hub.errors import InputRejected
from tests.contacts.factories import PipelineFactory, StageFactory, TagFactory

pytestmark = pytest.mark.django_db


def test_history_shows_who_changed_which_field_from_what_to_what(agent_actor, staff_actor, staff_user, agent):
    contact = services.upsert_contact(
        data={"name": "Ana", "phone": "+15615550100", "company": "Acme"}, actor=agent_actor, source=Source.CHAT
    ).contact
    services.update_contact(contact=contact, data={"company": "Globex", "city": "Miami"}, actor=staff_actor, source=Source.MANUAL)

    created, updated = contact.history.order_by("created_at", "id")
    assert created.action == "created" and created.actor_agent == agent and created.source == "chat"
    assert created.changes["company"] == [None, "Acme"]
    assert updated.action == "updated"
    assert updated.actor_user == staff_user and updated.actor_label == "staffer"
    assert updated.changes == {"company": ["Acme", "Globex"], "city": ["", "Miami"]}
    assert field_provenance(contact, "company").pk == updated.pk
    assert field_provenance(contact, "phone").pk == created.pk


def test_tag_stage_task_and_note_changes_are_in_history(agent_actor):
    TagFactory(name="vip")
    stage = StageFactory(name="New", pipeline=PipelineFactory(name="Sales"))
    won = StageFactory(name="Won", pipeline=stage.pipeline)
    contact = services.upsert_contact(data={"name": "Ana"}, actor=agent_actor, source=Source.API).contact
    services.add_tags(contact=contact, tags=["VIP"], actor=agent_actor, source=Source.API)
    services.move_to_stage(contact=contact, pipeline="sales", stage="new", actor=agent_actor, source=Source.API)
    services.move_to_stage(contact=contact, pipeline=stage.pipeline.pk, stage=won.pk, actor=agent_actor, source=Source.API)
    task = services.create_task(contact=contact, title="Call back", due_at="2026-12-01T10:00:00Z", actor=agent_actor, source=Source.API)
    services.complete_task(task=task, actor=agent_actor, source=Source.API)
    services.add_note(contact=contact, body="Hello", actor=agent_actor, source=Source.API)
    actions = list(contact.history.order_by("created_at", "id").values_list("action", flat=True))
    assert actions == ["created", "tag_added", "stage_changed", "stage_changed", "task_created", "task_completed", "note_added"]
    move = contact.history.filter(action="stage_changed").order_by("-id").first()
    assert move.changes == {"stage.Sales": ["New", "Won"]}
    assert list(contact.stage_changes.order_by("changed_at", "id").values_list("to_stage__name", flat=True)) == ["New", "Won"]
    assert contact.stage_memberships.get().stage == won


@pytest.mark.parametrize(
    "body",
    [
        '<p>Hi</p><script>alert(1)</script>',
        '<img src=x onerror="alert(1)"><b>Hi</b>',
        '<a href="javascript:alert(1)">Hi</a>',
        '<a href="JaVaScRiPt:alert(1)" onclick="x()">Hi</a><iframe src="https://evil"></iframe>',
    ],
)
def test_rich_text_is_stored_without_scripts_handlers_or_javascript_urls(agent_actor, body):
    contact = services.upsert_contact(data={"name": "Ana"}, actor=agent_actor, source=Source.API).contact
    note = services.add_note(contact=contact, body=body, actor=agent_actor, source=Source.API)
    lowered = note.body.lower()
    for bad in ("<script", "onerror", "javascript:", "onclick", "<iframe", "alert(1)"):
        assert bad not in lowered
    assert "Hi" in note.body


def test_plain_text_note_keeps_paragraphs_and_escapes_markup(agent_actor):
    contact = services.upsert_contact(data={"name": "Ana"}, actor=agent_actor, source=Source.API).contact
    note = services.add_note(contact=contact, body="Line 1\nLine 2\n\nPara 2 with a < b", actor=agent_actor, source=Source.API)
    assert note.body == "<p>Line 1<br>Line 2</p><p>Para 2 with a &lt; b</p>"


@pytest.mark.parametrize(
    "body, expected",
    [
        ("Contact: John Smith <john@example.com>, prefers email",
         "<p>Contact: John Smith &lt;john@example.com&gt;, prefers email</p>"),
        ("Wants plan <Pro> not <Starter>", "<p>Wants plan &lt;Pro&gt; not &lt;Starter&gt;</p>"),
        ("Reply: <https://example.com/doc>", "<p>Reply: &lt;https://example.com/doc&gt;</p>"),
        ("<b>Hot</b> lead, mail <ana@example.com>", "<b>Hot</b> lead, mail &lt;ana@example.com&gt;"),
    ],
)
def test_text_in_angle_brackets_that_is_not_html_is_kept(agent_actor, body, expected):
    # Email transcripts are full of <address> and <link>; dropping them as unknown tags lost data.
    contact = services.upsert_contact(data={"name": "Ana"}, actor=agent_actor, source=Source.API).contact
    note = services.add_note(contact=contact, body=body, actor=agent_actor, source=Source.API)
    assert note.body == expected


def test_inline_markup_on_several_lines_keeps_the_lines(agent_actor):
    contact = services.upsert_contact(data={"name": "Ana"}, actor=agent_actor, source=Source.API).contact
    note = services.add_note(
        contact=contact, body="Summary:\n<b>Hot lead</b>\nBudget 5k\n\nCall back Friday", actor=agent_actor, source=Source.API
    )
    assert note.body == "<p>Summary:<br><b>Hot lead</b><br>Budget 5k</p><p>Call back Friday</p>"
    blocks = services.add_note(contact=contact, body="<p>one</p>\n<p>two</p>", actor=agent_actor, source=Source.API)
    assert blocks.body == "<p>one</p>\n<p>two</p>"


def test_empty_note_is_refused(agent_actor):
    contact = services.upsert_contact(data={"name": "Ana"}, actor=agent_actor, source=Source.API).contact
    with pytest.raises(InputRejected) as caught:
        services.add_note(contact=contact, body="<script>x</script>", actor=agent_actor, source=Source.API)
    assert caught.value.errors[0].field == "body"
    assert not HistoryEntry.objects.filter(action="note_added").exists()
