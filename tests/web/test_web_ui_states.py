"""UI states that real nodes show only transiently, driven through the stand-in backend.

A share lists a file before it has hashed it; the page must say "not yet indexed", offer
no ``.prv`` for it, and refuse (clearly, naming the file) to build a ``.prvdir`` that
would be incomplete. With real processes this state lasts only while the share indexes,
so these tests keep using ``_spec_backend`` on purpose: a real share cannot be held in it
without a race (a small file is indexed within milliseconds of being listed). Everything
else in ``tests/web/`` runs against real ``kbucket-hub``/``kbucket-host`` processes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.web._spec_backend import SpecNetwork, SpecNode
from tests.web.conftest import Watched

SHARE_ID = "0123456789ab"


@pytest.fixture(scope="module")
def half_indexed() -> Iterator[str]:
    """A standalone share whose ``todo/late.bin`` is listed but not yet indexed."""
    with tempfile.TemporaryDirectory(prefix="kbucket-web-states-") as scratch:
        root = Path(scratch)
        (root / "todo").mkdir()
        (root / "todo" / "late.bin").write_bytes(b"x" * 5000)
        (root / "todo" / "done.txt").write_bytes(b"hashed\n")
        share = SpecNode(
            node_id=SHARE_ID,
            node_type="leaf",
            name="Half-indexed share",
            root=root,
            unindexed=frozenset({"todo/late.bin"}),
        )
        with SpecNetwork([share]) as network:
            yield network.url(SHARE_ID)


def test_not_yet_indexed_file(watched: Watched, half_indexed: str) -> None:
    page = watched.page
    page.goto(half_indexed + "/?path=todo")
    late = page.locator("table.files tr.row", has_text="late.bin")
    expect(late.locator("td.sha1")).to_have_text("not yet indexed")
    expect(late.locator("td.prv")).to_have_text("—")
    expect(late.locator("td.size")).to_have_text("5.0 KB")
    done = page.locator("table.files tr.row", has_text="done.txt")
    expect(done.get_by_role("link", name=".prv")).to_be_visible()
    # Still downloadable: indexing is about finding, not serving.
    with page.expect_download() as info:
        late.locator("td.name a").click()
    assert Path(info.value.path()).read_bytes() == b"x" * 5000
    watched.assert_clean()


def test_prvdir_refuses_unindexed_files(watched: Watched, half_indexed: str) -> None:
    page = watched.page
    page.goto(half_indexed + "/")
    expect(page.locator("h1 .node-name")).to_have_text("Half-indexed share")
    expect(page.locator("dl.info")).to_contain_text("none (top of its network)")
    page.locator("table.files tr.row", has_text="todo").get_by_role(
        "button", name=".prvdir"
    ).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Could not prepare todo.prvdir:")
    expect(alert).to_contain_text("todo/late.bin is not yet indexed")
    watched.assert_clean()
