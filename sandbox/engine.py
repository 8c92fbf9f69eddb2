"""The sandbox's state: what CardSavr would keep, and the calls that change it.

Sessions, cardholders, cards, accounts, jobs and message queues live here in
memory, behind one lock so the HTTP loop and a test thread can both use it.
Jobs are indexed by id and by cardholder, so no request walks every job; how
a job moves on is the virtual browser's business (browser.py).
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import json
import logging
import random
import re
import threading
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cardsavr import crypto

from . import sites as site_data
from .browser import (
    ANSWER_WINDOW,
    JOB_BUDGET,
    QUEUE_DELAY,
    OpenRequest,
    SimJob,
    VirtualBrowser,
)
from .clock import wall_clock
from .config import SandboxConfig
from .faults import FaultBook
from .protocol import (
    ApiError,
    error,
    invalid,
    iso,
    not_found,
    page_rows,
    parse_paging,
    sort_rows,
)

__all__ = [
    "HYDRATIONS",
    "ApiError",
    "Engine",
    "OpenRequest",
    "Session",
    "SimJob",
    "error",
    "invalid",
    "parse_paging",
]

logger = logging.getLogger(__name__)


CARDHOLDER_TYPES = (
    "ephemeral",
    "persistent_nocreds",
    "persistent_creds",
    "persistent_all",
)
HYDRATIONS = {
    "credential_requests": "credential_requests",
    "account": "account",
    "cardsavr_account": "account",
    "card": "card",
    "cardsavr_card": "card",
    "cardholder": "cardholder",
    "merchant_site": "merchant_site",
}
JOB_FILTERS = frozenset(
    {
        "ids",
        "cardholder_ids",
        "card_ids",
        "account_ids",
        "status",
        "status_include",
        "status_exclude",
        "termination_type",
        "termination_types_include",
        "termination_types_exclude",
        "last_updated_on_min",
        "last_updated_on_max",
    }
)
SITE_FILTERS = frozenset(
    {
        "ids",
        "id",
        "exclude_ids",
        "top_ids",
        "host",
        "hosts",
        "exclude_hosts",
        "top_hosts",
        "host_starts_with",
        "name_starts_with",
        "tags",
        "image_widths",
        "image_grayscale",
    }
)


@dataclass
class Session:
    token: str
    key: str
    scheme: str
    user_id: int
    username: str
    created: float
    trace: dict | None = None
    ended: bool = False


@dataclass
class WebhookDelivery:
    id: int
    job_id: int
    url: str
    body: bytes
    due: float
    attempts: list[dict] = field(default_factory=list)
    delivered: bool = False


class Engine(VirtualBrowser):
    """CardSavr's server-side state, driven by an injectable clock."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = config.clock or wall_clock
        self.speed = config.speed
        self.lock = threading.RLock()
        self.rng = random.Random(config.seed)
        self.faults = FaultBook(self.clock)
        self.sites = site_data.build_sites()
        self.sites_by_id = {s["id"]: s for s in self.sites}
        self.logos = {s["_logo"]: (s["name"], s["_colour"]) for s in self.sites}
        self.sessions: dict[str, Session] = {}
        self.cardholders: dict[int, dict] = {}
        self.cardholder_by_cuid: dict[str, int] = {}
        self.cards: dict[int, dict] = {}
        self.accounts: dict[int, dict] = {}
        self.account_secrets: dict[int, dict] = {}
        self.account_by_key: dict[tuple[int, str], int] = {}
        self.jobs: dict[int, SimJob] = {}
        self.jobs_by_cardholder: dict[int, list[int]] = defaultdict(list)
        self.envelopes: dict[str, int] = {}  # every envelope ever issued -> job id
        self.replies_per_envelope: Counter[str] = Counter()
        self.requests_per_route: Counter[str] = Counter()
        self.cursors: dict[tuple[str, int], int] = {}
        self.webhooks: dict[int, WebhookDelivery] = {}
        self._due: list[tuple[float, int, int]] = []
        self._webhook_due: list[tuple[float, int]] = []
        self._seq = itertools.count()
        self._ids = {
            "cardholder": itertools.count(5001),
            "card": itertools.count(7001),
            "account": itertools.count(9001),
            "job": itertools.count(20001),
            "webhook": itertools.count(1),
        }
        self.jwt_secret = self.rng.randbytes(32)
        self.user = {
            "id": 1,
            "username": config.username,
            "first_name": "Portal",
            "last_name": "Agent",
            "email": "agent@sandbox.local",
            "role": "cardholder_agent",
            "is_locked": False,
            "is_password_update_required": False,
            "password_lifetime": 90,
            "financial_institution": {
                "id": 1,
                "name": "Default",
                "lookup_key": "default",
            },
        }

    # -- helpers ---------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def _next_id(self, kind: str) -> int:
        return next(self._ids[kind])

    def start_ids_after(self, **highest: int | None) -> None:
        """Number new records past ids a caller already holds.

        The sandbox forgets everything when it stops; a portal whose database
        remembers an earlier run passes its highest ``cardholder``, ``card``,
        ``account`` and ``job`` ids so new ones cannot collide with them.
        """
        with self.lock:
            for kind, value in highest.items():
                if kind not in self._ids or kind == "webhook":
                    raise ValueError(f"unknown id kind {kind!r}")
                if value is None:
                    continue
                first = next(self._ids[kind])
                self._ids[kind] = itertools.count(max(first, value + 1))

    def new_envelope_id(self) -> str:
        return crypto.b64e(self.rng.randbytes(16))

    # -- sessions --------------------------------------------------------

    def login(self, body: dict, scheme: str, trace: dict | None) -> tuple[dict, str]:
        """Check the password proof and open a session; returns (body, token)."""
        for prop in ("username", "client_public_key", "password_proof"):
            if not isinstance(body.get(prop), str) or not body.get(prop):
                raise invalid(prop, f"{prop} is required to log in.")
        expected = crypto.password_proof(
            self.config.username, self.config.password, self.config.app_key
        )
        if body["username"] != self.config.username or not hmac.compare_digest(
            expected, body["password_proof"]
        ):
            logger.info("Login refused for agent %s", body["username"])
            raise error(401, "Authentication Failure", "Invalid username or password.")
        server_key = crypto.generate_key_pair()
        try:
            session_key = crypto.shared_session_key(
                server_key, body["client_public_key"]
            )
        except crypto.EnvelopeError as exc:
            raise invalid(
                "client_public_key", "client_public_key is not a P-256 point."
            ) from exc
        with self.lock:
            now = self.now()
            token = self._jwt(now)
            self.sessions[token] = Session(
                token,
                session_key,
                scheme,
                self.user["id"],
                body["username"],
                now,
                trace,
            )
        logger.info(
            "Agent %s logged in (%s envelopes)", body["username"], scheme.upper()
        )
        return (
            {
                "server_public_key": crypto.public_key_b64(server_key),
                "session_token": token,
                "user_id": self.user["id"],
                "user": dict(self.user, last_login_time=iso(now)),
            },
            token,
        )

    def _jwt(self, now: float) -> str:
        def part(obj: dict) -> str:
            raw = json.dumps(obj, separators=(",", ":")).encode()
            return crypto.b64e(raw).rstrip("=").replace("+", "-").replace("/", "_")

        header = part({"alg": "HS256", "typ": "JWT"})
        payload = part(
            {
                "jti": self.rng.randbytes(16).hex(),
                "iss": f"api.{self.config.instance}.cardsavr.local",
                "aud": self.config.app_name,
                "iat": int(now),
            }
        )
        mac = crypto.hmac_sha256(self.jwt_secret, f"{header}.{payload}".encode())
        signature = crypto.b64e(mac).rstrip("=").replace("+", "-").replace("/", "_")
        return f"{header}.{payload}.{signature}"

    def session_for(self, token: str | None) -> Session:
        if not token or token == "null":
            raise error(401, "Authentication Failure", "Log in first: no session.")
        with self.lock:
            session = self.sessions.get(token)
        if session is None:
            raise error(401, "Authentication Failure", "Unknown session token.")
        if session.ended:
            raise error(401, "Authentication Failure", "This session has ended.")
        return session

    def end_session(self, session: Session) -> None:
        with self.lock:
            session.ended = True
        logger.info("Agent %s ended a session", session.username)

    # -- cardholders, cards, accounts ------------------------------------

    def _cardholder_fields(self, data: dict, existing: dict | None) -> dict:
        record = dict(existing or {})
        for prop in ("first_name", "last_name", "email"):
            if prop in data:
                if data[prop] is not None and not isinstance(data[prop], str):
                    raise invalid(prop, f"{prop} must be text.")
                record[prop] = data[prop] or ""
        if "type" in data or existing is None:
            kind = data.get("type") or "ephemeral"
            if kind not in CARDHOLDER_TYPES:
                raise invalid(
                    "type", f"type must be one of {', '.join(CARDHOLDER_TYPES)}."
                )
            record["type"] = kind
        if "webhook_url" in data:
            url = data["webhook_url"]
            if url:
                parsed = urllib.parse.urlsplit(str(url))
                if parsed.scheme not in ("http", "https") or not parsed.netloc:
                    raise invalid("webhook_url", "webhook_url must be an http(s) URL.")
            record["webhook_url"] = url or None
        if "custom_data" in data:
            record["custom_data"] = data["custom_data"]
        return record

    def upsert_cardholder(
        self, data: dict, *, create_only: bool = False
    ) -> tuple[dict, bool]:
        """Create a cardholder, or update the one with the same cuid."""
        if not isinstance(data, dict):
            raise invalid("cardholder", "The cardholder must be a JSON object.")
        cuid = data.get("cuid")
        if cuid is not None and (not isinstance(cuid, str) or not cuid.strip()):
            raise invalid("cuid", "cuid must be non-empty text.")
        with self.lock:
            existing_id = self.cardholder_by_cuid.get(cuid) if cuid else None
            if existing_id is not None:
                if create_only:
                    raise invalid("cuid", f"A cardholder with cuid {cuid} exists.")
                record = self._cardholder_fields(data, self.cardholders[existing_id])
                record["last_updated_on"] = iso(self.now())
                self.cardholders[existing_id] = record
                return dict(record), False
            record = self._cardholder_fields(data, None)
            now = iso(self.now())
            cid = self._next_id("cardholder")
            cuid = cuid or "".join(
                self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                for _ in range(20)
            )
            record.update(
                id=cid,
                cuid=cuid,
                financial_institution_id=1,
                created_on=now,
                last_updated_on=now,
            )
            record.setdefault("first_name", "")
            record.setdefault("last_name", "")
            record.setdefault("email", "")
            record.setdefault("webhook_url", None)
            record.setdefault("custom_data", None)
            self.cardholders[cid] = record
            self.cardholder_by_cuid[cuid] = cid
        logger.info("Created cardholder %s (%s)", cid, record["type"])
        return dict(record), True

    def update_cardholder(self, cardholder_id: int, data: dict) -> dict:
        with self.lock:
            if cardholder_id not in self.cardholders:
                raise not_found("cardholder", cardholder_id)
            if not isinstance(data, dict):
                raise invalid("cardholder", "The cardholder must be a JSON object.")
            record = self._cardholder_fields(data, self.cardholders[cardholder_id])
            record["last_updated_on"] = iso(self.now())
            self.cardholders[cardholder_id] = record
            return dict(record)

    def list_cardholders(
        self, params: list[tuple[str, str]], paging: dict
    ) -> tuple[list[dict], dict]:
        wanted_ids: set[int] = set()
        wanted_cuids: set[str] = set()
        for key, value in params:
            if key == "ids":
                try:
                    wanted_ids |= {int(v) for v in value.split(",") if v}
                except ValueError as exc:
                    raise invalid("ids", "ids must be comma-separated ids.") from exc
            elif key in ("cuid", "cuids"):
                wanted_cuids |= {v for v in value.split(",") if v}
            else:
                raise invalid(key, f"Property: {key} is not a cardholder filter.")
        with self.lock:
            found = {i for i in wanted_ids if i in self.cardholders}
            found |= {
                self.cardholder_by_cuid[c]
                for c in wanted_cuids
                if c in self.cardholder_by_cuid
            }
            if not params:
                found = set(self.cardholders)
            rows = sort_rows([dict(self.cardholders[i]) for i in found], paging)
            return page_rows(rows, paging)

    def get_cardholder(self, cardholder_id: int) -> dict:
        with self.lock:
            if cardholder_id not in self.cardholders:
                raise not_found("cardholder", cardholder_id)
            return dict(self.cardholders[cardholder_id])

    def _require_cardholder(self, data: dict, prop: str = "cardholder_id") -> int:
        value = data.get(prop)
        if value is None:
            raise invalid(prop, f"{prop} is required.")
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid(prop, f"{prop} must be a number.")
        if value not in self.cardholders:
            raise invalid(prop, f"No cardholder with id {value}.")
        return value

    def create_card(self, data: dict, cardholder_id: int | None = None) -> dict:
        if not isinstance(data, dict):
            raise invalid("card", "The card must be a JSON object.")
        with self.lock:
            if cardholder_id is None:
                cardholder_id = self._require_cardholder(data)
            _check_card(data)
            pan, address = data["pan"], data.get("address")
            now = iso(self.now())
            card_id = self._next_id("card")
            brand = _brand(pan)
            # PAN and CVV stop here: only the last four digits are kept.
            record = {
                "id": card_id,
                "cardholder_id": cardholder_id,
                "last_4": pan[-4:],
                "type": brand,
                "brand": brand,
                "expiration_month": data["expiration_month"],
                "expiration_year": data["expiration_year"],
                "name_on_card": data["name_on_card"],
                "nickname": data.get("nickname") or f"{brand} ending {pan[-4:]}",
                "customer_key": data.get("customer_key")
                or f"C{crypto.b64e(self.rng.randbytes(18))}",
                "par": data.get("par"),
                "address": dict(address) if address else None,
                "created_on": now,
                "last_updated_on": now,
            }
            self.cards[card_id] = record
        logger.info("Created card %s for cardholder %s", card_id, cardholder_id)
        return dict(record)

    def get_card(self, card_id: int) -> dict:
        with self.lock:
            if card_id not in self.cards:
                raise not_found("card", card_id)
            return dict(self.cards[card_id])

    def _validate_account_link(self, value: object) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise invalid("account_link", "account_link must map names to text.")
        return dict(value)

    def create_account(self, data: dict, cardholder_id: int | None = None) -> dict:
        if not isinstance(data, dict):
            raise invalid("account", "The account must be a JSON object.")
        with self.lock:
            if cardholder_id is None or "cardholder_id" in data:
                cardholder_id = self._require_cardholder(data)
            site_id = data.get("merchant_site_id")
            if not isinstance(site_id, int) or isinstance(site_id, bool):
                raise invalid("merchant_site_id", "merchant_site_id is required.")
            if site_id not in self.sites_by_id:
                raise invalid(
                    "merchant_site_id", f"No merchant site with id {site_id}."
                )
            link = self._validate_account_link(data.get("account_link"))
            cuid = self.cardholders[cardholder_id]["cuid"]
            key = data.get("customer_key") or f"{site_id}${cuid}"
            now = iso(self.now())
            existing_id = self.account_by_key.get((cardholder_id, key))
            if existing_id is not None:
                account = self.accounts[existing_id]
                if link:
                    self.account_secrets[existing_id] = link
                account["last_updated_on"] = now
                return dict(account)
            account_id = self._next_id("account")
            record = {
                "id": account_id,
                "cardholder_id": cardholder_id,
                "merchant_site_id": site_id,
                "customer_key": key,
                "created_on": now,
                "last_updated_on": now,
            }
            self.accounts[account_id] = record
            self.account_by_key[(cardholder_id, key)] = account_id
            self.account_secrets[account_id] = link
        return dict(record)

    def get_account(self, account_id: int) -> dict:
        with self.lock:
            if account_id not in self.accounts:
                raise not_found("account", account_id)
            return dict(self.accounts[account_id])

    # -- merchant sites --------------------------------------------------

    def site_json(self, site: dict, base_url: str) -> dict:
        out = {k: v for k, v in site.items() if not k.startswith("_")}
        out["tags"] = list(site["tags"])
        out["account_link"] = [dict(f) for f in site["account_link"]]
        logo = f"{base_url}/_sandbox/logos/{site['_logo']}.svg"
        out["images"] = [
            {"url": logo, "width": 128, "grayscale": False},
            {"url": logo, "width": 32, "grayscale": False},
        ]
        return out

    def get_site(self, site_id: int, base_url: str) -> dict:
        site = self.sites_by_id.get(site_id)
        if site is None:
            raise not_found("merchant site", site_id)
        return self.site_json(site, base_url)

    def list_sites(
        self, params: list[tuple[str, str]], paging: dict, base_url: str
    ) -> tuple[list[dict], dict]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for key, value in params:
            if key not in SITE_FILTERS:
                raise invalid(key, f"Property: {key} is not a merchant site filter.")
            grouped[key].append(value)

        def csv(name: str) -> list[str]:
            return [v for raw in grouped.get(name, []) for v in raw.split(",") if v]

        def ints(name: str) -> set[int]:
            try:
                return {int(v) for v in csv(name)}
            except ValueError as exc:
                raise invalid(name, f"{name} must be comma-separated ids.") from exc

        result = list(self.sites)
        if "ids" in grouped or "id" in grouped:
            wanted = ints("ids") | ints("id")
            result = [s for s in result if s["id"] in wanted]
        if "exclude_ids" in grouped:
            excluded = ints("exclude_ids")
            result = [s for s in result if s["id"] not in excluded]
        hosts = {h.lower() for h in csv("host") + csv("hosts")}
        if hosts:
            result = [s for s in result if s["host"].lower() in hosts]
        if "exclude_hosts" in grouped:
            excluded_hosts = {h.lower() for h in csv("exclude_hosts")}
            result = [s for s in result if s["host"].lower() not in excluded_hosts]
        for prefix in grouped.get("host_starts_with", []):
            result = [s for s in result if s["host"].lower().startswith(prefix.lower())]
        for prefix in grouped.get("name_starts_with", []):
            result = [s for s in result if s["name"].lower().startswith(prefix.lower())]
        # Commas inside one tags parameter are OR; repeated parameters are AND.
        for raw in grouped.get("tags", []):
            any_of = {t for t in raw.split(",") if t}
            result = [s for s in result if any_of & set(s["tags"])]
        result = sort_rows(result, paging)
        top_hosts = [h.lower() for h in csv("top_hosts")]
        top_ids = list(ints("top_ids")) if "top_ids" in grouped else []
        if top_hosts or top_ids:

            def rank(site: dict) -> int:
                if site["host"].lower() in top_hosts:
                    return top_hosts.index(site["host"].lower())
                if site["id"] in top_ids:
                    return len(top_hosts) + top_ids.index(site["id"])
                return len(top_hosts) + len(top_ids)

            result.sort(key=rank)
        page, meta = page_rows(result, paging)
        return [self.site_json(s, base_url) for s in page], meta

    # -- jobs: creation ---------------------------------------------------

    def create_jobs(
        self, bodies: list[dict], hydrate: set[str], base_url: str
    ) -> list[dict]:
        """Validate every job first so a bad element creates nothing."""
        with self.lock:
            plans = []
            for index, body in enumerate(bodies):
                try:
                    plans.append(self._plan_job(body))
                except ApiError as exc:
                    if len(bodies) > 1:
                        for entry in exc.errors:
                            entry["index"] = index
                    raise
            created = [self._create_job(plan) for plan in plans]
            return [self.job_json(job, hydrate, base_url) for job in created]

    def _plan_job(self, body: dict) -> dict:
        if not isinstance(body, dict):
            raise invalid("job", "Each job must be a JSON object.")
        status = body.get("status", "REQUESTED")
        if status not in ("REQUESTED", "INITIATED"):
            raise invalid("status", "A new job's status must be REQUESTED.")
        plan: dict = {"custom_data": body.get("custom_data")}
        cardholder = body.get("cardholder")
        if cardholder is not None:
            if not isinstance(cardholder, dict):
                raise invalid("cardholder", "cardholder must be an object.")
            plan["cardholder"] = cardholder
        elif "cardholder_id" in body:
            plan["cardholder_id"] = self._require_cardholder(body)
        else:
            raise invalid("cardholder_id", "cardholder_id is required.")
        if body.get("card") is not None:
            if not isinstance(body["card"], dict):
                raise invalid("card", "card must be an object.")
            _check_card(body["card"])
            plan["card"] = body["card"]
        else:
            card_id = body.get("card_id")
            if card_id is None:
                raise invalid("card_id", "card_id is required.")
            card = self.cards.get(card_id) if isinstance(card_id, int) else None
            if card is None:
                raise invalid("card_id", f"No card with id {card_id}.")
            if (
                "cardholder_id" in plan
                and card["cardholder_id"] != plan["cardholder_id"]
            ):
                raise invalid("card_id", "The card belongs to another cardholder.")
            plan["card_id"] = card_id
        if body.get("account") is not None:
            account = body["account"]
            if not isinstance(account, dict):
                raise invalid("account", "account must be an object.")
            site_id = account.get("merchant_site_id")
            if not isinstance(site_id, int) or site_id not in self.sites_by_id:
                raise invalid(
                    "merchant_site_id", f"No merchant site with id {site_id}."
                )
            self._validate_account_link(account.get("account_link"))
            plan["account"] = account
        else:
            account_id = body.get("account_id")
            if account_id is None:
                raise invalid("account_id", "account or account_id is required.")
            account = (
                self.accounts.get(account_id) if isinstance(account_id, int) else None
            )
            if account is None:
                raise invalid("account_id", f"No account with id {account_id}.")
            plan["account_id"] = account_id
        if "cardholder" in plan:
            # Validate nested children before anything is written.
            self._cardholder_fields(plan["cardholder"], None)
        return plan

    def _create_job(self, plan: dict) -> SimJob:
        if "cardholder" in plan:
            cardholder, _ = self.upsert_cardholder(plan["cardholder"])
            cardholder_id = cardholder["id"]
        else:
            cardholder_id = plan["cardholder_id"]
        if "card" in plan:
            card_id = self.create_card(plan["card"], cardholder_id)["id"]
        else:
            card_id = plan["card_id"]
        if "account" in plan:
            account_id = self.create_account(plan["account"], cardholder_id)["id"]
        else:
            account_id = plan["account_id"]
        account = self.accounts[account_id]
        now = self.now()
        job = SimJob(
            id=self._next_id("job"),
            cardholder_id=cardholder_id,
            card_id=card_id,
            account_id=account_id,
            merchant_site_id=account["merchant_site_id"],
            created_on=now,
            deadline=now + self.scaled(JOB_BUDGET),
            custom_data=plan.get("custom_data"),
            last_updated_on=now,
        )
        self.jobs[job.id] = job
        self.jobs_by_cardholder[cardholder_id].append(job.id)
        credentials = self.account_secrets.get(account_id) or {}
        logger.info(
            "Job %s created for cardholder %s at %s",
            job.id,
            cardholder_id,
            self._site(job)["host"],
        )
        if credentials:
            job.credentials = dict(credentials)
            self._set(job, "REQUESTED", "Your request was received.", now)
            self._schedule(job, "queue", now + self.scaled(QUEUE_DELAY))
        else:
            self._set(job, "REQUESTED", "Your request was received.", now)
            self._open_request(
                job,
                "initial_account_link",
                "PENDING_NEWCREDS",
                f"Enter your {self._site(job)['name']} sign-in details to start.",
                now,
            )
        return job

    # -- jobs: reading ----------------------------------------------------

    def job_json(self, job: SimJob, hydrate: set[str], base_url: str) -> dict:
        now = self.now()
        out = {
            "id": job.id,
            "type": "CARD_PLACEMENT",
            "cardholder_id": job.cardholder_id,
            "card_id": job.card_id,
            "account_id": job.account_id,
            "merchant_site_id": job.merchant_site_id,
            "status": job.status,
            "status_message": job.status_message,
            "termination_type": job.termination_type,
            "percent_complete": job.percent_complete,
            "auth_percent_complete": job.auth_percent_complete,
            "job_timeout": self.job_timeout_ms(job, now),
            "credential_timeout": int(self.scaled(ANSWER_WINDOW)),
            "time_elapsed": int(((job.completed_on or now) - job.created_on) * 1000),
            "custom_data": job.custom_data,
            "notification_sent": job.notification_sent,
            "created_on": iso(job.created_on),
            "started_on": iso(job.started_on),
            "completed_on": iso(job.completed_on),
            "last_updated_on": iso(job.last_updated_on),
        }
        if "credential_requests" in hydrate:
            out["credential_requests"] = (
                [self.request_json(job, now)] if job.open_request else []
            )
        if "account" in hydrate:
            out["account"] = dict(self.accounts[job.account_id])
        if "card" in hydrate:
            card = dict(self.cards[job.card_id])
            if "card.address" not in hydrate and "cardsavr_card.address" not in hydrate:
                card.pop("address", None)
            out["card"] = card
        if "cardholder" in hydrate:
            out["cardholder"] = dict(self.cardholders[job.cardholder_id])
        if "merchant_site" in hydrate:
            out["merchant_site"] = self.site_json(self._site(job), base_url)
        return out

    def request_json(self, job: SimJob, now: float) -> dict:
        req = job.open_request
        assert req is not None
        return {
            "job_id": job.id,
            "type": req.type,
            "envelope_id": req.envelope_id,
            "created_on": iso(req.opened_at),
            "message": {
                "status": req.status,
                "job_timeout": self.job_timeout_ms(job, now),
                "percent_complete": job.percent_complete,
                "auth_percent_complete": job.auth_percent_complete,
                "status_message": req.status_message,
            },
            "account_link": [dict(f) for f in req.account_link],
        }

    def get_job(self, job_id: int, hydrate: set[str], base_url: str) -> dict:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise not_found("job", job_id)
            self.advance(job)
            return self.job_json(job, hydrate, base_url)

    def list_jobs(
        self,
        params: list[tuple[str, str]],
        paging: dict,
        hydrate: set[str],
        base_url: str,
    ) -> tuple[list[dict], dict]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for key, value in params:
            if key not in JOB_FILTERS:
                raise invalid(key, f"Property: {key} is not a job filter.")
            grouped[key].append(value)

        def csv(name: str) -> set[str]:
            return {v for raw in grouped.get(name, []) for v in raw.split(",") if v}

        def ints(name: str) -> set[int]:
            try:
                return {int(v) for v in csv(name)}
            except ValueError as exc:
                raise invalid(name, f"{name} must be comma-separated ids.") from exc

        with self.lock:
            # Narrow by an index first so a list never walks every job.
            if "ids" in grouped:
                candidates = [self.jobs[i] for i in ints("ids") if i in self.jobs]
            elif "cardholder_ids" in grouped:
                candidates = [
                    self.jobs[j]
                    for c in ints("cardholder_ids")
                    for j in self.jobs_by_cardholder.get(c, ())
                ]
            else:
                candidates = list(self.jobs.values())
            if "ids" in grouped and "cardholder_ids" in grouped:
                holders = ints("cardholder_ids")
                candidates = [j for j in candidates if j.cardholder_id in holders]
            for name, attr in (("card_ids", "card_id"), ("account_ids", "account_id")):
                if name in grouped:
                    allowed = ints(name)
                    candidates = [j for j in candidates if getattr(j, attr) in allowed]
            for job in candidates:
                self.advance(job)
            for name, keep in (
                ("last_updated_on_min", lambda j, t: j.last_updated_on >= t),
                ("last_updated_on_max", lambda j, t: j.last_updated_on <= t),
            ):
                if name in grouped:
                    moment = _moment(name, grouped[name][-1])
                    candidates = [j for j in candidates if keep(j, moment)]
            include = csv("status") | csv("status_include")
            if include:
                candidates = [j for j in candidates if j.status in include]
            exclude = csv("status_exclude")
            if exclude:
                candidates = [j for j in candidates if j.status not in exclude]
            types = csv("termination_type") | csv("termination_types_include")
            if types:
                candidates = [j for j in candidates if j.termination_type in types]
            excluded_types = csv("termination_types_exclude")
            if excluded_types:
                candidates = [
                    j for j in candidates if j.termination_type not in excluded_types
                ]
            rows = sort_rows(candidates, paging)
            page, meta = page_rows(rows, paging)
            return [self.job_json(j, hydrate, base_url) for j in page], meta

    # -- jobs: updates ----------------------------------------------------

    def cancel_jobs(
        self,
        params: list[tuple[str, str]],
        body: dict,
        hydrate: set[str],
        base_url: str,
    ) -> list[dict]:
        """Plural PUT: cancel every unfinished job the filter selects."""
        if not params:
            raise invalid("ids", "A plural update needs a filter such as ids.")
        if not isinstance(body, dict) or body.get("status") != "CANCEL_REQUESTED":
            raise invalid("status", "A plural update can only set CANCEL_REQUESTED.")
        with self.lock:
            rows, _ = self.list_jobs(
                params,
                {"page": 1, "page_length": 10**9, "sort": "id", "is_descending": False},
                set(),
                base_url,
            )
            out = []
            for row in rows:
                job = self.jobs[row["id"]]
                if job.termination_type is None:
                    self._cancel(job)
                out.append(self.job_json(job, hydrate, base_url))
            return out

    def update_job(
        self,
        job_id: int,
        body: dict,
        envelope_id: str | None,
        hydrate: set[str],
        base_url: str,
    ) -> dict:
        if not isinstance(body, dict):
            raise invalid("job", "The update must be a JSON object.")
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise not_found("job", job_id)
            self.advance(job)
            if "status" in body:
                if body["status"] != "CANCEL_REQUESTED":
                    raise invalid(
                        "status", "Only CANCEL_REQUESTED can be set on a job."
                    )
                self._cancel(job)
            elif "account" in body:
                account = body["account"]
                if not isinstance(account, dict):
                    raise invalid("account", "account must be an object.")
                link = account.get("account_link")
                if link is None:
                    # The legacy form put the values straight on the account.
                    link = {k: v for k, v in account.items() if isinstance(v, str)}
                self.answer(job, envelope_id, link)
            else:
                raise invalid("status", "Send status or account to update a job.")
            return self.job_json(job, hydrate, base_url)

    def answer_for_account(
        self, account_id: int, envelope_id: str | None, link: object
    ) -> dict:
        with self.lock:
            if account_id not in self.accounts:
                raise not_found("account", account_id)
            if envelope_id:
                job_id = self.envelopes.get(envelope_id)
                job = self.jobs.get(job_id) if job_id is not None else None
                if job is None or job.account_id != account_id:
                    raise invalid(
                        "envelope_id",
                        "envelope_id does not belong to a job of this account.",
                    )
                self.advance(job)
                self.answer(job, envelope_id, link)
            else:
                self.account_secrets[account_id] = self._validate_account_link(link)
            return dict(self.accounts[account_id])

    # -- messages ---------------------------------------------------------

    def messages_for_job(self, session: Session, job_id: int) -> list[dict]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise not_found("job", job_id)
            return self._drain(session, job)

    def messages_for_cardholder(
        self, session: Session, cardholder_id: int
    ) -> list[dict]:
        with self.lock:
            if cardholder_id not in self.cardholders:
                raise not_found("cardholder", cardholder_id)
            out: list[dict] = []
            for job_id in self.jobs_by_cardholder.get(cardholder_id, ()):
                out.extend(self._drain(session, self.jobs[job_id]))
            return out

    def _drain(self, session: Session, job: SimJob) -> list[dict]:
        """Unread status messages (consumed now) plus any open request (repeated)."""
        self.advance(job)
        key = (session.token, job.id)
        start = self.cursors.get(key, 0)
        out = job.messages[start:]
        self.cursors[key] = len(job.messages)
        if job.open_request is not None:
            out = [*out, self.request_json(job, self.now())]
        return out

    # -- webhooks ---------------------------------------------------------

    def _queue_webhook(self, job: SimJob, at: float) -> None:
        cardholder = self.cardholders[job.cardholder_id]
        url = cardholder.get("webhook_url")
        if not url:
            return
        site = self._site(job)
        payload = {
            "jobs": [
                {
                    "job_id": job.id,
                    "completed_on": iso(job.completed_on),
                    "merchant_site": {
                        "id": site["id"],
                        "host": site["host"],
                        "name": site["name"],
                    },
                    "termination_type": job.termination_type,
                    "job_status_message": job.status_message,
                    "job_status": job.status,
                    "custom_data": job.custom_data,
                    "card_customer_key": self.cards[job.card_id]["customer_key"],
                }
            ],
            "financial_institution_id": 1,
            "financial_institution": "Default",
            "trace": {"key": cardholder["cuid"]},
            "custom_data": cardholder.get("custom_data"),
            "cuid": cardholder["cuid"],
            "username": cardholder["cuid"],
        }
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        delivery = WebhookDelivery(self._next_id("webhook"), job.id, url, body, due=at)
        self.webhooks[delivery.id] = delivery
        heapq.heappush(self._webhook_due, (at, delivery.id))

    def due_webhooks(self) -> list[WebhookDelivery]:
        with self.lock:
            now = self.now()
            due = []
            while self._webhook_due and self._webhook_due[0][0] <= now:
                _, delivery_id = heapq.heappop(self._webhook_due)
                due.append(self.webhooks[delivery_id])
            return due

    def webhook_result(
        self, delivery: WebhookDelivery, status: int | None, problem: str = ""
    ) -> None:
        with self.lock:
            now = self.now()
            delivery.attempts.append(
                {"at": iso(now), "status": status, "problem": problem}
            )
            if status is not None and 200 <= status < 300:
                delivery.delivered = True
                self.jobs[delivery.job_id].notification_sent = True
                return
            retry = len(delivery.attempts) - 1
            delays = self.config.webhook_retry_delays
            if retry < len(delays):
                delivery.due = now + self.scaled(delays[retry])
                heapq.heappush(self._webhook_due, (delivery.due, delivery.id))

    # -- test hooks -------------------------------------------------------

    def job_history(self, job_id: int) -> list[dict]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise not_found("job", job_id)
            self.advance(job)
            return [dict(h) for h in job.history]

    def stats(self) -> dict:
        with self.lock:
            by_status: Counter[str] = Counter(j.status for j in self.jobs.values())
            return {
                "requests_per_route": dict(self.requests_per_route),
                "credential_replies_per_envelope": dict(self.replies_per_envelope),
                "jobs_by_status": dict(by_status),
                "jobs": len(self.jobs),
                "sessions": sum(1 for s in self.sessions.values() if not s.ended),
                "webhooks": [
                    {
                        "id": d.id,
                        "job_id": d.job_id,
                        "url": d.url,
                        "delivered": d.delivered,
                        "attempts": list(d.attempts),
                    }
                    for d in self.webhooks.values()
                ],
                "faults": [f.as_json() for f in self.faults.active()],
            }

    def count_request(self, route: str) -> None:
        with self.lock:
            self.requests_per_route[route] += 1


def _check_card(data: dict) -> None:
    """Refuse a card body CardSavr would refuse, naming the property."""
    pan = data.get("pan")
    if not isinstance(pan, str) or not re.fullmatch(r"\d{12,19}", pan):
        raise invalid("pan", "pan must be 12 to 19 digits.")
    if not _luhn_ok(pan):
        raise invalid("pan", "pan fails the Luhn check.")
    cvv = data.get("cvv")
    if cvv is not None and (
        not isinstance(cvv, str) or not re.fullmatch(r"\d{3,4}", cvv)
    ):
        raise invalid("cvv", "cvv must be 3 or 4 digits.")
    month = data.get("expiration_month")
    if not isinstance(month, str) or not re.fullmatch(r"0[1-9]|1[0-2]", month):
        raise invalid("expiration_month", "expiration_month must be 01 to 12.")
    year = data.get("expiration_year")
    if not isinstance(year, str) or not re.fullmatch(r"\d{2}", year):
        raise invalid("expiration_year", "expiration_year must be two digits.")
    name = data.get("name_on_card")
    if not isinstance(name, str) or not name.strip():
        raise invalid("name_on_card", "name_on_card is required.")
    address = data.get("address")
    if address is not None and not isinstance(address, dict):
        raise invalid("address", "address must be an object.")


def _moment(name: str, raw: str) -> float:
    """An ISO-8601 filter value (Z or an offset; naive means UTC) as Unix time."""
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise invalid(name, f"{name} must be an ISO-8601 time.") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _luhn_ok(pan: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(pan)):
        digit = int(char)
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _brand(pan: str) -> str:
    if pan.startswith("4"):
        return "VISA"
    if pan[:2] in {"51", "52", "53", "54", "55"} or pan[:1] == "2":
        return "MASTERCARD"
    if pan[:2] in {"34", "37"}:
        return "AMEX"
    if pan.startswith("6"):
        return "DISCOVER"
    return "UNKNOWN"
