"""String catalogs: every word the app shows comes from one TOML file per language.

Keys are dotted paths into the catalog (``"learn.title"``); values may hold
``{placeholders}`` filled by :meth:`Catalog.t`. English is the reference
catalog: the tests check that every other language has exactly its keys and
placeholders, so a missing translation is caught before a student sees a key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

LANGUAGES = {"en": "English", "zh": "简体中文"}
DEFAULT_LANGUAGE = "en"
_DIR = Path(__file__).parent


def _flatten(table: dict, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": "x"}} → {"a.b": "x"}."""
    flat: dict[str, str] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


@dataclass(frozen=True)
class Catalog:
    """The strings of one language."""

    language: str
    strings: dict[str, str]

    def t(self, key: str, **values: object) -> str:
        """The string for ``key`` with its ``{placeholders}`` filled in."""
        try:
            text = self.strings[key]
        except KeyError:
            raise KeyError(f"no string {key!r} in the {self.language!r} catalog") from None
        return text.format(**values) if values else text

    def status(self, status: str) -> str:
        """A run's status in this language. A status the catalog has no word for (a row set by
        hand to 'paused', a later version's) is shown as it is stored, as the command line
        lists it: a page that lists the run must not fail on its word."""
        return self.strings.get(f"status.{status}", status)

    def has(self, key: str) -> bool:
        return key in self.strings


@cache
def catalog(language: str = DEFAULT_LANGUAGE) -> Catalog:
    """Load (once) the catalog of ``language`` (a key of :data:`LANGUAGES`)."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; choose one of {', '.join(LANGUAGES)}")
    with open(_DIR / f"{language}.toml", "rb") as file:
        return Catalog(language, _flatten(tomllib.load(file)))
