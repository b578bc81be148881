"""kbapps.share.standins: which ``.prv`` files stand in for content, and which never do.

The end-to-end behaviour (listings, downloads through the network) is in
``tests/e2e/test_standins.py``; these pin the edges on a real directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from kbapps.share.paths import ShareDir
from kbapps.share.standins import MAX_STANDIN_BYTES, Standins

DATA = b"the content lives elsewhere\n"
SHA1 = hashlib.sha1(DATA).hexdigest()


def prv_text(original_path: str = "/home/lab/data.bin", *, pad: int = 0) -> bytes:
    obj = {
        "original_checksum": SHA1,
        "original_size": len(DATA),
        "original_fcs": "head1000-" + hashlib.sha1(DATA[:1000]).hexdigest(),
        "original_path": original_path,
        "prv_version": "0.11",
        "extra": "kept out",
    }
    return (json.dumps(obj, indent=4) + " " * pad + "\n").encode()


def listing_of(root: Path, *segments: str) -> tuple[list[str], list[str]]:
    share = ShareDir(root)
    listing, found = Standins(share).apply(segments, share.list_dir(segments))
    return [name for name, _ in listing.files], [s.name for s in found]


def test_pointer_alone_stands_in_and_describes_itself_by_its_name(tmp_path: Path) -> None:
    (tmp_path / "data.bin.prv").write_bytes(b"\xef\xbb\xbf" + prv_text())  # a BOM is fine
    files, found = listing_of(tmp_path)
    assert (files, found) == ([], ["data.bin"])
    standin = Standins(ShareDir(tmp_path)).find(("data.bin",))
    assert standin is not None
    assert standin.prv.sha1 == SHA1
    assert standin.prv.size == len(DATA)
    assert standin.prv.path == "data.bin"  # never /home/lab/...


def test_what_never_stands_in(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.prv").write_bytes(prv_text())
    root = tmp_path / "share"
    (root / ".kbucket").mkdir(parents=True)
    (root / ".kbucket" / "key.prv").write_bytes(prv_text())
    (root / "both").write_bytes(b"itself\n")
    (root / "both.prv").write_bytes(prv_text())
    (root / "folder").mkdir()
    (root / "folder.prv").write_bytes(prv_text())
    (root / ".prv").write_bytes(prv_text())
    (root / "bad.prv").write_bytes(b"{not json")
    (root / "big.prv").write_bytes(prv_text(pad=MAX_STANDIN_BYTES))
    (root / "out.prv").symlink_to(outside / "secret.prv")
    (root / "key.prv").symlink_to(root / ".kbucket" / "key.prv")
    os.mkfifo(root / "fifo.prv")
    files, found = listing_of(root)
    # X.prv beside X is hidden; malformed, oversized ones are plain files; links leading
    # out of the share (or into a dot-folder) and special files are not listed at all.
    assert sorted(files) == ["bad.prv", "big.prv", "both"]
    assert found == []
    standins = Standins(ShareDir(root))
    for name in ("both", "folder", "bad", "big", "out", "key", "fifo", "", ".kbucket"):
        assert standins.find((name,)) is None, name
    assert standins.find(()) is None


def test_size_limit_is_the_files_not_the_json(tmp_path: Path) -> None:
    text = prv_text()
    (tmp_path / "edge.prv").write_bytes(text + b" " * (MAX_STANDIN_BYTES - len(text)))
    (tmp_path / "over.prv").write_bytes(text + b" " * (MAX_STANDIN_BYTES - len(text) + 1))
    files, found = listing_of(tmp_path)
    assert (files, found) == (["over.prv"], ["edge"])


def test_standins_in_subfolders(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.dat.prv").write_bytes(prv_text("deep.dat"))
    assert listing_of(tmp_path, "a", "b") == ([], ["deep.dat"])
    standin = Standins(ShareDir(tmp_path)).find(("a", "b", "deep.dat"))
    assert standin is not None
    assert standin.prv.path == "deep.dat"
