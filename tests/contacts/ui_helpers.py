"""Builders for the web UI tests: data goes in through the services, as in production."""

from __future__ import annotations

import re

from contacts import services
from contacts.models import Source
from crm_hub.actors import Actor
from tests.contacts.factories import PipelineFactory, StageFactory, TagFactory, UserFactory


def make_contact(user, *, name: str, phone: str = "", email: str = "", owner=None, tags=(), source=Source.MANUAL, **extra):
    data = {"name": name, **extra}
    if phone:
        data["phone"] = phone
    if email:
        data["email"] = email
    if owner is not None:
        data["owner"] = owner.pk
    return services.upsert_contact(
        data=data, tags=list(tags), actor=Actor.for_user(user), source=source
    ).contact


def sales_pipeline():
    pipeline = PipelineFactory(name="Sales")
    stages = [StageFactory(pipeline=pipeline, name=n, position=i) for i, n in enumerate(["Lead", "Qualified", "Won"])]
    return pipeline, stages


def team():
    """Return (admin, alice, bob): a superuser and two sales users."""
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    alice = UserFactory(username="alice", is_staff=True, first_name="Alice")
    bob = UserFactory(username="bob", is_staff=True, first_name="Bob")
    return admin, alice, bob


__all__ = ["make_contact", "sales_pipeline", "team", "TagFactory"]


def names_in(response) -> list[str]:
    """The contact names a list page shows, in order."""
    return re.findall(r'class="cell-main" href="/contacts/\d+/">([^<]+)</a>', response.content.decode())
