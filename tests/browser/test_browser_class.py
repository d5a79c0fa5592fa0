"""Two app servers for one class, in Chromium: with LORA_LAB_DB and LORA_LAB_RAY set, a run a
student starts through one Streamlit server is watched live, and stopped, through another.

The servers are two real `streamlit run app.py` on two ports of 127.0.0.1 (conftest's `serve`),
over the test Ray cluster (.ci/ray.sh) and a new PostgreSQL database. One browser profile is one
student: the student's cookie goes to both ports (cookies are per host).
"""

from __future__ import annotations

import functools
import re
import time

import pytest

from core.jobs.class_queue import SharedPool
from core.jobs.ray_jobs import ClassQueueHandle
from tests.support.browser import (
    VIEWPORT,
    newest_step,
    scroll_to_bottom,
    shoot,
    wait_for_app,
)

pytestmark = pytest.mark.browser

STEPS = 20_000  # this test's servers allow it: a run that goes on until it is stopped
RUNNING = re.compile(rf"Step \d+ of {STEPS} ·")
STOPPED = re.compile(rf"The run was stopped at step (\d+) of {STEPS}")


def test_a_run_started_on_one_server_is_watched_live_and_stopped_on_another(
    browser, app_server, ray_cluster, postgres_db, tmp_path, monkeypatch, screenshot_dir
):
    for name, value in (("LORA_LAB_DB", postgres_db), ("LORA_LAB_RAY", ray_cluster)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LORA_LAB_MAX_STEPS", str(STEPS))
    homes = [tmp_path / "one", tmp_path / "two"]  # two machines' homes: nothing shared there
    for home in homes:
        home.mkdir()
    context = browser.new_context(viewport=VIEWPORT)
    try:
        with app_server(homes[0]) as one, app_server(homes[1]) as two:
            first = context.new_page()
            first.set_default_timeout(60_000)
            first.goto(f"{one}/train?steps={STEPS}")
            wait_for_app(first)
            first.get_by_role("button", name="Train", exact=True).click()
            first.get_by_text(RUNNING).wait_for(timeout=120_000)

            second = context.new_page()  # the same student, through the other server
            second.set_default_timeout(60_000)
            second.goto(f"{two}/train")
            wait_for_app(second)
            second.get_by_text(RUNNING).wait_for()
            scroll_to_bottom(second)
            points = newest_step(STEPS)
            second.wait_for_function(f"() => ({points})() > 0")
            seen = {second.evaluate(points)}
            deadline = time.monotonic() + 60
            while len(seen) < 3 and time.monotonic() < deadline:
                second.wait_for_timeout(200)
                seen.add(second.evaluate(points))
            assert len(seen) >= 3  # the curve grew on the second server, point by point
            shoot(second, screenshot_dir, "class-second-server-running", screens=2)
            # The job itself, live, with its Stop button (not the stored run read back).
            second.get_by_role("button", name="Stop").click()
            stopped = second.get_by_text(STOPPED)
            stopped.wait_for()
            reason = stopped.inner_text()
            first.get_by_text(reason).wait_for()  # the server that started it says the same
            assert int(STOPPED.search(reason)[1]) < STEPS
            shoot(second, screenshot_dir, "class-second-server-stopped", screens=1)
    finally:
        context.close()
        line = functools.partial(ClassQueueHandle, address=ray_cluster)
        SharedPool(store_path=postgres_db, queue=line).close_queue()  # it outlives its servers
