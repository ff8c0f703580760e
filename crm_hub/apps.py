from django.apps import AppConfig


class CrmHubConfig(AppConfig):
    name = "crm_hub"
    verbose_name = "CRM Hub"
