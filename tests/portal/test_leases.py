"""Which active jobs a poller reads in a tick (the lease seam)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs.models import Job
from jobs.poller import claim_active_jobs

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="leases exist on PostgreSQL only"
)


def test_claim_skips_finished_and_vanished_jobs(cardholder, make_job):
    active = make_job(cardholder)
    make_job(cardholder, termination_type="BILLABLE")
    make_job(cardholder, vanished_at=timezone.now())

    claimed = claim_active_jobs("poller-a", 100, 6)

    assert [job.pk for job in claimed] == [active.pk]


def test_claim_prefetches_open_requests(
    cardholder, make_job, django_assert_num_queries
):
    make_job(cardholder)
    claimed = claim_active_jobs("poller-a", 100, 6)

    with django_assert_num_queries(0):
        assert claimed[0].open_requests == []


@on_postgresql
def test_two_pollers_share_the_active_jobs(cardholder, make_job):
    jobs = {make_job(cardholder).pk for _ in range(4)}

    first = {job.pk for job in claim_active_jobs("poller-a", 2, 6)}
    second = {job.pk for job in claim_active_jobs("poller-b", 10, 6)}

    assert len(first) == 2
    assert first | second == jobs
    assert not first & second


@on_postgresql
def test_a_poller_keeps_reading_the_jobs_it_leased(cardholder, make_job):
    make_job(cardholder)
    first = claim_active_jobs("poller-a", 10, 6)

    again = claim_active_jobs("poller-a", 10, 6)

    assert [job.pk for job in again] == [job.pk for job in first]


@on_postgresql
def test_an_expired_lease_is_taken_over(cardholder, make_job):
    job = make_job(cardholder)
    claim_active_jobs("poller-a", 10, 6)
    Job.objects.filter(pk=job.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    taken = claim_active_jobs("poller-b", 10, 6)

    assert [j.pk for j in taken] == [job.pk]
    assert Job.objects.get(pk=job.pk).lease_owner == "poller-b"


@on_postgresql
def test_a_live_lease_is_not_taken_over(cardholder, make_job):
    make_job(cardholder)
    claim_active_jobs("poller-a", 10, 6)

    assert claim_active_jobs("poller-b", 10, 6) == []
