"""The merchant sites the sandbox offers, and the logo tiles it draws for them.

Every site follows the synthetic-site rules (see README.md): the well-known
merchants look like production sites (tagged ``prod``) but behave exactly like
the explicit ``synthetic`` test sites, so a demo can use familiar names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

# Scripted behaviour of a whole site, independent of the password used.
BEHAVIOUR_NORMAL = "normal"
BEHAVIOUR_SITE_INTERACTION_FAILURE = "site_interaction_failure"
BEHAVIOUR_PROCESS_FAILURE = "process_failure"

INITIAL = "initial_account_link"

USERNAME_PASSWORD = (
    {"key_name": "username", "label": "Username", "type": INITIAL, "secret": False},
    {"key_name": "password", "label": "Password", "type": INITIAL, "secret": True},
)
EMAIL_PASSWORD = (
    {"key_name": "email", "label": "Email address", "type": INITIAL, "secret": False},
    {"key_name": "password", "label": "Password", "type": INITIAL, "secret": True},
)
EMAIL_PASSWORD_PIN = (
    *EMAIL_PASSWORD,
    {"key_name": "pin", "label": "Account PIN", "type": INITIAL, "secret": True},
)
LATER_FIELDS = (
    {"key_name": "tfa", "label": "Verification code", "type": "tfa", "secret": False},
    {
        "key_name": "security_1",
        "label": "Security question 1",
        "type": "security",
        "secret": True,
    },
    {
        "key_name": "security_2",
        "label": "Security question 2",
        "type": "security",
        "secret": True,
    },
)


@dataclass(frozen=True)
class SiteSeed:
    name: str
    host: str
    tags: tuple[str, ...]
    colour: str
    login_fields: tuple[dict, ...] = USERNAME_PASSWORD
    behaviour: str = BEHAVIOUR_NORMAL
    note: str = ""


SEEDS: tuple[SiteSeed, ...] = (
    SiteSeed(
        "Synthetic Sites: Standard Login",
        "synthetic-sites.sandbox.local/standard",
        ("synthetic", "usa", "canada"),
        "#4b5563",
        note="Scripted test site: username good_email, see the sandbox README.",
    ),
    SiteSeed(
        "Synthetic Sites: Email, Password and PIN",
        "synthetic-sites.sandbox.local/pin",
        ("synthetic", "usa"),
        "#6b7280",
        login_fields=EMAIL_PASSWORD_PIN,
        note="Scripted test site that asks for email, password and a PIN.",
    ),
    SiteSeed(
        "Synthetic Sites: Checkout Breaks",
        "synthetic-sites.sandbox.local/broken-checkout",
        ("synthetic", "usa"),
        "#b45309",
        behaviour=BEHAVIOUR_SITE_INTERACTION_FAILURE,
        note="Signs in, then every job ends SITE_INTERACTION_FAILURE.",
    ),
    SiteSeed(
        "Synthetic Sites: Outage",
        "synthetic-sites.sandbox.local/outage",
        ("synthetic", "usa"),
        "#991b1b",
        behaviour=BEHAVIOUR_PROCESS_FAILURE,
        note="Every job ends PROCESS_FAILURE before signing in.",
    ),
    SiteSeed("Amazon", "amazon.com", ("prod", "usa", "shopping"), "#ff9900"),
    SiteSeed("Apple", "apple.com", ("prod", "usa", "canada", "apps"), "#111827"),
    SiteSeed(
        "Netflix", "netflix.com", ("prod", "usa", "canada", "streaming"), "#e50914"
    ),
    SiteSeed(
        "Spotify", "spotify.com", ("prod", "usa", "canada", "streaming"), "#1db954"
    ),
    SiteSeed("Hulu", "hulu.com", ("prod", "usa", "streaming"), "#1ce783"),
    SiteSeed(
        "Disney+",
        "disneyplus.com",
        ("prod", "usa", "canada", "streaming"),
        "#113ccf",
        login_fields=EMAIL_PASSWORD,
    ),
    SiteSeed("Walmart", "walmart.com", ("prod", "usa", "shopping"), "#0071ce"),
    SiteSeed("Target", "target.com", ("prod", "usa", "shopping"), "#cc0000"),
    SiteSeed("Uber", "uber.com", ("prod", "usa", "canada", "rideshare"), "#000000"),
    SiteSeed("Lyft", "lyft.com", ("prod", "usa", "rideshare"), "#ff00bf"),
    SiteSeed("DoorDash", "doordash.com", ("prod", "usa", "food"), "#ff3008"),
    SiteSeed("Grubhub", "grubhub.com", ("prod", "usa", "food"), "#f63440"),
    SiteSeed("YouTube Premium", "youtube.com", ("prod", "usa", "streaming"), "#ff0000"),
    SiteSeed(
        "HBO Max",
        "max.com",
        ("prod", "usa", "streaming"),
        "#002be7",
        login_fields=EMAIL_PASSWORD,
    ),
    SiteSeed("eBay", "ebay.com", ("prod", "usa", "shopping"), "#0064d2"),
    SiteSeed("Etsy", "etsy.com", ("prod", "usa", "shopping"), "#f1641e"),
    SiteSeed("Best Buy", "bestbuy.com", ("prod", "usa", "shopping"), "#0046be"),
    SiteSeed("Costco", "costco.com", ("prod", "usa", "shopping"), "#e31837"),
    SiteSeed(
        "Starbucks",
        "starbucks.com",
        ("prod", "usa", "food"),
        "#00704a",
        login_fields=EMAIL_PASSWORD_PIN,
    ),
    SiteSeed(
        "Microsoft 365", "microsoft.com", ("prod", "usa", "canada", "apps"), "#737373"
    ),
)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def initials(name: str) -> str:
    name = name.split(":")[-1]
    words = [w for w in re.split(r"[^A-Za-z0-9+]+", name) if w]
    if len(words) == 1:
        return words[0][:2].upper() if len(words[0]) > 3 else words[0]
    return "".join(w[0] for w in words[:2]).upper()


def build_sites() -> list[dict]:
    """The merchant-site records, ids from 1 in seed order (id 1 is synthetic)."""
    sites = []
    for index, seed in enumerate(SEEDS, start=1):
        sites.append(
            {
                "id": index,
                "name": seed.name,
                "host": seed.host,
                "note": seed.note,
                "tags": list(seed.tags),
                "interface_type": "vbs",
                "job_type": "CARD_PLACEMENT",
                "tier": 1 if "prod" in seed.tags else 3,
                "required_form_fields": [],
                "account_link": [dict(f) for f in (*seed.login_fields, *LATER_FIELDS)],
                "messages": {
                    "mfa_label": "Verification code",
                    "additional_info_message": "",
                    "auth_message": f"Sign in with your {seed.name} account.",
                },
                "login_page": f"https://{seed.host}/login",
                "forgot_password_page": f"https://{seed.host}/forgot-password",
                "credit_card_page": f"https://{seed.host}/wallet",
                "merchant_sso_group": None,
                "_logo": slug(seed.name),
                "_colour": seed.colour,
                "_behaviour": seed.behaviour,
            }
        )
    return sites


def logo_svg(name: str, colour: str) -> str:
    """A square tile in the merchant's colour with its initials."""
    text = escape(initials(name))
    size = 56 if len(text) <= 2 else 40
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" '
        f'viewBox="0 0 128 128" role="img" aria-label="{escape(name)}">'
        f'<rect width="128" height="128" rx="24" fill="{colour}"/>'
        '<text x="64" y="64" dy="0.35em" text-anchor="middle" '
        'font-family="Helvetica, Arial, sans-serif" font-weight="700" '
        f'font-size="{size}" fill="#ffffff">{text}</text></svg>'
    )
