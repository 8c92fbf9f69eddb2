"""CardSavr's error bodies, timestamps and paging, as the sandbox writes them."""

from __future__ import annotations

import json
from datetime import UTC, datetime


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


def sort_rows(rows: list, paging: dict) -> list:
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


def page_rows(rows: list, paging: dict) -> tuple[list, dict]:
    start = (paging["page"] - 1) * paging["page_length"]
    meta = dict(paging, total_results=len(rows))
    return rows[start : start + paging["page_length"]], meta
