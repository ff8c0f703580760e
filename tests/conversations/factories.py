import factory
from django.utils import timezone

from conversations.models import Conversation, Message


class ConversationFactory(factory.django.DjangoModelFactory):
    """A conversation written straight to the table (for read tests); write tests use the services."""

    class Meta:
        model = Conversation

    external_id = factory.Sequence(lambda n: f"conv-{n}")
    started_at = factory.LazyFunction(timezone.now)


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    role = Message.Role.VISITOR
    content = "Hello"
    sent_at = factory.LazyFunction(timezone.now)
