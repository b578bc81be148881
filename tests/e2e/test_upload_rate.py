"""``kbucket-host --max-upload-rate`` with real processes on 127.0.0.1 (issue 13, item 1).

A share limited to 2 MiB/s serves an 8 MiB file directly and through its hub (proxied
over the share's parent link): each transfer takes about size / rate. Only a generous
lower bound is asserted (0.6 x the ideal time): a loaded machine may be slower, never
faster than the limit allows. The limit is saved in ``kbnode.json`` and applies again
after a restart without the option.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from tests.e2e.procs import Node, Procs, write_pattern

RATE = 2 * 1024 * 1024
SIZE = 8 * 1024 * 1024
NAME = "big.bin"
#: The bound on one transfer: well above size / rate, well below the test's timeout.
GET_TIMEOUT = 60.0


def timed_get(url: str, headers: dict[str, str] | None = None) -> tuple[bytes, float]:
    """GET ``url``; the body and the seconds it took."""
    started = time.monotonic()
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=GET_TIMEOUT) as response:
        assert response.status in (200, 206)
        body = response.read()
    return body, time.monotonic() - started


def assert_paced(nbytes: int, elapsed: float) -> None:
    """``elapsed`` is at least 0.6 x what ``nbytes`` needs at ``RATE``."""
    ideal = nbytes / RATE
    assert elapsed >= 0.6 * ideal, f"{nbytes} bytes in {elapsed:.2f} s: faster than the limit"


def test_rate_limited_share_paces_direct_and_proxied_downloads(
    procs: Procs, tmp_path: Path
) -> None:
    data = write_pattern(tmp_path / "S" / NAME, SIZE, seed=13)
    hub = procs.node("kbucket-hub", tmp_path / "H", name="hub-H")
    share = procs.node(
        "kbucket-host", tmp_path / "S", "--max-upload-rate", "2M", name="share-S", parent=hub
    )
    sid = share.node_id
    share.proc.wait_line(r"Upload rate limit: 2 MiB/s \(--max-upload-rate; saved in kbnode.json")
    saved = json.loads((share.directory / ".kbucket" / "kbnode.json").read_text())
    assert saved["max_upload_rate"] == RATE

    body, direct = timed_get(f"{share.url}/{sid}/download/{NAME}")
    assert body == data
    assert_paced(SIZE, direct)

    # Through the hub: the share sends the body up its parent link, same limit.
    body, proxied = timed_get(f"{hub.url}/{sid}/download/{NAME}")
    assert body == data
    assert_paced(SIZE, proxied)
    print(f"direct {SIZE / direct / 1e6:.2f} MB/s, proxied {SIZE / proxied / 1e6:.2f} MB/s")


def test_the_limit_is_kept_across_a_restart(procs: Procs, tmp_path: Path) -> None:
    data = write_pattern(tmp_path / "S" / NAME, SIZE, seed=14)
    first = procs.node("kbucket-host", tmp_path / "S", "--max-upload-rate", "2048K")
    assert first.proc.stop() == 0
    # No option this time: the saved limit applies.
    again: Node = procs.node("kbucket-host", tmp_path / "S")
    again.proc.wait_line(r"Upload rate limit: 2 MiB/s ")
    saved = json.loads((again.directory / ".kbucket" / "kbnode.json").read_text())
    assert saved["max_upload_rate"] == RATE
    part = 4 * 1024 * 1024
    body, elapsed = timed_get(
        f"{again.url}/{again.node_id}/download/{NAME}", {"Range": f"bytes=1000-{1000 + part - 1}"}
    )
    assert body == data[1000 : 1000 + part]
    assert_paced(part, elapsed)
    assert again.proc.stop() == 0
    # 0 turns the limit off, and is saved as such.
    off = procs.node("kbucket-host", tmp_path / "S", "--max-upload-rate", "0")
    saved = json.loads((off.directory / ".kbucket" / "kbnode.json").read_text())
    assert saved["max_upload_rate"] == 0
    body, _ = timed_get(f"{off.url}/{off.node_id}/download/{NAME}")
    assert body == data
    assert not off.proc.has_line(r"Upload rate limit")
