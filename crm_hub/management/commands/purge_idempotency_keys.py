"""Delete Idempotency-Key records past their retention (CRM_IDEMPOTENCY_TTL_HOURS, 24 by default)."""

import datetime as dt

from django.core.management.base import BaseCommand

from crm_hub.api.idempotency import purge_expired


class Command(BaseCommand):
    help = "Delete stored Idempotency-Key responses older than CRM_IDEMPOTENCY_TTL_HOURS (run hourly from cron or Celery beat)."

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=float, default=None, help="Override the retention in hours (at least 24).")

    def handle(self, *args, hours, **options):
        older_than = dt.timedelta(hours=max(hours, 24)) if hours is not None else None
        deleted = purge_expired(older_than=older_than)
        self.stdout.write(f"Deleted {deleted} idempotency record(s).")
