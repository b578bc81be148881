"""kbproto.chunks: the ``chunks`` field, digest lists checked against their root, and
each chunk against its digest; and the field in ``.prv``/``.prvdir`` documents.

The hostile cases (a source lying about the digest list or a chunk) are here as
units: the verifier is the one place every client checks them (docs/security.md,
"Chunk digests"); the route's own tests are in tests/hostile/test_chunk_digests.py.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kbproto.chunks import (
    CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    ChunkListError,
    ChunkSpec,
    DigestList,
    chunk_count,
    chunk_digests,
    chunks_for_range,
    digest_list_root,
    parse_chunk_field,
)
from kbproto.errors import LocalProtocolError, RemoteProtocolError
from kbproto.prv import (
    Prv,
    PrvDir,
    make_prv,
    parse_document,
    parse_prv,
    parse_prvdir,
    serialize_prv,
    serialize_prvdir,
)

SMALL = MIN_CHUNK_SIZE  # 64 KiB chunks keep the test data small


def _content(size: int, seed: int = 13) -> bytes:
    return random.Random(seed).randbytes(size)


def _spec_for(data: bytes, size: int = SMALL) -> tuple[ChunkSpec, bytes]:
    digests = chunk_digests(data, size)
    return ChunkSpec(root=digest_list_root(digests), size=size), digests


# --- the field ---------------------------------------------------------------------


def test_the_field_writers_write() -> None:
    spec = ChunkSpec(root="ab" * 32)
    assert spec.to_json_object() == {"algorithm": "sha256", "size": 1048576, "root": "ab" * 32}
    assert parse_chunk_field(spec.to_json_object()) == (spec, None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("sha256", "must be a JSON object"),
        ({"algorithm": "blake3", "size": CHUNK_SIZE, "root": "00" * 32}, "'blake3' is not"),
        ({"size": CHUNK_SIZE, "root": "00" * 32}, "'None' is not"),
        ({"algorithm": "sha256", "size": 1000, "root": "00" * 32}, "not a power of two"),
        ({"algorithm": "sha256", "size": MIN_CHUNK_SIZE // 2, "root": "00" * 32}, "power"),
        ({"algorithm": "sha256", "size": MAX_CHUNK_SIZE * 2, "root": "00" * 32}, "power"),
        ({"algorithm": "sha256", "size": 3 << 20, "root": "00" * 32}, "power of two"),
        ({"algorithm": "sha256", "size": True, "root": "00" * 32}, "must be an integer"),
        ({"algorithm": "sha256", "size": 1048576.0, "root": "00" * 32}, "must be an integer"),
        ({"algorithm": "sha256", "size": CHUNK_SIZE, "root": "AB" * 32}, "64 lowercase hex"),
        ({"algorithm": "sha256", "size": CHUNK_SIZE, "root": "ab" * 20}, "64 lowercase hex"),
        ({"algorithm": "sha256", "size": CHUNK_SIZE}, "64 lowercase hex"),
    ],
)
def test_a_field_that_cannot_be_checked_is_refused_with_its_reason(
    value: object, problem: str
) -> None:
    spec, reason = parse_chunk_field(value)
    assert spec is None
    assert reason is not None
    assert problem in reason


def test_every_accepted_size() -> None:
    sizes = [1 << bits for bits in range(16, 27)]
    for size in sizes:
        value = {"algorithm": "sha256", "size": size, "root": "0" * 64}
        assert parse_chunk_field(value)[0] == ChunkSpec(root="0" * 64, size=size)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"root": "0" * 64, "algorithm": "sha1"},
        {"root": "0" * 64, "size": 12345},
        {"root": "0" * 63},
    ],
)
def test_an_invalid_spec_cannot_exist(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        ChunkSpec(**kwargs)  # type: ignore[arg-type]


# --- counting and ranges -----------------------------------------------------------


def test_chunk_count() -> None:
    assert chunk_count(0) == 0
    assert chunk_count(1) == 1
    assert chunk_count(CHUNK_SIZE) == 1
    assert chunk_count(CHUNK_SIZE + 1) == 2
    assert chunk_count(3 * SMALL, SMALL) == 3
    assert ChunkSpec(root="0" * 64).list_length(5 * CHUNK_SIZE - 1) == 5 * 32


def test_chunks_for_range() -> None:
    size = 3 * SMALL + 10
    assert chunks_for_range(0, size, size, SMALL) == range(4)
    assert chunks_for_range(SMALL, 2 * SMALL, size, SMALL) == range(1, 2)
    assert chunks_for_range(SMALL - 1, SMALL + 1, size, SMALL) == range(2)
    assert chunks_for_range(5, 5, size, SMALL) == range(0)
    for start, end in ((-1, 5), (5, 4), (0, size + 1)):
        with pytest.raises(LocalProtocolError):
            chunks_for_range(start, end, size, SMALL)


@given(st.integers(0, 10 * SMALL), st.data())
def test_ranges_touch_exactly_the_chunks_holding_their_bytes(
    size: int, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, size))
    touched = {offset // SMALL for offset in range(start, end, max(1, SMALL // 8))}
    if end > start:
        touched |= {(end - 1) // SMALL}
    assert set(chunks_for_range(start, end, size, SMALL)) == touched


def test_chunk_digests_of_a_tiny_file() -> None:
    # The worked example of docs/formats.md: b"hello\n", one chunk.
    digests = chunk_digests(b"hello\n")
    assert digests == hashlib.sha256(b"hello\n").digest()
    assert digest_list_root(digests) == hashlib.sha256(digests).hexdigest()
    assert chunk_digests(b"") == b""


# --- the verifier: honest and lying sources ----------------------------------------


def test_an_honest_list_checks_and_each_chunk_with_it() -> None:
    data = _content(3 * SMALL + 123)
    spec, digests = _spec_for(data)
    checked = DigestList.check(spec, len(data), digests)
    assert checked.count == 4
    assert checked.chunk_span(3) == (3 * SMALL, len(data))
    for index in range(4):
        start, end = checked.chunk_span(index)
        assert checked.chunk_ok(index, data[start:end])
        assert checked.digest(index) == hashlib.sha256(data[start:end]).digest()
    assert checked.chunks_for_range(0, len(data)) == range(4)


def test_an_empty_file_has_an_empty_list() -> None:
    spec, digests = _spec_for(b"")
    assert digests == b""
    checked = DigestList.check(spec, 0, b"")
    assert checked.count == 0
    with pytest.raises(LocalProtocolError):
        checked.chunk_span(0)


def test_a_source_lying_about_the_list_is_detected() -> None:
    data = _content(4 * SMALL)
    spec, digests = _spec_for(data)
    other_spec, other = _spec_for(_content(4 * SMALL, seed=14))
    lies = [
        other,  # another file's list, right length
        digests[:-32],  # one digest short
        digests + digests[:32],  # one too many
        b"",  # nothing
        bytes(len(digests)),  # zeros
        digests[:32] + bytes([digests[32] ^ 1]) + digests[33:],  # one bit flipped
        digests[32:64] + digests[:32] + digests[64:],  # two digests swapped
    ]
    for lie in lies:
        with pytest.raises(ChunkListError) as caught:
            DigestList.check(spec, len(data), lie)
        assert isinstance(caught.value, RemoteProtocolError)
    # The right list checked against the wrong size (a lying length) fails too.
    with pytest.raises(ChunkListError):
        DigestList.check(spec, len(data) + SMALL, digests)
    with pytest.raises(ChunkListError):
        DigestList.check(other_spec, len(data), digests)


def test_a_source_lying_about_one_chunk_is_caught_in_that_chunk() -> None:
    data = bytearray(_content(4 * SMALL))
    spec, digests = _spec_for(bytes(data))
    checked = DigestList.check(spec, len(data), digests)
    data[2 * SMALL + 77] ^= 0x40
    verdicts = [
        checked.chunk_ok(index, bytes(data[index * SMALL : (index + 1) * SMALL]))
        for index in range(4)
    ]
    assert verdicts == [True, True, False, True]
    # Short, long and misplaced chunks fail as well.
    assert not checked.chunk_ok(0, bytes(data[: SMALL - 1]))
    assert not checked.chunk_ok(0, bytes(data[: SMALL + 1]))
    assert not checked.chunk_ok(1, bytes(data[:SMALL]))


def test_the_verifier_refuses_misuse() -> None:
    spec, digests = _spec_for(_content(10))
    for size in (-1, 2**63, 1.5, True):
        with pytest.raises(LocalProtocolError):
            DigestList.check(spec, size, digests)  # type: ignore[arg-type]
    checked = DigestList.check(spec, 10, digests)
    for index in (-1, 1, "0"):
        with pytest.raises(LocalProtocolError):
            checked.digest(index)  # type: ignore[arg-type]


# --- the field in .prv and .prvdir documents -----------------------------------------


def _prv(chunks_root: str | None = "cd" * 32) -> Prv:
    return make_prv(
        sha1="a" * 40, size=3, head_sha1="a" * 40, path="x.dat", chunks_root=chunks_root
    )


def test_the_field_round_trips_and_is_written_last() -> None:
    prv = _prv()
    text = serialize_prv(prv)
    assert text.decode() == json.dumps(prv.to_json_object(), indent=4) + "\n"
    assert list(json.loads(text)) == [
        "original_checksum",
        "original_size",
        "original_fcs",
        "original_path",
        "prv_version",
        "chunks",
    ]
    assert parse_prv(text) == prv
    tree = PrvDir(files={"x.dat": prv}, dirs={"d": PrvDir(files={"y": _prv(None)})})
    text = serialize_prvdir(tree)
    assert parse_prvdir(text) == tree
    assert parse_document(text) == tree


def test_an_original_five_field_prv_is_read_as_before() -> None:
    original = {
        "original_checksum": "a" * 40,
        "original_size": 3,
        "original_fcs": "head1000-" + "a" * 40,
        "original_path": "/home/user/x.dat",
        "prv_version": "0.11",
    }
    warnings: list[str] = []
    prv = parse_prv(json.dumps(original), warnings=warnings)
    assert prv.chunks is None
    assert warnings == []
    # Written back: the same five fields, nothing added.
    assert json.loads(serialize_prv(prv)) == original


@pytest.mark.parametrize(
    "value",
    [
        {"algorithm": "md5", "size": CHUNK_SIZE, "root": "00" * 32},
        {"algorithm": "sha256", "size": 1000, "root": "00" * 32},
        {"algorithm": "sha256", "size": CHUNK_SIZE, "root": "zz"},
        [1, 2],
        "sha256",
    ],
)
def test_a_bad_field_is_ignored_with_a_warning_naming_it(value: object) -> None:
    obj = _prv().to_json_object()
    obj["chunks"] = value
    warnings: list[str] = []
    prv = parse_prv(json.dumps(obj), warnings=warnings)
    assert prv.chunks is None
    assert len(warnings) == 1
    assert warnings[0].startswith("chunks ignored")
    # Without a list to report into, it is ignored all the same.
    assert parse_prv(json.dumps(obj)).chunks is None
    tree = {"files": {}, "dirs": {"sub": {"files": {"x.dat": obj}, "dirs": {}}}}
    warnings = []
    parsed = parse_document(json.dumps(tree), warnings=warnings)
    assert isinstance(parsed, PrvDir)
    assert parsed.dirs["sub"].files["x.dat"].chunks is None
    assert warnings
    assert warnings[0].startswith('dirs["sub"].files["x.dat"].chunks ignored')


def test_a_null_field_is_as_if_absent() -> None:
    obj = _prv().to_json_object()
    obj["chunks"] = None
    warnings: list[str] = []
    assert parse_prv(json.dumps(obj), warnings=warnings).chunks is None
    assert warnings == []


def test_a_bad_entry_beside_a_field_still_names_the_entry() -> None:
    obj = _prv().to_json_object()
    obj["original_size"] = -1
    with pytest.raises(RemoteProtocolError, match=r'files\["x"\]\.original_size'):
        parse_prvdir(json.dumps({"files": {"x": obj}, "dirs": {}}))


def test_a_prv_holds_only_a_spec() -> None:
    with pytest.raises(LocalProtocolError, match="chunks"):
        Prv(
            sha1="a" * 40,  # type: ignore[arg-type]
            size=1,
            head_sha1="a" * 40,  # type: ignore[arg-type]
            path="x",
            chunks={"root": "0" * 64},  # type: ignore[arg-type]
        )
