"""Celery tasks for imports: thin, they load ids and call the service."""

from celery import shared_task

from contacts.importing import services


@shared_task(name="contacts.importing.run_import_job", acks_late=True)
def run_import_job(job_id: int) -> None:
    # run_job only starts a QUEUED job, so a redelivered message does nothing twice.
    services.run_job(job_id=job_id)
