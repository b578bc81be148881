"""The node's configuration file, ``DIR/.kbucket/kbnode.json`` (docs/formats.md §3).

Strategy
--------
``kbnode.json`` is a file people edit by hand and that the original NodeJS tool also
wrote, so this module is deliberately forgiving on read and careful on write:

- Every load reads the file afresh (nothing is cached across runs), so a hand edit
  followed by a restart takes effect.
- Fields we do not know are kept, in their order, and written back unchanged.
- The original's legacy keys are migrated: ``kbnode_id`` -> ``node_id`` and
  ``kbnode_type`` (``share``/``hub``) -> ``node_type`` (``leaf``/``hub``)
  (``src/hemlock/hemlocknodeconfig.js`` did the same migration).
- ``listen_port`` was a string when typed into the original's prompt (``"63240"``);
  we accept both and write an integer.
- A hub's index budget (``index_budget``, ``open_child_quota``: bytes of index, see
  docs/security.md §3) is written only once set, by option or by hand, so a hub that
  never set it follows the release's default. It is written as a size with a unit
  (``"512M"``); a bare whole number, as files from before the budgets were in bytes
  hold (``4000000``), is an entry count, read as kbproto's ``LEGACY_ENTRY_BYTES``
  (80) bytes each (``parse_index_size``).
- A hub's relay cache bound (``cache_size``, bytes; 0 = no cache) is written once the
  hub has run, so the file shows the bound in use; a hand edit may also give it with a
  unit (``"20G"``), read by ``parse_size``.
- A share's upload rate limit (``max_upload_rate``: bytes per second, 0 for none;
  ``kbucket-host --max-upload-rate``) is likewise written only once set.
- Saving writes a temporary file inside ``.kbucket/`` and renames it over the old one,
  so a crash never leaves half a file. The file holds passcodes, so it is 0600.

A corrupt or unreadable file is one clear line naming the file (``SetupError``, exit 2),
never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from kbapps.output import UsageError
from kbapps.sizes import size_in_bytes
from kbproto.budget import LEGACY_ENTRY_BYTES
from kbtransport.origins import canonical_origin

__all__ = (
    "CONFIG_FILE_NAME",
    "INDEX_SIZE_HELP",
    "KBUCKET_DIR_NAME",
    "MAX_CONFIG_BYTES",
    "MAX_INDEX_BYTES",
    "MAX_UPLOAD_RATE",
    "NODE_TYPES",
    "NodeConfig",
    "NodeType",
    "SetupError",
    "ensure_kbucket_dir",
    "kbucket_dir",
    "load_config",
    "parse_index_size",
    "parse_size",
    "save_config",
    "size_text",
)

#: The node's private directory inside the shared directory (never served, docs/security.md).
KBUCKET_DIR_NAME = ".kbucket"
#: The configuration file inside ``.kbucket/``.
CONFIG_FILE_NAME = "kbnode.json"
#: A real kbnode.json is well under 10 KiB; 1 MiB bounds what a broken or hostile file
#: can make us read into memory.
MAX_CONFIG_BYTES = 1024 * 1024
#: Largest index budget or quota accepted (bytes): 1 TiB, beyond any machine's memory;
#: it only keeps a typo from meaning "unbounded".
MAX_INDEX_BYTES = 1024**4
#: Highest upload rate limit accepted (bytes per second): 1 TiB/s, beyond any network
#: link; like ``MAX_INDEX_BYTES`` it only keeps a typo from passing unseen.
MAX_UPLOAD_RATE = 1024**4

NodeType = Literal["leaf", "hub"]
#: The two kinds of node (docs/formats.md §3 ``node_type``).
NODE_TYPES: tuple[NodeType, ...] = ("leaf", "hub")

#: The original tool called shares ``share`` in its legacy ``kbnode_type`` key.
_LEGACY_NODE_TYPES: Mapping[str, NodeType] = {"share": "leaf", "leaf": "leaf", "hub": "hub"}

#: Known string fields, in the order they are written.
_TEXT_FIELDS = (
    "name",
    "scientific_research",
    "description",
    "owner",
    "owner_email",
    "confirm_share",
    "listen_url",
)
_PARENT_FIELDS = ("parent_hub_url", "parent_hub_passcode")
#: A hub's index budget and open children's quota (bytes; kbproto ``Limits``).
_BUDGET_FIELDS = ("index_budget", "open_child_quota")
_KNOWN_FIELDS = frozenset(
    {
        "node_type",
        "node_id",
        "listen_port",
        "passcode",
        "allowed_origins",
        *_TEXT_FIELDS,
        *_PARENT_FIELDS,
        *_BUDGET_FIELDS,
        "cache_size",
        "max_upload_rate",
    }
)
_LEGACY_FIELDS = frozenset({"kbnode_id", "kbnode_type"})
#: The largest relay cache bound accepted (an exbibyte: any real disk is smaller).
MAX_CACHE_SIZE = 1024**6


def parse_size(text: str) -> int:
    """Bytes in ``text`` (``kbapps.sizes``: ``500M``, ``20G``, ``0``).

    Raises:
        ValueError: ``text`` is not a size (or is larger than ``MAX_CACHE_SIZE``).
    """
    size = size_in_bytes(text)
    if size is None:
        raise ValueError(f"not a size: {text!r} (bytes, or with K, M, G or T: 500M, 20G, 0)")
    if size > MAX_CACHE_SIZE:
        raise ValueError(f"too large: {text!r}")
    return size


class SetupError(UsageError):
    """A node cannot be set up; the command prints ``message`` and exits ``exit_code``.

    A ``UsageError``, so ``kbapps.output.run_command`` reports it as one
    ``Error: ...`` line. Exit codes: 1 when the user declined (``no`` to a yes/no
    question), 2 for bad input (a corrupt file, an invalid option, a missing
    certificate, stdin closed).

    Attributes:
        message: one line for the user, naming the file or option at fault.
        exit_code: the process exit code the command should use.
    """


def _frozen_extra(extra: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(extra))


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """The contents of ``kbnode.json`` (docs/formats.md §3).

    Empty strings mean "not answered yet"; ``listen_port`` None means "not set".
    ``extra`` holds the fields this version does not know, kept for the round trip.
    """

    node_type: NodeType
    node_id: str = ""
    name: str = ""
    scientific_research: str = ""
    description: str = ""
    owner: str = ""
    owner_email: str = ""
    #: Shares only: ``"yes"`` once the owner agreed to share the whole directory.
    confirm_share: str = ""
    #: ``"."`` means ``http://localhost:PORT`` (the port actually bound).
    listen_url: str = ""
    listen_port: int | None = None
    #: ``"."`` or empty: no parent hub.
    parent_hub_url: str = ""
    parent_hub_passcode: str = ""
    #: Hubs: what children must present; empty means anyone may join.
    passcode: str = ""
    #: Web origins whose pages may open a websocket or uplink to the node
    #: (``kbtransport.origins``; docs/security.md "Cross-site joins"), in
    #: ``canonical_origin`` form. Set by hand; written back only when not empty.
    allowed_origins: tuple[str, ...] = ()
    #: Hubs: bytes of index held for all children (None: kbproto's default).
    index_budget: int | None = None
    #: Hubs: bytes of index per proven node of a child without the passcode (None:
    #: kbproto's default).
    open_child_quota: int | None = None
    #: Hubs: the relay cache's bound in bytes, 0 = no cache (None: the default).
    cache_size: int | None = None
    #: Shares: the upload rate limit in bytes per second, 0 for none (None: not set,
    #: no limit).
    max_upload_rate: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.node_type not in NODE_TYPES:
            raise ValueError("node_type must be 'leaf' or 'hub'")
        for name in ("node_id", "passcode", *_TEXT_FIELDS, *_PARENT_FIELDS):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string")
        if self.listen_port is not None and not _is_port(self.listen_port):
            raise ValueError("listen_port must be an integer from 0 to 65535")
        if not isinstance(self.allowed_origins, tuple) or any(
            not isinstance(origin, str) or canonical_origin(origin) != origin
            for origin in self.allowed_origins
        ):
            raise ValueError("allowed_origins must be a tuple of canonical origins")
        for name in _BUDGET_FIELDS:
            value = getattr(self, name)
            if value is not None and not _is_index_bytes(value):
                raise ValueError(f"{name} must be an integer from 1 to {MAX_INDEX_BYTES}")
        if self.cache_size is not None and not _is_cache_size(self.cache_size):
            raise ValueError(f"cache_size must be an integer from 0 to {MAX_CACHE_SIZE}")
        if self.max_upload_rate is not None and not _is_rate(self.max_upload_rate):
            raise ValueError(f"max_upload_rate must be an integer from 0 to {MAX_UPLOAD_RATE}")
        if _KNOWN_FIELDS & set(self.extra) or _LEGACY_FIELDS & set(self.extra):
            raise ValueError("extra must hold only unknown fields")
        # Freeze the mapping too, so a NodeConfig cannot change after it is built.
        object.__setattr__(self, "extra", _frozen_extra(self.extra))

    def with_answers(self, **changes: Any) -> NodeConfig:
        """Return a copy with some fields changed (the dataclass stays frozen)."""
        return replace(self, **changes)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object written to ``kbnode.json``: known fields first, then ``extra``.

        ``confirm_share`` is written for shares (and for a hub only if set by hand),
        ``passcode`` for hubs (likewise), so each file holds only what its node uses.
        """
        out: dict[str, Any] = {"node_type": self.node_type, "node_id": self.node_id}
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if name == "confirm_share" and self.node_type == "hub" and not value:
                continue
            out[name] = value
        if self.listen_port is not None:
            out["listen_port"] = self.listen_port
        for name in _PARENT_FIELDS:
            out[name] = getattr(self, name)
        if self.node_type == "hub" or self.passcode:
            out["passcode"] = self.passcode
        if self.allowed_origins:
            out["allowed_origins"] = list(self.allowed_origins)
        for name in _BUDGET_FIELDS:
            if getattr(self, name) is not None:
                out[name] = size_text(getattr(self, name))
        if self.cache_size is not None:
            out["cache_size"] = self.cache_size
        if self.max_upload_rate is not None:
            out["max_upload_rate"] = self.max_upload_rate
        out.update(self.extra)
        return out

    @classmethod
    def from_json_dict(
        cls, data: Mapping[str, Any], *, default_type: NodeType, where: str
    ) -> NodeConfig:
        """Build a config from a parsed ``kbnode.json``, migrating the original's keys.

        Args:
            data: the parsed JSON object.
            default_type: the node type to assume when the file names none.
            where: the file name, for error messages.

        Raises:
            SetupError: a known field has the wrong type (exit 2).
        """
        values: dict[str, Any] = {}
        node_type: Any = data.get("node_type", data.get("kbnode_type", default_type))
        if node_type not in _LEGACY_NODE_TYPES:
            raise SetupError(f'{where}: node_type must be "leaf" or "hub", not {node_type!r}')
        values["node_type"] = _LEGACY_NODE_TYPES[node_type]
        node_id = data.get("node_id", data.get("kbnode_id", ""))
        for name in ("passcode", *_TEXT_FIELDS, *_PARENT_FIELDS):
            if name in data:
                values[name] = data[name]
        values["node_id"] = node_id
        for name, value in values.items():
            if name != "node_type" and not isinstance(value, str):
                raise SetupError(f"{where}: field {name!r} must be a string")
        if "listen_port" in data and data["listen_port"] not in (None, ""):
            values["listen_port"] = _parse_port_field(data["listen_port"], where)
        if "allowed_origins" in data:
            values["allowed_origins"] = _parse_origins_field(data["allowed_origins"], where)
        for name in _BUDGET_FIELDS:
            if data.get(name) is not None:
                size = parse_index_size(data[name])
                if size is None:
                    raise SetupError(f"{where}: field {name!r} must be {INDEX_SIZE_HELP}")
                values[name] = size
        if data.get("cache_size") is not None:
            values["cache_size"] = _parse_cache_size_field(data["cache_size"], where)
        if data.get("max_upload_rate") is not None:
            if not _is_rate(data["max_upload_rate"]):
                raise SetupError(
                    f"{where}: field 'max_upload_rate' must be a number of bytes per second"
                    f" from 0 (no limit) to {MAX_UPLOAD_RATE}"
                )
            values["max_upload_rate"] = data["max_upload_rate"]
        extra = {k: v for k, v in data.items() if k not in _KNOWN_FIELDS | _LEGACY_FIELDS}
        return cls(**values, extra=extra)


#: What ``parse_index_size`` accepts, for error messages.
INDEX_SIZE_HELP = (
    "a size of index in bytes with a unit (512M, 2G) up to 1T, or an old count of"
    f" index entries ({LEGACY_ENTRY_BYTES} bytes each)"
)


def parse_index_size(value: object) -> int | None:
    """Bytes of index that a budget or quota ``value`` names, or None if it names none
    (or none from 1 byte to ``MAX_INDEX_BYTES``).

    A size with a unit (``"512M"``, ``"2GiB"``, ``"4096B"``) is bytes. A bare whole
    number, a JSON integer or digits alone, is an *entry count* as budgets were given
    before they were in bytes (``--index-budget 4000000``), read as
    ``kbproto.budget.LEGACY_ENTRY_BYTES`` (80) bytes each: an old setting keeps
    bounding the index near where it did.
    """
    size: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        size = value * LEGACY_ENTRY_BYTES
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        size = int(value.strip()) * LEGACY_ENTRY_BYTES
    elif isinstance(value, str) and value.strip():
        size = size_in_bytes(value)
    return size if _is_index_bytes(size) else None


def size_text(size: int) -> str:
    """``size`` bytes as ``parse_index_size`` reads it back: with the largest unit that
    divides it (``"512M"``), else ``"<n>B"``."""
    for unit in ("T", "G", "M", "K"):
        scale = _UNIT_BYTES[unit]
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


_UNIT_BYTES = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _is_index_bytes(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INDEX_BYTES


def _is_cache_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CACHE_SIZE


def _parse_cache_size_field(value: Any, where: str) -> int:
    # Written as bytes; a hand edit may use a unit ("20G").
    if isinstance(value, str):
        try:
            value = parse_size(value)
        except ValueError:
            value = None
    if not _is_cache_size(value):
        raise SetupError(
            f"{where}: field 'cache_size' must be a size in bytes, or with K, M, G or T"
            " (500M, 20G; 0 = no cache)"
        )
    size: int = value
    return size


def _is_rate(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_UPLOAD_RATE


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535


def _parse_port_field(value: Any, where: str) -> int:
    # The original stored a typed port as a string ("63240") and a defaulted one as a
    # number; both are accepted.
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not _is_port(value):
        raise SetupError(f"{where}: field 'listen_port' must be a port number from 0 to 65535")
    port: int = value
    return port


def _parse_origins_field(value: Any, where: str) -> tuple[str, ...]:
    # A list of origins as browsers send them; each is stored in canonical form, so
    # "HTTPS://Example.org:443" and "https://example.org" are one origin.
    if not isinstance(value, list):
        raise SetupError(f"{where}: field 'allowed_origins' must be a list of origins")
    origins: list[str] = []
    for item in value:
        try:
            origin = canonical_origin(item) if isinstance(item, str) else None
        except ValueError:
            origin = None
        if origin is None:
            raise SetupError(
                f"{where}: field 'allowed_origins': {item!r} is not an origin"
                " (scheme://host[:port], e.g. https://example.org)"
            )
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def kbucket_dir(directory: Path) -> Path:
    """Return ``DIR/.kbucket`` (whether or not it exists)."""
    return directory / KBUCKET_DIR_NAME


def ensure_kbucket_dir(directory: Path) -> bool:
    """Create ``DIR/.kbucket/`` with mode 0700 if needed; return True if it was created.

    An existing ``.kbucket/`` that others can read (the original tool used the umask)
    is tightened to 0700, since it holds the private key and passcodes.

    Raises:
        SetupError: DIR is missing or not a directory, or ``.kbucket`` cannot be made.
    """
    if not directory.is_dir():
        raise SetupError(f"{directory}: not a directory")
    path = kbucket_dir(directory)
    try:
        path.mkdir(mode=0o700)
        created = True
    except FileExistsError:
        created = False
    except OSError as exc:
        raise SetupError(f"{path}: cannot create directory: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise SetupError(f"{path}: exists but is not a directory")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != 0o700:
            # mkdir's mode is filtered by the umask; chmod is not.
            path.chmod(0o700)
    except OSError as exc:
        if created:
            raise SetupError(f"{path}: cannot set mode 0700: {exc.strerror or exc}") from None
        # Not ours to change (another owner): keep going with what is there.
    return created


def load_config(directory: Path, *, default_type: NodeType) -> NodeConfig | None:
    """Read ``DIR/.kbucket/kbnode.json``; None if the file does not exist.

    Args:
        directory: the node directory (holding ``.kbucket/``).
        default_type: the node type assumed when the file names none.

    Raises:
        SetupError: the file is unreadable, too large, not JSON, not an object, or a
            known field has the wrong type (exit 2; the message names the file).
    """
    path = kbucket_dir(directory) / CONFIG_FILE_NAME
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SetupError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise SetupError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a kbnode.json")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SetupError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise SetupError(
            f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:
        raise SetupError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise SetupError(f"{path}: must hold a JSON object")
    return NodeConfig.from_json_dict(data, default_type=default_type, where=str(path))


def save_config(directory: Path, config: NodeConfig) -> Path:
    """Write ``config`` to ``DIR/.kbucket/kbnode.json`` atomically; return the path.

    4-space JSON with a final newline, written to a temporary file (mode 0600) in
    ``.kbucket/`` and renamed over the old file, so readers see the old or the new
    file, never a mix.

    Raises:
        SetupError: the file cannot be written (exit 2).
    """
    folder = kbucket_dir(directory)
    path = folder / CONFIG_FILE_NAME
    text = json.dumps(config.to_json_dict(), indent=4, ensure_ascii=False) + "\n"
    tmp_name = ""
    try:
        # mkstemp creates the file with mode 0600 from the start.
        fd, tmp_name = tempfile.mkstemp(prefix=".kbnode-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = ""
    except OSError as exc:
        raise SetupError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        if tmp_name:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    return path
