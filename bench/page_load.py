"""How long does a page take to load? Seconds from opening a link to a fully drawn page.

    python -m bench.page_load [--pages train compare learn] [--repeats 8] [--skip-browser]
                              [--before DIR]

Two measures. First the server's share, steady on a busy machine: CPU seconds of one run of
the page's script in a new session (Streamlit's AppTest, in this process; the training
workers are other processes), per task shift, the first time (the task's images are made)
and again (a new session, cached). Then what a student sees: a real server (`streamlit run
app.py` on a free loopback port, its own LoRA Lab home) and headless Chromium (Debian's, never
a downloaded one). Each load opens the link in a fresh browser tab (a new session, as a
student's click on a shared link) and waits until the script has run and every element is
drawn; printed: the median wall time and the median time the browser's main thread was busy
(Chromium's TaskDuration), which a busy machine inflates less. With --before DIR (another
checkout, e.g. `git archive main | tar -x -C DIR`), both run side by side and their loads
alternate, so that both see the same load on the machine. Each link is opened once first
(not counted): the server loads torch, the model and the task's images.
Target: the task strips add nothing a student notices to a load of a task seen before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright
from streamlit.testing.v1 import AppTest

from tests.support.servers import launch_chromium, start_app

ROOT = Path(__file__).resolve().parent.parent
SHIFTS = ("none", "invert", "permute", "label-permute", "domain", "planted-rank")
DRAWN = "[data-testid='stApp'][data-test-script-state='notRunning']"


def load(browser, url: str) -> tuple[float, float]:
    """Seconds from opening `url` in a new tab to the page fully drawn, and the seconds the
    browser's main thread was busy meanwhile."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    devtools = page.context.new_cdp_session(page)
    devtools.send("Performance.enable")
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(DRAWN, timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')")
    seconds = time.perf_counter() - started
    metrics = devtools.send("Performance.getMetrics")["metrics"]
    page.close()
    return seconds, next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def browser_figures(checkouts: dict[str, Path], links: list[str], repeats: int) -> None:
    with sync_playwright() as playwright, contextlib.ExitStack() as stack:
        urls = {}
        for name, root in checkouts.items():
            home = stack.enter_context(tempfile.TemporaryDirectory())
            env = os.environ | {"LORA_LAB_HOME": home, "LORA_LAB_WORKERS": "1"}
            server, urls[name] = start_app(root, env)
            stack.callback(server.wait, 10)
            stack.callback(server.terminate)
        browser = launch_chromium(playwright)
        stack.callback(browser.close)
        for link in links:
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
            for url in urls.values():
                load(browser, f"{url}/{link}")  # not counted: torch, the model, the images
            for repeat in range(repeats):
                order = list(urls.items())
                for name, url in order if repeat % 2 == 0 else order[::-1]:
                    times[name].append(load(browser, f"{url}/{link}"))
            for name, loads in times.items():
                wall = statistics.median(seconds for seconds, _ in loads)
                busy = statistics.median(busy for _, busy in loads)
                print(f"{link:<28} {name:<7} load {wall:.2f} s, browser busy {busy:.2f} s")


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
    parser.add_argument("--pages", nargs="+", default=["train", "compare", "learn"])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument("--before", type=Path, help="another checkout to load side by side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["LORA_LAB_HOME"] = home
        os.environ["LORA_LAB_WORKERS"] = "1"
        script_figures([page for page in args.pages if page != "learn"], args.repeats)
    if args.skip_browser:
        return
    checkouts = {"this": ROOT} | ({"before": args.before} if args.before else {})
    shifted = [f"{page}?shift=label-permute" for page in args.pages if page != "learn"]
    browser_figures(checkouts, [*args.pages, *shifted], args.repeats)


if __name__ == "__main__":
    main()
