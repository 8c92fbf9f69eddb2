"""Injected failures: what the next matching requests suffer instead of a reply."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

KINDS = ("delay", "429", "500", "503", "garbage", "drop", "drip")


@dataclass(frozen=True)
class Fault:
    """One injected failure.

    ``seconds`` is real time (the delay before answering, or how long a drip
    takes); ``count`` limits how many requests it hits (None: no limit);
    ``until`` is a clock time after which it stops (None: until cleared).
    """

    id: int
    kind: str
    job_id: int | None = None
    seconds: float = 0.0
    count: int | None = None
    until: float | None = None
    retry_after: float = 1.0

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "job_id": self.job_id,
            "seconds": self.seconds,
            "count": self.count,
            "until": self.until,
            "retry_after": self.retry_after,
        }


class FaultBook:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(
        self,
        kind: str,
        *,
        job_id: int | None = None,
        seconds: float = 0.0,
        count: int | None = None,
        duration: float | None = None,
        retry_after: float = 1.0,
    ) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or null for no limit)")
        if seconds < 0 or retry_after < 0 or (duration is not None and duration <= 0):
            raise ValueError("seconds, retry_after and duration cannot be negative")
        until = None if duration is None else self._clock() + duration
        fault = Fault(
            next(self._ids), kind, job_id, float(seconds), count, until, retry_after
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        now = self._clock()
        with self._lock:
            self._faults = [f for f in self._faults if f.until is None or f.until > now]
            return list(self._faults)

    def take(self, job_id: int | None) -> Fault | None:
        """The fault this request suffers, using one of its count.

        A fault for this job wins over a fault for every request.
        """
        now = self._clock()
        with self._lock:
            self._faults = [f for f in self._faults if f.until is None or f.until > now]
            chosen = None
            if job_id is not None:
                chosen = next((f for f in self._faults if f.job_id == job_id), None)
            if chosen is None:
                chosen = next((f for f in self._faults if f.job_id is None), None)
            if chosen is None:
                return None
            index = self._faults.index(chosen)
            if chosen.count is not None:
                if chosen.count <= 1:
                    del self._faults[index]
                else:
                    self._faults[index] = replace(chosen, count=chosen.count - 1)
            return chosen
