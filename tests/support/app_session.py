"""Opening a page of the app in AppTest as a new browser session: shared by the page tests."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")  # AppTest: absolute, from anywhere
TIMEOUT = 60  # the first run of a page imports torch and loads a model


def open_page(
    page: str,
    query: dict | None = None,
    *,
    first: dict | None = None,
    student: str | None = None,
    teacher: bool = False,
) -> AppTest:
    """A new browser session on `page`, opened from a link with `query`. `first`: the query of
    the session's very first run (what the app reads once, as presenter mode); `student`: the
    id its browser keeps (AppTest has no browser: each session is a new student otherwise);
    `teacher`: a session that typed the teacher key already (the teacher_key fixture sets it
    on the server)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if teacher:
        at.session_state["teacher"] = True
    if student is not None:
        at.session_state["student"], at.session_state["student.kept"] = student, True
    at.query_params.update(first or {})
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    at.query_params.update(query or {})
    at.run()
    assert not at.exception, at.exception
    return at


def trace_values(array: list | dict) -> list[float]:
    """A figure trace's numbers: plotly writes a numpy array as base64 bytes and their dtype."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def shown(markdown: str) -> str:
    """An element's Markdown as a student reads it: the backslash escapes that
    core.common.text.for_markdown writes before punctuation (CommonMark's) undone."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)
