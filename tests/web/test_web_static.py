"""``kbapps.web``: the shipped files, the route mapping, and the pages' CSP hygiene."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser

import pytest

from kbapps import web
from tests.web.conftest import ROOT
from tests.web.test_web_pages import render_all_pages


def test_every_shipped_file_is_served_with_its_type() -> None:
    for name, content_type in web.SHIPPED_FILES.items():
        reply = web.static_file(name)
        assert reply is not None, name
        assert reply.content_type == content_type
        assert reply.body == (ROOT / "kbapps" / "web" / "static" / name).read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../__init__.py",
        "static/app.js",
        "/etc/passwd",
        "APP.JS",
        "app.js/",
        "__init__.py",
        "py.typed",
        "app.js\x00",
        "%2e%2e/__init__.py",
        "index.html",  # the pages' template, never served as it is
    ],
)
def test_static_file_refuses_anything_else(name: str) -> None:
    assert web.static_file(name) is None


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/web/app.js", "app.js"),
        ("/web/style.css?v=2", "style.css"),
        ("/web/favicon.svg", "favicon.svg"),
    ],
)
def test_web_response_maps_paths(path: str, name: str) -> None:
    assert web.web_response(path) == web.static_file(name)


@pytest.mark.parametrize(
    "path",
    [
        "/",  # pages are drawn, not shipped
        "/web/",
        "/web/index.html",
        "/web/../kbapps/__init__.py",
        "/web/static/app.js",
        "/index.html",
        "/app.js",
        "/web//app.js",
        "/web/nothing",
        "/web/config.json",
        "/0123456789ab/api/nodeinfo",
        "/webx",
    ],
)
def test_web_response_refuses_other_paths(path: str) -> None:
    assert web.web_response(path) is None


def test_headers_carry_the_csp() -> None:
    headers = dict(web.response_headers("text/html; charset=utf-8"))
    assert headers["Content-Security-Policy"] == web.CONTENT_SECURITY_POLICY
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self';" in web.CONTENT_SECURITY_POLICY
    assert "unsafe" not in web.CONTENT_SECURITY_POLICY


class _Audit(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block or what smells of it."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.sources: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key.startswith("on") or key == "style":
                self.problems.append(f"<{tag} {key}=...>")
            if value is None:
                continue
            loads = key == "src" or (tag == "link" and key == "href")
            if loads:
                self.sources.append(value)
            # Pages load nothing from elsewhere; links go anywhere http(s) but never
            # run script.
            bad: tuple[str, ...] = ("javascript:", "data:", "vbscript:")
            if loads:
                bad += ("http:", "https:", "//")
            if key in ("src", "href", "action") and value.strip().lower().startswith(bad):
                self.problems.append(f"<{tag} {key}={value}>")
        if tag == "style":
            self.problems.append("<style>")
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline <script>")


def test_pages_need_no_inline_script_or_style() -> None:
    for name, page in render_all_pages().items():
        audit = _Audit()
        audit.feed(page.html.decode())
        assert audit.problems == [], name
        # Everything a page loads is one of the shipped files, by absolute path.
        for source in audit.sources:
            if source.startswith("/web/"):
                assert source.removeprefix("/web/") in web.SHIPPED_FILES, source
    script = web.static_file("app.js")
    assert script is not None
    # The script never parses node data as HTML.
    assert (
        re.search(rb"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", script.body)
        is None
    )
    css = web.static_file("style.css")
    assert css is not None
    for url in re.findall(rb'url\("([^"]+)"\)', css.body):
        assert url.decode().removeprefix("/web/") in web.SHIPPED_FILES


def test_pyproject_ships_the_static_files() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["kbapps.web"]
    for name in web.SHIPPED_FILES:
        assert any(fnmatch(f"static/{name}", p) for p in patterns), name
