"""Names in Compare's figures, in Chromium (issue 18): a student's name or a run's name that holds
HTML is shown as its characters in the legend and the hover text of plotly's figures: no bold,
no link, no style. Screenshots of the page with such names, in English and 中文."""

from __future__ import annotations

import pytest

from core.common.config import RunConfig
from core.store.runs import RunStore
from core.training.record import train_and_save
from tests.support.browser import CHART, become_teacher, new_page, shoot, wait_for_app
from tests.support.servers import TEACHER_KEY

pytestmark = pytest.mark.browser

STUDENT = "5" * 32  # the class's student; the browser is the teacher's (a new id)
BOLD = "<b>x</b><img src=x onerror=alert(1)>"
ITALIC = "my first LoRA <i>r4</i>"
LINK = '<a href="https://evil.example">pwn</a>'  # the student's name: fits the 40-character box
QUICK = {"steps": 2, "eval_interval": 1, "snapshot_interval": 1}
# Runs that end close together (two steps each): their "r=…" labels would print over each other.
SETTINGS = [{"rank": 1}, {"rank": 2}, {"rank": 16}, {"rank": 64}, {"dora": True, "alpha": 16.0}]
SETTINGS += [{"method": "head"}, {"method": "full"}]


@pytest.fixture(scope="module")
def class_home(tmp_path_factory: pytest.TempPathFactory):
    """A home with a student's runs, two of them named with HTML, the student named a link."""
    home = tmp_path_factory.mktemp("names-home")
    with RunStore(home / "runs.db") as store:
        ids = [train_and_save(RunConfig(**QUICK, **s), store, STUDENT)[0] for s in SETTINGS]
        store.rename(ids[0], BOLD)
        store.rename(ids[-3], ITALIC)
        store.name_student(STUDENT, LINK)
    return home, ids


def hover_text(page, chart: int, trace: int) -> str:
    """Hover the first point of `trace` in the `chart`-th figure; the hover label's text."""
    where = page.evaluate(
        """([chart, trace]) => {
            const plot = document.querySelectorAll('.js-plotly-plot')[chart];
            plot.scrollIntoView();
            const layout = plot._fullLayout, data = plot._fullData[trace];
            const box = plot.getBoundingClientRect();
            return [box.left + layout._size.l + layout.xaxis.d2p(data.x[0]),
                    box.top + layout._size.t + layout.yaxis.d2p(data.y[0])];
        }""",
        [chart, trace],
    )
    page.mouse.move(*where)
    label = page.locator(".hoverlayer .hovertext").first
    label.wait_for()
    return label.text_content()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_names_with_html_are_shown_as_their_characters(
    class_home, app_server, browser, screenshot_dir, lang
):
    home, ids = class_home
    with app_server(home) as url:
        page = new_page(browser)
        runs = ",".join(str(i) for i in ids)
        page.goto(f"{url}/compare?everyone=true&runs={runs}&lang={lang}")
        wait_for_app(page)
        become_teacher(page, TEACHER_KEY)  # every student's runs: the teacher's view
        page.locator(CHART).nth(2).scroll_into_view_if_needed()
        wait_for_app(page)
        charts = page.locator(f"{CHART} svg.main-svg")
        svg = page.locator(CHART)
        # no tag of a name became markup: no link, no bold or italic text, no style
        assert svg.locator("a").count() == 0
        assert svg.locator("tspan[style*='bold'], tspan[style*='italic']").count() == 0
        assert svg.locator("tspan[style*='font-size:200px']").count() == 0
        legend = page.locator(f"{CHART} .legendtext").all_text_contents()
        assert any(BOLD in text and text.endswith(LINK) for text in legend), legend
        assert any(ITALIC in text for text in legend), legend
        assert charts.count() >= 3
        hover = hover_text(page, 0, 0)  # the cost figure, its first point: a run of the student
        assert LINK in hover and "<" in hover, hover
        shoot(page, screenshot_dir, f"compare-names-{lang}", screens=4)
