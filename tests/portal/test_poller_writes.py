"""How the poller writes what one tick read."""

import pytest
from django.db import connection

from jobs import selectors
from jobs.models import Job
from jobs.poller import _apply_batch
from tests.portal.conftest import T0, remote_job

# Transactions are what is looked at, so the test's own is not wrapped round.
pytestmark = pytest.mark.django_db(transaction=True)


def _reads(jobs: list[Job], status: str):
    return [
        (
            selectors.jobs_with_state().get(pk=job.pk),
            remote_job(job.cardsavr_id, status=status),
            T0,
        )
        for job in jobs
    ]


def test_each_job_of_a_tick_is_written_in_a_transaction_of_its_own(
    make_job, cardholder, monkeypatch
):
    jobs = [make_job(cardholder) for _ in range(3)]
    reads = _reads(jobs, "AUTH")
    commits = []
    commit = connection.commit

    def counted_commit():
        commits.append("commit")
        commit()

    monkeypatch.setattr(connection, "commit", counted_commit)

    changed, _ = _apply_batch(reads, [])

    assert changed == 3
    assert len(commits) == 3


def test_a_tick_writes_its_other_jobs_when_one_was_deleted_meanwhile(
    make_job, cardholder
):
    jobs = [make_job(cardholder) for _ in range(3)]
    reads = _reads(jobs, "AUTH")
    # An operator deletes the middle job between the read and the write.
    Job.objects.filter(pk=jobs[1].pk).delete()

    changed, _ = _apply_batch(reads, [])

    statuses = dict(Job.objects.values_list("pk", "status"))
    assert changed == 2
    assert statuses == {jobs[0].pk: "AUTH", jobs[2].pk: "AUTH"}
