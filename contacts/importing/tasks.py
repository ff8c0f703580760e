"""Celery tasks for imports: thin, they load ids and call the service."""

from celery import shared_task

from contacts.importing import services


@shared_task(name="contacts.importing.run_import_job", acks_late=True, bind=True)
def run_import_job(self, job_id: int) -> None:
    # run_job only starts a QUEUED job, so a redelivered message does not import twice; it
    # fails the job (or finishes its cancel) when the first delivery's worker has stopped.
    job = services.run_job(job_id=job_id)
    wait = services.seconds_until_stale(job)
    if wait is not None and not (self.request.is_eager or self.request.called_directly):
        # Redelivered while the job's heartbeat is still fresh: a worker killed a moment ago
        # (reject-on-worker-lost requeues at once) looks alive, so look again once it cannot.
        self.apply_async((job_id,), countdown=wait)


@shared_task(name="contacts.importing.revert_import_job", acks_late=True)
def revert_import_job(job_id: int, user_id: int | None) -> None:
    services.finish_revert(job_id=job_id, user_id=user_id)


@shared_task(name="contacts.importing.recover_stale_imports")
def recover_stale_imports() -> int:
    """Fail imports whose worker stopped and finish their cancels (for the beat schedule)."""
    return services.recover_stale_jobs()
