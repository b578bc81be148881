"""``kbapps.download.cache`` and ``copying`` in-process: what gets cached, how it is copied.

The attacks with real processes are in ``tests/hostile/test_client_cache.py``; these
pin the rules that are awkward to reach from a command line: a file changed since it
was verified is not cached, a file larger than the bound is not cached, stale
temporary files are swept, and every copying path (the kernel's, and through user
space where the kernel cannot) gives the same bytes.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from kbapps.download import copying
from kbapps.download.cache import ContentCache, FillRequest
from tests.apps.test_download_support import content, prv_of


def verified(path: Path) -> FillRequest:
    """The fill request of ``path`` as it is now (as if just verified)."""
    return FillRequest(prv_of(path.read_bytes()).sha1, str(path), FillRequest.key_of(path.stat()))


def test_a_file_changed_since_it_was_verified_is_not_cached(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache" / "content", 1 << 20)
    out = tmp_path / "out.dat"
    out.write_bytes(content(10_000, 1))
    request = verified(out)
    time.sleep(0.01)
    with out.open("ab") as handle:
        handle.write(b"edited")
    assert cache.fill([request]) == 0
    assert cache.usage().entries == 0


def test_a_file_larger_than_the_bound_is_not_cached(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache" / "content", 5_000)
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(content(4_000, 2))
    big.write_bytes(content(6_000, 3))
    assert cache.fill([verified(big), verified(small)]) == 1
    assert cache.usage().size == 4_000
    entry = cache.path_for(verified(small).sha1)
    assert entry.read_bytes() == small.read_bytes()
    assert entry.stat().st_mode & 0o777 == 0o600


def test_stale_temporary_files_are_swept_and_fresh_ones_kept(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache" / "content", 1 << 20)
    out = tmp_path / "out"
    out.write_bytes(content(1_000, 4))
    cache.fill([verified(out)])
    sub = cache.path_for(verified(out).sha1).parent
    stale, fresh = sub / ".x.0123456789abcdef.tmp", sub / ".y.0123456789abcdef.tmp"
    stale.write_bytes(b"left by a process that died")
    fresh.write_bytes(b"being written by another process")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    assert cache.usage().entries == 1
    assert not stale.exists()
    assert fresh.exists()


@pytest.mark.parametrize("kernel", ["copy_file_range", "user space"])
def test_copy_bytes_gives_the_same_bytes_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    data = content(3 * 1024 * 1024 + 17, 5)
    (tmp_path / "src").write_bytes(data + b"beyond the size asked for")
    if kernel == "user space":

        def refuse(*args: object) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        copying.copy_bytes(src, dst, len(data))
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "dst").read_bytes() == data


def test_copy_bytes_fails_on_a_short_source(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"short")
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with pytest.raises(OSError, match="source ended after 5 of 10 bytes"):
            copying.copy_bytes(src, dst, 10)
    finally:
        os.close(src)
        os.close(dst)
