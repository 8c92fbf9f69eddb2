"""Connection settings for one CardSavr agent session."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClientConfig:
    api_url: str
    app_name: str
    app_key: str = field(repr=False)
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None
    encryption: str = "cbc"
    timeout: float = 10.0
    financial_institution: str = "default"
    trace_key: str | None = None
    max_read_retries: int = 3
    # Backoff for retried reads: full jitter over base * 2**attempt, capped.
    retry_backoff: float = 0.5
    retry_backoff_cap: float = 8.0
    # A server asking for a longer pause than this is answered after this long.
    retry_after_cap: float = 30.0
