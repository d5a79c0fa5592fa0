"""How long does a page take to load? Seconds from opening a link to a fully drawn page.

    python bench/page_load.py [--pages train compare] [--repeats 5] [--skip-browser]

Two measures. First the server's share, steady on a busy machine: CPU seconds of one run of
the page's script in a new session (Streamlit's AppTest, in this process; the training
workers are other processes), per task shift, the first time (the task's images are made)
and again (a new session, cached). Then what a student sees: a real server (`streamlit run
app.py` on a free loopback port, its own LoRA Lab home) and headless Chromium (Debian's, never
a downloaded one). Each load opens the link in a fresh browser tab (a new session, as a
student's click on a shared link) and waits until the script has run and every element is
drawn. Printed per page: the first load after the server started (torch and the model load),
the median of `--repeats` loads of the default link, and for each task shift the first load
of its link and a second one (what a per-task cache saves).
Target: the task strips add nothing a student notices to a load of a task seen before.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
SHIFTS = ("none", "invert", "permute", "label-permute", "domain", "planted-rank")
DRAWN = "[data-testid='stApp'][data-test-script-state='notRunning']"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {"LORA_LAB_HOME": home, "LORA_LAB_WORKERS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.3)
    server.terminate()
    raise TimeoutError("streamlit did not start within 60 s")


def load(browser, url: str) -> float:
    """Seconds from opening `url` in a new tab to the page fully drawn."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(DRAWN, timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')")
    seconds = time.perf_counter() - started
    page.close()
    return seconds


def script_seconds(page: str, query: dict[str, str]) -> float:
    """CPU seconds of one run of `page`'s script in a new session opened with `query`."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    at.query_params.update(query)
    started = time.process_time()
    at.run()
    seconds = time.process_time() - started
    assert not at.exception, at.exception
    return seconds


def script_figures(pages: list[str], repeats: int) -> None:
    for name in pages:
        first = script_seconds(name, {})
        again = [script_seconds(name, {}) for _ in range(repeats)]
        print(
            f"{name} script (CPU): first {first:.3f} s, then median "
            f"{statistics.median(again):.3f} s over {repeats}"
        )
        for shift in SHIFTS:
            first, second = (script_seconds(name, {"shift": shift}) for _ in range(2))
            print(f"  shift={shift:<14} first {first:.3f} s, second {second:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", nargs="+", default=["train", "compare"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["LORA_LAB_HOME"] = home
        os.environ["LORA_LAB_WORKERS"] = "1"
        script_figures(args.pages, args.repeats)
    if args.skip_browser:
        return
    with tempfile.TemporaryDirectory() as home, sync_playwright() as playwright:
        server, url = start_server(home)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for name in args.pages:
                first = load(browser, f"{url}/{name}")
                again = [load(browser, f"{url}/{name}") for _ in range(args.repeats)]
                median = statistics.median(again)
                print(
                    f"{name}: first load {first:.2f} s, then median {median:.2f} s"
                    f" (min {min(again):.2f}, max {max(again):.2f}) over {args.repeats}"
                )
                for shift in SHIFTS:
                    link = f"{url}/{name}?shift={shift}"
                    first, second = (load(browser, link) for _ in range(2))
                    print(f"  shift={shift:<14} first {first:.2f} s, second {second:.2f} s")
        finally:
            browser.close()
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
