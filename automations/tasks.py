"""Celery tasks: thin, idempotent, acknowledged only after they finish (a killed worker's task runs again)."""

from celery import shared_task

from automations import webhooks


@shared_task(name="automations.deliver_due_webhooks", acks_late=True, ignore_result=True)
def deliver_due_webhooks() -> int:
    """Deliver every due outbox row in batches (queued on commit and by celery beat)."""
    return webhooks.deliver_due()


@shared_task(name="automations.deliver_webhook", acks_late=True, ignore_result=True)
def deliver_webhook(delivery_id: int) -> bool:
    """Deliver one outbox row (the one-task-per-event baseline of bench/webhooks.py)."""
    return webhooks.deliver_one(delivery_id=delivery_id)


@shared_task(name="automations.prune_webhook_log", acks_late=True, ignore_result=True)
def prune_webhook_log() -> int:
    """Drop old finished outbox rows (daily, from celery beat)."""
    return webhooks.prune_log()
