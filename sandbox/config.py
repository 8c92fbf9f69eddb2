"""What a sandbox instance needs to know: who may call it and how fast it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxConfig:
    """The integrator (app name + key) and agent the sandbox accepts.

    ``speed`` divides every scripted duration (queueing, signing in, the
    4-minute wait for an answer, the 5-minute job budget, webhook retries);
    ``clock`` returns Unix seconds and may be a test's manual clock; ``seed``
    makes ids, envelope ids and session tokens repeatable.
    """

    app_name: str
    app_key: str
    username: str
    password: str
    speed: float = 1.0
    clock: Callable[[], float] | None = None
    seed: int | None = None
    webhook_retry_delays: tuple[float, ...] = (10, 20, 40)
    # Webhook receivers on https with their own self-signed certificate.
    webhook_ca_file: str | None = None
    instance: str = "sandbox"

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be positive")
