"""The virtual browser: how each sandbox job moves through CardSavr's lifecycle.

A job always knows its next scripted step and when that step is due. Nothing
runs on its own: ``advance`` replays every step that has come due (each at its
own scheduled time, so timestamps are exact however late the job is read),
and ``tick`` pops due jobs from a heap, so the work per call is the number of
steps that ran, never the number of jobs.
"""

from __future__ import annotations

import heapq
import logging
import threading
from dataclasses import dataclass, field
from random import Random

from . import scenarios as sc
from . import sites as site_data
from .protocol import invalid, iso

logger = logging.getLogger(__name__)

# Scripted durations in seconds at speed 1 (divided by the configured speed).
QUEUE_DELAY = 2.0
START_DELAY = 3.0
AUTH_DELAY = 3.0
LOGIN_DELAY = 4.0
CHECK_DELAY = 4.0
UPDATE_DELAY = 6.0
FINISH_DELAY = 8.0
SUBMIT_DELAY = 2.0
APPROVAL_DELAY = 6.0
CANCEL_DELAY = 1.0
JOB_BUDGET = 300.0  # the 5-minute job_timeout a job starts with
ANSWER_WINDOW = 240.0  # how long a credential request waits for the user


@dataclass
class OpenRequest:
    envelope_id: str
    type: str
    status: str
    account_link: list[dict]
    opened_at: float
    expires_at: float
    status_message: str


@dataclass
class SimJob:
    id: int
    cardholder_id: int
    card_id: int
    account_id: int
    merchant_site_id: int
    created_on: float
    deadline: float
    custom_data: object = None
    status: str = "REQUESTED"
    status_message: str = ""
    termination_type: str | None = None
    percent_complete: float = 0
    auth_percent_complete: float = 0
    started_on: float | None = None
    completed_on: float | None = None
    last_updated_on: float = 0.0
    # Merchant credentials and answers: held only while the job needs them,
    # never returned, never logged.
    credentials: dict = field(default_factory=dict, repr=False)
    answer: dict = field(default_factory=dict, repr=False)
    login_failures: int = 0
    tfa_failures: int = 0
    started: bool = False
    open_request: OpenRequest | None = None
    next_step: str | None = None
    next_at: float | None = None
    history: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    notification_sent: bool = False


class VirtualBrowser:
    """Lifecycle steps of the jobs; mixed into the engine, which owns the data."""

    lock: threading.RLock
    rng: Random
    speed: float
    jobs: dict[int, SimJob]
    sites_by_id: dict[int, dict]
    envelopes: dict[str, int]
    replies_per_envelope: dict[str, int]
    account_secrets: dict[int, dict]
    _due: list[tuple[float, int, int]]
    _webhook_due: list[tuple[float, int]]

    def now(self) -> float:
        raise NotImplementedError

    def scaled(self, seconds: float) -> float:
        return seconds / self.speed

    def new_envelope_id(self) -> str:
        raise NotImplementedError

    def _validate_account_link(self, value: object) -> dict:
        raise NotImplementedError

    def _queue_webhook(self, job: SimJob, at: float) -> None:
        raise NotImplementedError

    def _site(self, job: SimJob) -> dict:
        return self.sites_by_id[job.merchant_site_id]

    def job_timeout_ms(self, job: SimJob, now: float) -> int:
        if job.termination_type is not None:
            return 0
        return max(0, int((job.deadline - now) * 1000))

    def answer(self, job: SimJob, envelope_id: str | None, link: object) -> None:
        """Accept the reply to the job's open credential request, or refuse it."""
        if not envelope_id:
            raise invalid(
                "envelope_id", "The x-cardsavr-envelope-id header is required."
            )
        req = job.open_request
        if req is None or req.envelope_id != envelope_id:
            if envelope_id in self.envelopes and self.envelopes[envelope_id] == job.id:
                message = "This credential request was already answered or closed."
            else:
                message = (
                    "envelope_id does not match the job's open credential request."
                )
            raise invalid("envelope_id", message)
        values = self._validate_account_link(link)
        names = [f["key_name"] for f in req.account_link]
        if req.type == "tfa_message":
            # Push approvals answer under their own key_name or under "tfa".
            if not (values.get(names[0]) or values.get("tfa")):
                raise invalid(names[0], f"{names[0]} is required (send ack).")
        else:
            for name in names:
                if not values.get(name):
                    raise invalid(name, f"{name} is required to answer this request.")
        self.replies_per_envelope[envelope_id] += 1
        now = self.now()
        job.open_request = None
        job.deadline = now + self.scaled(JOB_BUDGET)
        logger.info("Job %s: %s request answered", job.id, req.type)
        if req.type == "initial_account_link":
            job.credentials = {n: values[n] for n in names}
            self.account_secrets[job.account_id] = dict(job.credentials)
            self._set(
                job, "CREDS_RECEIVED", "Thanks. Signing in with those details.", now
            )
            if job.started:
                self._schedule(job, "creds_submitted", now + self.scaled(SUBMIT_DELAY))
            else:
                self._schedule(job, "queue", now + self.scaled(QUEUE_DELAY))
        elif req.type == "security":
            job.answer = {n: values[n] for n in names}
            self._set(job, "CREDS_RECEIVED", "Thanks. Checking your answers.", now)
            self._schedule(job, "security_submitted", now + self.scaled(SUBMIT_DELAY))
        elif req.type == "tfa_message":
            self._set(
                job,
                "TFA_RECEIVED",
                "Waiting for the approval on your phone to reach "
                f"{self._site(job)['name']}.",
                now,
            )
            self._schedule(job, "tfa_approved", now + self.scaled(APPROVAL_DELAY))
        else:
            job.answer = {"tfa": values[names[0]]}
            self._set(job, "TFA_RECEIVED", "Thanks. Checking the code.", now)
            self._schedule(job, "tfa_submitted", now + self.scaled(SUBMIT_DELAY))

    def _cancel(self, job: SimJob) -> None:
        if job.termination_type is not None:
            raise invalid(
                "status", f"Job {job.id} has already finished ({job.status})."
            )
        if job.status == "CANCEL_REQUESTED":
            return
        now = self.now()
        job.open_request = None
        job.credentials = {}
        job.answer = {}
        self._set(job, "CANCEL_REQUESTED", "Cancelling this update.", now)
        self._schedule(job, "cancelled", now + self.scaled(CANCEL_DELAY))

    # -- the virtual browser ----------------------------------------------

    def _schedule(self, job: SimJob, step: str | None, at: float | None) -> None:
        job.next_step = step
        job.next_at = at
        if step is not None and at is not None:
            heapq.heappush(self._due, (at, next(self._seq), job.id))

    def _set(
        self,
        job: SimJob,
        status: str,
        message: str,
        at: float,
        *,
        percent: float | None = None,
        auth: float | None = None,
    ) -> None:
        previous = job.status
        job.status = status
        job.status_message = message
        if percent is not None:
            job.percent_complete = percent
        if auth is not None:
            job.auth_percent_complete = auth
        job.last_updated_on = at
        job.history.append({"status": status, "at": iso(at), "status_message": message})
        entry: dict = {
            "status": status,
            "percent_complete": job.percent_complete,
            "auth_percent_complete": job.auth_percent_complete,
            "job_timeout": self.job_timeout_ms(job, at),
            "status_message": message,
        }
        if job.termination_type is not None:
            entry["termination_type"] = job.termination_type
        job.messages.append({"type": "job_status", "job_id": job.id, "message": entry})
        if previous != status or len(job.history) == 1:
            logger.info(
                "Job %s at %s: %s -> %s",
                job.id,
                self._site(job)["host"],
                previous if len(job.history) > 1 else "(new)",
                status,
            )

    def _open_request(
        self, job: SimJob, kind: str, status: str, message: str, at: float
    ) -> None:
        site = self._site(job)
        if kind == "initial_account_link":
            fields = [f for f in site["account_link"] if f["type"] == kind]
        elif kind == "tfa":
            fields = [f for f in site["account_link"] if f["key_name"] == "tfa"]
        elif kind == "tfa_message":
            number = self.rng.randint(10, 99)
            fields = [
                {
                    "key_name": "tfa_message",
                    "label": f"Tap {number} on your phone to approve the sign-in.",
                    "type": "tfa_message",
                    "secret": False,
                }
            ]
        else:
            fields = [
                dict(f, label=sc.SECURITY_QUESTIONS[f["key_name"]])
                for f in site["account_link"]
                if f["type"] == "security"
            ]
        envelope_id = self.new_envelope_id()
        while envelope_id in self.envelopes:
            envelope_id = self.new_envelope_id()
        self.envelopes[envelope_id] = job.id
        expires = at + self.scaled(ANSWER_WINDOW)
        # Asking the user extends the job: the clock now counts their time.
        job.deadline = max(job.deadline, expires)
        job.open_request = OpenRequest(
            envelope_id,
            kind,
            status,
            [
                {
                    "key_name": f["key_name"],
                    "label": f["label"],
                    "secret": f["secret"],
                    "type": f.get("type"),
                }
                for f in fields
            ],
            at,
            expires,
            message,
        )
        self._set(job, status, message, at)
        self._schedule(job, "request_timeout", expires)

    def advance(self, job: SimJob, now: float | None = None) -> None:
        """Run every step that has come due, each at its own scheduled time."""
        now = self.now() if now is None else now
        while job.next_at is not None and job.next_at <= now:
            step, at = job.next_step, job.next_at
            job.next_step = job.next_at = None
            getattr(self, f"_step_{step}")(job, at)

    def tick(self) -> int:
        """Advance every job with a step due; returns how many steps ran."""
        ran = 0
        with self.lock:
            now = self.now()
            while self._due and self._due[0][0] <= now:
                _, _, job_id = heapq.heappop(self._due)
                job = self.jobs.get(job_id)
                if job is not None and job.next_at is not None and job.next_at <= now:
                    self.advance(job, now)
                    ran += 1
        return ran

    def next_due(self) -> float | None:
        with self.lock:
            due = [self._due[0][0]] if self._due else []
            if self._webhook_due:
                due.append(self._webhook_due[0][0])
            return min(due) if due else None

    def _name(self, job: SimJob) -> str:
        return self._site(job)["name"]

    def _step_queue(self, job: SimJob, at: float) -> None:
        self._set(
            job,
            "QUEUED",
            "Your update is in line and will start in a moment.",
            at,
            percent=5,
        )
        self._schedule(job, "start", at + self.scaled(START_DELAY))

    def _step_start(self, job: SimJob, at: float) -> None:
        job.started = True
        job.started_on = job.started_on or at
        self._set(
            job, "IN_PROGRESS", f"Opening {self._name(job)}.", at, percent=10, auth=10
        )
        if self._site(job)["_behaviour"] == site_data.BEHAVIOUR_PROCESS_FAILURE:
            self._schedule(job, "process_failure", at + self.scaled(AUTH_DELAY))
        else:
            self._schedule(job, "auth", at + self.scaled(AUTH_DELAY))

    def _step_process_failure(self, job: SimJob, at: float) -> None:
        self._fail(job, "INTERNAL_ERROR", at)

    def _step_auth(self, job: SimJob, at: float) -> None:
        self._set(
            job, "AUTH", f"Signing in to {self._name(job)}.", at, percent=20, auth=30
        )
        self._schedule(job, "login", at + self.scaled(LOGIN_DELAY))

    def _step_login(self, job: SimJob, at: float) -> None:
        self._set(
            job,
            "LOGIN_SUBMITTED",
            f"Waiting for {self._name(job)} to accept the sign-in.",
            at,
            percent=30,
            auth=60,
        )
        self._schedule(job, "check_login", at + self.scaled(CHECK_DELAY))

    def _step_creds_submitted(self, job: SimJob, at: float) -> None:
        self._set(
            job,
            "CREDS_SUBMITTED",
            f"Signing in to {self._name(job)} with the new details.",
            at,
            percent=30,
            auth=60,
        )
        self._schedule(job, "check_login", at + self.scaled(CHECK_DELAY))

    def _step_check_login(self, job: SimJob, at: float) -> None:
        creds = job.credentials
        username = creds.get("username", creds.get("email", ""))
        password = creds.get("password", "")
        site = self._name(job)
        if username != sc.GOOD_USERNAME or password not in sc.KNOWN_PASSWORDS:
            job.login_failures += 1
            job.credentials = {}
            if job.login_failures >= 2:
                self._end(job, "TOO_MANY_LOGIN_FAILURES", at)
                return
            self._open_request(
                job,
                "initial_account_link",
                "PENDING_NEWCREDS",
                f"{site} did not accept that username and password. Check them "
                "and enter them again.",
                at,
            )
            return
        status = sc.FAILURE_PASSWORDS.get(password)
        if status is not None and sc.FAILURES[status].phase == sc.AT_LOGIN:
            self._fail(job, status, at)
        elif password == sc.TFA_PASSWORD:
            self._open_request(
                job,
                "tfa",
                "PENDING_TFA",
                f"{site} sent a verification code to your phone. Enter it to continue.",
                at,
            )
        elif password == sc.TFA_MESSAGE_PASSWORD:
            self._open_request(
                job,
                "tfa_message",
                "PENDING_TFA_MESSAGE",
                f"{site} sent a sign-in approval to your phone. Approve it, then "
                "confirm here.",
                at,
            )
        elif password == sc.SECURITY_PASSWORD:
            self._open_request(
                job,
                "security",
                "PENDING",
                f"{site} wants the answers to your security questions.",
                at,
            )
        else:
            self._authenticated(job, at)

    def _step_tfa_submitted(self, job: SimJob, at: float) -> None:
        self._set(
            job,
            "TFA_SUBMITTED",
            f"Sending the code to {self._name(job)}.",
            at,
            percent=35,
            auth=80,
        )
        self._schedule(job, "check_tfa", at + self.scaled(CHECK_DELAY))

    def _step_check_tfa(self, job: SimJob, at: float) -> None:
        code = job.answer.pop("tfa", None)
        if code == sc.GOOD_TFA_CODE:
            self._authenticated(job, at)
            return
        job.tfa_failures += 1
        if job.tfa_failures >= 2:
            self._end(job, "TOO_MANY_TFA_FAILURES", at)
            return
        self._open_request(
            job,
            "tfa",
            "PENDING_TFA",
            f"{self._name(job)} did not accept that code. Check the newest code "
            "and enter it again.",
            at,
        )

    def _step_tfa_approved(self, job: SimJob, at: float) -> None:
        self._set(
            job,
            "TFA_SUBMITTED",
            f"{self._name(job)} received your approval.",
            at,
            percent=35,
            auth=80,
        )
        self._schedule(job, "authenticated", at + self.scaled(CHECK_DELAY))

    def _step_security_submitted(self, job: SimJob, at: float) -> None:
        self._set(
            job,
            "CREDS_SUBMITTED",
            f"Sending your answers to {self._name(job)}.",
            at,
            percent=35,
            auth=80,
        )
        self._schedule(job, "check_security", at + self.scaled(CHECK_DELAY))

    def _step_check_security(self, job: SimJob, at: float) -> None:
        answers, job.answer = job.answer, {}
        if all(answers.get(k) == v for k, v in sc.SECURITY_ANSWERS.items()):
            self._authenticated(job, at)
        else:
            self._end(job, "INVALID_SECURITY_ANSWERS", at)

    def _step_authenticated(self, job: SimJob, at: float) -> None:
        self._authenticated(job, at)

    def _authenticated(self, job: SimJob, at: float) -> None:
        self._set(
            job,
            "UPDATING",
            f"Signed in to {self._name(job)}. Updating your payment method; "
            "no further action is needed.",
            at,
            percent=60,
            auth=100,
        )
        self._schedule(job, "update", at + self.scaled(UPDATE_DELAY))

    def _step_update(self, job: SimJob, at: float) -> None:
        self._set(
            job,
            "UPDATING",
            f"Saving your card at {self._name(job)}.",
            at,
            percent=80,
        )
        self._schedule(job, "finish", at + self.scaled(FINISH_DELAY))

    def _step_finish(self, job: SimJob, at: float) -> None:
        password = job.credentials.get("password", "")
        status = sc.FAILURE_PASSWORDS.get(password)
        if (
            self._site(job)["_behaviour"]
            == site_data.BEHAVIOUR_SITE_INTERACTION_FAILURE
        ):
            status = "CARD_FORM_FAILED"
        if status is not None:
            self._fail(job, status, at)
        else:
            self._end(job, "SUCCESSFUL", at, percent=100)

    def _step_request_timeout(self, job: SimJob, at: float) -> None:
        req = job.open_request
        job.open_request = None
        if req is None:
            return
        if req.type == "initial_account_link" and not job.started:
            self._end(job, "ABANDONED", at)
        elif req.type in ("tfa", "tfa_message"):
            self._end(job, "TIMEOUT_TFA", at)
        else:
            self._end(job, "TIMEOUT_CREDENTIALS", at)

    def _step_cancelled(self, job: SimJob, at: float) -> None:
        self._end(job, "CANCELLED", at)

    def _fail(self, job: SimJob, status: str, at: float) -> None:
        failure = sc.FAILURES[status]
        message = failure.message.format(site=self._name(job))
        self._terminate(job, status, failure.termination_type, message, at)

    def _end(
        self, job: SimJob, status: str, at: float, percent: float | None = None
    ) -> None:
        termination, message = sc.FLOW_ENDS[status]
        self._terminate(
            job, status, termination, message.format(site=self._name(job)), at, percent
        )

    def _terminate(
        self,
        job: SimJob,
        status: str,
        termination: str,
        message: str,
        at: float,
        percent: float | None = None,
    ) -> None:
        job.termination_type = termination
        job.completed_on = at
        job.open_request = None
        job.credentials = {}
        job.answer = {}
        self._schedule(job, None, None)
        self._set(job, status, message, at, percent=percent)
        self._queue_webhook(job, at)
