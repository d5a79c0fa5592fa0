"""The app on loopback and the system browser, as the browser tests and the benchmarks start them.

    process, url = start_app(checkout, env, log)   # `streamlit run app.py`, answering at url
    chromium = launch_chromium(playwright)         # headless, Debian's Chromium

The server listens on a free port of 127.0.0.1 only; whoever starts it stops it (by its process).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # playwright is loaded only where a browser is launched (conftest, bench)
    from playwright.sync_api import Browser, Playwright

TEACHER_KEY = "the teacher's test key"  # LORA_LAB_TEACHER_KEY of a test's or a bench's server
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's, never a downloaded one
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    # many sessions in one browser: no page may be slowed down for being in the background
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    # nothing but the app: no traffic of the browser's own
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright: Playwright) -> Browser:
    """Headless CHROMIUM with CHROMIUM_ARGS, from a started `sync_playwright()`; whoever
    launches it closes it."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(
    checkout: Path,
    env: Mapping[str, str],
    log: IO | int = subprocess.DEVNULL,
    options: tuple[str, ...] = (),
    timeout: float = 120.0,
) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` of `checkout` with `env` and Streamlit config `options`
    ("runner.postScriptGC=false"), on a free port of 127.0.0.1; returns once it answers (or
    stops it and raises: it exited, or did not answer within `timeout` s). With a
    "server.baseUrlPath=PREFIX" option (the app behind a reverse proxy), url ends in /PREFIX."""
    prefix = "".join(o.split("=", 1)[1] for o in options if o.startswith("server.baseUrlPath="))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", *(f"--{option}" for option in options)],
        cwd=checkout, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}" + (f"/{prefix.strip('/')}" if prefix.strip("/") else "")
    try:
        wait_until_up(url, process, timeout)
    except (RuntimeError, TimeoutError):
        process.kill()
        process.wait()
        raise
    return process, url


def wait_until_up(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout:.0f} s")
