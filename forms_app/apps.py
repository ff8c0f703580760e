from django.apps import AppConfig


class FormsAppConfig(AppConfig):
    name = "forms_app"
    verbose_name = "Forms"

    def ready(self):
        from contacts.models import HistoryEntry
        from contacts.selectors import register_timeline_source
        from forms_app.selectors import submissions_timeline_source

        # The submission item shows the answers; the bare history line would repeat it.
        register_timeline_source(
            submissions_timeline_source, replaces_history_actions=[HistoryEntry.Action.FORM_SUBMITTED]
        )
