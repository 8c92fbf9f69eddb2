"""The sandbox's state and its virtual browser.

Everything CardSavr would keep (sessions, cardholders, cards, accounts, jobs,
message queues) lives here in memory, behind one lock so the HTTP loop and a
test thread can both use it. Jobs are driven by time: each job knows its next
scripted step and when it is due; reading a job brings it up to date, and the
server's ticker pops due jobs from a heap, so no request ever walks every job.
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

from . import scenarios as sc
from . import sites as site_data
from .clock import wall_clock
from .config import SandboxConfig
from .faults import FaultBook

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

TERMINAL_STATUSES = frozenset({*sc.FAILURES, *sc.FLOW_ENDS})
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


class ApiError(Exception):
    """A CardSavr error response: status code plus the ``_errors`` list."""

    def __init__(self, status: int, errors: list[dict]) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = errors

    @property
    def body(self) -> dict:
        return {"_errors": self.errors}


def error(status: int, name: str, message: str, prop: str | None = None) -> ApiError:
    entry = {"name": name, "message": message}
    if prop is not None:
        entry["property"] = prop
    return ApiError(status, [entry])


def invalid(prop: str, message: str) -> ApiError:
    return error(400, "Validation Error", message, prop)


def not_found(entity: str, ident: object) -> ApiError:
    return error(404, "Not Found", f"No {entity} with id {ident}.")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    stamp = datetime.fromtimestamp(ts, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


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


@dataclass
class WebhookDelivery:
    id: int
    job_id: int
    url: str
    body: bytes
    due: float
    attempts: list[dict] = field(default_factory=list)
    delivered: bool = False


class Engine:
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

    def scaled(self, seconds: float) -> float:
        return seconds / self.speed

    def _next_id(self, kind: str) -> int:
        return next(self._ids[kind])

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
            rows = _sort([dict(self.cardholders[i]) for i in found], paging)
            return _page(rows, paging)

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
        result = _sort(result, paging)
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
        page, meta = _page(result, paging)
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

    def _site(self, job: SimJob) -> dict:
        return self.sites_by_id[job.merchant_site_id]

    def job_timeout_ms(self, job: SimJob, now: float) -> int:
        if job.termination_type is not None:
            return 0
        return max(0, int((job.deadline - now) * 1000))

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
            rows = _sort(candidates, paging)
            page, meta = _page(rows, paging)
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


def parse_paging(raw: str | None, default_sort: str = "id") -> dict:
    paging = {
        "page": 1,
        "page_length": 25,
        "sort": default_sort,
        "is_descending": False,
    }
    if not raw:
        return paging
    try:
        given = json.loads(raw)
    except ValueError as exc:
        raise invalid("x-cardsavr-paging", "The paging header is not JSON.") from exc
    if not isinstance(given, dict):
        raise invalid("x-cardsavr-paging", "The paging header must be an object.")
    for name in ("page", "page_length"):
        if name in given:
            try:
                value = int(given[name])
            except (TypeError, ValueError) as exc:
                raise invalid(name, f"{name} must be a whole number.") from exc
            if value < 1:
                raise invalid(name, f"{name} must be at least 1.")
            paging[name] = value
    if "sort" in given:
        paging["sort"] = str(given["sort"])
    descending = given.get("is_descending", given.get("descending"))
    if descending is not None:
        paging["is_descending"] = descending in (True, "true", 1, "1")
    return paging


def _sort(rows: list, paging: dict) -> list:
    name = paging["sort"]

    def key(row: object) -> tuple:
        value = row.get(name) if isinstance(row, dict) else getattr(row, name, None)
        if isinstance(value, str):
            value = value.lower()
        return (value is None, value if value is not None else 0)

    try:
        return sorted(rows, key=key, reverse=paging["is_descending"])
    except TypeError as exc:
        raise invalid("sort", f"Cannot sort by {name}.") from exc


def _page(rows: list, paging: dict) -> tuple[list, dict]:
    start = (paging["page"] - 1) * paging["page_length"]
    meta = dict(paging, total_results=len(rows))
    return rows[start : start + paging["page_length"]], meta
