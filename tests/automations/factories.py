import factory

from automations.models import Rule, Team, TeamMember, Trigger


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")


class TeamMemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TeamMember

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory("tests.contacts.factories.UserFactory")
    position = factory.Sequence(lambda n: n)


class RuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rule
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Rule {n}")
    trigger = Trigger.CONTACT_CREATED

    @factory.post_generation
    def tags_to_add(obj, create, extracted, **kwargs):
        if create and extracted:
            obj.add_tags.set(extracted)
