"""A classroom on one app server, or several: N browser sessions press Train at one moment.

    .venv/bin/python -m bench.classroom [--sessions 10] [--servers 1] [--timeout 300]
        [--placement both|pinned|co-located] [--server-cpus 0] [--browser-cpus 1] [--settle 60]
        [--before DIR] [--json] [--py-spy stacks.txt] [--option runner.postScriptGC=false ...]
        [--model gpt] [--class-page]

Starts `streamlit run app.py` (headless, 127.0.0.1, a free port) with a fresh LORA_LAB_HOME and
opens headless Chromium (the system browser; one browser, one context per student). First one
student trains the default run alone: the solo reference (run by a pool worker with the pool's
thread share, exactly as in the class; it also warms the server and the workers). Then N
sessions open the Train page, wait until it is drawn, and click Train at one shared instant.
Each page notes in the browser, every 50 ms, the seconds from its click until it showed:

- progress: the first progress line ("Step 3 of 200"): the server's first update;
- chart, plotly.js, point: a chart element, plotly.js loaded (a 4.7 MB file a fresh browser
  fetches with its first chart), a plotted point (plotly drew the curve);
- result: the metric "Test accuracy before → after", and its value; updates: how many
  different progress lines it showed on the way.

Every session's accuracy is compared with the solo run's (as shown, and exactly in the run
store, read through core.store.runs.RunStore). While the class trains, one more session opens the
Train page: the seconds until it is drawn. CPU seconds of the server process, of its children
(the training workers) and of the browser are measured from the click until the last page
showed its result (the wall time), and so is how busy each core was (with whatever else the
machine ran); the 1-minute load average is printed before and after each class.

--placement: in a class the browsers run on the students' machines, but here N Chromium pages
share the machine with the server, and on a small machine they take the CPU the pool trains
with. "pinned" measures what a class gets: the server and its training workers on
--server-cpus, Chromium (every page), the bench and playwright's driver on --browser-cpus
(os.sched_setaffinity, inherited by the processes each starts; the cores every thread of both
was allowed, read back during the class, are printed). By default the browsers get the upper
half of the cores this process may use and the server the rest: on 2 cores, one each. The pool
sizes itself by the cores it may use, so pinned on 2 cores it trains one run at a time.
"co-located" runs both on every core, as a class on one machine would. "both" (the default)
runs the pinned class, waits --settle seconds for the load average to fall back, runs the
co-located class, and prints their figures side by side. With --servers K > 1 the servers are
pinned, Ray's workers (the cluster's processes) are not.
--py-spy samples the server with py-spy (`pip install py-spy`, a dev tool) during the class
and prints its busiest functions; --option passes a Streamlit config option to the server, to
measure a change without editing the app.

--model NAME: every student trains that model's own default run (core.common.config.for_model,
through a link to the Train page naming the model and its own settings, MODEL_DEFAULTS):
`--model gpt` is the language model's run on Python code, its result read from the text
kind's headline ("Bits per character on the target text, before → after"). The default is the
app's default run.

--class-page runs each class twice: first as above, then with the teacher's Class page open in
one more browser context for the whole class (the teacher key typed in its sidebar: the servers
get LORA_LAB_TEACHER_KEY), and prints their figures side by side: what a projector watching the
class costs the server, beside the class without it.

--before DIR runs the same class first on another checkout (a `git worktree` of an older
commit), then on this one, and prints both side by side: a change's cost, measured in one run
(each placement on each checkout).

--servers K (K > 1): one class over K app servers, as README's "Several app servers for one
class" runs it. It needs LORA_LAB_DB (a postgresql:// URL) and LORA_LAB_RAY in the environment,
which the K servers inherit: they share the run store and the class's queue, a detached Ray
actor that the first server starts. The solo reference trains through the first server; the N
sessions go to the servers in turn (session i to server i mod K). After the class, one page
per server, Compare with every run on the server shown, counts how many of the class's runs it
lists. Give the bench a database and a cluster of its own: it refuses a cluster that already
has this database's queue (a class may be using it), and ends the queue it started at the end
(the queue would outlive the servers, and a later class would join it, with this checkout's
code). The runs stay in the database; only runs added after the bench started are counted.
The CPU columns count the K servers; the training runs on Ray's workers, which are not counted.

Prints figures; asserts nothing (the machine may be busy with other work). Traffic stays on
127.0.0.1; every wait is bounded; the server, its workers and the browser are stopped by their
process ids at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from core.classroom import links
from core.classroom.i18n import catalog
from core.cli.commands import METRIC_NAMES
from core.common.config import DEFAULT_MODEL, MODEL_DEFAULTS, for_model
from core.jobs import executors, ray_jobs
from core.jobs.class_queue import SharedPool
from core.store.records import RunRecord
from core.store.runs import RunStore, StoreError
from core.training.data import kind_of
from core.training.kinds import Metric
from tests.support.browser import VIEWPORT, become_teacher
from tests.support.servers import CHROMIUM, TEACHER_KEY, launch_chromium, start_app

try:  # optional (requirements-distributed.txt): only --servers K > 1 needs it
    import ray
except ImportError:
    ray = None

ROOT = Path(__file__).resolve().parent.parent
PINNED, CO_LOCATED = "pinned", "co-located"
# A core's busy time on Linux (guest time is already counted in user time).
BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")


ENGLISH = catalog("en")  # the app's English texts: the labels the pages are read by
TRAIN_BUTTON = ENGLISH.t("train.start")  # "Train"
# "Step {step} of {steps} · …" → a regular expression for "Step 3 of 200"
PROGRESS_PATTERN = (
    re.escape(ENGLISH.t("train.progress").split("{steps}")[0]).replace(re.escape("{step}"), r"\d+")
    + r"\d+"
)
# Every page clicks at one instant, this long after arming starts (each page takes a while).
CLICK_LEAD_MS, CLICK_LEAD_PER_PAGE_MS = 1500, 300

# The Train page is drawn: its script ran to the end, its Train button is there, nothing is
# still a loading placeholder.
TRAIN_PAGE_DRAWN_JS = f"""
() => !!document.querySelector("[data-testid='stApp'][data-test-script-state='notRunning']")
  && [...document.querySelectorAll('button')].some(
       (b) => b.innerText.trim().split('\\n').pop().trim() === {json.dumps(TRAIN_BUTTON)})
  && !document.querySelector("[data-testid='stSkeleton']")
"""
# The ids of the runs a page's charts name: the Compare page names each point "#12 · … · Finished"
# (its hover text).
LISTED_RUNS_JS = r"""
() => [...document.querySelectorAll('.js-plotly-plot')]
  .flatMap((plot) => (plot.data || []).flatMap((trace) => [].concat(trace.hovertext ?? [])))
  .map((text) => /^#(\d+) · /.exec(String(text)))
  .filter((match) => match)
  .map((match) => Number(match[1]))
"""
# A page is drawn (the Compare page, the Learn page a teacher first opens): its script ran to
# the end, nothing is a loading placeholder.
PAGE_DRAWN_JS = """
() => !!document.querySelector("[data-testid='stApp'][data-test-script-state='notRunning']")
  && !document.querySelector("[data-testid='stSkeleton']")
"""
# Runs in a page as it loads: notes when it is drawn (ms since the epoch) in window.__loaded.
LOAD_WATCHER_JS = f"""
(() => {{
  const drawn = {TRAIN_PAGE_DRAWN_JS};
  const timer = setInterval(() => {{
    if (drawn()) {{ window.__loaded = Date.now(); clearInterval(timer); }}
  }}, 50);
}})();
"""

# Runs in each page: click Train at `at` (ms since the epoch), then every 50 ms note (ms since
# the epoch) what the student sees for the first time: the progress line ("Step 3 of 200": the
# server sent a first update), a chart element, a plotted point (plotly drew it: in a fresh
# browser it first loads plotly.js, a 4.7 MB file, which the page requests with its first
# chart), the accuracy metric of the finished run; and how many different progress lines it
# showed (the updates the student saw). Timings are taken in the browser, so watching N
# pages from Python delays none of them.
WATCHER_JS = """
([button, at, label, progressPattern]) => {
  const w = (window.__bench = {clicked: null, progress: null, chart: null, firstPoint: null,
                               finished: null, plotlyJs: null, accuracy: null, error: null,
                               updates: 0});
  const progressLine = new RegExp(progressPattern);
  let lastProgress = null;
  setTimeout(() => { w.clicked = Date.now(); button.click(); }, Math.max(0, at - Date.now()));
  const timer = setInterval(() => {
    if (w.clicked === null) return;
    const now = Date.now();
    const bar = document.querySelector('[data-testid="stProgress"]');
    const text = bar ? bar.innerText.trim() : null;
    if (text && progressLine.test(text) && text !== lastProgress) {
      lastProgress = text;
      w.updates += 1;
      if (w.progress === null) w.progress = now;
    }
    if (w.chart === null && document.querySelector('[data-testid="stPlotlyChart"]')) {
      w.chart = now;
    }
    if (w.firstPoint === null) {
      for (const plot of document.querySelectorAll('.js-plotly-plot')) {
        if ((plot._fullData || []).some((trace) => trace.x && trace.x.length > 0)) {
          w.firstPoint = now;
          break;
        }
      }
    }
    if (w.plotlyJs === null) {
      const file = performance.getEntriesByType('resource').find(
        (entry) => entry.name.includes('/PlotlyChart.') && entry.responseEnd > 0);
      if (file) w.plotlyJs = performance.timeOrigin + file.responseEnd;
    }
    if (w.finished === null) {
      for (const metric of document.querySelectorAll('[data-testid="stMetric"]')) {
        const name = metric.querySelector('[data-testid="stMetricLabel"]');
        const value = metric.querySelector('[data-testid="stMetricValue"]');
        if (name && value && name.innerText.includes(label)) {
          w.finished = now;
          w.accuracy = value.innerText.trim();
        }
      }
    }
    const failure = document.querySelector(
      '[data-testid="stException"], [data-testid="stAlertContentError"]');
    if (failure && w.error === null) w.error = failure.innerText.trim().slice(0, 200);
    if (w.finished !== null && w.firstPoint !== null) clearInterval(timer);
  }, 50);
}
"""


@dataclass
class Session:
    """What one student's page saw, in seconds after its own click (None: never, in time)."""

    clicked_at: float | None = None  # when this page clicked Train (time.time())
    progress: float | None = None  # the first progress line: the server's first update
    chart: float | None = None  # the first chart element on the page
    first_point: float | None = None  # the first point plotly drew
    finished: float | None = None  # the result ("Test accuracy before → after")
    plotly_js: float | None = None  # plotly.js (loaded with the first chart) arrived
    accuracy: str | None = None  # as shown: "84.1% → 93.2%"
    updates: int = 0  # different progress lines the student saw
    error: str | None = None
    server: int = 1  # the app server this student's page talked to (1 … K)


@dataclass(frozen=True)
class Placement:
    """The cores a class runs on: the app servers and their training workers on `server_cpus`;
    Chromium, the bench and playwright's driver on `browser_cpus` (the same set: co-located)."""

    name: str  # PINNED or CO_LOCATED
    server_cpus: frozenset[int]
    browser_cpus: frozenset[int]


@dataclass
class Report:
    sessions: int
    load_before: float
    app: str  # the checkout served
    placement: str = CO_LOCATED
    server_cpus: list[int] = field(default_factory=list)  # as asked
    browser_cpus: list[int] = field(default_factory=list)
    # every core a thread of the servers and their workers (of Chromium) was allowed, read
    # from the kernel during the class: the proof that the placement held
    server_cpus_seen: list[int] = field(default_factory=list)
    browser_cpus_seen: list[int] = field(default_factory=list)
    workers: int | None = None  # the pool's training workers (None: Ray's, with --servers K)
    threads_put_back: int = 0  # pinned: threads that had left their cores (see placement_held)
    servers: int = 1  # app servers (K), sharing PostgreSQL and Ray when more than one
    model: str = DEFAULT_MODEL  # every student trains this model's own default run
    within: float | None = None  # the target: every page shows its result within this (s)
    options: list[str] = field(default_factory=list)  # Streamlit options given to the server
    class_page: bool = False  # the teacher's Class page open during the class
    load_after: float = 0.0
    solo: Session | None = None
    class_sessions: list[Session] = field(default_factory=list)
    wall_s: float = 0.0  # the click until the last page showed its result (or the timeout)
    server_cpu_s: float = 0.0  # the Streamlit process alone, over wall_s
    workers_cpu_s: float = 0.0  # its child processes (the training workers), over wall_s
    browser_cpu_s: float = 0.0  # Chromium, all its processes, over wall_s
    core_busy: list[float] = field(default_factory=list)  # each core's busy share of wall_s
    new_page_load_s: float | None = None
    click_spread_s: float | None = None  # the first page's click to the last one's
    pool_finished_s: list[float] = field(default_factory=list)  # runs saved in the store
    stored_accuracies: list[float] = field(default_factory=list)  # exact, solo run first
    unreadable_runs: int = 0  # runs of the class the store has but cannot read
    listed: list[int] = field(default_factory=list)  # the class's runs each server's page lists
    profile: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- processes


@contextlib.contextmanager
def server(home: Path, options: list[str], app: Path) -> Iterator[tuple[str, psutil.Process]]:
    """`streamlit run app.py` of the checkout `app` on 127.0.0.1 with its own home and extra
    config `options` ("runner.postScriptGC=false"); stopped by pid on the way out."""
    env = os.environ | {"LORA_LAB_HOME": str(home), "LORA_LAB_TEACHER_KEY": TEACHER_KEY}
    with open(home / "streamlit.log", "w") as log:
        process, url = start_app(app, env, log, tuple(options))
        children: list[psutil.Process] = []
        try:
            yield url, psutil.Process(process.pid)
        finally:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(process.pid).children(recursive=True)
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            stop_pids(children)  # the training workers, if the server left any behind


def stop_pids(processes: list[psutil.Process]) -> None:
    """End these processes (each checked to be the same process: pids are reused)."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running():
                process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=5)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def cpu_seconds(process: psutil.Process) -> tuple[float, float]:
    """(the process itself, all its living descendants) in user + system CPU seconds."""

    def used(p: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            return times.user + times.system
        return 0.0

    with contextlib.suppress(psutil.Error):
        return used(process), sum(used(child) for child in process.children(recursive=True))
    return 0.0, 0.0


def busy_seconds() -> list[float]:
    """Each core's CPU seconds spent busy since boot, by any process (other work included)."""
    return [
        sum(getattr(times, name) for name in BUSY_FIELDS) for times in psutil.cpu_times(percpu=True)
    ]


def threads_of(processes: list[psutil.Process]) -> list[int]:
    """The thread ids of these processes and of all their descendants, as they are now."""
    ids: list[int] = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            for member in [process, *process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    ids += [thread.id for thread in member.threads()]
    return ids


def cores_allowed(processes: list[psutil.Process]) -> list[int]:
    """Every core that a thread of these processes or of their descendants may run on, as the
    kernel has it now: whether a placement held for every child and thread."""
    allowed: set[int] = set()
    for thread in threads_of(processes):
        with contextlib.suppress(OSError):  # (a thread that just ended)
            allowed |= os.sched_getaffinity(thread)
    return sorted(allowed)


def put_back(processes: list[psutil.Process], cpus: frozenset[int]) -> int:
    """Moves every thread of these processes and their descendants that may run outside `cpus`
    onto `cpus`; how many it moved."""
    moved = 0
    for thread in threads_of(processes):
        with contextlib.suppress(OSError):
            if not os.sched_getaffinity(thread) <= cpus:
                os.sched_setaffinity(thread, cpus)
                moved += 1
    return moved


@contextlib.contextmanager
def placement_held(
    placement: Placement, servers: list[psutil.Process], browser: psutil.Process
) -> Iterator[list[int]]:
    """Pinned: every 0.2 s, puts back any thread of the servers' process trees or of the
    browser's that may run outside its cores (Chromium's GPU process pins threads of its own to
    cores it picks, whatever it inherited); yields [how many threads it moved], updated.
    Co-located: nothing to hold."""
    moved = [0]
    if placement.name != PINNED:
        yield moved
        return

    def hold() -> None:
        moved[0] += put_back(servers, placement.server_cpus)
        moved[0] += put_back([browser], placement.browser_cpus)

    with every(0.2, hold, "placement"):
        yield moved


@contextlib.contextmanager
def every(seconds: float, work: Callable[[], None], name: str) -> Iterator[None]:
    """Calls `work` at once and every `seconds` in a thread of its own while the block runs,
    and once more as it ends."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            work()
            if stop.wait(seconds):
                work()
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


@contextlib.contextmanager
def cpu_trace(servers: list[psutil.Process], browser: psutil.Process) -> Iterator[list[tuple]]:
    """Samples (time.time(), the servers' CPU s, their children's, the browser's with all its
    processes, then each core's busy seconds) every 0.2 s in a thread, to read CPU at instants
    the browser measured."""
    samples: list[tuple] = []

    def sample() -> None:
        used = [cpu_seconds(server) for server in servers]
        own, children = (sum(column) for column in zip(*used, strict=True))
        browser_s = sum(cpu_seconds(browser))
        samples.append((time.time(), own, children, browser_s, *busy_seconds()))

    with every(0.2, sample, "cpu-trace"):
        yield samples


def cpu_between(samples: list[tuple], start: float, end: float) -> tuple[float, ...]:
    """The seconds between the first samples taken at or after `start` and `end` (time.time();
    the last sample if none was), then the CPU seconds used between them, per column."""

    def at(when: float) -> tuple:
        return next((sample for sample in samples if sample[0] >= when), samples[-1])

    return tuple(b - a for a, b in zip(at(start), at(end), strict=True))


# ----------------------------------------------------------------------------- the browser


def open_page(browser: Browser, link: str, drawn_js: str, timeout: float) -> Page:
    """A new student (own context, own Streamlit session) with the page at `link` drawn (the
    JS function `drawn_js` says so); its context is closed if it is not drawn in time."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_timeout(timeout * 1000)
        page.goto(link)
        page.wait_for_function(f"() => ({drawn_js})()")
    except Exception:
        context.close()
        raise
    return page


def train_link(url: str, model: str) -> str:
    """The Train page set to `model`'s default run: the model and its own settings
    (config.MODEL_DEFAULTS) that the page offers and that differ from the page's defaults."""
    own = {"model": model, **MODEL_DEFAULTS.get(model, {})}
    defaults = links.train_defaults()
    query = links.to_query({key: own[key] for key in defaults if key in own}, defaults)
    return links.page_url(url, "train", query)


def headline(model: str) -> Metric:
    """What a run of `model`'s default task is judged by: accuracy, or on text bits per
    character."""
    return kind_of(for_model(model).dataset).metric


def result_label(model: str) -> str:
    """The label of the metric a finished run shows ("Test accuracy before → after")."""
    return ENGLISH.t(headline(model).label)


def stored_result(run: RunRecord) -> float | None:
    """The exact headline result of a stored run: its test accuracy, or on text its bits per
    character, after training."""
    return getattr(run, f"test_{kind_of(run.config.dataset).metric.field}_after")


def open_train_page(browser: Browser, url: str, timeout: float, model: str) -> Page:
    return open_page(browser, train_link(url, model), TRAIN_PAGE_DRAWN_JS, timeout)


def start_loading(browser: Browser, url: str) -> tuple[Page, float]:
    """A new student's Train page, loading while the caller goes on; (page, start in ms since
    the epoch). The page notes when it is drawn itself: see loaded_after."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(LOAD_WATCHER_JS)
    page = context.new_page()
    started_ms = time.time() * 1000
    page.evaluate("(url) => { setTimeout(() => location.assign(url), 0); }", f"{url}/train")
    return page, started_ms


def loaded_after(page: Page, started_ms: float) -> float | None:
    """Seconds from `started_ms` until the page was drawn; None while it is not."""
    try:
        drawn = page.evaluate("() => window.__loaded ?? null")
    except PlaywrightError:  # between two documents while it navigates
        return None
    return None if drawn is None else (drawn - started_ms) / 1000


def arm(page: Page, at_ms: float, label: str) -> None:
    button = page.get_by_role("button", name=TRAIN_BUTTON, exact=True).element_handle()
    page.evaluate(WATCHER_JS, [button, at_ms, label, PROGRESS_PATTERN])


def observed(page: Page) -> Session:
    seen = page.evaluate("() => window.__bench", None)
    clicked = seen["clicked"]

    def since_click(ms: float | None) -> float | None:
        return None if ms is None or clicked is None else (ms - clicked) / 1000

    return Session(
        clicked_at=None if clicked is None else clicked / 1000,
        progress=since_click(seen["progress"]),
        chart=since_click(seen["chart"]),
        first_point=since_click(seen["firstPoint"]),
        finished=since_click(seen["finished"]),
        plotly_js=since_click(seen["plotlyJs"]),
        accuracy=seen["accuracy"],
        updates=seen["updates"],
        error=seen["error"],
    )


def train_together(
    pages: list[Page],
    at_ms: float,
    deadline: float,
    label: str,
    other_work: Callable[[], bool] = lambda: True,
) -> list[Session]:
    """Click Train on every page at `at_ms` (ms since the epoch); watch until every page shows
    its result (the metric named `label`) and a plotted point and `other_work()` says it is
    done too, or until `deadline` (time.monotonic())."""
    for page in pages:
        arm(page, at_ms, label)
    while True:
        sessions = [observed(page) for page in pages]
        seen = all(s.finished is not None and s.first_point is not None for s in sessions)
        if (seen and other_work()) or time.monotonic() > deadline:
            return sessions
        time.sleep(0.25)


def listed_runs(browser: Browser, url: str, timeout: float) -> set[int]:
    """The ids of the runs that the server at `url` lists on its Compare page with every run on
    the server shown (the everyone toggle, set by the page's link, once the teacher key is
    typed): the points of its charts, each named "#12 · lora r=4 · … · Finished" (a finished
    run is one point)."""
    listed = f"() => ({PAGE_DRAWN_JS})() && ({LISTED_RUNS_JS})().length"
    try:
        page = open_page(browser, f"{url}/compare?everyone=1", PAGE_DRAWN_JS, timeout)
        become_teacher(page, TEACHER_KEY)
        page.wait_for_function(listed)
    except PlaywrightError as error:  # (not drawn in time, or no run: it lists none)
        print(f"({url}/compare listed no run: {error.message.splitlines()[0]})", file=sys.stderr)
        return set()
    try:
        return set(page.evaluate(LISTED_RUNS_JS))
    finally:
        page.context.close()


def open_class_page(browser: Browser, url: str, timeout: float) -> Page:
    """The teacher's Class page in a context of its own: the key typed in the sidebar, then the
    page opened from the navigation (a new page load would start a new session, without it)."""
    page = open_page(browser, url, PAGE_DRAWN_JS, timeout)
    become_teacher(page, TEACHER_KEY)
    page.get_by_role("link", name=ENGLISH.t("nav.class"), exact=True).click()
    page.get_by_role("heading", name=ENGLISH.t("class.title")).wait_for()
    return page


def launch(playwright) -> tuple[Browser, psutil.Process]:
    """System Chromium, and its main process (to measure it, and to stop it by pid)."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    browser = launch_chromium(playwright)
    started = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and "chrom" in p.name().lower()
    ]
    pids = {p.pid for p in started}
    return browser, next(p for p in started if p.ppid() not in pids)


# ----------------------------------------------------------------------------- the store


def stored_runs(location: str | Path, after: int) -> tuple[list[RunRecord], int]:
    """The runs of the store at `location` (an SQLite file, or LORA_LAB_DB's URL) whose id is
    above `after`, oldest first, and how many more it has that cannot be read (a config an
    older checkout wrote that this one does not know). Read through RunStore, which reads
    both kinds of store and an older checkout's schema (after its server has stopped: opening
    an older SQLite store brings its schema up to date)."""
    try:
        with RunStore(location) as store:
            records, unreadable = store.listing()
    except StoreError as error:  # a store of a newer checkout: reported without its figures
        print(f"(run store not readable: {error})", file=sys.stderr)
        return [], 0
    mine = sorted((record for record in records if record.id > after), key=lambda r: r.id)
    return mine, sum(run_id > after for run_id in unreadable)


def last_run_id(location: str | Path) -> int:
    """The newest run's id in the store (0: none): the runs above it are the bench's."""
    with RunStore(location) as store:
        records, unreadable = store.listing(limit=1)
    return max([record.id for record in records] + list(unreadable), default=0)


def check_class_setup(database: str) -> None:
    """ValueError, one line, unless LORA_LAB_DB is a reachable PostgreSQL store and Ray's
    cluster (LORA_LAB_RAY) is reachable and has no queue for this database yet: one would be a
    class in session, which the bench would join and, at its end, close."""
    if not database.startswith("postgresql://"):
        raise ValueError("--servers K > 1 needs LORA_LAB_DB set to a postgresql:// URL")
    setting = os.environ.get(ray_jobs.SETTING, "")
    if not setting or ray_jobs.ray_address(setting) is None:  # (unset, or "auto")
        raise ValueError(
            f"--servers K > 1 needs {ray_jobs.SETTING} set to a running Ray cluster's address "
            "(the bench starts none)"
        )
    try:
        last_run_id(database)
    except StoreError as error:
        raise ValueError(str(error)) from None
    ray_jobs.connect(setting)  # (ValueError naming the setting)
    try:
        ray.get_actor(ray_jobs.queue_name(database), namespace=ray_jobs.NAMESPACE)
    except ValueError:  # no actor of that name: no class uses this database now
        return
    raise ValueError(
        "the Ray cluster already has a class's queue for this LORA_LAB_DB (a class may be "
        "using it): give the bench a database or a cluster of its own"
    )


def end_class_queue(database: str) -> None:
    """End the class's queue that the servers started on the cluster (a detached actor, it
    outlives them): its jobs stop, and a later class starts a new one, with its own code."""
    try:
        SharedPool(store_path=database, queue=ray_jobs.ClassQueueHandle).close_queue()
    except (ValueError, StoreError) as error:
        print(f"(the class's queue could not be ended: {error})", file=sys.stderr)


# ----------------------------------------------------------------------------- profiling


@contextlib.contextmanager
def py_spy(pid: int, output: Path | None, limit_s: float) -> Iterator[None]:
    """py-spy samples `pid` while the block runs: the stacks of the thread holding the GIL
    (the Python work; not threads waiting), collapsed, into `output`."""
    if output is None:
        yield
        return
    executable = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    recorder = subprocess.Popen(
        [executable, "record", "--pid", str(pid), "--format", "raw", "--rate", "50",
         "--nonblocking", "--gil", "--duration", str(int(limit_s) + 1), "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
        try:
            recorder.wait(30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait(5)


def top_functions(stacks: Path, count: int = 15) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: the functions with the most samples, as a share of all
    samples: "self" (running in it, by line) and "total" (it or anything it called)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        frames, _, samples = line.rpartition(" ")
        if not frames or not samples.isdigit():
            continue
        weight = int(samples)
        total += weight
        stack = frames.split(";")
        own[short_frame(stack[-1], line=True)] += weight
        for name in {short_frame(frame) for frame in stack}:
            inclusive[name] += weight
    if not total:
        return {}
    return {
        kind: [(name, 100 * n / total) for name, n in counter.most_common(count)]
        for kind, counter in (("self", own), ("total", inclusive))
    }


def short_frame(frame: str, line: bool = False) -> str:
    """ "live_view (/x/app_pages/train.py:312)" → "live_view (app_pages/train.py)", with
    ":312" if `line`."""
    name, _, where = frame.partition(" (")
    path, _, number = where.rstrip(")").rpartition(":")
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    if line and number:
        path = f"{path}:{number}"
    return f"{name} ({path})" if path else name


# ----------------------------------------------------------------------------- the class


def classroom(
    n: int,
    servers: int,
    timeout: float,
    new_page_after: float,
    profile: Path | None,
    options: list[str],
    placement: Placement,
    app: Path = ROOT,
    model: str = DEFAULT_MODEL,
    within: float | None = None,
    class_page: bool = False,
) -> Report:
    """The class of `n` sessions over `servers` app servers of the checkout `app`, each with a
    fresh LORA_LAB_HOME (more than one: over LORA_LAB_DB and LORA_LAB_RAY), on the cores of
    `placement`."""
    report = Report(
        sessions=n,
        servers=servers,
        model=model,
        within=within,
        class_page=class_page,
        load_before=os.getloadavg()[0],
        options=options,
        app=str(app),
        placement=placement.name,
        server_cpus=sorted(placement.server_cpus),
        browser_cpus=sorted(placement.browser_cpus),
    )
    home = Path(tempfile.mkdtemp(prefix="lora-lab-classroom-"))
    homes = [home / f"server-{k}" for k in range(1, servers + 1)]
    location = os.environ["LORA_LAB_DB"] if servers > 1 else homes[0] / "runs.db"
    before = last_run_id(location)  # (a fresh home: 0)
    listed: list[set[int]] = []
    for folder in homes:
        folder.mkdir()
    try:
        with contextlib.ExitStack() as stack:
            # A process starts on its parent's cores: the bench takes the servers' cores while
            # it starts them (their training workers start from them), then the browser's.
            stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))  # (at the end)
            os.sched_setaffinity(0, placement.server_cpus)
            if servers == 1:
                report.workers = executors.default_workers()  # as the server counts them
            started = [stack.enter_context(server(folder, options, app)) for folder in homes]
            urls, handles = [url for url, _ in started], [handle for _, handle in started]
            os.sched_setaffinity(0, placement.browser_cpus)
            browser, chromium = launch(stack.enter_context(sync_playwright()))
            moved = stack.enter_context(placement_held(placement, handles, chromium))
            try:
                clicked = run_class(
                    browser, chromium, urls, handles, report, timeout, new_page_after, profile
                )
                if servers > 1:
                    listed = [listed_runs(browser, url, timeout) for url in urls]
            finally:
                chromium_processes = [chromium]  # and its other processes, to stop by pid
                with contextlib.suppress(psutil.Error):
                    chromium_processes += chromium.children(recursive=True)
                report.threads_put_back = moved[0]
                with contextlib.suppress(Exception):
                    browser.close()
                stop_pids(chromium_processes)
        # The servers have stopped: the store is read as they left it.
        runs, report.unreadable_runs = stored_runs(location, before)
    finally:
        if servers > 1:
            end_class_queue(location)
        shutil.rmtree(home, ignore_errors=True)
    report.pool_finished_s = [
        run.created + run.seconds - clicked for run in runs[1:] if run.seconds is not None
    ]
    report.stored_accuracies = [r for r in map(stored_result, runs) if r is not None]
    class_runs = {run.id for run in runs[1:]}
    report.listed = [len(ids & class_runs) for ids in listed]
    report.load_after = os.getloadavg()[0]
    return report


def run_class(
    browser: Browser,
    chromium: psutil.Process,
    urls: list[str],
    handles: list[psutil.Process],
    report: Report,
    timeout: float,
    new_page_after: float,
    profile: Path | None,
) -> float:
    """The solo reference through the first server, then the class, session i on server
    i mod K; the instant the class clicked (time.time())."""
    # The solo reference: one student alone (this also warms the server's caches).
    label = result_label(report.model)
    solo = open_train_page(browser, urls[0], timeout, report.model)
    at_ms = time.time() * 1000 + CLICK_LEAD_MS + CLICK_LEAD_PER_PAGE_MS
    [report.solo] = train_together([solo], at_ms, time.monotonic() + timeout, label)
    solo.context.close()

    places = [number % len(urls) for number in range(report.sessions)]
    watching = [open_class_page(browser, urls[0], timeout)] if report.class_page else []
    pages = [open_train_page(browser, urls[place], timeout, report.model) for place in places]
    newcomer: list[tuple[Page, float]] = []
    at_ms = time.time() * 1000 + CLICK_LEAD_MS + CLICK_LEAD_PER_PAGE_MS * len(pages)
    clicked = at_ms / 1000  # the class clicks Train at this instant (time.time())

    def new_page_loaded() -> bool:
        """Opens one more Train page (on the next student's server) new_page_after seconds
        into the class; True once it is drawn."""
        if not newcomer:
            if time.time() < clicked + new_page_after:
                return False
            newcomer.append(start_loading(browser, urls[report.sessions % len(urls)]))
        report.new_page_load_s = loaded_after(*newcomer[0])
        return report.new_page_load_s is not None

    deadline = time.monotonic() + (at_ms / 1000 - time.time()) + timeout
    spied = py_spy(handles[0].pid, profile, deadline - time.monotonic())
    with cpu_trace(handles, chromium) as samples, spied:
        report.class_sessions = train_together(pages, at_ms, deadline, label, new_page_loaded)
    report.server_cpus_seen = cores_allowed(handles)  # (while every page and worker lives)
    report.browser_cpus_seen = cores_allowed([chromium])
    for session, place in zip(report.class_sessions, places, strict=True):
        session.server = place + 1
    clicks = [s.clicked_at for s in report.class_sessions if s.clicked_at is not None]
    report.click_spread_s = max(clicks) - min(clicks) if clicks else None
    finished = [s.finished for s in report.class_sessions]
    # The class is over once every page shows its result (as the pages timed it).
    report.wall_s = timeout if None in finished else max(finished)
    sampled, *used = cpu_between(samples, clicked, clicked + report.wall_s)
    report.server_cpu_s, report.workers_cpu_s, report.browser_cpu_s, *busy = used
    report.core_busy = [spent / sampled for spent in busy] if sampled else []
    for page in pages + watching + [page for page, _ in newcomer]:
        page.context.close()
    if profile is not None and profile.exists():
        report.profile = top_functions(profile)
    return clicked


# ----------------------------------------------------------------------------- output


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def after_arrow(accuracy: str | None) -> str | None:
    return None if accuracy is None else accuracy.split("→")[-1].strip()


def cores(cpus: list[int]) -> str:
    """[0, 2, 3] → "0,2,3"."""
    return ",".join(str(cpu) for cpu in cpus)


def print_placement(report: Report) -> None:
    """Where the class ran (asked, and what the kernel had), and how busy each core was."""
    pool = (
        "training on Ray"
        if report.workers is None
        else f"{report.workers} training worker{'s' if report.workers > 1 else ''}"
    )
    seen = (
        f"the kernel had them on {cores(report.server_cpus_seen) or '–'} and "
        f"{cores(report.browser_cpus_seen) or '–'}"
    )
    if report.placement == PINNED:
        had = (report.server_cpus_seen, report.browser_cpus_seen)
        asked = (report.server_cpus, report.browser_cpus)
        held = all(set(cpus) <= set(mine) for cpus, mine in zip(had, asked, strict=True))
        print(
            f"pinned: the server and its workers ({pool}) on cores {cores(report.server_cpus)}, "
            f"the browser on cores {cores(report.browser_cpus)}; {seen}"
            + ("" if held else ": NOT as asked")
            + f" ({report.threads_put_back} threads that had left their cores were put back)"
        )
    else:
        print(
            f"co-located: the server and its workers ({pool}) and the browser on cores "
            f"{cores(report.server_cpus)}; {seen}"
        )
    if report.core_busy:
        busy = ", ".join(f"{cpu} {share:.0%}" for cpu, share in enumerate(report.core_busy))
        print(f"each core busy over the wall time (any process on the machine): {busy}")


def print_report(report: Report) -> None:
    solo = report.solo or Session()
    print(
        f"{report.app}: {report.sessions} sessions of {report.model}"
        + (f" over {report.servers} app servers" if report.servers > 1 else "")
        + f", {report.placement}"
        + (", the teacher's Class page open" if report.class_page else "")
        + f", load average {report.load_before:.1f} before, "
        f"{report.load_after:.1f} after, on {psutil.cpu_count()} cores"
        + (f"; server options: {' '.join(report.options)}" if report.options else "")
    )
    print_placement(report)
    print(
        f"solo reference (a cold browser, the workers' first run): first point "
        f"{seconds(solo.first_point)} s, finished {seconds(solo.finished)} s, "
        f"accuracy {solo.accuracy}"
    )
    spread = "–" if report.click_spread_s is None else f"{1000 * report.click_spread_s:.0f} ms"
    print(f"seconds after the click until the page showed it (clicks within {spread}):")
    columns = ("progress", "chart", "plotly.js", "point", "result", "updates", "accuracy")
    several = report.servers > 1
    print(
        f"{'session':>7}  "
        + ("server  " if several else "")
        + "  ".join(f"{name:>9}" for name in columns)
        + "  same as solo"
    )
    for number, session in enumerate(report.class_sessions, 1):
        same = session.accuracy is not None and session.accuracy == solo.accuracy
        times = (session.progress, session.chart, session.plotly_js, session.first_point)
        print(
            f"{number:>7}  "
            + (f"{session.server:>6}  " if several else "")
            + "  ".join(f"{seconds(value):>9}" for value in (*times, session.finished))
            + f"  {session.updates:>9}  {after_arrow(session.accuracy) or '–':>9}"
            + f"  {'yes' if same else 'NO'}"
            + (f"  error: {session.error}" if session.error else "")
        )
    points = sum(s.first_point is not None for s in report.class_sessions)
    done = sum(s.finished is not None for s in report.class_sessions)
    print(
        f"pages with a point: {points}/{report.sessions}, with a result: {done}/{report.sessions}"
    )
    if report.pool_finished_s:
        print(
            f"runs saved by the pool: {len(report.pool_finished_s)}, the first "
            f"{min(report.pool_finished_s):.1f} s, the last {max(report.pool_finished_s):.1f} s "
            "after the click"
        )
    if report.stored_accuracies:
        exact = set(report.stored_accuracies)
        print(
            f"exact test {METRIC_NAMES[headline(report.model).field]} in the store: "
            f"{len(report.stored_accuracies)} runs, "
            f"{'all equal to the solo run' if len(exact) == 1 else f'{len(exact)} values'}"
        )
    if report.unreadable_runs:
        print(f"runs in the store that this checkout cannot read: {report.unreadable_runs}")
    if several:
        print_servers(report)
    busy = report.server_cpu_s / report.wall_s if report.wall_s else float("nan")
    workers = (
        "workers on Ray (not measured)" if several else f"workers CPU {report.workers_cpu_s:.1f} s"
    )
    print(
        f"wall {report.wall_s:.1f} s; {'servers' if several else 'server'} CPU "
        f"{report.server_cpu_s:.1f} s ({busy:.0%} of the wall time; target < 33 %); {workers};"
        f" browser CPU {report.browser_cpu_s:.1f} s"
    )
    print(f"a new Train page while the class trains: {seconds(report.new_page_load_s)} s to load")
    if report.within is not None:
        last = slowest([s.finished for s in report.class_sessions])
        met = last is not None and last <= report.within
        print(
            f"every page's result: the last after {seconds(last)} s "
            f"({'meets' if met else 'MISSES'} the target of {report.within:g} s for "
            f"{report.sessions} sessions of {report.model})"
        )
    for kind, rows in report.profile.items():
        print(f"server profile, {kind} (% of samples):")
        for name, share in rows:
            print(f"  {share:5.1f} %  {name}")


def value_range(values: list[float | None]) -> str:
    """ "1.2–5.3" of the values that happened, "never" if none did."""
    done = [value for value in values if value is not None]
    return f"{min(done):.1f}–{max(done):.1f}" if done else "never"


def print_servers(report: Report) -> None:
    """Per app server: its sessions, their seconds to the first point and to the result, their
    accuracies against the solo run's, and how many of the class's runs its page lists."""
    solo = (report.solo or Session()).accuracy
    for number in range(1, report.servers + 1):
        mine = [s for s in report.class_sessions if s.server == number]
        same = sum(s.accuracy is not None and s.accuracy == solo for s in mine)
        listed = report.listed[number - 1] if len(report.listed) >= number else None
        print(
            f"server {number}: {len(mine)} sessions, first point "
            f"{value_range([s.first_point for s in mine])} s, result "
            f"{value_range([s.finished for s in mine])} s, {same}/{len(mine)} accuracies as "
            f"the solo run's; its Compare page (every run) lists "
            f"{'–' if listed is None else listed} of the class's {report.sessions} runs"
        )


def median(values: list[float | None]) -> float | None:
    """The median of the values that happened (None: none did)."""
    done = sorted(value for value in values if value is not None)
    return done[len(done) // 2] if done else None


def fastest(values: list[float | None]) -> float | None:
    """The smallest of the values that happened (None: none did)."""
    return min((value for value in values if value is not None), default=None)


def slowest(values: list[float | None]) -> float | None:
    """The largest of the values (None if one never happened: that page never showed it)."""
    return None if None in values or not values else max(values)


def figures(report: Report) -> dict[str, float | None]:
    """What a student waits for, what the pool and the server did, what the browser spent."""
    solo, pages = report.solo or Session(), report.class_sessions
    return {
        "load average before": report.load_before,
        "load average after": report.load_after,
        "solo: click to first point (s)": solo.first_point,
        "solo: click to result (s)": solo.finished,
        "class: click to first point, fastest (s)": fastest([s.first_point for s in pages]),
        "class: click to first point, median (s)": median([s.first_point for s in pages]),
        "class: click to first point, slowest (s)": slowest([s.first_point for s in pages]),
        "class: click to result, fastest (s)": fastest([s.finished for s in pages]),
        "class: click to result, median (s)": median([s.finished for s in pages]),
        "class: click to the last result (s)": report.wall_s,
        "pool: last run saved after the click (s)": max(report.pool_finished_s, default=None),
        **({} if report.workers is None else {"pool: workers CPU (s)": report.workers_cpu_s}),
        "server CPU (s)": report.server_cpu_s,
        "server CPU (% of the wall time)": (
            100 * report.server_cpu_s / report.wall_s if report.wall_s else None
        ),
        "browser CPU (s)": report.browser_cpu_s,
        "a new page while the class trains (s)": report.new_page_load_s,
    }


def print_side_by_side(reports: list[Report]) -> None:
    """The classes of one run side by side, a column each: its placement (and checkout)."""
    apps = list(dict.fromkeys(report.app for report in reports))
    if len(apps) > 1:
        print("checkouts: " + "; ".join(f"{number} = {app}" for number, app in enumerate(apps)))
    labels = [
        report.placement
        + (f" ({apps.index(report.app)})" if len(apps) > 1 else "")
        + (" + Class page" if report.class_page else "")
        for report in reports
    ]
    width = max(len(label) for label in labels) + 2
    rows = [figures(report) for report in reports]
    print(
        f"{reports[0].sessions} sessions:".ljust(42)
        + "".join(f"{label:>{width}}" for label in labels)
    )
    for name in rows[0]:
        print(f"  {name:<40}" + "".join(f"{seconds(row[name]):>{width}}" for row in rows))


def core_set(text: str) -> frozenset[int]:
    """ "1", "0,2", "2-3" → those cores (an argparse type)."""
    try:
        chosen: set[int] = set()
        for part in text.split(","):
            first, _, last = part.partition("-")
            chosen |= set(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cores as 0,2 or 2-3 (got {text!r})") from None
    if not chosen or min(chosen) < 0:
        raise argparse.ArgumentTypeError(f"cores as 0,2 or 2-3 (got {text!r})")
    return frozenset(chosen)


def placements(
    choice: str, server_cpus: frozenset[int] | None, browser_cpus: frozenset[int] | None
) -> list[Placement]:
    """The placements --placement names, in the order their classes run. Unset, the browser
    gets the upper half of the cores this process may use and the server the rest (or the
    rest of the set given); ValueError, one line, when pinning cannot be done as asked."""
    available = frozenset(os.sched_getaffinity(0))
    together = Placement(CO_LOCATED, available, available)
    if choice == CO_LOCATED:
        return [together]
    if server_cpus is None and browser_cpus is None:
        if len(available) < 2:
            raise ValueError(
                f"pinning needs 2 cores or more, this process may use {len(available)}: "
                f"give --placement {CO_LOCATED}"
            )
        ordered = sorted(available)
        browser_cpus = frozenset(ordered[len(ordered) - len(ordered) // 2 :])
    server_cpus = server_cpus or available - browser_cpus
    browser_cpus = browser_cpus or available - server_cpus
    if not server_cpus or not browser_cpus or server_cpus & browser_cpus:
        raise ValueError("--server-cpus and --browser-cpus must be cores apart, neither empty")
    if not server_cpus | browser_cpus <= available:
        raise ValueError(f"this process may use cores {cores(sorted(available))} only")
    pinned = Placement(PINNED, server_cpus, browser_cpus)
    return [pinned] if choice == PINNED else [pinned, together]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10, help="students clicking Train")
    parser.add_argument(
        "--servers",
        type=int,
        default=1,
        metavar="K",
        help="app servers, the sessions shared out in turn; K > 1 needs LORA_LAB_DB "
        "(postgresql://) and LORA_LAB_RAY set, and a database and cluster the bench may use",
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds the class may take (each wait too)"
    )
    parser.add_argument(
        "--new-page-after", type=float, default=2.0, help="seconds after the click to load a page"
    )
    parser.add_argument(
        "--placement",
        choices=("both", PINNED, CO_LOCATED),
        default="both",
        help="pinned: the server and its workers on --server-cpus, the browser on "
        "--browser-cpus; co-located: both on every core; both (default): a pinned class, "
        "then a co-located one, side by side",
    )
    parser.add_argument(
        "--server-cpus",
        type=core_set,
        metavar="CORES",
        help="pinned: the server's and its workers' cores, e.g. 0 or 0-3 (default: the lower "
        "half, or the cores --browser-cpus leaves)",
    )
    parser.add_argument(
        "--browser-cpus",
        type=core_set,
        metavar="CORES",
        help="pinned: Chromium's cores, e.g. 1 (default: the upper half, or the cores "
        "--server-cpus leaves)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to wait between two classes, for the load average to fall back",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="sample the (first) server with py-spy into FILE",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Streamlit config option for the server (to measure a change), e.g. "
        "runner.postScriptGC=false; repeatable",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="another checkout (e.g. a `git worktree` of an older commit): its class first, "
        "then this one's, in one run, side by side",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="every student trains this zoo model's own default run (default: the app's)",
    )
    parser.add_argument(
        "--within",
        type=float,
        metavar="S",
        help="the target: every page shows its result within S seconds of the click (a "
        "verdict is printed), e.g. --model gpt: 60 for 10 sessions, 180 for 30",
    )
    parser.add_argument(
        "--class-page",
        action="store_true",
        help="each class twice: without, then with the teacher's Class page open, side by side",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list, one per class")
    args = parser.parse_args()
    if args.sessions < 1 or args.servers < 1 or args.timeout <= 0 or args.settle < 0:
        parser.error("--sessions and --servers must be ≥ 1, --timeout > 0 and --settle ≥ 0")
    if args.placement == CO_LOCATED and (args.server_cpus or args.browser_cpus):
        parser.error("--server-cpus and --browser-cpus pin: give --placement pinned or both")
    try:
        chosen = placements(args.placement, args.server_cpus, args.browser_cpus)
    except ValueError as error:
        parser.error(str(error))
    if args.servers > 1 and args.before:
        parser.error("--before compares classes on one server each: give it without --servers")
    if args.servers > 1:
        try:
            check_class_setup(os.environ.get("LORA_LAB_DB", ""))
        except ValueError as error:
            parser.error(str(error))
    if not all("=" in option for option in args.option):
        parser.error("--option takes KEY=VALUE, e.g. runner.postScriptGC=false")
    if not Path(CHROMIUM).exists():
        parser.error(f"no Chromium at {CHROMIUM}")
    checkouts = [args.before.resolve(), ROOT] if args.before else [ROOT]
    reports: list[Report] = []
    watched = (False, True) if args.class_page else (False,)
    for app in checkouts:
        for placement in chosen:
            for class_page in watched:
                if reports:
                    time.sleep(args.settle)  # the last class's load average falls back
                reports.append(
                    classroom(
                        args.sessions,
                        args.servers,
                        args.timeout,
                        args.new_page_after,
                        args.py_spy,
                        args.option,
                        placement,
                        app,
                        args.model,
                        args.within,
                        class_page,
                    )
                )
    if args.json:
        print(json.dumps([asdict(report) for report in reports], indent=1))
        return
    for report in reports:
        print_report(report)
    if len(reports) > 1:
        print_side_by_side(reports)


if __name__ == "__main__":
    main()
