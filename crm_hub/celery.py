"""The Celery app: settings come from Django's (CELERY_* names), tasks from every app."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm_hub.settings")

app = Celery("crm_hub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Tasks in sub-packages are not found by the default "<app>.tasks" lookup (issue 7: imports).
app.autodiscover_tasks(["contacts.importing"])
