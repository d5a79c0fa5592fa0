"""End to end in headless Chromium: the app as a student uses it, on a real server.

Screenshots of every page (1280×720, light and dark) go to artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time

import pytest

from core.classroom.i18n import catalog
from core.common.config import RunConfig
from tests.support.browser import (
    CHART,
    VIEWPORT,
    become_teacher,
    new_page,
    newest_step,
    scroll_to_bottom,
    shoot,
    wait_for_app,
)
from tests.support.servers import TEACHER_KEY

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 180_000  # the default run: 200 steps of the MLP on a shared CPU


def train_and_watch(page, steps: int, label: str, directory, running_shot: str) -> int:
    """Click Train, print the time to the first point, watch the run to its end; returns how
    many different lengths the curve was seen with (more than 1: it grew while we watched)."""
    clicked = time.perf_counter()
    page.get_by_role("button", name="Train", exact=True).click()
    # The progress line and the curves are drawn together, from the first recorded point on.
    page.get_by_text(re.compile(rf"Step \d+ of {steps} ")).wait_for(timeout=60_000)
    print(
        f"\nclick on Train → first point on the curve ({label}): "
        f"{time.perf_counter() - clicked:.2f} s"
    )
    scroll_to_bottom(page)  # plotly draws charts in view only
    points = newest_step(steps)
    page.wait_for_function(f"() => ({points})() > 0")
    seen = {page.evaluate(points)}  # how far the curve got, as it grew (before the slow shots)
    shoot(page, directory, running_shot, screens=3)
    done = page.get_by_text("Test accuracy before → after")
    deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
    while not done.is_visible() and time.monotonic() < deadline:
        seen.add(page.evaluate(points))
        page.wait_for_timeout(100)
    done.wait_for()
    print(f"the run finished {time.perf_counter() - clicked:.1f} s after the click")
    wait_for_app(page)
    seen.add(page.evaluate(points))
    assert max(seen) == steps  # the curve reaches the last step
    return len(seen - {0})


def test_a_student_session(app_url, browser, screenshot_dir):
    page = new_page(browser)
    page.goto(app_url)
    wait_for_app(page)
    page.get_by_role("heading", name=re.compile("LoRA: learning")).wait_for()
    shoot(page, screenshot_dir, "learn-light", screens=3)
    page.get_by_role("tab", name="Toy").click()
    wait_for_app(page)
    shoot(page, screenshot_dir, "learn-toy-light", screens=2)
    page.get_by_role("tab", name="Calculator").click()
    wait_for_app(page)
    shoot(page, screenshot_dir, "learn-calculator-light", screens=1)
    page.get_by_role("tab", name="Lessons").click()
    wait_for_app(page)
    shoot(page, screenshot_dir, "learn-lessons-light", screens=2)

    # Train; the curve must appear quickly, grow, and the run must finish. 600 steps: a few
    # seconds even on a fast, quiet machine (the default 200 can end within one poll, 0.5 s).
    page.goto(f"{app_url}/train?steps=600")
    wait_for_app(page)
    shoot(page, screenshot_dir, "train-light", screens=3)
    lengths = train_and_watch(
        page, 600, "a fresh worker, loading the dataset", screenshot_dir, "train-running-light"
    )
    assert lengths > 1  # the curve grew on screen
    shoot(page, screenshot_dir, "train-done-light", screens=3)
    # Again with a warm worker (and fewer steps): what a class sees from the second run on.
    page.get_by_label("Steps").fill("100")
    page.get_by_label("Steps").press("Enter")
    wait_for_app(page)
    train_and_watch(page, 100, "a warm worker", screenshot_dir, "train-running-2-light")

    # From the finished run to its spectra.
    page.get_by_role("button", name="Look inside this run on the Spectra page").click()
    page.wait_for_url(re.compile(r".*/spectra\?.*run=\d+"))
    wait_for_app(page)
    page.locator(CHART).first.wait_for()
    shoot(page, screenshot_dir, "spectra-light", screens=4)

    page.goto(f"{app_url}/compare")
    wait_for_app(page)
    become_teacher(page, TEACHER_KEY)  # every run on the server is the teacher's to see
    page.get_by_text("Show every run on this server").click()
    wait_for_app(page)
    shoot(page, screenshot_dir, "compare-light", screens=4)

    # Switch the language in the sidebar.
    page.goto(f"{app_url}/spectra?everyone=1")
    wait_for_app(page)
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").click()
    page.get_by_role("option", name="简体中文").click()
    page.get_by_role("heading", name="看看更新的内部").wait_for()
    wait_for_app(page)
    assert "lang=zh" in page.url
    shoot(page, screenshot_dir, "spectra-zh", screens=2)
    shared = page.url

    # A copied link, opened in a new session (the teacher's), shows the same thing.
    other = new_page(browser, color_scheme="dark")
    other.goto(shared)
    wait_for_app(other)
    become_teacher(other, TEACHER_KEY)
    other.get_by_role("heading", name="看看更新的内部").wait_for()
    other.locator(CHART).first.wait_for()
    other.goto(f"{app_url}/train?shift=rotate&rank=8&scaling=rslora")
    wait_for_app(other)
    assert other.get_by_role("spinbutton", name="Rank r").input_value() == "8"
    other.get_by_text("Every image is turned by a fixed angle").wait_for()
    shoot(other, screenshot_dir, "train-dark", screens=2)
    for name in ("", "spectra", "compare"):
        other.goto(f"{app_url}/{name}?everyone=1")
        wait_for_app(other)
        shoot(other, screenshot_dir, f"{name or 'learn'}-dark", screens=3)
    other.goto(f"{app_url}/?lang=zh")
    wait_for_app(other)
    shoot(other, screenshot_dir, "learn-zh-dark", screens=2)


RESULT = "Test accuracy before → after"


def result_value(page) -> str:
    """The finished run's accuracy metric ("37.6% → 82.3%"), waited for."""
    metric = page.locator("[data-testid='stMetric']").filter(has_text=RESULT)
    metric.wait_for(timeout=RUN_TIMEOUT_MS)
    return metric.locator("[data-testid='stMetricValue']").inner_text()


def test_a_students_runs_survive_a_reload_a_new_tab_and_a_restart_not_a_shared_link(
    browser, app_server, tmp_path, screenshot_dir
):
    """The browser keeps the student's id: a reload, a second tab (same browser profile) and a
    restarted server all reopen the student's latest run on the Train page. A classmate (another
    browser profile) opening the student's copied link gets its settings, not its runs."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(60_000)
    with app_server(tmp_path) as url:
        page.goto(f"{url}/train?steps=20")
        wait_for_app(page)
        page.get_by_role("button", name="Train", exact=True).click()
        trained = result_value(page)
        link = page.url
        assert "student" not in link and "lora-lab" not in link  # settings only

        page.reload()
        wait_for_app(page)
        assert result_value(page) == trained
        tab = context.new_page()
        tab.goto(f"{url}/train")
        wait_for_app(tab)
        assert result_value(tab) == trained

        classmate = browser.new_context(viewport=VIEWPORT).new_page()
        classmate.goto(link)
        wait_for_app(classmate)
        assert classmate.get_by_label("Steps").input_value() == "20"  # the link's settings
        classmate.get_by_text("Press Train to start").wait_for()  # none of the sender's runs
        assert classmate.locator("[data-testid='stMetric']").count() == 0
        classmate.context.close()

    with app_server(tmp_path) as url:  # the same server home, restarted: its pool knows nothing
        page.goto(f"{url}/train?lang=zh")
        wait_for_app(page)
        page.get_by_text("你最近的一次训练：#1").wait_for()
        scroll_to_bottom(page)
        page.wait_for_function(f"() => ({newest_step(20)})() == 20")
        shoot(page, screenshot_dir, "train-restored-zh", screens=2)
        metric = page.locator("[data-testid='stMetricValue']").first.inner_text()
        assert metric == trained
    context.close()


def test_switching_the_language_relabels_every_choice_and_keeps_it(app_url, browser):
    """A select box's browser side keeps the label it shows: after 中文 → English every box must
    show its (non-default) choice in English, and the page must still use that choice."""
    page = new_page(browser)
    page.goto(f"{app_url}/train?lang=zh&shift=permute&init=pissa")
    wait_for_app(page)
    boxes = page.locator("[data-testid='stMain'] [data-testid='stSelectbox'] input[role=combobox]")

    def shown() -> list[str]:
        return [box.input_value() for box in boxes.all()]

    def expected(language: str) -> list[str]:
        text, default = catalog(language).t, RunConfig()
        return [
            text(f"models.{default.model}.title"),
            text(f"datasets.{default.dataset}.title"),
            text("shifts.permute.title"),
            text(f"methods.{default.method}"),
            text("inits.pissa"),
            text(f"scalings.{default.scaling}"),
        ]

    assert shown() == expected("zh")
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first.click()
    page.get_by_role("option", name="English").click()
    page.get_by_text(catalog("en").t("train.title")).wait_for()
    wait_for_app(page)
    assert shown() == expected("en")
    page.get_by_text(catalog("en").t("shifts.permute.explanation")).wait_for()  # the choice, kept
    page.context.close()


IMAGE = "[data-testid='stImageContainer']"
STRIP = f"[data-testid='stExpander'] {IMAGE}"  # one per image of the task strip
WORDS = {  # what each language calls the things this test looks for
    "en": {"lr": "Learning rate", "fixed": "This exercise fixes: lr, steps, seed",
           "lessons": "Lessons", "exercise": "Exercise link (for teachers)"},
    "zh": {"lr": "学习率", "fixed": "本练习固定了：lr, steps, seed", "lessons": "课程",
           "exercise": "练习链接（给教师）"},
}  # fmt: skip


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_teaching_views(app_url, browser, screenshot_dir, lang):
    """The task strip on Train and Compare, an exercise link that hides controls, a lesson's
    exercise link, and presenter mode (with a short run: the predictions after it)."""
    words = WORDS[lang]
    page = new_page(browser)
    page.goto(f"{app_url}/train?lang={lang}")
    wait_for_app(page)
    page.locator(STRIP).nth(19).wait_for()  # ten test images before the shift, ten after
    page.locator(STRIP).first.scroll_into_view_if_needed()
    page.screenshot(path=screenshot_dir / f"teach-train-strip-{lang}.png")

    page.goto(f"{app_url}/train?lang={lang}&hide=lr,seed,steps&lr=0.003")
    wait_for_app(page)
    page.get_by_text(words["fixed"]).wait_for()
    assert page.get_by_role("spinbutton", name=words["lr"]).count() == 0
    shoot(page, screenshot_dir, f"teach-train-exercise-{lang}", screens=4)

    page.goto(f"{app_url}/compare?lang={lang}&shift=label-permute")
    wait_for_app(page)
    page.locator(STRIP).nth(19).wait_for()
    assert "→" in page.locator(STRIP).nth(10).inner_text()  # class 0 has a new name
    shoot(page, screenshot_dir, f"teach-compare-{lang}", screens=2)

    page.goto(f"{app_url}/?lang={lang}")
    wait_for_app(page)
    page.get_by_role("tab", name=words["lessons"]).click()
    page.get_by_text(words["exercise"]).first.click()
    wait_for_app(page)
    page.get_by_text("/compare?shift=permute").wait_for()
    shoot(page, screenshot_dir, f"teach-learn-exercise-{lang}", screens=2)

    presenter = new_page(browser)
    presenter.goto(f"{app_url}/train?lang={lang}&presenter=true&steps=30")
    wait_for_app(presenter)
    assert presenter.locator(".st-key-presenter input").is_checked()
    size = "() => getComputedStyle(document.documentElement).fontSize"
    normal = page.evaluate(size)  # Streamlit's own: 17 px
    assert presenter.evaluate(size) == "20px" != normal
    presenter.locator("[data-testid='stBaseButton-primary']").first.click()
    predictions = presenter.locator(f".st-key-train-predictions {IMAGE}")
    predictions.nth(7).wait_for(timeout=RUN_TIMEOUT_MS)
    wait_for_app(presenter)
    shoot(presenter, screenshot_dir, f"teach-presenter-run-{lang}", screens=3)
    assert page.evaluate(size) == normal  # another student's session is not in presenter mode


def test_the_spectra_page_waits_for_a_training_run_and_then_shows_its_spectra(app_url, browser):
    """While one's only run trains, Spectra says so; once it ends, its spectra appear on the
    page without a reload (the page looks again every few seconds)."""
    page = new_page(browser)
    page.goto(f"{app_url}/train?steps=2000&batch_size=256")  # the server's most: ~20 s
    wait_for_app(page)
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text(re.compile(r"Step \d+ of 2000")).wait_for(timeout=RUN_TIMEOUT_MS)  # it trains
    page.goto(f"{app_url}/spectra")
    wait_for_app(page)
    page.get_by_text(re.compile(r"Your run #\d+ is still training")).wait_for()
    assert page.locator(CHART).count() == 0
    page.locator(CHART).first.wait_for(timeout=RUN_TIMEOUT_MS)  # no reload in between
    assert page.get_by_text(re.compile(r"is still training")).count() == 0
    page.context.close()
