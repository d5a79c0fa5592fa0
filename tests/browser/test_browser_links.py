"""In Chromium: every link the app builds to its pages opens a page that draws.

A teacher's exercise link on Train and on Compare, and on the Learn page each lesson's "Open
this lesson" link and its exercise link: the test reads the link the page itself shows (the
code box, the link's href), opens it in a new tab, and sees the page's title, the controls
the link leaves, and not those it hides. (Train's and Compare's exercise links named the page
twice, /train/train: the browser got a blank page.) Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest

from core.classroom import lessons, links
from core.classroom.i18n import catalog
from tests.support.browser import new_page, wait_for_app

pytestmark = pytest.mark.browser

EN = catalog("en")
HIDDEN = ["steps", "seed"]  # settings of both pages, each a number box labelled as on Train


def built_exercise_link(page, toggle: int, page_name: str, hide: list[str]) -> str:
    """Turn on the page's ``toggle``-th exercise link (to ``page_name``), pick ``hide`` among
    the controls to hide, and read the link from its code box once it hides them all."""
    page.get_by_text(EN.t("exercise.title")).nth(toggle).click()
    wait_for_app(page)
    box = page.get_by_role("combobox", name=EN.t("exercise.hide"))
    for name in hide:
        box.click()  # opens the list
        page.keyboard.type(name)  # filters it
        page.get_by_role("option", name=name, exact=True).click()
        page.keyboard.press("Escape")
        wait_for_app(page)
    ordered = ",".join(key for key in links.page_defaults(page_name) if key in hide)
    code = page.locator("[data-testid='stCode'] code").filter(has_text=f"hide={ordered}")
    return code.inner_text().strip()


def opens_its_page(browser, link: str, page_name: str, hidden: list[str], shot) -> None:
    """``link`` opened in a new tab draws ``page_name``: its title, a control the link leaves,
    none of ``hidden``'s number boxes, and the line that says which settings it fixes."""
    assert urlsplit(link).path.rsplit("/", 1)[-1] == page_name, link
    page = new_page(browser)
    page.goto(link)
    wait_for_app(page)
    page.get_by_role("heading", name=EN.t(f"{page_name}.title")).wait_for()
    page.get_by_text(EN.t("train.model"), exact=True).first.wait_for()  # a control it leaves
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text(EN.t("common.bad_link", keys="")[:30]).count() == 0  # all read
    for name in ("steps", "seed"):
        boxes = page.get_by_role("spinbutton", name=EN.t(f"train.{name}"), exact=True)
        assert boxes.count() == (0 if name in hidden else 1), (link, name)
    if hidden:
        ordered = [key for key in links.page_defaults(page_name) if key in hidden]
        page.get_by_text(EN.t("exercise.fixed", names=", ".join(ordered))).wait_for()
    page.wait_for_timeout(300)
    page.screenshot(path=shot)
    page.context.close()


@pytest.mark.parametrize(
    ("page_name", "query", "hide"),
    [
        ("train", "shift=permute&rank=8", ["rank", "lr", "shift", "method", *HIDDEN]),
        ("compare", "shift=permute", ["shift", *HIDDEN]),
    ],
)
def test_a_pages_exercise_link_opens_the_page(
    app_url, browser, screenshot_dir, page_name, query, hide
):
    page = new_page(browser)
    page.goto(f"{app_url}/{page_name}?{query}")
    wait_for_app(page)
    link = built_exercise_link(page, 0, page_name, hide)
    page.screenshot(path=screenshot_dir / f"links-{page_name}-built.png")
    opens_its_page(browser, link, page_name, hide, screenshot_dir / f"links-{page_name}-opened.png")
    assert link.startswith(f"{app_url}/{page_name}?"), link  # (a blank page fails above)
    page.context.close()


def test_an_exercise_link_keeps_a_reverse_proxys_prefix(
    app_server, tmp_path, browser, screenshot_dir
):
    """The app served under /lab (Streamlit's server.baseUrlPath, as behind a proxy that
    forwards /lab/): Train's exercise link is /lab/train, and it opens."""
    with app_server(tmp_path, ("server.baseUrlPath=lab",)) as url:
        assert url.endswith("/lab")
        page = new_page(browser)
        page.goto(f"{url}/train")
        wait_for_app(page)
        link = built_exercise_link(page, 0, "train", HIDDEN)
        opens_its_page(browser, link, "train", HIDDEN, screenshot_dir / "links-train-lab.png")
        assert link.startswith(f"{url}/train?"), link
        page.context.close()


def test_every_lessons_links_open_their_page(app_url, browser, screenshot_dir):
    """Each lesson's "Open this lesson" (its settings) and its exercise link (hiding steps
    and seed), read off the Learn page."""
    page = new_page(browser)
    page.goto(app_url)
    wait_for_app(page)
    page.get_by_role("tab", name=EN.t("learn.tab_lessons")).click()
    wait_for_app(page)
    opens = page.get_by_role("link", name=re.compile(EN.t("learn.open_lesson")))
    assert opens.count() == len(lessons.LESSONS)
    for number, lesson in enumerate(lessons.LESSONS):
        href = urljoin(page.url, opens.nth(number).get_attribute("href"))
        shot = screenshot_dir / f"links-lesson-{lesson.id}-opened.png"
        opens_its_page(browser, href, lesson.page, [], shot)
        link = built_exercise_link(page, number, lesson.page, HIDDEN)
        shot = screenshot_dir / f"links-lesson-{lesson.id}-exercise.png"
        opens_its_page(browser, link, lesson.page, HIDDEN, shot)
        assert link.startswith(f"{app_url}/{lesson.page}?"), link
        page.get_by_text(EN.t("exercise.title")).nth(number).click()  # off: one code box
        wait_for_app(page)
    page.context.close()
