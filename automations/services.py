"""Automation rules: run by the contact services when something happens, inside their transaction.

``run_rules`` is called visibly from ``contacts.services`` (and the forms and
conversations code), never from signals. Each matching rule runs in a savepoint:
a rule that fails is rolled back alone, recorded as a failed ``RuleRun`` and in
the contact's history, and the caller's write still commits.

Actions a rule takes go through the same contact services as everything else,
so they leave history and webhooks like any change; the rule's actor reads
"automation rule N: name". Rules can set off other rules (a tag a rule adds is a
"tag added"), up to ``CRM_AUTOMATION_MAX_DEPTH`` levels; deeper runs are skipped
and recorded, so two rules feeding each other cannot loop.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from automations import switchboard
from automations.models import Rule, RuleRun, Team, TeamMember, Trigger
from contacts.models import Contact, ContactStage, ContactTag, HistoryEntry, Task
from crm_hub.actors import Actor

logger = logging.getLogger(__name__)

_depth: contextvars.ContextVar[int] = contextvars.ContextVar("automation_depth", default=0)


class RuleFailed(Exception):
    """A rule cannot do what it says (empty team, missing user...)."""


@dataclass
class RuleOutcome:
    rule: Rule
    matched: bool
    reasons: list[str] = field(default_factory=list)  # why it did not match
    actions: list[str] = field(default_factory=list)
    error: str = ""


def rule_actor(rule: Rule) -> Actor:
    return Actor.for_system(f"automation rule {rule.pk}: {rule.name}")


# --- Conditions --------------------------------------------------------------------------


def _context_tag_names(context: dict) -> set[str]:
    names = set()
    for tag in context.get("tags") or []:
        names.add((tag.name if hasattr(tag, "name") else str(tag)).casefold())
    return names


def check_conditions(rule: Rule, *, trigger: str, contact: Contact, source: str, context: dict) -> list[str]:
    """Return why the rule does not apply (empty list: it applies)."""
    reasons: list[str] = []
    if rule.trigger != trigger:
        reasons.append(f"It runs on {rule.get_trigger_display().lower()}, not {trigger}.")
    if rule.sources and source not in rule.sources:
        reasons.append(f"Source {source} is not one of {', '.join(rule.sources)}.")
    if rule.form_id is not None and str(context.get("form_id")) != str(rule.form_id):
        reasons.append(f"Not form {rule.form_id}.")
    if rule.tag_id is not None:
        if trigger == Trigger.TAG_ADDED:
            if rule.tag.name.casefold() not in _context_tag_names(context):
                reasons.append(f"Tag {rule.tag.name} was not the one added.")
        elif not ContactTag.objects.filter(contact=contact, tag_id=rule.tag_id).exists():
            reasons.append(f"The contact does not have tag {rule.tag.name}.")
    if rule.stage_id is not None:
        if trigger == Trigger.STAGE_CHANGED:
            if str(context.get("stage_id")) != str(rule.stage_id):
                reasons.append(f"The contact did not move into {rule.stage}.")
        elif not ContactStage.objects.filter(contact=contact, stage_id=rule.stage_id).exists():
            reasons.append(f"The contact is not in {rule.stage}.")
    if rule.custom_field_key:
        value = (contact.custom or {}).get(rule.custom_field_key)
        wanted = rule.custom_field_value.strip().casefold()
        values = value if isinstance(value, list) else [value]
        if not any(v is not None and _condition_matches(v, wanted) for v in values):
            reasons.append(f"Custom field {rule.custom_field_key} is {value!r}, not {rule.custom_field_value!r}.")
    return reasons


def _condition_matches(value: Any, wanted: str) -> bool:
    text = str(value).strip().casefold()
    if text == wanted:
        return True
    # Decimals keep the form they were written in ("1250.00"); the condition may say "1250".
    try:
        return Decimal(text) == Decimal(wanted)
    except (InvalidOperation, ValueError):
        return False


# --- Actions ---------------------------------------------------------------------------------


def _team_users(team: Team) -> list:
    User = get_user_model()
    ids = list(
        # Members who can sign in: a lead handed to a user without staff status is seen by nobody.
        TeamMember.objects.filter(team=team, user__is_active=True, user__is_staff=True)
        .order_by("position", "id").values_list("user_id", flat=True)
    )
    users = User.objects.in_bulk(ids)
    return [users[i] for i in ids]


def take_round_robin_turn(team: Team):
    """Return the member whose turn it is and advance the counter, under a row lock on the team.

    The lock is held to the end of the caller's transaction, so concurrent
    creates queue for their turn: no two take the same one, nobody is skipped.
    """
    locked = Team.objects.select_for_update().get(pk=team.pk)
    members = _team_users(locked)
    if not members:
        raise RuleFailed(f"Team {team.name} has no active members who can sign in.")
    chosen = members[locked.turn % len(members)]
    Team.objects.filter(pk=locked.pk).update(turn=F("turn") + 1)
    return chosen


def fewest_open_tasks(team: Team):
    """Return the team member with the fewest open tasks (ties go by team order)."""
    # Under the team's lock, held to the end of the write that creates the task: a parallel
    # assignment waits and then counts this one's task too (else both picked the same member).
    list(Team.objects.select_for_update().filter(pk=team.pk).values_list("pk", flat=True))
    members = _team_users(team)
    if not members:
        raise RuleFailed(f"Team {team.name} has no active members who can sign in.")
    counts = dict(
        Task.objects.filter(assignee__in=members, status=Task.Status.OPEN)
        .values("assignee").annotate(n=Count("id")).values_list("assignee", "n")
    )
    return min(members, key=lambda u: (counts.get(u.pk, 0), members.index(u)))


def _due_delta(rule: Rule) -> dt.timedelta:
    return dt.timedelta(**{rule.task_due_unit: rule.task_due_amount or 0})


def _due_from_now(rule: Rule) -> dt.datetime:
    """Minutes and hours are elapsed time; days are calendar days, the same local time across a DST change."""
    if rule.task_due_unit == Rule.DueUnit.DAYS:
        local = timezone.localtime(timezone.now())
        # Aware arithmetic with zoneinfo keeps the wall clock; the offset is worked out again.
        return (local.replace(tzinfo=None) + _due_delta(rule)).replace(tzinfo=local.tzinfo)
    return timezone.now() + _due_delta(rule)


def apply_actions(rule: Rule, *, contact: Contact, source: str, trigger: str) -> list[str]:
    """Do what the rule says to the contact; return a line per thing done."""
    from automations import payloads, webhooks
    from contacts import services as contact_services

    actor = rule_actor(rule)
    done: list[str] = []
    if rule.assign_mode and not (rule.assign_only_if_unowned and contact.owner_id):
        if rule.assign_mode == Rule.AssignMode.FIXED:
            if not rule.assign_user.is_active:
                raise RuleFailed(f"User {rule.assign_user} is not active.")
            owner = rule.assign_user
        elif rule.assign_mode == Rule.AssignMode.ROUND_ROBIN:
            owner = take_round_robin_turn(rule.assign_team)
        else:
            owner = fewest_open_tasks(rule.assign_team)
        if contact_services.assign_owner(contact=contact, owner=owner, actor=actor, source=source):
            done.append(f"owner set to {owner.get_username()}")
    if rule.set_stage_id:
        stage = rule.set_stage
        moved = contact_services.move_to_stage(
            contact=contact, pipeline=stage.pipeline, stage=stage, actor=actor, source=source,
            only_if_not_in_pipeline=rule.stage_only_if_not_in_pipeline,
        )
        if moved.changed:
            done.append(f"moved to {stage}")
    tag_names = [t.name for t in rule.add_tags.all()]
    if tag_names:
        added = contact_services.add_tags(contact=contact, tags=tag_names, actor=actor, source=source)
        if added:
            done.append("tags added: " + ", ".join(t.name for t in added))
    if rule.task_title:
        due = _due_from_now(rule)
        task = contact_services.create_task(
            contact=contact, title=rule.task_title, due_at=due, actor=actor, source=source,
        )
        done.append(
            f"task {task.title!r} due {due:%Y-%m-%d %H:%M} for {task.assignee.get_username() if task.assignee else 'nobody'}"
        )
    if rule.webhook_event == "contact.created":
        # Saved before such rules were refused: the contact.created every new contact gets is the one sent.
        done.append("webhook contact.created not sent again (every subscribed endpoint gets it already)")
    elif rule.webhook_event:
        endpoints = [rule.webhook_endpoint] if rule.webhook_endpoint_id else None
        payload = payloads.contact_event(contact)
        payload["rule"] = {"id": rule.pk, "name": rule.name, "trigger": trigger}
        sent = webhooks.emit_event(event=rule.webhook_event, payload=payload, endpoints=endpoints)
        done.append(f"webhook {rule.webhook_event} queued for {len(sent)} endpoint(s)")
    return done


# --- Running -------------------------------------------------------------------------------


def _rules_for(trigger: str) -> list[Rule]:
    if not switchboard.trigger_has_rules(trigger):
        return []
    return list(
        Rule.objects.filter(trigger=trigger, active=True)
        .select_related("tag", "stage", "assign_user", "assign_team", "set_stage__pipeline", "webhook_endpoint")
        .order_by("position", "id")
    )


def _automation_history(contact: Contact, *, rule: Rule, source: str, summary: str, changes: dict) -> HistoryEntry:
    actor = rule_actor(rule)
    return HistoryEntry(
        contact=contact, action=HistoryEntry.Action.AUTOMATION, changes=changes, summary=summary[:255],
        source=source, actor_label=actor.label[:160],
    )


# Django builds Trigger.values afresh on each access; this runs for every contact write.
_KNOWN_TRIGGERS = frozenset(Trigger.values)


def run_rules(
    *, trigger: str, contact: Contact, actor: Actor, source: str, context: dict | None = None
) -> list[RuleOutcome]:
    """Run the active rules for ``trigger`` in order on ``contact``, inside the caller's transaction."""
    if trigger not in _KNOWN_TRIGGERS:
        raise ValueError(f"Unknown trigger {trigger!r}")
    context = context or {}
    rules = _rules_for(trigger)
    if not rules:
        return []
    depth = _depth.get()
    limit = getattr(settings, "CRM_AUTOMATION_MAX_DEPTH", 3)
    outcomes: list[RuleOutcome] = []
    if depth >= limit:
        for rule in rules:
            if not check_conditions(rule, trigger=trigger, contact=contact, source=source, context=context):
                RuleRun.objects.create(
                    rule=rule, contact=contact, trigger=trigger, status=RuleRun.Status.SKIPPED,
                    error=f"Not run: rules set off by rules stop after {limit} levels.",
                )
        return outcomes
    token = _depth.set(depth + 1)
    try:
        for rule in rules:
            reasons = check_conditions(rule, trigger=trigger, contact=contact, source=source, context=context)
            if reasons:
                continue
            outcome = RuleOutcome(rule=rule, matched=True)
            try:
                with transaction.atomic():
                    outcome.actions = apply_actions(rule, contact=contact, source=source, trigger=trigger)
                    RuleRun.objects.create(
                        rule=rule, contact=contact, trigger=trigger, status=RuleRun.Status.APPLIED,
                        actions=outcome.actions,
                    )
                    done = "; ".join(outcome.actions) or "nothing to change"
                    _automation_history(
                        contact, rule=rule, source=source,
                        summary=f"Rule {rule.name!r} fired: {done}",
                        changes={"rule": [None, rule.name], "actions": [None, outcome.actions],
                                 "triggered_by": [None, actor.label]},
                    ).save()
            except Exception as exc:  # a broken rule must not lose the caller's write
                logger.exception("Automation rule %s failed on contact %s", rule.pk, contact.pk)
                outcome.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuleFailed) else str(exc)
                # The savepoint undid the rule's writes; drop what it changed in memory too.
                contact.refresh_from_db()
                RuleRun.objects.create(
                    rule=rule, contact=contact, trigger=trigger, status=RuleRun.Status.FAILED, error=outcome.error,
                )
                _automation_history(
                    contact, rule=rule, source=source,
                    summary=f"Rule {rule.name!r} failed: {outcome.error}",
                    changes={"rule": [None, rule.name], "error": [None, outcome.error],
                             "triggered_by": [None, actor.label]},
                ).save()
            outcomes.append(outcome)
    finally:
        _depth.reset(token)
    return outcomes


class _DryRunRollback(Exception):
    pass


def sample_context(rule: Rule) -> dict[str, Any]:
    """The trigger context a rule's own conditions ask for, to try it on any contact."""
    context: dict[str, Any] = {}
    if rule.tag_id:
        context["tags"] = [rule.tag.name]
    if rule.stage_id:
        context["stage_id"] = rule.stage_id
        context["pipeline_id"] = rule.stage.pipeline_id
    if rule.form_id is not None:
        context["form_id"] = rule.form_id
    return context


def dry_run(*, rule: Rule, contact: Contact, source: str | None = None) -> RuleOutcome:
    """Say what ``rule`` would do to ``contact`` now, writing nothing.

    The actions really run (so the answer is exactly what would happen, round-robin
    turn included) inside a transaction that is always rolled back; queued
    webhooks die with it because on-commit callbacks never fire.
    """
    source = source or contact.source
    outcome = RuleOutcome(rule=rule, matched=False)
    outcome.reasons = check_conditions(
        rule, trigger=rule.trigger, contact=contact, source=source, context=sample_context(rule)
    )
    if not rule.active:
        outcome.reasons.insert(0, "The rule is not active (tried anyway).")
    outcome.matched = not [r for r in outcome.reasons if not r.startswith("The rule is not active")]
    try:
        with transaction.atomic():
            sample = Contact.objects.select_related("owner").get(pk=contact.pk)
            token = _depth.set(getattr(settings, "CRM_AUTOMATION_MAX_DEPTH", 3))
            try:
                outcome.actions = apply_actions(rule, contact=sample, source=source, trigger=rule.trigger)
            finally:
                _depth.reset(token)
            raise _DryRunRollback
    except _DryRunRollback:
        pass
    except Exception as exc:  # shown to the admin as what would fail
        outcome.error = str(exc) if isinstance(exc, RuleFailed) else f"{type(exc).__name__}: {exc}"
    return outcome


def failed_runs_since(since: dt.datetime):
    return RuleRun.objects.filter(status=RuleRun.Status.FAILED, created_at__gte=since)

