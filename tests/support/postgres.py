"""The test PostgreSQL server, named by the environment (`.ci/postgres.sh start DIR` prints its
URL; `.ci/run` starts it and sets both): conftest's `postgres_db` and the server tests ask for
it here. Without it, a skip on a developer's machine and a failure in CI (CI=true): a missing
server never passes as a skipped test there."""

from __future__ import annotations

import os

import pytest

POSTGRES = "LORA_LAB_TEST_POSTGRES"  # the URL of a server on which the tests create databases
POSTGRES_DIR = "LORA_LAB_TEST_POSTGRES_DIR"  # its folder (the restart test restarts it)


def needs_postgres(setting: str = POSTGRES) -> str:
    """The value of `setting` (the test server's URL, or its folder); without it, a skip on a
    developer's machine and a failure in CI."""
    value = os.environ.get(setting, "").strip()
    if not value:
        message = f"{setting} is not set: start a server with `.ci/postgres.sh start DIR`"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{message}; CI must test the PostgreSQL store, not skip it")
        pytest.skip(message)
    return value
