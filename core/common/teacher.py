"""Who is the teacher: whoever types the server's teacher key, `LORA_LAB_TEACHER_KEY`.

The key opens the teacher's views (the Class page, every run on the server, clearing a class).
Without it set, those views are off: a server whose teacher set no key has only students. A
typed key is compared in constant time (hmac.compare_digest), so a wrong key takes as long to
refuse however many of its first characters are right, and wrong tries are slowed twice over:
within one browser session, and over the whole server (a guesser who opens a new session for
each try still waits). This module imports no streamlit: the page keeps a session's `Backoff`
in its session state and the server's `KeyGate` as a shared resource.

    key = teacher_key()                      # None: no teacher views; ValueError: too short
    gate = KeyGate(key)
    attempt = gate.attempt(typed, session)   # session: this browser session's Backoff
    attempt.accepted, attempt.wait           # wait: seconds before the next try is heard
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

VARIABLE = "LORA_LAB_TEACHER_KEY"
MIN_KEY_CHARS = 8  # a key short enough to guess in the tries the back-off allows is refused


def teacher_key(environ: Mapping[str, str] = os.environ) -> str | None:
    """The server's teacher key, or None where it is unset or blank (no teacher views). A key
    shorter than MIN_KEY_CHARS is a one-line ValueError naming the variable: a server would
    otherwise open the class to whoever guesses it."""
    key = environ.get(VARIABLE, "").strip()
    if not key:
        return None
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"{VARIABLE} must have at least {MIN_KEY_CHARS} characters")
    return key


@dataclass
class Backoff:
    """Wrong tries, slowed: the first `free` go unslowed, then each wrong try makes the next
    wait twice as long as the one before (from `first` seconds, at most `most`). A right try
    clears it."""

    free: int
    first: float
    most: float
    failures: int = 0
    until: float = 0.0  # the clock's time before which no try is heard

    def wait(self, now: float) -> float:
        """Seconds left before the next try is heard (0: now)."""
        return max(0.0, self.until - now)

    def failed(self, now: float) -> None:
        self.failures += 1
        slowed = self.failures - self.free
        if slowed > 0:
            self.until = now + min(self.most, self.first * 2 ** (slowed - 1))

    def cleared(self) -> None:
        self.failures, self.until = 0, 0.0


def session_backoff() -> Backoff:
    """One browser session's: three free tries, then 1 s, 2 s, 4 s … up to a minute."""
    return Backoff(free=3, first=1.0, most=60.0)


def server_backoff() -> Backoff:
    """The whole server's: a class's typos go unslowed, a guesser's hundreds of sessions not."""
    return Backoff(free=20, first=1.0, most=60.0)


@dataclass(frozen=True)
class Attempt:
    """How a typed key was taken: accepted, or refused (wait: seconds before the next try is
    heard; 0 when the next may come at once). A try made while waiting is refused unheard."""

    accepted: bool
    wait: float


class KeyGate:
    """The server's teacher key and the server-wide back-off of wrong tries (thread-safe: one
    gate serves every session of a server)."""

    def __init__(self, key: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.key = key
        self.clock = clock
        self.server = server_backoff()
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        """Whether the server has a teacher at all (a key is set)."""
        return self.key is not None

    def attempt(self, typed: str, session: Backoff) -> Attempt:
        """`typed` checked against the key, unless this session or the server must wait first
        (then refused unheard, the right key too). A wrong try counts against both back-offs;
        a right one clears the session's."""
        with self._lock:
            now = self.clock()
            waiting = max(session.wait(now), self.server.wait(now))
            if self.key is None or waiting > 0:
                return Attempt(False, waiting)
            if hmac.compare_digest(typed.encode(), self.key.encode()):
                session.cleared()
                return Attempt(True, 0.0)
            session.failed(now)
            self.server.failed(now)
            return Attempt(False, max(session.wait(now), self.server.wait(now)))
