"""Create an agent and print its token (shown once) on the last line."""

from django.core.management.base import BaseCommand, CommandError

from crm_hub.errors import InputRejected
from crm_hub.models import Agent
from crm_hub.services import create_agent


class Command(BaseCommand):
    help = "Create an API agent. The token is printed once, on the last line; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--scopes",
            default="contacts:read,contacts:write",
            # From the model, so a new scope is never missing here.
            help="Comma-separated, from: " + ", ".join(Agent.Scope.values) + ".",
        )
        parser.add_argument("--description", default="")
        parser.add_argument("--rate-limit", default="600/min", help="e.g. 600/min, 20/sec, 10000/day")

    def handle(self, *args, name, scopes, description, rate_limit, **options):
        try:
            agent, token = create_agent(
                name=name, scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                description=description, rate_limit=rate_limit,
            )
        except InputRejected as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Created agent {agent.name!r} (id {agent.pk}) with scopes {', '.join(agent.scopes)}.")
        self.stdout.write("Store this token now; it will not be shown again:")
        self.stdout.write(token)
