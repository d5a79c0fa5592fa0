"""Text that people typed (a run's name, a student's name, a file's name) shown as text.

Such text reaches places that read markup: a plotly figure reads a subset of HTML in its
legend, hover and annotation text (`<b>`, `<a href>`, `<span style>`), and a terminal obeys the
control codes in what it prints (ESC sequences clear the screen or retitle the window, a newline
forges a row of a table). Stored text may hold either, even once names are checked on the way
in (core.store.names.checked_name): a row edited by hand, a store written by an older version. Each
function here makes one such place show the characters themselves.
"""

from __future__ import annotations

import html
import re


def for_figure(text: str) -> str:
    """`text` for a plotly figure: `&`, `<` and `>` as HTML entities, which plotly shows as the
    characters themselves, so no tag of it is bold, a link or a style."""
    return html.escape(text, quote=False)


def for_markdown(text: str) -> str:
    """`text` inside the app's own Markdown (a caption, an alert): every ASCII punctuation mark
    backslash-escaped, as CommonMark allows, so none of it starts a link, an image, emphasis or
    an HTML tag; it shows as the characters themselves."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def for_terminal(text: str) -> str:
    """`text` for a terminal: every character that is not printable (control codes such as ESC
    and newline, bidirectional overrides) written as its Python escape (`\\x1b`, `\\n`,
    `\\u202e`), so the text prints on one line and moves no cursor."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def one_line(text: str, most: int) -> str:
    """A name that was not checked on the way in (a file's, a pattern's) as one line of at most
    `most` characters: for_terminal, and cut with "…" where it is longer."""
    line = for_terminal(text)
    return line if len(line) <= most else line[: most - 1] + "…"
