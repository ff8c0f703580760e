from django.apps import AppConfig


class ContactsConfig(AppConfig):
    name = "contacts"
    verbose_name = "Contacts"

    def ready(self) -> None:
        # Connects the cache invalidation of the contact list's vocabulary in every process
        # (web, workers, management commands), not only in those that happen to import it.
        from contacts import selectors  # noqa: F401
