"""Offline in Chromium: every page of the app asks nothing of any host but the app's server.

A classroom may have no internet, and README says nothing is fetched from it. Every request a
page load makes (documents, scripts, fonts, images, the tab icon, the websocket) is recorded by
the browser and must go to 127.0.0.1; the tab icon is the one that ships in assets/, and the
navigation's icons are drawn with the Material Symbols font that Streamlit serves itself.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import pytest

from core.common.paths import ASSETS
from tests.support.browser import new_page, scroll_to_bottom, wait_for_app

pytestmark = pytest.mark.browser

LOOPBACK = "127.0.0.1"  # where tests/support/servers.py serves the app
LOCAL_SCHEMES = ("data", "blob")  # URLs whose content is in the page itself
NAV_LINKS_JS = "() => [...document.querySelectorAll('[data-testid=\"stSidebarNav\"] a')]" + (
    ".map((link) => link.href)"
)
TAB_ICON_JS = "() => document.querySelector(\"link[rel='shortcut icon']\").href"
SVG_DATA = "data:image/svg+xml;base64,"  # how Streamlit sends a page icon that is an SVG file


def off_loopback(urls: list[str]) -> list[str]:
    """The URLs that would leave this machine."""
    return [
        url
        for url in urls
        if urlsplit(url).scheme not in LOCAL_SCHEMES and urlsplit(url).hostname != LOOPBACK
    ]


def test_every_page_loads_from_the_app_server_alone(app_url, browser):
    first = new_page(browser)
    first.goto(app_url)
    wait_for_app(first)
    pages = first.evaluate(NAV_LINKS_JS)
    first.context.close()
    assert len(pages) == 5, pages  # Learn, Train, Spectra, Compare, README

    for link in pages:
        page = new_page(browser)  # a student opening the link: a fresh browser context
        requested: list[str] = []
        page.context.on("request", lambda request, seen=requested: seen.append(request.url))
        page.on("websocket", lambda socket, seen=requested: seen.append(socket.url))
        page.goto(link)
        wait_for_app(page)
        scroll_to_bottom(page)  # what is drawn only in view (charts) is drawn, and loaded
        page.wait_for_timeout(1000)
        tab_icon = page.evaluate(TAB_ICON_JS)
        page.context.close()

        assert not off_loopback(requested), f"{link} asked other hosts than {LOOPBACK}: " + (
            ", ".join(off_loopback(requested))
        )
        assert any(urlsplit(url).scheme == "ws" for url in requested), requested
        fonts = [url for url in requested if "/static/media/MaterialSymbols" in url]
        assert fonts, f"{link}: the navigation's icons were not drawn with the bundled font"
        assert tab_icon.startswith(SVG_DATA), f"{link}: the tab icon is {tab_icon[:100]}"
        shipped = (ASSETS / "icon.svg").read_bytes()
        assert base64.b64decode(tab_icon.removeprefix(SVG_DATA)) == shipped, link
