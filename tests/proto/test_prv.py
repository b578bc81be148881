"""The pure ``.prv``/``.prvdir`` models: exact bytes, round trips, and bad input."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbproto.chunks import ChunkSpec
from kbproto.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from kbproto.ids import Sha1
from kbproto.prv import (
    PRV_VERSION,
    Prv,
    PrvDir,
    PrvFormatError,
    PrvLimits,
    is_valid_entry_name,
    make_prv,
    parse_document,
    parse_prv,
    parse_prvdir,
    serialize_prv,
    serialize_prvdir,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "prv"
SHA_A = Sha1("d2db36ea25377cc8217f87cef0ecff71e7645d53")
SHA_B = Sha1("576418509284cbe426fa53fa4aa8da5fee1ab095")


def _json_of(tree: PrvDir) -> dict[str, Any]:
    return {
        "files": {name: prv.to_json_object() for name, prv in tree.files.items()},
        "dirs": {name: _json_of(sub) for name, sub in tree.dirs.items()},
    }


# --- strategies ----------------------------------------------------------------------

hex40 = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40).map(Sha1)
# Any text that can be written as UTF-8 (no lone surrogates) and holds no NUL.
text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=40,
)
names = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="/\\\x00"),
    min_size=1,
    max_size=12,
).filter(lambda n: not n.startswith("."))
prvs = st.builds(
    Prv,
    sha1=hex40,
    size=st.integers(min_value=0, max_value=2**63 - 1),
    head_sha1=hex40,
    path=text,
    version=st.sampled_from([PRV_VERSION, "0.1", "0.99-beta"]),
    chunks=st.none()
    | st.builds(
        ChunkSpec,
        root=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        size=st.sampled_from([1 << 16, 1 << 20, 1 << 26]),
    ),
)
prvdirs = st.recursive(
    st.builds(PrvDir, files=st.dictionaries(names, prvs, max_size=3)),
    lambda children: st.builds(
        PrvDir,
        files=st.dictionaries(names.map(lambda n: "f" + n), prvs, max_size=3),
        dirs=st.dictionaries(names.map(lambda n: "d" + n), children, max_size=3),
    ),
    max_leaves=12,
)


# --- exact bytes ---------------------------------------------------------------------


def _root_of(path: Path) -> str:
    # The chunks root computed here with hashlib alone (docs/formats.md).
    data = path.read_bytes()
    digests = b"".join(
        hashlib.sha256(data[at : at + (1 << 20)]).digest() for at in range(0, len(data), 1 << 20)
    )
    return hashlib.sha256(digests).hexdigest()


def test_serialize_prv_matches_hand_written_file() -> None:
    prv = make_prv(
        sha1=SHA_A,
        size=2500,
        head_sha1=SHA_B,
        path="sample.dat",
        chunks_root=_root_of(DATA / "sample.dat"),
    )
    assert serialize_prv(prv) == (DATA / "sample.dat.prv").read_bytes()


def test_serialize_prvdir_matches_hand_written_file() -> None:
    def p(sha: str, size: int, path: str, head: str | None = None) -> Prv:
        root = _root_of(DATA / "tree" / path)
        return make_prv(sha1=sha, size=size, head_sha1=head or sha, path=path, chunks_root=root)

    tree = PrvDir(
        files={"a.txt": p("d046cd9b7ffb7661e449683313d41f6fc33e3130", 6, "a.txt")},
        dirs={
            "sub": PrvDir(
                files={"b.bin": p(SHA_A, 2500, "sub/b.bin", SHA_B)},
                dirs={
                    "deeper": PrvDir(
                        files={
                            "c é.txt": p(
                                "79c4fd9cf1d94a0603860ba85c16db27f217fd3e",
                                13,
                                "sub/deeper/c é.txt",
                            )
                        }
                    )
                },
            )
        },
    )
    assert serialize_prvdir(tree) == (DATA / "tree.prvdir").read_bytes()


@settings(max_examples=60, deadline=None)
@given(prvs)
def test_serialize_prv_is_json_dumps_indent_4(prv: Prv) -> None:
    expected = json.dumps(prv.to_json_object(), indent=4, ensure_ascii=False) + "\n"
    assert serialize_prv(prv) == expected.encode("utf-8")


@settings(max_examples=40, deadline=None)
@given(prvdirs)
def test_serialize_prvdir_is_json_dumps_indent_4_sorted(tree: PrvDir) -> None:
    expected = json.dumps(_json_of(tree), indent=4, ensure_ascii=False) + "\n"
    assert serialize_prvdir(tree) == expected.encode("utf-8")


def test_prvdir_keys_are_sorted_whatever_the_insertion_order() -> None:
    prv = make_prv(sha1=SHA_A, size=1, head_sha1=SHA_A, path="x")
    tree = PrvDir(files={"b": prv, "a": prv, "B": prv}, dirs={"z": PrvDir(), "c": PrvDir()})
    assert list(tree.files) == ["B", "a", "b"]
    assert list(tree.dirs) == ["c", "z"]
    text = serialize_prvdir(tree).decode()
    assert text.index('"B"') < text.index('"a"') < text.index('"b"')
    assert text.index('"c"') < text.index('"z"')


# --- round trips ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(prvs)
def test_prv_round_trip(prv: Prv) -> None:
    assert parse_prv(serialize_prv(prv)) == prv
    assert parse_document(serialize_prv(prv)) == prv


@settings(max_examples=60, deadline=None)
@given(prvdirs)
def test_prvdir_round_trip(tree: PrvDir) -> None:
    assert parse_prvdir(serialize_prvdir(tree)) == tree
    assert parse_document(serialize_prvdir(tree)) == tree


def test_deep_and_wide_trees_round_trip_without_recursion() -> None:
    prv = make_prv(sha1=SHA_A, size=1, head_sha1=SHA_A, path="x")
    deep = PrvDir(files={"leaf": prv})
    for _ in range(PrvLimits().max_depth):
        deep = PrvDir(dirs={"d": deep})
    assert parse_prvdir(serialize_prvdir(deep)) == deep
    wide = PrvDir(files={f"f{i:06d}": prv for i in range(20_000)})
    assert parse_prvdir(serialize_prvdir(wide)).count() == (20_000, 0)


def test_equality_and_repr_are_structural_and_iterative() -> None:
    prv = make_prv(sha1=SHA_A, size=1, head_sha1=SHA_A, path="x")
    shared = PrvDir(files={"f": prv})
    one = PrvDir(dirs={"a": shared, "b": PrvDir(files={"g": prv})})
    same = PrvDir(dirs={"a": shared, "b": PrvDir(files={"g": prv})})
    other = PrvDir(dirs={"a": shared, "b": PrvDir(files={"h": prv})})
    assert one == same
    assert one != other
    assert one != PrvDir(dirs={"a": shared})
    assert one != "not a tree"
    assert repr(one) == "PrvDir(<2 files, 2 dirs>)"
    with pytest.raises(TypeError):
        hash(one)


def test_iter_files_and_count() -> None:
    prv = make_prv(sha1=SHA_A, size=1, head_sha1=SHA_A, path="x")
    tree = PrvDir(
        files={"z": prv}, dirs={"b": PrvDir(files={"y": prv}), "a": PrvDir(dirs={"c": PrvDir()})}
    )
    assert [path for path, _ in tree.iter_files()] == ["z", "b/y"]
    assert tree.count() == (2, 3)


# --- reading what the original tool wrote -------------------------------------------


def test_reads_original_tool_files_with_absolute_paths_and_no_final_newline() -> None:
    for name in ("original-tool.prv", "original-tool-no-newline.prv"):
        prv = parse_prv((DATA / name).read_bytes())
        assert prv.path == "/home/user/data/params.json"
        assert prv.size == 3412
        assert prv.fcs == "head1000-0b5f4a6c3e0c2a1b9f8e7d6c5b4a39281706f5e4"


def test_reader_accepts_extra_fields_other_0x_versions_and_a_bom() -> None:
    obj = make_prv(sha1=SHA_A, size=5, head_sha1=SHA_B, path="a").to_json_object()
    obj["prv_version"] = "0.9"
    obj["comment"] = {"anything": [1, 2]}
    prv = parse_prv(("\ufeff" + json.dumps(obj)).encode())
    assert prv.version == "0.9"
    assert prv.sha1 == SHA_A
    tree = parse_prvdir(json.dumps({"files": {"a": obj}, "dirs": {}, "note": 1}))
    assert tree.files["a"] == prv


# --- bad input -----------------------------------------------------------------------


def _prv_obj(**changes: object) -> dict[str, object]:
    obj: dict[str, object] = make_prv(
        sha1=SHA_A, size=5, head_sha1=SHA_B, path="a"
    ).to_json_object()
    for key, value in changes.items():
        if value is _DROP:
            del obj[key]
        else:
            obj[key] = value
    return obj


_DROP = object()


@pytest.mark.parametrize(
    ("document", "field", "problem"),
    [
        (b"not json", "", "not JSON"),
        (b"\xff\xfe", "", "not UTF-8"),
        (b"[1, 2]", "", "must be a JSON object"),
        (b"[" * 100_000, "", "nested too deeply"),
        (b"1" * 5000, "", "not usable JSON"),
        (12345, "", "must be bytes or text"),
        (_prv_obj(original_checksum=_DROP), "original_checksum", "missing"),
        (_prv_obj(original_checksum="abc"), "original_checksum", "40 lowercase hex"),
        (_prv_obj(original_checksum=SHA_A.upper()), "original_checksum", "40 lowercase"),
        (_prv_obj(original_checksum=1), "original_checksum", "40 lowercase hex"),
        (_prv_obj(original_size=-1), "original_size", "negative"),
        (_prv_obj(original_size=1.5), "original_size", "integer"),
        (_prv_obj(original_size=True), "original_size", "integer"),
        (_prv_obj(original_size="5"), "original_size", "integer"),
        (_prv_obj(original_size=2**63), "original_size", "too large"),
        (_prv_obj(original_fcs=SHA_B), "original_fcs", "head1000-"),
        (_prv_obj(original_fcs="head1000-xyz"), "original_fcs", "head1000-"),
        (_prv_obj(original_fcs=_DROP), "original_fcs", "missing"),
        (_prv_obj(original_path=3), "original_path", "string"),
        (_prv_obj(original_path="a\x00b"), "original_path", "not valid text"),
        (_prv_obj(original_path="\ud800"), "original_path", "not valid text"),
        (_prv_obj(original_path="x" * 5000), "original_path", "longer"),
        (_prv_obj(prv_version="1.0"), "prv_version", '"0."'),
        (_prv_obj(prv_version=_DROP), "prv_version", "missing"),
    ],
)
def test_bad_prv_names_the_field(
    document: bytes | int | dict[str, object], field: str, problem: str
) -> None:
    data = json.dumps(document).encode() if isinstance(document, dict) else document
    with pytest.raises(PrvFormatError) as info:
        parse_prv(data)  # type: ignore[arg-type]  # ints are bad input too
    assert info.value.field == field
    assert problem in str(info.value)
    assert isinstance(info.value, RemoteProtocolError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"files": {}}, "dirs"),
        ({"dirs": {}}, "files"),
        ({"files": [], "dirs": {}}, "files"),
        ({"files": {}, "dirs": {"..": {"files": {}, "dirs": {}}}}, 'dirs[".."]'),
        ({"files": {"../x": _prv_obj()}, "dirs": {}}, 'files["../x"]'),
        ({"files": {".bashrc": _prv_obj()}, "dirs": {}}, 'files[".bashrc"]'),
        ({"files": {"a\\b": _prv_obj()}, "dirs": {}}, 'files["a\\\\b"]'),
        ({"files": {"": _prv_obj()}, "dirs": {}}, 'files[""]'),
        ({"files": {}, "dirs": {"d": 3}}, 'dirs["d"]'),
        ({"files": {}, "dirs": {"d": {"files": {}}}}, 'dirs["d"].dirs'),
        ({"files": {"a": _prv_obj()}, "dirs": {"a": {"files": {}, "dirs": {}}}}, 'dirs["a"]'),
        (
            {"files": {}, "dirs": {"d": {"files": {"x": _prv_obj(original_size=-4)}, "dirs": {}}}},
            'dirs["d"].files["x"].original_size',
        ),
        ({"files": {"x": "not an object"}, "dirs": {}}, 'files["x"]'),
        ({"files": {"ok": _prv_obj()}, "dirs": {".x": {"files": {}, "dirs": {}}}}, 'dirs[".x"]'),
    ],
)
def test_bad_prvdir_names_the_field(document: dict[str, object], field: str) -> None:
    with pytest.raises(PrvFormatError) as info:
        parse_prvdir(json.dumps(document))
    assert info.value.field == field


def test_prvdir_limits() -> None:
    deep: dict[str, Any] = {"files": {}, "dirs": {}}
    for _ in range(5):
        deep = {"files": {}, "dirs": {"d": deep}}
    data = json.dumps(deep)
    assert parse_prvdir(data, limits=PrvLimits(max_depth=5)).count() == (0, 5)
    with pytest.raises(PrvFormatError, match="nested too deeply"):
        parse_prvdir(data, limits=PrvLimits(max_depth=4))
    with pytest.raises(PrvFormatError, match="more than 4 entries"):
        parse_prvdir(data, limits=PrvLimits(max_entries=4))
    with pytest.raises(PrvFormatError, match="larger than 10 bytes"):
        parse_prvdir(data, limits=PrvLimits(max_bytes=10))


def test_a_prv_is_not_mistaken_for_an_empty_prvdir() -> None:
    with pytest.raises(PrvFormatError, match="files: missing"):
        parse_prvdir(json.dumps(_prv_obj()))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_give_a_protocol_error_or_a_model(data: bytes) -> None:
    try:
        result = parse_document(data)
    except ProtocolError:
        return
    assert isinstance(result, Prv | PrvDir)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=80, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "files": st.dictionaries(
                st.text(max_size=5), json_values | st.builds(_prv_obj), max_size=3
            ),
            "dirs": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
            "original_checksum": st.just(SHA_A) | json_values,
            "original_size": st.integers() | json_values,
            "original_fcs": st.just("head1000-" + SHA_B) | json_values,
            "original_path": json_values,
            "prv_version": st.just("0.11") | json_values,
        },
    )
)
def test_structured_garbage_gives_only_protocol_errors(document: dict[str, object]) -> None:
    data = json.dumps(document)
    for parse in (parse_prv, parse_prvdir, parse_document):
        with contextlib.suppress(ProtocolError):
            parse(data)


@settings(max_examples=40, deadline=None)
@given(prvdirs, st.data())
def test_every_truncation_of_a_valid_prvdir_is_a_clean_error(
    tree: PrvDir, data: st.DataObject
) -> None:
    raw = serialize_prvdir(tree)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 2))
    with pytest.raises(PrvFormatError):
        parse_prvdir(raw[:cut])


# --- building models -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/abs/x", "\\x", "C:\\x", "c:/x", "", "a//b", "../x", ".hidden"])
def test_make_prv_refuses_paths_that_are_not_relative(path: str) -> None:
    with pytest.raises(LocalProtocolError, match="relative"):
        make_prv(sha1=SHA_A, size=1, head_sha1=SHA_A, path=path)


def test_make_prv_accepts_nested_relative_paths() -> None:
    assert make_prv(sha1=SHA_A, size=1, head_sha1=SHA_A, path="a/b c/d.txt").path == "a/b c/d.txt"


@pytest.mark.parametrize(
    "changes",
    [
        {"sha1": "x"},
        {"size": -1},
        {"size": True},
        {"head_sha1": SHA_A.upper()},
        {"path": "\ud800"},
        {"path": 5},
        {"version": "1.0"},
        {"version": "0." + "9" * 40},
    ],
)
def test_invalid_prv_cannot_exist(changes: dict[str, object]) -> None:
    values: dict[str, object] = {"sha1": SHA_A, "size": 1, "head_sha1": SHA_A, "path": "x"}
    values.update(changes)
    with pytest.raises(LocalProtocolError):
        Prv(**values)  # type: ignore[arg-type]


def test_invalid_prvdir_cannot_exist() -> None:
    prv = make_prv(sha1=SHA_A, size=1, head_sha1=SHA_A, path="x")
    with pytest.raises(LocalProtocolError, match="invalid entry name"):
        PrvDir(files={"a/b": prv})
    with pytest.raises(LocalProtocolError, match="must be a Prv"):
        PrvDir(files={"a": PrvDir()})  # type: ignore[dict-item]
    with pytest.raises(LocalProtocolError, match="both a file and a dir"):
        PrvDir(files={"a": prv}, dirs={"a": PrvDir()})
    with pytest.raises(LocalProtocolError, match="must be a mapping"):
        PrvDir(files=[("a", prv)])  # type: ignore[arg-type]
    tree = PrvDir(files={"a": prv})
    with pytest.raises(TypeError):
        tree.files["b"] = prv  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("é" * 127, True),
        ("é" * 128, False),
        ("x" * 255, True),
        ("x" * 256, False),
        (".x", False),
        ("", False),
        ("a/b", False),
        ("a\\b", False),
        ("a\x00", False),
        ("a\udcff", False),
        (3, False),
    ],
)
def test_entry_names(name: object, ok: bool) -> None:
    assert is_valid_entry_name(name) is ok
