"""A page of the app in headless Chromium, as the browser tests open, wait for, scroll and shoot
it (the browser itself: conftest's `browser` fixture, servers.launch_chromium)."""

from __future__ import annotations

VIEWPORT = {"width": 1280, "height": 720}  # a classroom projector
CHART = "[data-testid='stPlotlyChart']"
DRAWN = "[data-testid='stApp'][data-test-script-state='notRunning']"  # the script has run


def new_page(
    browser, color_scheme: str = "light", viewport: dict = VIEWPORT, timeout_ms: int = 60_000
):
    """A tab in a context of its own: a new browser session, as a student's."""
    context = browser.new_context(viewport=viewport, color_scheme=color_scheme)
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    return page


def wait_for_app(page, settle_ms: int = 500) -> None:
    """The script has run and every element is drawn (no loading placeholders left; a blank
    page never gets here), then `settle_ms` for plotly to finish drawing."""
    page.wait_for_selector(DRAWN)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')")
    page.wait_for_timeout(settle_ms)


def become_teacher(page, key: str) -> None:
    """Type the teacher key into the sidebar (as a teacher does once per browser session) and
    wait until the teacher views are on. English or 中文 alike: the box is the sidebar's only
    password field."""
    box = page.locator("[data-testid='stSidebar'] input[type='password']")
    box.fill(key)
    box.press("Enter")
    page.locator("[data-testid='stSidebar'] [data-testid='stButton']").wait_for()
    wait_for_app(page)


def newest_step(steps: int) -> str:
    """JS: the newest step on the training-loss trace (the first chart) of the run planned for
    `steps`; 0 before its first point. (Its points are thinned once the run is long: the newest
    step, not their number, says how far the curve got.)"""
    return (
        "() => { const plot = document.querySelector('.js-plotly-plot');"
        " if (!plot || !plot._fullLayout"
        f" || Math.round(plot._fullLayout.xaxis.range[1] / 1.02) !== {steps}) return 0;"
        " const x = plot._fullData[0].x; return x.length ? x[x.length - 1] : 0; }"
    )


def scroll_to_bottom(page) -> None:
    page.evaluate(
        "() => { window.scrollTo(0, document.body.scrollHeight);"
        " const main = document.querySelector('[data-testid=\"stMain\"]');"
        " if (main) main.scrollTop = main.scrollHeight; }"
    )


def shoot(page, directory, name: str, screens: int = 1) -> None:
    """What a projector shows: the first screen, and with `screens` > 1 the ones below it
    (Streamlit scrolls its main area, not the page, so a full-page screenshot would not)."""
    main = "document.querySelector('[data-testid=\"stMain\"]')"
    page.evaluate(f"() => {{ {main}.scrollTop = 0; }}")
    page.screenshot(path=directory / f"{name}.png")
    for screen in range(2, screens + 1):
        page.evaluate(f"() => {{ {main}.scrollTop += {VIEWPORT['height'] - 80}; }}")
        page.wait_for_timeout(400)  # charts that come into view are drawn now
        page.screenshot(path=directory / f"{name}-{screen}.png")
