"""Shared fixtures: one torch thread; a private LoRA Lab home and run store per test (the
store on each back end: an SQLite file, and a new PostgreSQL database); for the app, a private
LoRA Lab home, a running server and a headless browser.

None of them is autouse: only the tests that ask for them pay for them. No test ever uses the
database of whoever runs them: LORA_LAB_DB is cleared for the session.

PostgreSQL: tests/support/postgres.py says which server the tests use, and what happens
without one (a skip on a developer's machine, a failure in CI). The same goes for Ray:
LORA_LAB_TEST_RAY is the address of a test cluster (`.ci/ray.sh start` prints it).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
import torch
from sqlalchemy.pool import NullPool

from tests.support.postgres import needs_postgres
from tests.support.servers import CHROMIUM, TEACHER_KEY, launch_chromium, start_app

if TYPE_CHECKING:  # imported where used: tests that do not ask for a store do not load core
    from core.store.runs import RunStore

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.pop("LORA_LAB_DB", None)  # never the database of whoever runs the tests


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """The address of the test Ray cluster (`eval "$(bash .ci/ray.sh start)"` sets
    LORA_LAB_TEST_RAY, and the token the cluster wants); without it, a skip on a developer's
    machine and a failure in CI, where a missing cluster is a broken set-up."""
    address = os.environ.get("LORA_LAB_TEST_RAY", "").strip()
    if not address:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("LORA_LAB_TEST_RAY is not set: .ci/run starts a cluster with .ci/ray.sh")
        pytest.skip("no Ray cluster: `bash .ci/ray.sh start` prints one for LORA_LAB_TEST_RAY")
    return address


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database of the test server, dropped afterwards
    (with any connection a test left open)."""
    server = sa.make_url(needs_postgres())
    name = f"lora_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        server.set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread, as each pool worker has: bit-for-bit equal numbers need a fixed thread
    count, and two threads on two busy cores run many times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LORA_LAB_HOME for one test: never the real ~/.lora-lab."""
    monkeypatch.setenv("LORA_LAB_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunStore]:
    """The run store of the test's own home, on each back end: the SQLite file in it, and a
    new PostgreSQL database named by LORA_LAB_DB (which RunStore() and any process the test
    starts read, as the app and its workers do)."""
    from core.store.runs import RunStore

    if request.param == "postgresql":
        monkeypatch.setenv("LORA_LAB_DB", request.getfixturevalue("postgres_db"))
    with RunStore() as store:
        yield store


@pytest.fixture
def teacher_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's teacher key set (LORA_LAB_TEACHER_KEY): a session may be the teacher's."""
    monkeypatch.setenv("LORA_LAB_TEACHER_KEY", TEACHER_KEY)
    return TEACHER_KEY


@pytest.fixture(scope="session")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh LORA_LAB_HOME and one training worker for the whole session.

    The job pool is process-wide and reads these when it starts, so they are set once, before
    any page creates it, and never changed.
    """
    home = tmp_path_factory.mktemp("lora-lab-home")
    saved = {name: os.environ.get(name) for name in ("LORA_LAB_HOME", "LORA_LAB_WORKERS")}
    os.environ["LORA_LAB_HOME"] = str(home)
    os.environ["LORA_LAB_WORKERS"] = "1"
    yield home
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def serve(home: Path, options: tuple[str, ...] = ()) -> Iterator[str]:
    """`streamlit run app.py` on a free port with LoRA Lab home `home`, one worker and Streamlit
    config `options`, the teacher key TEACHER_KEY; yields its URL, and stops it (by its process
    id) at the end."""
    env = os.environ | {
        "LORA_LAB_HOME": str(home),
        "LORA_LAB_WORKERS": "1",
        "LORA_LAB_TEACHER_KEY": TEACHER_KEY,
    }
    with open(home / "streamlit.log", "a") as log:
        server, url = start_app(ROOT, env, log, options, timeout=60)
        try:
            yield url
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture
def app_server() -> Callable[[Path], contextlib.AbstractContextManager[str]]:
    """`serve`, for a test that stops its server and starts it again on the same home."""
    return serve


@pytest.fixture(scope="session")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on a free port, with its own LoRA Lab home and one worker."""
    with serve(tmp_path_factory.mktemp("server-home")) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    """Headless system Chromium (never a downloaded one); skips if it is not installed."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
