"""The web interface in headless Chromium, against a running network (``web_network``).

Each test drives the page as a user would (clicks, typing, back/forward) and checks what
is shown and what is downloaded, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from playwright.sync_api import Download, Locator, Page, expect

from kbapps import web
from tests.web.conftest import (
    ELSEWHERE,
    EVIL_FLAT_NAME,
    EVIL_SHARE_NAME,
    MANY,
    ROOT,
    Watched,
    WebNetwork,
    expected_prv,
    expected_prv_bytes,
    expected_prvdir,
)

SCREENSHOTS = ROOT / "docs" / "screenshots"


def _save_screenshot(page: Page, name: str) -> None:
    """Take a screenshot for the README: ``docs/screenshots/NAME``.

    The picture holds the nodes' listen URLs, whose ports change on every run, so the
    committed file is rewritten only when it is missing or ``KBUCKET_UPDATE_SCREENSHOTS=1``
    (otherwise every test run would leave a modified file in the working tree).
    ``KBUCKET_SCREENSHOT_DIR=DIR`` writes to DIR instead, always.
    """
    page.mouse.move(0, 0)  # no hover effect in the picture
    png = page.screenshot(full_page=True, animations="disabled", caret="hide")
    assert png.startswith(b"\x89PNG")
    override = os.environ.get("KBUCKET_SCREENSHOT_DIR")
    target = Path(override) / name if override else SCREENSHOTS / name
    if override or not target.exists() or os.environ.get("KBUCKET_UPDATE_SCREENSHOTS") == "1":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)


def _downloaded(download: Download) -> bytes:
    path = download.path()
    assert download.failure() is None
    return Path(path).read_bytes()


def _row(page: Page, name: str) -> Locator:
    return page.locator("table.files tr.row").filter(has=page.locator("td.name a", has_text=name))


def test_hub_page_shows_info_and_children(watched: Watched, web_network: WebNetwork) -> None:
    page = watched.page
    page.goto(web_network.hub_url + "/")
    expect(page.locator("h1 .node-name")).to_have_text("KBucket demo hub")
    expect(page.locator("h1 .badge")).to_have_text("Hub")
    info = page.locator("dl.info")
    expect(info).to_contain_text(web_network.hub_id)
    expect(info).to_contain_text("Data Services Team")
    expect(info).to_contain_text("Top hub of the demo network")
    expect(info).to_contain_text("none (top of its network)")
    hubs = page.locator("section.card", has=page.locator("h2", has_text="Child hubs"))
    shares = page.locator("section.card", has=page.locator("h2", has_text="Child shares"))
    sub_link = hubs.get_by_role("link", name="Lab hub (electrophysiology)")
    expect(sub_link).to_have_attribute("href", f"/?node={web_network.subhub_id}")
    share_link = shares.get_by_role("link", name="Spike sorting examples")
    expect(share_link).to_have_attribute("href", f"/?node={web_network.share_id}")
    # Description and owner come from the hub's own nodeinfo (the children's registration).
    expect(shares.locator("tbody tr")).to_contain_text("Ada Lovelace")
    expect(hubs.locator("tbody tr")).to_contain_text("Hub for the lab's recording machines.")
    expect(page.locator("#footer")).to_contain_text(web_network.hub_id)
    _save_screenshot(page, "hub.png")
    watched.assert_clean()


def test_click_through_to_share_download_file_and_prv(
    watched: Watched, web_network: WebNetwork
) -> None:
    page = watched.page
    page.goto(web_network.hub_url + "/")
    page.get_by_role("link", name="Spike sorting examples").click()
    expect(page).to_have_url(f"{web_network.hub_url}/?node={web_network.share_id}")
    expect(page.locator("h1 .node-name")).to_have_text("Spike sorting examples")
    expect(page.locator("h1 .badge")).to_have_text("Share")
    expect(page.locator("dl.info")).to_contain_text("KBucket demo hub")  # parent link
    expect(page.locator(".breadcrumb")).to_have_text(f"kbucket://{web_network.share_id}")
    # Folders first, then files, each sorted; dot-names never shown.
    names = page.locator("table.files td.name a")
    expect(names).to_have_text(["many", "pointers", "recordings", "params.json", "README.txt"])
    params_size = (web_network.share_dir / "params.json").stat().st_size
    expect(_row(page, "params.json").locator("td.size")).to_have_text(f"{params_size} B")

    page.locator("td.name a", has_text="recordings").click()
    expect(page).to_have_url(f"{web_network.hub_url}/?node={web_network.share_id}&path=recordings")
    expect(names).to_have_text(
        ["session_01", "session_02", "10", "2024", "données.csv", "firings_true.mda"]
    )
    _save_screenshot(page, "share.png")
    expect(page.locator("table.files")).not_to_contain_text(".hidden")
    page.locator("td.name a", has_text="session_01").click()
    expect(page.locator(".breadcrumb")).to_have_text(
        f"kbucket://{web_network.share_id}/recordings/session_01"
    )
    raw = web_network.share_dir / "recordings" / "session_01" / "raw.mda"
    row = page.locator("table.files tr.row", has_text="raw.mda")
    expect(row.locator("td.size")).to_have_text("1.3 MB")
    expect(row.locator("td.size")).to_have_attribute("title", "1,250,000 bytes")
    raw_sha1 = hashlib.sha1(raw.read_bytes()).hexdigest()
    expect(row.locator("td.sha1 a.sha")).to_have_text(raw_sha1)
    # The copy button holds the file's sha1:// URI (issue 14).
    copy = row.locator("td.sha1 button.copy-uri")
    expect(copy).to_have_attribute("data-uri", f"sha1://{raw_sha1}/raw.mda")

    with page.expect_download() as info:
        row.locator("td.name a").click()
    assert info.value.suggested_filename == "raw.mda"
    assert _downloaded(info.value) == raw.read_bytes()

    with page.expect_download() as info:
        row.get_by_role("link", name=".prv").click()
    assert info.value.suggested_filename == "raw.mda.prv"
    assert _downloaded(info.value) == expected_prv(raw, "raw.mda")

    # Back goes to the parent folder, forward and reload keep the subfolder.
    page.go_back()
    expect(page.locator(".breadcrumb .current")).to_have_text("recordings")
    page.go_forward()
    expect(page.locator(".breadcrumb .current")).to_have_text("session_01")
    page.reload()
    expect(page.locator("table.files tr.row", has_text="geom.csv")).to_be_visible()
    page.locator(".breadcrumb a", has_text="recordings").click()
    expect(page.locator(".breadcrumb .current")).to_have_text("recordings")
    watched.assert_clean()


def test_prvdir_of_a_folder_matches_spec(watched: Watched, web_network: WebNetwork) -> None:
    page = watched.page
    page.goto(f"{web_network.hub_url}/?node={web_network.share_id}")
    with page.expect_download() as info:
        _row(page, "recordings").get_by_role("button", name=".prvdir").click()
    assert info.value.suggested_filename == "recordings.prvdir"
    data = _downloaded(info.value)
    assert data == expected_prvdir(web_network.share_dir / "recordings")
    # Integer-like and non-ASCII names kept in order (docs/formats.md), UTF-8, relative paths.
    assert json.loads(data)["dirs"]["session_02"]["files"]["notes.txt"]["original_path"] == (
        "session_02/notes.txt"
    )
    expect(page.locator(".progress")).to_contain_text(
        "Downloaded recordings.prvdir (8 files in 3 folders)"
    )

    # The toolbar button makes the .prvdir of the folder being shown.
    page.locator("td.name a", has_text="recordings").click()
    page.locator("td.name a", has_text="session_02").click()
    with page.expect_download() as info:
        page.get_by_role("button", name="Download .prvdir").click()
    assert info.value.suggested_filename == "session_02.prvdir"
    expected = expected_prvdir(web_network.share_dir / "recordings" / "session_02")
    assert _downloaded(info.value) == expected
    watched.assert_clean()


def test_node_provided_html_is_shown_as_text(watched: Watched, web_network: WebNetwork) -> None:
    page = watched.page
    # Reached as a user would: hub -> child hub -> the share below it (two hops).
    page.goto(web_network.hub_url + "/")
    page.get_by_role("link", name="Lab hub (electrophysiology)").click()
    link = page.get_by_role("link", name=EVIL_SHARE_NAME)
    expect(link).to_have_text(EVIL_SHARE_NAME)
    expect(page.locator("table.children")).to_contain_text("<script>alert(2)</script>")
    link.click()
    expect(page.locator("h1 .node-name")).to_have_text(EVIL_SHARE_NAME)
    expect(page).to_have_title(f"{EVIL_SHARE_NAME} · KBucket")
    expect(page.locator("dl.info")).to_contain_text("<script>alert(2)</script>")
    expect(page.locator("dl.info")).to_contain_text('"><svg onload=alert(3)>')
    expect(page.locator("table.files td.name a")).to_have_text(["<b>x<", EVIL_FLAT_NAME])
    page.locator("td.name a", has_text="<b>x<").click()
    expect(page.locator(".breadcrumb .current")).to_have_text("<b>x<")
    row = page.locator("table.files tr.row", has_text="b>.dat")
    expect(row.locator("td.name a")).to_have_text("b>.dat")
    with page.expect_download() as info:
        row.locator("td.name a").click()
    assert _downloaded(info.value) == (web_network.evil_share_dir / "<b>x<" / "b>.dat").read_bytes()
    # None of the payloads became an element, and no script ran.
    main = page.locator("main")
    for selector in ("img", "svg", "script", "b", "main iframe"):
        expect(main.locator(selector)).to_have_count(0)
    assert page.evaluate("() => document.querySelectorAll('[onerror],[onload]').length") == 0
    watched.assert_clean()


def test_ten_thousand_entries_stay_responsive(watched: Watched, web_network: WebNetwork) -> None:
    page = watched.page
    page.goto(f"{web_network.hub_url}/?node={web_network.share_id}&path=many")
    expect(page.locator(".summary")).to_have_text(f"0 folders, {MANY:,} files")
    first = page.locator("table.files td.name a", has_text="f00000.dat")
    expect(first).to_be_visible()
    # The script has the whole listing once the filter works (the server drew one page).
    expect(page.get_by_placeholder("Filter names")).to_be_enabled()
    expect(page.locator(".pager")).to_have_count(0)
    # Only rows near the viewport exist, so the page never holds 10,000 rows at once.
    rendered = page.locator("table.files tr.row").count()
    assert 0 < rendered < 300
    # Scroll to the end: the last entry appears, in natural order.
    page.locator(".scroller").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    last = page.locator("table.files td.name a", has_text=f"f{MANY - 1:05d}.dat")
    expect(last).to_be_visible()
    expect(page.locator("table.files td.name a", has_text="f00000.dat")).to_have_count(0)
    # The page still answers: a frame renders and the filter narrows 10,000 rows to one.
    assert page.evaluate("() => new Promise((r) => requestAnimationFrame(() => r(true)))")
    page.get_by_placeholder("Filter names").fill("no such name")
    expect(page.locator("table.files")).to_contain_text("No names match the filter.")
    expect(page.locator("table.files tr.row")).to_have_count(0)
    page.get_by_placeholder("Filter names").fill("f04321")
    expect(page.locator("table.files tr.row")).to_have_count(1)
    expect(page.locator("table.files tr.row")).to_contain_text("f04321.dat")
    with page.expect_download() as info:
        page.locator("table.files tr.row td.name a").click()
    assert _downloaded(info.value) == b"file 4321\n"
    watched.assert_clean()


def test_search_by_sha1_shows_download_links(watched: Watched, web_network: WebNetwork) -> None:
    page = watched.page
    target = web_network.share_dir / "recordings" / "session_02" / "raw.mda"
    sha1 = hashlib.sha1(target.read_bytes()).hexdigest()
    page.goto(web_network.hub_url + "/")
    page.get_by_label("SHA-1 to find, or drop a .prv file").fill(sha1.upper())
    page.get_by_role("button", name="Find", exact=True).click()
    expect(page).to_have_url(f"{web_network.hub_url}/?find={sha1}")
    card = page.locator("section.card", has=page.locator("h2", has_text="Found"))
    expect(card).to_contain_text("recordings/session_02/raw.mda")
    expect(card).to_contain_text("734 KB (734,002 bytes)")
    link = card.get_by_role("link", name="Download", exact=True)
    expect(link).to_have_attribute(
        "href", f"/{web_network.share_id}/download/recordings/session_02/raw.mda"
    )
    tail = f"/{web_network.share_id}/download/recordings/session_02/raw.mda"
    # The page's own node first (the browser just reached it), then the share's own URL.
    urls = card.locator("ol.urls li")
    expect(urls.first).to_have_text(f"{web_network.hub_url}{tail} — this node")
    expect(urls.nth(1)).to_have_text(f"{web_network.share_url}{tail}")
    with page.expect_download() as info:
        link.click()
    assert info.value.suggested_filename == "raw.mda"
    assert _downloaded(info.value) == target.read_bytes()
    # The share column leads to the folder holding the file.
    card.get_by_role("link", name="Spike sorting examples", exact=True).click()
    expect(page.locator(".breadcrumb .current")).to_have_text("session_02")
    watched.assert_clean()


def test_search_by_prv_file_and_not_found(
    watched: Watched, web_network: WebNetwork, tmp_path: Path
) -> None:
    page = watched.page
    target = web_network.share_dir / "params.json"
    prv_file = tmp_path / "params.json.prv"
    prv_file.write_bytes(expected_prv(target, "/home/someone/params.json"))
    page.goto(web_network.hub_url + "/")
    page.locator("#search-file").set_input_files(str(prv_file))
    expect(page.locator("h1 .node-name")).to_have_text("Find “params.json”")
    expect(page.get_by_role("link", name="Download", exact=True)).to_have_attribute(
        "download", "params.json"
    )

    # A .prv dropped anywhere on the page is searched for too.
    readme = web_network.share_dir / "README.txt"
    page.evaluate(
        """(text) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], 'README.txt.prv', { type: 'application/json' }));
            document.querySelector('main').dispatchEvent(
                new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: dt }));
        }""",
        expected_prv(readme, "README.txt").decode(),
    )
    expect(page.locator("h1 .node-name")).to_have_text("Find “README.txt”")
    expect(page).to_have_url(
        f"{web_network.hub_url}/?find={hashlib.sha1(readme.read_bytes()).hexdigest()}"
        "&name=README.txt"
    )

    missing = hashlib.sha1(b"nobody has this").hexdigest()
    page.get_by_label("SHA-1 to find, or drop a .prv file").fill(missing)
    page.get_by_role("button", name="Find", exact=True).click()
    expect(page.locator("main")).to_contain_text("Not found: no node reachable from here")

    page.get_by_label("SHA-1 to find, or drop a .prv file").fill("not a hash")
    page.get_by_role("button", name="Find", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("enter a SHA-1 (40 hex digits)")

    bad = tmp_path / "bad.prv"
    bad.write_text("<html>not json</html>")
    page.locator("#search-file").set_input_files(str(bad))
    expect(page.get_by_role("alert")).to_contain_text("bad.prv is not a .prv file (not JSON)")
    watched.assert_clean()


def test_errors_are_shown_as_text(watched: Watched, web_network: WebNetwork) -> None:
    page = watched.page
    page.goto(f"{web_network.hub_url}/?node=000000000000")
    expect(page.get_by_role("alert")).to_contain_text("Could not load this page:")
    expect(page.get_by_role("alert")).to_contain_text("(HTTP 404)")
    page.goto(f"{web_network.hub_url}/?node=<b>bad</b>")
    expect(page.get_by_role("alert")).to_contain_text('"<b>bad</b>" is not a node id')
    page.goto(f"{web_network.hub_url}/?node={web_network.share_id}&path=no/such/dir")
    expect(page.get_by_role("alert")).to_contain_text("Could not list “no/such/dir”:")
    # The browser logs the 404 responses themselves; nothing else may go wrong.
    assert watched.page_errors == []
    assert watched.dialogs == []
    assert watched.csp_violations() == []


def test_share_serves_its_own_page(watched: Watched, web_network: WebNetwork) -> None:
    page = watched.page
    page.goto(web_network.share_url + "/web/")
    expect(page.locator("h1 .node-name")).to_have_text("Spike sorting examples")
    expect(page.locator("#footer")).to_contain_text(f"Served by share {web_network.share_id}")
    expect(page.locator("table.files td.name a").first).to_have_text("many")
    watched.assert_clean()


def test_csp_header_forbids_inline_script(watched: Watched, web_network: WebNetwork) -> None:
    page = watched.page
    response = page.goto(web_network.hub_url + "/")
    assert response is not None
    assert response.headers["content-security-policy"] == web.CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page.locator("h1 .node-name")).to_have_text("KBucket demo hub")
    # Our own page caused no violation ...
    watched.assert_clean()
    # ... and the policy is live: an inline script added to the page does not run.
    page.evaluate(
        """() => {
            const s = document.createElement('script');
            s.textContent = 'window.__inlineRan = true;';
            document.body.append(s);
            const img = document.createElement('img');
            img.setAttribute('onerror', 'window.__handlerRan = true');
            img.src = '/no-such-image';
            document.body.append(img);
        }"""
    )
    expect(page.locator("body")).to_be_attached()
    page.wait_for_function("() => window.__kbCspViolations.length >= 2")
    assert page.evaluate("() => window.__inlineRan === undefined")
    assert page.evaluate("() => window.__handlerRan === undefined")
    assert all("script-src" in v for v in watched.csp_violations())


def test_unknown_node_error_replaces_the_loading_banner(
    watched: Watched, web_network: WebNetwork
) -> None:
    page = watched.page
    page.goto(f"{web_network.hub_url}/?node=000000000000")
    expect(page.get_by_role("alert")).to_contain_text("(HTTP 404)")
    # The page is the error: no status line is left saying it still loads.
    expect(page.get_by_role("status")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text("Loading")
    assert watched.page_errors == []
    assert watched.csp_violations() == []


def test_file_names_look_like_the_links_they_are(watched: Watched, web_network: WebNetwork) -> None:
    page = watched.page
    page.goto(f"{web_network.hub_url}/?node={web_network.share_id}&path=recordings")
    file_link = page.locator("table.files a.entry.file", has_text="firings_true.mda")
    expect(file_link).to_be_visible()

    def color(locator: Locator) -> str:
        value = locator.evaluate("el => getComputedStyle(el).color")
        assert isinstance(value, str)
        return value

    link_color = color(page.locator(".breadcrumb a.crumb.root"))
    assert color(file_link) == link_color
    assert color(page.locator("table.files a.entry.dir").first) == link_color
    assert color(page.locator("body")) != link_color
    watched.assert_clean()


def test_standin_is_listed_and_downloaded_like_a_file(
    watched: Watched, web_network: WebNetwork
) -> None:
    page = watched.page
    page.goto(f"{web_network.hub_url}/?node={web_network.share_id}&path=pointers")
    expect(page.locator("table.files td.name a")).to_have_text(["elsewhere.dat"])
    row = _row(page, "elsewhere.dat")
    expect(row.locator("td.size")).to_have_text("7 B")
    expect(row.locator("td.sha1 a.sha")).to_have_text(hashlib.sha1(ELSEWHERE).hexdigest())
    with page.expect_download() as info:
        row.locator("td.name a").click()
    assert info.value.suggested_filename == "elsewhere.dat"
    assert _downloaded(info.value) == ELSEWHERE
    with page.expect_download() as info:
        row.get_by_role("link", name=".prv").click()
    assert _downloaded(info.value) == expected_prv_bytes(ELSEWHERE, "elsewhere.dat")
    watched.assert_clean()
