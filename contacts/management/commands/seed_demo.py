"""Load demo data through the service layer; running it twice changes nothing."""

import datetime as dt
import random
import unicodedata

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.utils import timezone

from contacts import services
from contacts.models import Contact, CustomField, Pipeline, Source, Stage, Tag
from crm_hub.actors import Actor
from crm_hub.roles import sync_admins_group

DEMO_USERS = [
    # username, password, is_superuser, first name, last name
    ("admin", "crmhub-admin", True, "Ada", "Admin"),
    ("sales", "crmhub-sales", False, "Sam", "Seller"),
]
PIPELINES = {
    "Sales": ["New lead", "Qualified", "Proposal", "Negotiation", "Won", "Lost"],
    "Onboarding": ["Kick-off", "Setup", "Training", "Live"],
}
TAGS = [
    ("lead", "#2563eb", "Someone who showed interest but has not bought."),
    ("customer", "#16a34a", "Has bought at least once."),
    ("vip", "#d97706", "High-value account; answer first."),
    ("partner", "#7c3aed", "Resells or refers us."),
    ("newsletter", "#0891b2", "Opted in to the newsletter."),
    ("do-not-call", "#dc2626", "Asked not to be called."),
]
CUSTOM_FIELDS = [
    # key, label, type, choices, allow_for_ai, help text, bands
    ("budget", "Budget (USD)", CustomField.Type.DECIMAL, [], True, "Budget the person mentioned.", []),
    ("product_interest", "Product interest", CustomField.Type.SINGLE_CHOICE, ["Starter", "Pro", "Enterprise"], True, "Plan they asked about.", []),
    ("intent_score", "Intent score", CustomField.Type.NUMBER, [], True, "0 to 1, from the conversation.", [
        {"min": 0, "max": 0.4, "label": "Low intent"},
        {"min": 0.4, "max": 0.7, "label": "Warm"},
        {"min": 0.7, "max": 1.0, "label": "High intent"},
    ]),
    ("preferred_channel", "Preferred channel", CustomField.Type.SINGLE_CHOICE, ["Phone", "Email", "WhatsApp", "SMS"], True, "How they like to be reached.", []),
    ("marketing_consent", "Marketing consent", CustomField.Type.BOOLEAN, [], False, "Only staff record consent.", []),
    ("internal_rating", "Internal rating", CustomField.Type.SINGLE_CHOICE, ["A", "B", "C"], False, "Sales' own rating; not for agents.", []),
]
FIRST = ["Marcus", "Ana", "Priya", "John", "Mei", "Carlos", "Fatima", "Liam", "Sofia", "Noah", "Aisha", "Lucas", "Emma", "Kenji", "Olivia", "Mateo", "Zoe", "Ravi", "Chloe", "Diego"]
LAST = ["Silva", "Johnson", "Patel", "Smith", "Chen", "Garcia", "Khan", "Brown", "Rossi", "Müller", "Okafor", "Santos", "Nguyen", "Kowalski", "Dubois", "Tanaka", "Lopez", "Martin", "Costa", "Wright"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises", "Soylent", "Vandelay", "Wonka", ""]
POSITIONS = ["CEO", "CTO", "Head of Sales", "Buyer", "Office Manager", "Founder", "Marketing Lead", ""]
CITIES = [("Miami", "FL"), ("Austin", "TX"), ("Denver", "CO"), ("Seattle", "WA"), ("Boston", "MA"), ("Chicago", "IL")]
SOURCES = [Source.CHAT, Source.FORM, Source.MANUAL, Source.IMPORT, Source.API]
NOTES = [
    "Asked about pricing for the Pro plan; wants a demo next week.",
    "Called back about the invoice. <b>Resolved</b> on the call.",
    "Interested in WhatsApp integration.\nPrefers mornings.",
    "Met at the trade fair. Follow up with the case study.",
]


def ascii_slug(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


AREA_CODES = [212, 305, 415, 512, 561, 617, 702, 720, 206, 312]


def demo_phone(index: int) -> str:
    """Fictional US 555-01xx numbers in several formats (1,000 unique), each with its country code.

    With the code, they read the same whatever CRM_DEFAULT_PHONE_REGION is: written nationally
    ("(212) 555-0100"), they were refused under any region but US and `make run` stopped there.
    """
    area, line = AREA_CODES[index % 10], 100 + (index // 10) % 100
    formats = [f"+1 ({area}) 555-0{line}", f"+1.{area}.555.0{line}", f"+1 {area} 555 0{line}", f"+1{area}5550{line}"]
    return formats[index % 4]


class Command(BaseCommand):
    help = "Load demo data: pipelines, tags, custom fields, 200 contacts with notes, tasks and stages, and two users."

    def add_arguments(self, parser):
        parser.add_argument("--contacts", type=int, default=200, help="How many demo contacts (default 200).")

    @transaction.atomic
    def handle(self, *args, **options):
        # The "Admins" group is kept by migrate; a database migrated by an older version gets it here too.
        sync_admins_group()
        users = self._users()
        for position, (name, stages) in enumerate(PIPELINES.items()):
            pipeline, _ = Pipeline.objects.get_or_create(name=name, defaults={"position": position})
            for index, stage_name in enumerate(stages):
                Stage.objects.get_or_create(pipeline=pipeline, name=stage_name, defaults={"position": index})
        for name, color, description in TAGS:
            Tag.objects.get_or_create(name=name, defaults={"color": color, "description": description})
        for position, (key, label, kind, choices, ai, help_text, bands) in enumerate(CUSTOM_FIELDS):
            CustomField.objects.get_or_create(
                key=key,
                defaults={"label": label, "type": kind, "choices": choices, "allow_for_ai": ai,
                          "help_text": help_text, "bands": bands, "position": position},
            )
        created = self._contacts(options["contacts"], users)
        if created and connection.vendor == "postgresql":
            # Statistics for the planner now, not at autovacuum's first pass: the list's totals come from them.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {Contact._meta.db_table}")
        self.stdout.write(self.style.SUCCESS(
            f"Demo data ready: {Contact.objects.count()} contacts ({created} new), "
            f"{Pipeline.objects.count()} pipelines, {Tag.objects.count()} tags, {CustomField.objects.count()} custom fields."
        ))
        for username, password, is_superuser, *_ in DEMO_USERS:
            role = "admin" if is_superuser else "sales user"
            self.stdout.write(f"  {role}: {username} / {password}")

    def _users(self):
        User = get_user_model()
        users = []
        for username, password, is_superuser, first, last in DEMO_USERS:
            user, made = User.objects.get_or_create(
                username=username,
                defaults={"is_staff": True, "is_superuser": is_superuser, "first_name": first, "last_name": last,
                          "email": f"{username}@crmhub.example"},
            )
            if made:
                user.set_password(password)
                user.save(update_fields=["password"])
            users.append(user)
        return users

    def _contacts(self, count: int, users) -> int:
        sales = Pipeline.objects.get(name="Sales")
        onboarding = Pipeline.objects.get(name="Onboarding")
        tag_names = [t[0] for t in TAGS]
        created = 0
        now = timezone.now()
        for index in range(count):
            first, last = FIRST[index % len(FIRST)], LAST[(index * 7) % len(LAST)]
            city, state = CITIES[index % len(CITIES)]
            source = SOURCES[index % len(SOURCES)]
            actor = Actor.for_user(users[index % 2]) if source == Source.MANUAL else Actor.for_system(f"demo {source}")
            handle = f"{ascii_slug(first)}.{ascii_slug(last)}{index}"
            # Each demo person's own random stream: a second run draws the same values for everyone.
            rng = random.Random(20261121 + index)
            data = {
                "name": f"{first} {last}",
                "phone": demo_phone(index) if index % 9 else "",
                # Some in mixed case, as people type them; the dedup key is lower-cased.
                "email": f"{handle}@example.com" if index % 5 else f"{first}.{ascii_slug(last).title()}{index}@Example.com",
                "company": COMPANIES[index % len(COMPANIES)],
                "position": POSITIONS[index % len(POSITIONS)],
                "city": city, "state": state, "country": "United States",
            }
            custom = {"product_interest": rng.choice(["Starter", "Pro", "Enterprise"]),
                      "intent_score": round(rng.random(), 2)}
            if index % 3 == 0:
                custom["budget"] = str(rng.choice([500, 1200, 5000, 25000]))
            if Contact.objects.filter(email__iexact=data["email"]).exists():
                # Loaded by an earlier run (make run seeds on every start): left as it is, edits included.
                continue
            result = services.upsert_contact(
                data=data, custom=custom, tags=rng.sample(tag_names, k=index % 3), actor=actor, source=source,
                protected_changes="apply",
            )
            if not result.created:
                continue
            created += 1
            contact = result.contact
            services.assign_owner(contact=contact, owner=users[index % 2], actor=Actor.for_system("demo"), source=source)
            services.move_to_stage(contact=contact, pipeline=sales, stage=sales.stages.all()[index % 6],
                                   actor=actor, source=source)
            if index % 4 == 0:
                services.move_to_stage(contact=contact, pipeline=onboarding, stage=onboarding.stages.all()[index % 4],
                                       actor=actor, source=source)
            if index % 2 == 0:
                services.add_note(contact=contact, body=NOTES[index % len(NOTES)], actor=actor, source=source)
            if index % 3 != 2:
                due = now + dt.timedelta(days=(index % 11) - 3, hours=index % 8)
                task = services.create_task(contact=contact, title=rng.choice(["Call back", "Send proposal", "Book demo", "Check in"]),
                                            due_at=due, actor=actor, source=source, assignee=users[index % 2])
                if index % 7 == 0:
                    services.complete_task(task=task, actor=actor, source=source)
        return created
