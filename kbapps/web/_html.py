"""Building the pages as element trees, never as strings with node data in them.

Everything a node reports (names, paths, descriptions, URLs) is untrusted text. It only
ever becomes the text or an attribute value of an element built here (an
``xml.etree.ElementTree`` tree), and ``serialize`` writes every text through
``html.escape`` (``&``, ``<``, ``>``) and every attribute value, always double-quoted,
through ``html.escape`` with quotes (``&``, ``<``, ``>``, ``"``, ``'``). No string from a
node is ever joined into markup, so none can open a tag or end an attribute; the
page's script does the same in the browser (``h()`` in ``app.js``, text nodes only).
Elements whose content HTML never unescapes (``script``, ``style``) are refused.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping

__all__ = ("Child", "append", "h", "serialize")

#: What an element may contain: elements, text, or nothing (skipped).
Child = ET.Element | str | None
#: Tags whose content the HTML serializer writes unescaped: never built here.
_RAW_TEXT_TAGS = frozenset({"script", "style"})
#: Elements with no end tag (and no content).
_VOID_TAGS = frozenset({"br", "col", "hr", "img", "input", "link", "meta", "wbr"})


def h(tag: str, attrs: Mapping[str, str | None] | None = None, *children: Child) -> ET.Element:
    """An element with attributes and children, like ``app.js``'s ``h``.

    Args:
        tag: the element name (ours, never a node's).
        attrs: attribute values; None leaves the attribute out, ``""`` writes an
            empty (boolean) attribute.
        children: elements and strings, in order; None is skipped.

    Raises:
        ValueError: ``tag`` is ``script`` or ``style``.
    """
    if tag in _RAW_TEXT_TAGS:
        raise ValueError(f"<{tag}> content is not escaped by the serializer")
    element = ET.Element(tag, {k: v for k, v in (attrs or {}).items() if v is not None})
    append(element, *children)
    return element


def append(parent: ET.Element, *children: Child) -> None:
    """Append elements and text to ``parent`` (text goes to ``text``/``tail``)."""
    for child in children:
        if child is None:
            continue
        if isinstance(child, str):
            if len(parent):
                last = parent[-1]
                last.tail = (last.tail or "") + child
            else:
                parent.text = (parent.text or "") + child
        else:
            parent.append(child)


def serialize(children: Iterable[Child]) -> str:
    """The HTML text of ``children`` (elements and text), one after the other."""
    out: list[str] = []
    for child in children:
        if isinstance(child, str):
            out.append(html.escape(child, quote=False))
        elif child is not None:
            _write(child, out)
    return "".join(out)


def _write(element: ET.Element, out: list[str]) -> None:
    # An explicit stack, not recursion: (element, True) opens it, (element, False)
    # closes it and writes its tail.
    stack: list[tuple[ET.Element, bool]] = [(element, True)]
    while stack:
        node, opening = stack.pop()
        if not opening:
            out.append(f"</{node.tag}>")
            if node.tail:
                out.append(html.escape(node.tail, quote=False))
            continue
        attrs = "".join(f' {k}="{html.escape(v, quote=True)}"' for k, v in node.attrib.items())
        out.append(f"<{node.tag}{attrs}>")
        if node.tag in _VOID_TAGS:
            if node.tail:
                out.append(html.escape(node.tail, quote=False))
            continue
        if node.text:
            out.append(html.escape(node.text, quote=False))
        stack.append((node, False))
        stack.extend((kid, True) for kid in reversed(node))
