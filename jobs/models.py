"""Mirrors of CardSavr's cardholders, cards, merchant sites, jobs and requests.

CardSavr is the source of truth for everything mirrored here. Nothing secret is
ever stored: no card number, no CVV, no merchant credential, no TFA code.
"""

from django.conf import settings
from django.db import models


class Outcome(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    NEEDS_INPUT = "needs_input", "Needs input"
    SUCCESS = "success", "Success"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled / never started"


class TerminationType(models.TextChoices):
    BILLABLE = "BILLABLE", "Billable (success)"
    USER_DATA_FAILURE = "USER_DATA_FAILURE", "User data failure"
    SITE_INTERACTION_FAILURE = "SITE_INTERACTION_FAILURE", "Site interaction failure"
    PROCESS_FAILURE = "PROCESS_FAILURE", "Process failure"
    NEVER_STARTED = "NEVER_STARTED", "Never started"


class Cardholder(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="cardholder"
    )
    cardsavr_id = models.BigIntegerField(unique=True, null=True, blank=True)
    cuid = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.user.get_username()


class Card(models.Model):
    """A card on file at CardSavr; only what identifies it to a person is kept."""

    cardholder = models.ForeignKey(
        Cardholder, on_delete=models.CASCADE, related_name="cards"
    )
    cardsavr_id = models.BigIntegerField(unique=True)
    last4 = models.CharField(max_length=4)
    brand = models.CharField(max_length=32, blank=True)
    expiration_month = models.PositiveSmallIntegerField()
    expiration_year = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        brand = self.brand or "Card"
        return f"{brand} ending {self.last4}"


class MerchantSite(models.Model):
    cardsavr_id = models.BigIntegerField(unique=True)
    name = models.CharField(max_length=200)
    host = models.CharField(max_length=255)
    logo_url = models.URLField(max_length=500, blank=True)
    # Logos are fetched once and served by the portal itself, so pages load no
    # third-party asset and the Content-Security-Policy stays 'self'.
    logo = models.BinaryField(blank=True, default=b"")
    logo_content_type = models.CharField(max_length=64, blank=True)
    tags = models.JSONField(default=list, blank=True)
    # CardSavr's definitions: [{key_name, label, type, secret}, ...].
    account_link = models.JSONField(default=list, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["host"])]

    def __str__(self) -> str:
        return self.name


class Job(models.Model):
    cardsavr_id = models.BigIntegerField(unique=True)
    cardholder = models.ForeignKey(
        Cardholder, on_delete=models.CASCADE, related_name="jobs"
    )
    card = models.ForeignKey(
        Card, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs"
    )
    merchant_site = models.ForeignKey(
        MerchantSite, on_delete=models.PROTECT, related_name="jobs"
    )
    account_id = models.BigIntegerField(null=True, blank=True)
    # Statuses change often at CardSavr; any value is stored as it comes.
    status = models.CharField(max_length=64)
    status_message = models.CharField(max_length=500, blank=True)
    percent_complete = models.FloatField(default=0)
    auth_percent_complete = models.FloatField(default=0)
    termination_type = models.CharField(max_length=32, blank=True)
    outcome = models.CharField(
        max_length=16, choices=Outcome.choices, default=Outcome.IN_PROGRESS
    )
    # job_timeout is milliseconds left when read; the deadline pins it in time.
    deadline = models.DateTimeField(null=True, blank=True)
    cardsavr_created_on = models.DateTimeField(null=True, blank=True)
    started_on = models.DateTimeField(null=True, blank=True)
    completed_on = models.DateTimeField(null=True, blank=True)
    last_updated_on = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    # Set when CardSavr no longer knows the job (404): it is not polled again.
    vanished_at = models.DateTimeField(null=True, blank=True)
    # Lease held by the poller process currently reading this job.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="job_created_idx"),
            models.Index(fields=["cardholder", "-created_at"]),
            models.Index(fields=["outcome"]),
            models.Index(fields=["termination_type"]),
            models.Index(fields=["merchant_site", "created_at"]),
            models.Index(
                fields=["lease_expires_at"],
                name="job_active_idx",
                condition=models.Q(termination_type="", vanished_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"CardSavr job {self.cardsavr_id}"

    @property
    def is_terminated(self) -> bool:
        return bool(self.termination_type) or self.vanished_at is not None


class CloseReason(models.TextChoices):
    ANSWERED = "answered", "Answered"
    SUPERSEDED = "superseded", "Replaced by a new request"
    JOB_ENDED = "job_ended", "Job ended"
    CANCELLED = "cancelled", "Job cancelled"


class ReplyState(models.TextChoices):
    NONE = "", "Not answered"
    SENDING = "sending", "Sending to CardSavr"
    SENT = "sent", "Accepted by CardSavr"
    REJECTED = "rejected", "Rejected by CardSavr"
    UNCERTAIN = "uncertain", "Outcome unknown (not resent)"


class CredentialRequest(models.Model):
    """A question CardSavr asked the cardholder. Answers are never stored."""

    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="credential_requests"
    )
    envelope_id = models.CharField(max_length=128, unique=True)
    type = models.CharField(max_length=64)
    # Field definitions only: [{key_name, label, secret}, ...].
    account_link = models.JSONField(default=list)
    status_message = models.CharField(max_length=500, blank=True)
    opened_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)
    reply_state = models.CharField(
        max_length=16, choices=ReplyState.choices, default=ReplyState.NONE, blank=True
    )
    # A message safe to show: never the values that were sent.
    reply_error = models.CharField(max_length=300, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.CharField(
        max_length=16, choices=CloseReason.choices, blank=True
    )

    class Meta:
        ordering = ["-opened_at"]
        indexes = [models.Index(fields=["job", "closed_at"])]

    def __str__(self) -> str:
        return f"{self.type} for job {self.job_id}"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class JobEvent(models.Model):
    """Append-only history of a job: what changed and when."""

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        STATUS = "status", "Status changed"
        PROGRESS = "progress", "Progress"
        PROMPT_OPENED = "prompt_opened", "Cardholder asked"
        PROMPT_ANSWERED = "prompt_answered", "Cardholder answered"
        PROMPT_CLOSED = "prompt_closed", "Question closed"
        CANCEL_REQUESTED = "cancel_requested", "Cancel requested"
        TERMINATED = "terminated", "Finished"
        UPSTREAM_ERROR = "upstream_error", "CardSavr error"
        WEBHOOK = "webhook", "Webhook received"
        VANISHED = "vanished", "No longer known to CardSavr"
        OPERATOR = "operator", "Operator action"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    status = models.CharField(max_length=64, blank=True)
    status_message = models.CharField(max_length=500, blank=True)
    percent_complete = models.FloatField(null=True, blank=True)
    # Structured detail (field names, envelope ids, versions); never values.
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["job", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} on job {self.job_id}"


class WebhookNotification(models.Model):
    """One accepted CardSavr webhook delivery, kept once per nonce and body."""

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    nonce = models.CharField(max_length=32)
    body_sha256 = models.CharField(max_length=64, unique=True)
    event = models.CharField(max_length=64, default="session_complete")
    cuid = models.CharField(max_length=64, blank=True)
    job_ids = models.JSONField(default=list)
    unknown_job_ids = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event} at {self.received_at:%Y-%m-%d %H:%M:%S}"
