"""kbnode.json: round trip with unknown fields, legacy migration, errors, atomic 0600 writes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from kbapps.config import (
    MAX_CONFIG_BYTES,
    NodeConfig,
    SetupError,
    ensure_kbucket_dir,
    load_config,
    parse_index_size,
    save_config,
    size_text,
)


def _write(directory: Path, text: str | bytes) -> Path:
    kb = directory / ".kbucket"
    kb.mkdir(exist_ok=True)
    path = kb / "kbnode.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert load_config(tmp_path, default_type="leaf") is None
    ensure_kbucket_dir(tmp_path)
    assert load_config(tmp_path, default_type="leaf") is None


def test_round_trip_keeps_unknown_fields_and_writes_4_space_json(tmp_path: Path) -> None:
    original = {
        "node_type": "hub",
        "node_id": "0123456789ab",
        "name": "hub one",
        "scientific_research": "yes",
        "mystery": {"nested": [1, 2, 3]},
        "listen_port": 3240,
        "passcode": "pw",
        "zz_last": None,
    }
    _write(tmp_path, json.dumps(original))
    config = load_config(tmp_path, default_type="leaf")
    assert config is not None
    assert config.node_type == "hub"
    assert config.listen_port == 3240
    assert dict(config.extra) == {"mystery": {"nested": [1, 2, 3]}, "zz_last": None}
    path = save_config(tmp_path, config.with_answers(name="renamed"))
    text = path.read_text()
    assert text.endswith("}\n")
    assert '\n    "node_type": "hub",\n' in text  # 4-space indentation
    data = json.loads(text)
    assert data["mystery"] == {"nested": [1, 2, 3]}
    assert data["zz_last"] is None
    assert data["name"] == "renamed"
    assert list(data)[:2] == ["node_type", "node_id"]
    assert "confirm_share" not in data  # a hub has no confirm_share unless set by hand
    again = load_config(tmp_path, default_type="leaf")
    assert again == config.with_answers(name="renamed")


def test_save_is_atomic_0600_and_leaves_no_temp_files(tmp_path: Path) -> None:
    ensure_kbucket_dir(tmp_path)
    path = save_config(tmp_path, NodeConfig(node_type="leaf", name="x", passcode="secret"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["kbnode.json"]
    data = json.loads(path.read_text())
    assert data["confirm_share"] == ""  # shares always write it
    assert data["passcode"] == "secret"  # written for a share only because it is set


def test_legacy_keys_are_migrated_and_dropped(tmp_path: Path) -> None:
    _write(
        tmp_path,
        json.dumps({"kbnode_type": "share", "kbnode_id": "946631a0304e", "network_type": "x"}),
    )
    config = load_config(tmp_path, default_type="hub")
    assert config is not None
    assert (config.node_type, config.node_id) == ("leaf", "946631a0304e")
    save_config(tmp_path, config)
    data = json.loads((tmp_path / ".kbucket" / "kbnode.json").read_text())
    assert "kbnode_id" not in data
    assert "kbnode_type" not in data
    assert data["node_id"] == "946631a0304e"
    assert data["network_type"] == "x"


def test_new_keys_win_over_legacy_keys(tmp_path: Path) -> None:
    _write(
        tmp_path,
        json.dumps({"node_type": "hub", "kbnode_type": "share", "node_id": "a", "kbnode_id": "b"}),
    )
    config = load_config(tmp_path, default_type="leaf")
    assert config is not None
    assert (config.node_type, config.node_id) == ("hub", "a")


def test_string_port_from_the_original_becomes_an_int(tmp_path: Path) -> None:
    _write(tmp_path, json.dumps({"node_type": "hub", "listen_port": "63240"}))
    config = load_config(tmp_path, default_type="hub")
    assert config is not None
    assert config.listen_port == 63240


def test_missing_node_type_takes_the_default(tmp_path: Path) -> None:
    _write(tmp_path, "{}")
    config = load_config(tmp_path, default_type="hub")
    assert config is not None
    assert config.node_type == "hub"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON (line 1 column 2"),
        ("[1, 2]", "must hold a JSON object"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        ('{"name": 5}', "field 'name' must be a string"),
        ('{"node_type": "share-ish"}', "node_type must be"),
        ('{"listen_port": "80a"}', "'listen_port' must be a port number"),
        ('{"listen_port": 70000}', "'listen_port' must be a port number"),
        ('{"listen_port": true}', "'listen_port' must be a port number"),
        pytest.param("[" * 100_000 + "]" * 100_000, "kbnode.json: ", id="deeply-nested"),
        ('{"allowed_origins": "https://a.org"}', "'allowed_origins' must be a list"),
        ('{"allowed_origins": ["*"]}', "'*' is not an origin"),
        ('{"allowed_origins": ["null"]}', "'null' is not an origin"),
        ('{"allowed_origins": ["https://a.org/page"]}', "is not an origin"),
        ('{"allowed_origins": ["ftp://a.org"]}', "is not an origin"),
        ('{"allowed_origins": [5]}', "5 is not an origin"),
    ],
)
def test_corrupt_file_is_one_line_naming_the_file(
    tmp_path: Path, content: str | bytes, expected: str
) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(SetupError) as info:
        load_config(tmp_path, default_type="leaf")
    assert info.value.exit_code == 2
    assert str(path) in info.value.message
    assert expected in info.value.message
    assert "\n" not in info.value.message


def test_allowed_origins_are_read_canonical_and_written_only_when_set(tmp_path: Path) -> None:
    origins = ["HTTPS://Lab.Example.org:443/", "http://127.0.0.1:8080", "https://lab.example.org"]
    _write(tmp_path, json.dumps({"node_type": "hub", "allowed_origins": origins}))
    config = load_config(tmp_path, default_type="hub")
    assert config is not None
    assert config.allowed_origins == ("https://lab.example.org", "http://127.0.0.1:8080")
    saved = json.loads(save_config(tmp_path, config).read_text())
    assert saved["allowed_origins"] == ["https://lab.example.org", "http://127.0.0.1:8080"]
    plain = json.loads(save_config(tmp_path, NodeConfig(node_type="hub")).read_text())
    assert "allowed_origins" not in plain
    with pytest.raises(ValueError, match="allowed_origins"):
        NodeConfig(node_type="hub", allowed_origins=("HTTPS://a.org",))


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, '{"x": "' + "a" * MAX_CONFIG_BYTES + '"}')
    with pytest.raises(SetupError, match="larger than"):
        load_config(tmp_path, default_type="leaf")


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / ".kbucket" / "kbnode.json").mkdir(parents=True)  # a directory: read fails
    with pytest.raises(SetupError, match="cannot read"):
        load_config(tmp_path, default_type="leaf")


def test_kbucket_dir_is_0700_and_tightened(tmp_path: Path) -> None:
    assert ensure_kbucket_dir(tmp_path) is True
    kb = tmp_path / ".kbucket"
    assert stat.S_IMODE(kb.stat().st_mode) == 0o700
    kb.chmod(0o755)
    assert ensure_kbucket_dir(tmp_path) is False
    assert stat.S_IMODE(kb.stat().st_mode) == 0o700


def test_kbucket_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="not a directory"):
        ensure_kbucket_dir(tmp_path / "missing")
    (tmp_path / ".kbucket").write_text("a file")
    with pytest.raises(SetupError, match="exists but is not a directory"):
        ensure_kbucket_dir(tmp_path)


def test_config_is_frozen_and_validated() -> None:
    config = NodeConfig(node_type="leaf", extra={"a": 1})
    with pytest.raises(AttributeError):
        config.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.extra["b"] = 2  # type: ignore[index]
    with pytest.raises(ValueError, match="node_type"):
        NodeConfig(node_type="share")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="listen_port"):
        NodeConfig(node_type="hub", listen_port=-1)
    with pytest.raises(ValueError, match="unknown fields"):
        NodeConfig(node_type="hub", extra={"name": "x"})
    with pytest.raises(TypeError, match="name"):
        NodeConfig(node_type="hub", name=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index_budget must be an integer from 1 to 1099511627776"):
        NodeConfig(node_type="hub", index_budget=0)
    with pytest.raises(ValueError, match="open_child_quota"):
        NodeConfig(node_type="hub", open_child_quota=True)


def test_setup_error_is_reported_by_run_command() -> None:
    import io

    from kbapps.output import UsageError, run_command

    def body() -> int:
        raise SetupError("kbnode.json: broken", exit_code=1)

    err = io.StringIO()
    assert issubclass(SetupError, UsageError)
    assert run_command(body, stream=err) == 1
    assert err.getvalue() == "Error: kbnode.json: broken\n"


def test_max_upload_rate_round_trips_and_is_checked() -> None:
    config = NodeConfig(node_type="leaf", max_upload_rate=2 * 1024 * 1024)
    data = config.to_json_dict()
    assert data["max_upload_rate"] == 2 * 1024 * 1024
    back = NodeConfig.from_json_dict(data, default_type="leaf", where="kbnode.json")
    assert back == config
    assert "max_upload_rate" not in NodeConfig(node_type="leaf").to_json_dict()
    with pytest.raises(ValueError, match="max_upload_rate must be an integer from 0"):
        NodeConfig(node_type="leaf", max_upload_rate=-1)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512M", 512 * 1024**2),
        (" 2GiB ", 2 * 1024**3),
        ("4096B", 4096),
        ("1T", 1024**4),
        # Budgets in entries, from before they were in bytes: 80 bytes an entry.
        (4_000_000, 320_000_000),
        ("5", 400),
        # Not a budget: zero, over 1 TiB, not a size, JSON's true and 1.5.
        ("0", None),
        ("2T", None),
        ("lots", None),
        ("", None),
        ("\u00b2", None),
        (True, None),
        (1.5, None),
    ],
)
def test_index_sizes_are_bytes_with_a_unit_or_old_entry_counts(
    value: object, size: int | None
) -> None:
    assert parse_index_size(value) == size
    if size is not None:
        assert parse_index_size(size_text(size)) == size  # what a save writes reads back
