"""Periodic housekeeping for the API."""

from celery import shared_task

from crm_hub.api.idempotency import purge_expired


@shared_task(name="crm_hub.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    return purge_expired()
