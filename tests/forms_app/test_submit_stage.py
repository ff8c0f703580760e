"""A public form moves a known contact into its pipeline or further along, never back."""

import pytest

from contacts.models import ContactStage, Source, StageChange
from contacts.services import move_to_stage, upsert_contact
from crm_hub.actors import Actor
from forms_app import services
from tests.contacts.factories import StageFactory
from tests.forms_app.factories import CONTACT_FIELDS, make_form

pytestmark = pytest.mark.django_db


def _known_contact_at(stage):
    contact = upsert_contact(
        data={"name": "Ana", "phone": "5615550192"}, actor=Actor.for_system("seed"), source=Source.MANUAL
    ).contact
    move_to_stage(contact=contact, pipeline=stage.pipeline, stage=stage, actor=Actor.for_system("seed"), source=Source.MANUAL)
    return contact


def _submit(lead_setup):
    form = make_form(fields=[dict(f) for f in CONTACT_FIELDS], stage=lead_setup["stage"])  # "New lead", position 1
    services.submit_form(form=form, data={"fname": "Ana", "femail": "ana@example.com", "fphone": "(561) 555-0192"})


def test_a_contact_further_along_keeps_its_stage(lead_setup):
    qualified = lead_setup["stage"].pipeline.stages.get(name="Qualified")  # position 2
    contact = _known_contact_at(qualified)
    _submit(lead_setup)
    assert ContactStage.objects.get(contact=contact).stage == qualified
    assert StageChange.objects.filter(contact=contact).count() == 1


def test_a_contact_earlier_in_the_pipeline_moves_forward(lead_setup):
    prospect = StageFactory(pipeline=lead_setup["stage"].pipeline, name="Prospect", position=0)
    contact = _known_contact_at(prospect)
    _submit(lead_setup)
    assert ContactStage.objects.get(contact=contact).stage == lead_setup["stage"]


def test_a_contact_outside_the_pipeline_enters_it(lead_setup):
    contact = upsert_contact(data={"name": "Ana", "phone": "5615550192"}, actor=Actor.for_system("seed"), source=Source.MANUAL).contact
    _submit(lead_setup)
    assert ContactStage.objects.get(contact=contact).stage == lead_setup["stage"]
