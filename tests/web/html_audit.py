"""Auditing a page's HTML: no node-provided text may have become markup.

Standard library only, so the real-process tests that use it run against any version
of the node (they must fail on code that does not draw pages, not fail to import).
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

__all__ = ("OUR_TAGS", "Tags", "audit")


class Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


#: Every tag the pages and their template use; anything else came from a node.
OUR_TAGS = {
    "html", "head", "meta", "title", "link", "script", "body", "header", "div", "a", "span",
    "form", "input", "label", "button", "main", "section", "footer", "h1", "h2", "h3", "dl",
    "dt", "dd", "code", "p", "table", "colgroup", "col", "thead", "tbody", "tr", "th", "td",
    "nav", "ol", "li", "strong",
}  # fmt: skip


def audit(html: bytes) -> Tags:
    """Parse a page; fail if a node's text became markup."""
    parsed = Tags()
    parsed.feed(html.decode("utf-8"))
    for tag, attrs in parsed.tags:
        assert tag in OUR_TAGS, f"<{tag}> in the page"
        if tag == "script":
            assert attrs == {"type": "module", "src": "/web/app.js"}
        for key, value in attrs.items():
            assert not key.startswith("on"), f"<{tag} {key}>"
            if key == "href" and value is not None:
                scheme = urlsplit(value).scheme.lower()
                assert value.startswith("/") or scheme in ("http", "https"), value
    return parsed
