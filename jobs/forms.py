"""Forms for the cardholder's pages. Secrets are validated, passed on, never kept."""

import re

from django import forms
from django.utils import timezone

from jobs.services import luhn_ok

# CardSavr names account_link fields with short identifiers; anything else is
# refused rather than turned into a form field name.
KEY_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
ENVELOPE_ID_RE = re.compile(r"^[A-Za-z0-9+/=_-]{1,128}$")
TFA_KEYS = {"tfa", "otp"}
MAX_SECRET_LENGTH = 256


class NeverRedisplayedInput(forms.TextInput):
    """A text input that never writes the submitted value back into the page."""

    def format_value(self, value):
        return None


def _text(label: str, autocomplete: str, max_length: int = 100, **attrs) -> forms.Field:
    return forms.CharField(
        label=label,
        max_length=max_length,
        widget=forms.TextInput(attrs={"autocomplete": autocomplete, **attrs}),
        error_messages={
            "required": f"Enter the {label.lower()}.",
            "max_length": f"The {label.lower()} is too long.",
        },
    )


class CardForm(forms.Form):
    number = forms.CharField(
        label="Card number",
        max_length=30,
        strip=True,
        widget=NeverRedisplayedInput(
            attrs={"autocomplete": "cc-number", "inputmode": "numeric"}
        ),
        error_messages={"required": "Enter the card number."},
    )
    expiration_month = forms.TypedChoiceField(
        label="Expiry month",
        coerce=int,
        choices=[("", "Month")] + [(m, f"{m:02d}") for m in range(1, 13)],
        widget=forms.Select(attrs={"autocomplete": "cc-exp-month"}),
        error_messages={"required": "Choose the expiry month."},
    )
    expiration_year = forms.TypedChoiceField(
        label="Expiry year",
        coerce=int,
        choices=[],
        widget=forms.Select(attrs={"autocomplete": "cc-exp-year"}),
        error_messages={"required": "Choose the expiry year."},
    )
    cvv = forms.CharField(
        label="Security code (CVV)",
        max_length=4,
        widget=forms.PasswordInput(
            render_value=False,
            attrs={"autocomplete": "cc-csc", "inputmode": "numeric"},
        ),
        error_messages={
            "required": "Enter the security code (CVV).",
            "max_length": "The security code (CVV) has 3 or 4 digits.",
        },
    )
    name_on_card = _text("Name on card", "cc-name", 100)
    street = _text("Street address", "address-line1", 200)
    city = _text("City", "address-level2", 100)
    state = _text("State", "address-level1", 50)
    postal_code = _text("Postal code", "postal-code", 12)

    def __init__(self, *args, today=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.today = today or timezone.localdate()
        years = range(self.today.year, self.today.year + 16)
        self.fields["expiration_year"].choices = [("", "Year")] + [
            (y, str(y)) for y in years
        ]

    def full_clean(self) -> None:
        super().full_clean()
        for name in self.errors:
            if name in self.fields:
                self.fields[name].widget.attrs.update(
                    {"aria-invalid": "true", "aria-describedby": f"id_{name}-error"}
                )

    def clean_number(self) -> str:
        digits = re.sub(r"[\s-]", "", self.cleaned_data["number"])
        if not digits.isdigit() or not 12 <= len(digits) <= 19:
            raise forms.ValidationError(
                "The card number must be 12 to 19 digits.", code="format"
            )
        if not luhn_ok(digits):
            raise forms.ValidationError(
                "The card number is not valid: check it for a typing mistake.",
                code="luhn",
            )
        return digits

    def clean_cvv(self) -> str:
        cvv = self.cleaned_data["cvv"]
        if not cvv.isdigit() or len(cvv) not in (3, 4):
            raise forms.ValidationError(
                "The security code (CVV) has 3 or 4 digits.", code="format"
            )
        return cvv

    def clean(self):
        cleaned = super().clean()
        month = cleaned.get("expiration_month")
        year = cleaned.get("expiration_year")
        if month and year and (year, month) < (self.today.year, self.today.month):
            self.add_error(
                "expiration_month",
                forms.ValidationError(
                    "The expiry date is in the past: this card has expired.",
                    code="expired",
                ),
            )
        return cleaned

    def address(self) -> dict:
        return {
            "address1": self.cleaned_data["street"],
            "city": self.cleaned_data["city"],
            "subnational": self.cleaned_data["state"],
            "postal_code": self.cleaned_data["postal_code"],
        }


def field_kind(field: dict, request_type: str = "") -> str:
    """How a CardSavr account_link field is shown: push, tfa, secret or text."""
    key = str(field.get("key_name", ""))
    if request_type == "tfa_message" or key == "tfa_message":
        return "push"
    if field.get("type") == "tfa" or key in TFA_KEYS or request_type in TFA_KEYS:
        return "tfa"
    if field.get("secret"):
        return "secret"
    return "text"


def valid_account_link(account_link) -> list[dict]:
    """Field definitions safe to render: well-formed key names only."""
    fields = []
    for field in account_link or []:
        key = str(field.get("key_name", ""))
        if KEY_NAME_RE.match(key):
            fields.append(field)
    return fields


class ReplyForm(forms.Form):
    """One answer to one credential request, built from its account_link."""

    envelope_id = forms.CharField(max_length=128, widget=forms.HiddenInput)

    def __init__(self, *args, account_link=(), request_type="", **kwargs):
        super().__init__(*args, **kwargs)
        self.keys = []
        for field in valid_account_link(account_link):
            key = field["key_name"]
            label = field.get("label") or key
            kind = field_kind(field, request_type)
            self.keys.append(key)
            self.fields[key] = forms.CharField(
                label=label,
                max_length=32 if kind == "tfa" else MAX_SECRET_LENGTH,
                # Passwords and answers are passed on byte for byte.
                strip=kind == "tfa",
                error_messages={
                    "required": f"Enter {label}.",
                    "max_length": f"{label} is too long.",
                },
            )

    def clean_envelope_id(self) -> str:
        envelope_id = self.cleaned_data["envelope_id"]
        if not ENVELOPE_ID_RE.match(envelope_id):
            raise forms.ValidationError("This question is not valid any more.")
        return envelope_id

    def account_link(self) -> dict[str, str]:
        return {key: self.cleaned_data[key] for key in self.keys}
