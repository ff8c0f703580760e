from django.apps import AppConfig


class CrmHubConfig(AppConfig):
    name = "crm_hub"
    verbose_name = "CRM Hub"

    def ready(self):
        from crm_hub import roles  # noqa: F401  (connects the "Admins" group's receivers)
