"""The teacher key: read from the environment, compared in constant time, wrong tries slowed
per session and per server (a fake clock: no test waits)."""

import pytest

from core.common import teacher
from core.common.teacher import KeyGate, session_backoff

KEY = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("value, key", [("", None), ("   ", None), (f" {KEY} ", KEY)])
def test_the_key_is_read_from_the_environment(value, key):
    assert teacher.teacher_key({teacher.VARIABLE: value}) == key
    assert teacher.teacher_key({}) is None


def test_a_short_key_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match=f"^{teacher.VARIABLE} must have at least 8 characters$"):
        teacher.teacher_key({teacher.VARIABLE: "1234567"})


def test_the_right_key_opens_and_a_near_miss_does_not():
    gate = KeyGate(KEY, Clock())
    session = session_backoff()
    assert not gate.attempt(KEY[:-1] + "X", session).accepted
    assert not gate.attempt(KEY + " ", session).accepted
    assert not gate.attempt("", session).accepted
    assert gate.attempt(KEY, session).accepted
    assert session.failures == 0  # a right try clears the session's count


def test_without_a_key_no_one_is_a_teacher():
    gate = KeyGate(None, Clock())
    assert not gate.open
    assert not gate.attempt("", session_backoff()).accepted


def test_a_session_waits_longer_after_each_wrong_try_beyond_the_free_ones():
    clock = Clock()
    gate = KeyGate(KEY, clock)
    session = session_backoff()
    waits = [gate.attempt("wrong", session).wait for _ in range(3)]
    assert waits == [0, 0, 0]  # typos go unslowed
    for expected in (1, 2, 4, 8):
        assert gate.attempt("wrong", session).wait == expected
        refused = gate.attempt(KEY, session)  # while waiting: refused unheard, the right key too
        assert not refused.accepted and refused.wait == expected
        clock.now += expected
    assert gate.attempt(KEY, session).accepted


def test_the_wait_is_capped():
    clock = Clock()
    gate = KeyGate(KEY, clock)
    session = session_backoff()
    for _ in range(20):
        wait = gate.attempt("wrong", session).wait
        clock.now += wait
    assert wait == session.most


def test_new_sessions_do_not_escape_the_servers_back_off():
    clock = Clock()
    gate = KeyGate(KEY, clock)
    free = gate.server.free
    for _ in range(free):  # each guess from a new session: no session's back-off applies
        assert gate.attempt("guess", session_backoff()).wait == 0
    assert gate.attempt("guess", session_backoff()).wait == 1
    refused = gate.attempt(KEY, session_backoff())  # the server waits for everyone
    assert not refused.accepted and refused.wait == 1
    clock.now += 1
    assert gate.attempt(KEY, session_backoff()).accepted
