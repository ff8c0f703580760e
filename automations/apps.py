from django.apps import AppConfig


class AutomationsConfig(AppConfig):
    name = "automations"
    verbose_name = "Automations and webhooks"

    def ready(self):
        from automations import switchboard

        switchboard.connect()
