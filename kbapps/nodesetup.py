"""Set-up of a node before it runs: ``kbucket-host`` and ``kbucket-hub`` (docs/commands.md).

Strategy
--------
``setup_node`` does everything a node needs before it touches the network, in the
order the user sees it:

1. on a first run, the line
   ``Creating new kbucket share configuration in <abs DIR>/.kbucket ...``
   (``hub`` instead of ``share`` for a hub); on a later run, ``DIR/.kbucket/`` is
   locked for this process (``kbapps.nodelock``: one node per directory) and the
   keys are loaded, before anything is asked;
2. the questions, in the order and with the exact texts of docs/commands.md. Each answer comes from
   its option when one was given (the question is then not asked), else from a line
   of the input source; under ``--auto`` nothing is asked: options, then saved
   answers, then defaults. On a node with no saved ``yes``, the yes/no questions never
   default to yes, so ``--auto`` stops with exit 2 naming the options to pass.
   ``no`` is exit 1 and nothing is shared;
3. on a first run, only now that the user agreed: ``DIR/.kbucket/`` (mode 0700), its
   lock and the key pair (``kbapps.keys``), which fixes the node id. A declined or
   interrupted first run writes nothing;
4. the answers saved to ``kbnode.json`` (unknown fields kept);
5. the port policy, bind host and TLS files, returned in a frozen ``NodeSetup`` that
   the transport uses. Nothing is bound here: a share's default is "the first free
   port from 2000 to 2999", which only the real bind can decide without a race, so
   the policy is a range the listener walks (``PortPolicy.candidates``).

Input and output are passed in (any text streams), so tests pipe answers and read the
prompts; the commands pass ``sys.stdin`` and ``sys.stdout``. Every failure is a
``SetupError(message, exit_code)``: exit 1 for a "no", exit 2 for bad input.

Text answers are later sent to other nodes and shown on web pages, so each has a
length limit (name 1-100 characters and description at most 1000, like the original)
and control characters are refused.

Why one module of some 860 lines: its one job is the questions of docs/commands.md in
their order, and the parts (the question table, each answer's check, the prompter,
option and saved answers, TLS and port choices) are read together when a question
changes; about half of the lines are the question texts, checks and their docstrings.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TextIO
from urllib.parse import urlsplit

from kbapps import output
from kbapps.config import (
    CONFIG_FILE_NAME,
    INDEX_SIZE_HELP,
    MAX_UPLOAD_RATE,
    NodeConfig,
    NodeType,
    SetupError,
    ensure_kbucket_dir,
    kbucket_dir,
    load_config,
    parse_index_size,
    parse_size,
    save_config,
)
from kbapps.keys import NodeSigner, load_or_create_signer
from kbapps.nodelock import NodeLock
from kbapps.sizes import size_in_bytes
from kbproto.config import HubConfig, Limits, ShareConfig, Timeouts
from kbproto.ids import NodeId
from kbtransport.relaycache import DEFAULT_CACHE_SIZE

__all__ = (
    "DEFAULT_HOST",
    "DEFAULT_HUB_PORT",
    "MAX_DESCRIPTION",
    "MAX_NAME",
    "SHARE_PORT_RANGE",
    "NodeSetup",
    "PortPolicy",
    "SetupOptions",
    "TlsFiles",
    "first_free_port",
    "setup_node",
    "wants_tls",
)

#: Default bind address (docs/commands.md, kbucket-host ``--host``).
DEFAULT_HOST = "0.0.0.0"
#: A hub's default port (docs/commands.md, kbucket-hub).
DEFAULT_HUB_PORT = 3240
#: A share's default: the first free port in this range (docs/commands.md), as the original's
#: ``HEMLOCK_LEAF_PORT_RANGE`` default.
SHARE_PORT_RANGE = (2000, 2999)

#: Limits from the original's validators (``hemlocknodeconfig.js``): name 1-100,
#: description at most 1000 characters.
MAX_NAME = 100
MAX_DESCRIPTION = 1000
#: Owner names and passcodes have no limit in the original; 200 is generous for both.
_MAX_OWNER = 200
_MAX_PASSCODE = 200
#: RFC 5321's limit on a forward path.
_MAX_EMAIL = 254
#: Same bound as kbproto's ``MAX_URL`` for URLs on the wire.
_MAX_URL = 2048
#: Longest host name (RFC 1035).
_MAX_HOST = 253
#: A line longer than this is not an answer to any question; we drop it and ask again.
_MAX_LINE = 4096
#: A script that keeps sending invalid answers gets an error instead of a loop.
_MAX_ATTEMPTS = 20

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


@dataclass(frozen=True, slots=True, kw_only=True)
class SetupOptions:
    """Command-line options; None means "not given" (the question may be asked).

    ``confirm_share`` and ``max_upload_rate`` (as typed: ``20M``) are for shares
    only; ``passcode``, ``tls_cert``, ``tls_key``, ``index_budget``,
    ``open_child_quota`` (as typed: ``2G``, or an old entry count, ``parse_index_size``)
    and ``cache_size`` (as typed) for hubs only. ``parent_hub`` is a URL
    or ``"."`` (none).
    """

    name: str | None = None
    scientific_research: str | None = None
    description: str | None = None
    owner: str | None = None
    owner_email: str | None = None
    confirm_share: str | None = None
    listen_url: str | None = None
    parent_hub: str | None = None
    parent_hub_passcode: str | None = None
    port: int | None = None
    host: str | None = None
    passcode: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    index_budget: str | None = None
    open_child_quota: str | None = None
    #: ``--cache-size`` as given (``500M``, ``20G``, ``0``).
    cache_size: str | None = None
    max_upload_rate: str | None = None
    auto: bool = False


@dataclass(frozen=True, slots=True)
class PortPolicy:
    """Which ports the listener may take: the first of ``first..last`` that is free.

    ``PortPolicy(0, 0)`` means "any free port" (bind port 0); ``PortPolicy(n, n)`` is
    exactly port ``n`` (fail if it is taken).
    """

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last <= 65535:
            raise ValueError("need 0 <= first <= last <= 65535")
        if self.first == 0 and self.last != 0:
            raise ValueError("port 0 (any free port) cannot be part of a range")

    @property
    def is_any(self) -> bool:
        """True when the OS picks the port (``--port 0``)."""
        return self.last == 0

    def candidates(self) -> range:
        """The ports to try binding, in order (``range(0, 1)`` for "any")."""
        return range(self.first, self.last + 1)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A hub's certificate chain and key (PEM files), checked to load together."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side TLS context holding this certificate and key.

        Raises:
            SetupError: the files cannot be read or do not form a certificate and key.
        """
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert, self.key)
        except OSError as exc:  # ssl.SSLError is an OSError
            reason = exc.strerror or getattr(exc, "reason", None) or "not a PEM certificate"
            raise SetupError(
                f"cannot load the TLS certificate {self.cert} with key {self.key}: {reason}"
            ) from None
        return context


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSetup:
    """Everything the transport needs to run the node, decided before any I/O on the net."""

    #: ``"leaf"`` (kbucket-host) or ``"hub"`` (kbucket-hub).
    kind: NodeType
    #: The node directory, absolute (not symlink-resolved: as the user named it).
    directory: Path
    #: ``directory / ".kbucket"``.
    kbucket_dir: Path
    #: The configuration as saved to ``kbnode.json`` this run.
    config: NodeConfig
    #: The node's key; also its identity (``signer.node_id``).
    signer: NodeSigner
    node_id: NodeId
    #: Bind address (``--host``, default 0.0.0.0).
    host: str
    port: PortPolicy
    #: Hubs serving HTTPS/WSS; None for plain HTTP.
    tls: TlsFiles | None
    #: The parent hub's URL, or None for a root hub / standalone share.
    parent_url: str | None
    parent_passcode: str
    #: Hubs: the passcode children must present ("" = open).
    passcode: str
    #: True when this run created the configuration (first run).
    created: bool
    #: The directory's lock, held while the node runs (one node per directory).
    lock: NodeLock
    #: kbproto limits: a hub's index budget and open children's quota from the
    #: options or ``kbnode.json``, kbproto's defaults for everything else.
    limits: Limits

    @property
    def url_scheme(self) -> Literal["http", "https"]:
        """``https`` when the hub serves TLS, else ``http``."""
        return "https" if self.tls is not None else "http"

    def core_config(
        self,
        port: int,
        *,
        limits: Limits | None = None,
        timeouts: Timeouts | None = None,
    ) -> HubConfig | ShareConfig:
        """The kbproto configuration for this node once it is bound to ``port``.

        A ``HubConfig`` for a hub, a ``ShareConfig`` for a share, with ``listen_url``
        expanded by ``listen_url_for``; ``limits`` defaults to this setup's,
        ``timeouts`` to kbproto's.
        """
        c = self.config
        listen_url = self.listen_url_for(port)
        limits = limits if limits is not None else self.limits
        timeouts = timeouts if timeouts is not None else Timeouts()
        if self.kind == "hub":
            return HubConfig(
                name=c.name,
                description=c.description,
                owner=c.owner,
                owner_email=c.owner_email,
                listen_url=listen_url,
                passcode=self.passcode,
                parent_url=self.parent_url,
                parent_passcode=self.parent_passcode,
                limits=limits,
                timeouts=timeouts,
            )
        return ShareConfig(
            name=c.name,
            description=c.description,
            owner=c.owner,
            owner_email=c.owner_email,
            listen_url=listen_url,
            parent_url=self.parent_url,
            parent_passcode=self.parent_passcode,
            limits=limits,
            timeouts=timeouts,
        )

    @property
    def upload_rate(self) -> int:
        """Shares: the upload rate limit in bytes per second (0: none), from
        ``--max-upload-rate`` or ``kbnode.json``."""
        return self.config.max_upload_rate or 0

    def listen_url_for(self, port: int) -> str:
        """The URL others use to reach this node, once it is bound to ``port``.

        ``"."`` (or empty) in ``listen_url`` means ``http://localhost:PORT`` (``https``
        for a TLS hub); a given URL is used as is, minus a trailing slash.
        """
        url = self.config.listen_url
        if url in ("", "."):
            return f"{self.url_scheme}://localhost:{port}"
        return url.rstrip("/")


def wants_tls(port: int, tls_cert: Path | None) -> bool:
    """docs/commands.md: a hub serves HTTPS when its port ends in 443, or a cert is given."""
    return tls_cert is not None or (port != 0 and str(port).endswith("443"))


def first_free_port(host: str, policy: PortPolicy) -> int:
    """The first port of ``policy`` that ``host`` can bind now (0 for "any").

    For display and tests: the listener should still walk ``policy.candidates()``
    itself, since a port free now may be taken before it binds.

    Raises:
        SetupError: no port in the range is free (exit 2).
    """
    if policy.is_any:
        return 0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in policy.candidates():
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # Same option the listener sets (anyio does), so TIME_WAIT ports count as free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise SetupError(f"no free port from {policy.first} to {policy.last} on {host}")


# --- answer checks ---------------------------------------------------------------------


class _Invalid(Exception):
    """An answer failed its check; the text says why (shown before asking again)."""


#: Format characters that scripts need inside words (Persian, Indic, emoji sequences);
#: every other format character (bidi overrides above all) could disguise a name.
_ALLOWED_FORMAT = frozenset("\u200c\u200d")


def _no_controls(value: str, what: str) -> None:
    if any(unicodedata.category(c) in ("Cc", "Cf") and c not in _ALLOWED_FORMAT for c in value):
        raise _Invalid(f"{what} must not contain control characters")


def _check_name(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= MAX_NAME:
        raise _Invalid(f"the name must be 1 to {MAX_NAME} characters")
    _no_controls(value, "the name")
    return value


def _check_text(limit: int, what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        value = value.strip()
        if len(value) > limit:
            raise _Invalid(f"{what} must be at most {limit} characters")
        _no_controls(value, what)
        return value

    return check


def _check_yes_no(value: str) -> str:
    value = value.strip().lower()
    if value not in ("yes", "no"):
        raise _Invalid("please answer yes or no")
    return value


def _check_email(value: str) -> str:
    value = value.strip()
    # Empty is allowed (the email is optional, and --auto must work without it); a
    # non-empty answer must look like an address.
    if value and (len(value) > _MAX_EMAIL or not _EMAIL.fullmatch(value)):
        raise _Invalid("that is not a valid email address (like name@example.org)")
    _no_controls(value, "the email")
    return value


def _check_url(value: str, schemes: tuple[str, ...], what: str) -> str:
    if len(value) > _MAX_URL:
        raise _Invalid(f"{what} must be at most {_MAX_URL} characters")
    _no_controls(value, what)
    if any(c.isspace() for c in value):
        raise _Invalid(f"{what} must not contain spaces")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _Invalid(f"{what} is not a valid URL") from None
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise _Invalid(
            f"{what} must be . or a URL starting {' or '.join(f'{s}://' for s in schemes)}"
        )
    return value


def _check_listen_url(value: str) -> str:
    value = value.strip()
    if value in ("", "."):
        return "."
    return _check_url(value, ("http", "https"), "the listen url")


def _check_parent(value: str) -> str:
    value = value.strip()
    if value in ("", "."):
        return "."
    # ws:// and wss:// are accepted too: the child dials the websocket either way.
    return _check_url(value, ("http", "https", "ws", "wss"), "the hub url")


def _check_port(value: str) -> str:
    value = value.strip()
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise _Invalid("the port must be a number from 0 to 65535 (0 = any free port)")
    return str(int(value))


def _check_passcode(value: str) -> str:
    if len(value) > _MAX_PASSCODE:
        raise _Invalid(f"the passcode must be at most {_MAX_PASSCODE} characters")
    _no_controls(value, "the passcode")
    return value


def _check_host(value: str) -> str:
    value = value.strip()
    if not value or len(value) > _MAX_HOST or any(c.isspace() for c in value):
        raise _Invalid("the bind address must be an IP address or host name")
    _no_controls(value, "the bind address")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]+", value):
            raise _Invalid("the bind address must be an IP address or host name") from None
    return value


# --- the questions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Question:
    key: str  # kbnode.json field ("listen_port" kept as text here)
    text: str  # the prompt, without "? " and the default
    option: str  # the option that answers it
    check: Callable[[str], str]
    default: str  # used when nothing is saved; "" = none
    yes_no: bool = False
    default_source: str = ""  # where a default came from, for --auto errors


def _questions(kind: NodeType, directory: Path, environ: Mapping[str, str]) -> list[_Question]:
    noun = "share" if kind == "leaf" else "hub"
    owner = [
        _Question(
            "description",
            f"Brief description of this KBucket {noun}:",
            "--description",
            _check_text(MAX_DESCRIPTION, "the description"),
            "",
        ),
        _Question(
            "owner",
            "Owner's name (i.e., your full name):",
            "--owner",
            _check_text(_MAX_OWNER, "the owner's name"),
            "",
        ),
        _Question(
            "owner_email", "Owner's email (i.e., your email):", "--owner-email", _check_email, ""
        ),
    ]
    name = _Question(
        "name", f"Name for this KBucket {noun}:", "--name", _check_name, directory.name
    )
    if kind == "leaf":
        return [
            name,
            _Question(
                "scientific_research",
                "Are you sharing this data for scientific research purposes (yes/no)?",
                "--scientific-research",
                _check_yes_no,
                "",
                yes_no=True,
            ),
            *owner,
            _Question(
                "confirm_share",
                f"Share all data recursively contained in the directory {directory}? (yes/no)",
                "--confirm-share",
                _check_yes_no,
                "",
                yes_no=True,
            ),
            _Question(
                "listen_url",
                "Listen url for this share (use . for http://localhost:[port]):",
                "--listen-url",
                _check_listen_url,
                ".",
            ),
            _Question(
                "parent_hub_url",
                "Connect to hub (use . for none):",
                "--parent-hub",
                _check_parent,
                environ.get("KBUCKET_URL", "").strip() or ".",
                default_source="$KBUCKET_URL" if environ.get("KBUCKET_URL", "").strip() else "",
            ),
        ]
    return [
        name,
        _Question(
            "scientific_research",
            "Are you hosting this hub for scientific research purposes (yes/no)?",
            "--scientific-research",
            _check_yes_no,
            "",
            yes_no=True,
        ),
        *owner,
        _Question(
            "listen_port",
            "Listen port for this hub:",
            "--port",
            _check_port,
            str(DEFAULT_HUB_PORT),
        ),
        _Question(
            "listen_url",
            "Listen url for this hub (use . for http://localhost:[port]):",
            "--listen-url",
            _check_listen_url,
            ".",
        ),
        _Question(
            "parent_hub_url", "Parent hub url (use . for none):", "--parent-hub", _check_parent, "."
        ),
    ]


def _refusal(key: str, kind: NodeType, directory: Path) -> str:
    if key == "confirm_share":
        return (
            f"kbucket makes every file under {directory} (except names starting with '.')"
            " downloadable, so it needs your confirmation; not sharing."
        )
    if kind == "hub":
        return "kbucket hubs are only for scientific research purposes; not starting the hub."
    return "kbucket is only for sharing data for scientific research purposes; not sharing."


class _Prompter:
    """Asks one question at a time on the given text streams."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self._in = stdin
        self._out = stdout
        try:
            self._echo_newline = not stdin.isatty()
        except (AttributeError, ValueError):
            self._echo_newline = True

    def write_line(self, text: str) -> None:
        output.line(text, stream=self._out)

    def _read_line(self, text: str) -> str | None:
        """One answer line; None if it was too long (the rest of it is discarded)."""
        line = self._in.readline(_MAX_LINE + 1)
        if line == "":
            raise SetupError(
                f"input closed while asking {text!r}: answer the questions, or use --auto"
                " with options"
            )
        if len(line) > _MAX_LINE and not line.endswith("\n"):
            # Drop the rest of the over-long line, in bounded reads.
            while (rest := self._in.readline(_MAX_LINE)) and not rest.endswith("\n"):
                pass
            return None
        return line.rstrip("\r\n")

    def ask(self, question: _Question, default: str) -> str:
        shown = f" [{default}]" if default else ""
        for _ in range(_MAX_ATTEMPTS):
            output.prompt(f"? {question.text}{shown} ", stream=self._out)
            line = self._read_line(question.text)
            if self._echo_newline:
                # Piped input is not echoed; end the prompt line so output stays readable.
                output.line("", stream=self._out)
            if line is None:
                self.write_line(f"  that answer is longer than {_MAX_LINE} characters")
                continue
            answer = line if line.strip() else default
            try:
                return question.check(answer)
            except _Invalid as exc:
                self.write_line(f"  {exc}")
        raise SetupError(f"too many invalid answers to {question.text!r}")


def _option_value(question: _Question, options: SetupOptions) -> str | None:
    if question.key == "listen_port":
        return None if options.port is None else str(options.port)
    attr = "parent_hub" if question.key == "parent_hub_url" else question.key
    value: str | None = getattr(options, attr)
    return value


def _saved_value(question: _Question, config: NodeConfig | None) -> str:
    if config is None:
        return ""
    if question.key == "listen_port":
        return "" if config.listen_port is None else str(config.listen_port)
    value: str = getattr(config, question.key)
    return value


def _answer_all(
    questions: list[_Question],
    *,
    kind: NodeType,
    directory: Path,
    options: SetupOptions,
    saved: NodeConfig | None,
    config_path: Path,
    prompter: _Prompter,
) -> dict[str, str]:
    answers: dict[str, str] = {}
    missing: list[str] = []
    for question in questions:
        given = _option_value(question, options)
        stored = _saved_value(question, saved)
        if given is not None:
            try:
                answer = question.check(given)
            except _Invalid as exc:
                raise SetupError(f"{question.option}: {exc}") from None
        elif options.auto:
            if question.yes_no and not stored:
                # Never assume consent: the user must say yes once, by prompt or option.
                missing.append(f"{question.option} yes")
                continue
            candidate = stored or question.default
            try:
                answer = question.check(candidate)
            except _Invalid as exc:
                if stored:
                    where = f"{question.key} in {config_path}"
                else:
                    where = question.default_source or question.key
                raise SetupError(f"--auto: {where}: {exc}; pass {question.option}") from None
        else:
            answer = prompter.ask(question, stored or question.default)
        if question.yes_no and answer == "no":
            raise SetupError(_refusal(question.key, kind, directory), exit_code=output.EXIT_NO)
        answers[question.key] = answer
    if missing:
        noun = "share" if kind == "leaf" else "hub"
        raise SetupError(
            f"--auto cannot answer yes for you on this {noun}: pass {' '.join(missing)}"
        )
    return answers


def _checked_option(value: str | None, check: Callable[[str], str], option: str) -> str | None:
    if value is None:
        return None
    try:
        return check(value)
    except _Invalid as exc:
        raise SetupError(f"{option}: {exc}") from None


def _tls_files(port: int, options: SetupOptions, kbdir: Path) -> TlsFiles | None:
    if not wants_tls(port, options.tls_cert):
        if options.tls_key is not None:
            raise SetupError("--tls-key needs --tls-cert (or a listen port ending in 443)")
        return None
    cert = options.tls_cert if options.tls_cert is not None else kbdir / "tls" / "cert.pem"
    if options.tls_key is not None:
        key = options.tls_key
    elif options.tls_cert is None or (kbdir / "tls" / "key.pem").is_file():
        key = kbdir / "tls" / "key.pem"
    else:
        # A single PEM holding both the chain and the key is common (certbot's combined
        # file, trustme's "server.pem"): use the certificate file for the key too.
        key = options.tls_cert
    why = f"--tls-cert {options.tls_cert}" if options.tls_cert else f"port {port} ends in 443"
    for label, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise SetupError(
                f"HTTPS is on ({why}) but the TLS {label} {path} is missing: pass"
                " --tls-cert FILE --tls-key FILE, or put them in .kbucket/tls/cert.pem"
                " and .kbucket/tls/key.pem"
            )
    files = TlsFiles(cert=cert.absolute(), key=key.absolute())
    files.server_context()  # a bad certificate is an error now, not at the first client
    return files


def _take_directory(root: Path, command: str, saved_node_id: str) -> tuple[NodeLock, NodeSigner]:
    """Make ``.kbucket/`` if needed, lock it for this node and load (or make) its keys."""
    ensure_kbucket_dir(root)
    lock = NodeLock.acquire(kbucket_dir(root), command)
    signer, _ = load_or_create_signer(kbucket_dir(root), node_id_in_config=saved_node_id)
    return lock, signer


def setup_node(
    directory: Path | str,
    kind: NodeType,
    options: SetupOptions,
    *,
    stdin: TextIO,
    stdout: TextIO,
    environ: Mapping[str, str] | None = None,
) -> NodeSetup:
    """Prepare the node in ``directory``: config, keys, questions, ports, TLS.

    Args:
        directory: the node directory (``kbucket-host DIR``); must exist.
        kind: ``"leaf"`` for kbucket-host, ``"hub"`` for kbucket-hub.
        options: the command-line answers (None = not given).
        stdin: where answers are read, one line each.
        stdout: where the "Creating new ..." line and the prompts go.
        environ: the environment (for ``KBUCKET_URL``); ``os.environ`` if None.

    Returns:
        The frozen ``NodeSetup``; ``kbnode.json`` holds the answers.

    Raises:
        SetupError: exit 1 when the user answered ``no``; exit 2 for a missing
            directory, a corrupt ``kbnode.json`` or key, a node of the other kind, an
            invalid option, ``--auto`` without the yes answers, input closed while
            asking, HTTPS without a certificate, or another node already running in
            ``directory`` (its lock in ``.kbucket/``).
    """
    if kind not in ("leaf", "hub"):
        raise ValueError("kind must be 'leaf' or 'hub'")
    env = os.environ if environ is None else environ
    root = Path(os.path.abspath(directory))
    if not root.is_dir():
        raise SetupError(f"{directory}: no such directory")
    # Option checks that do not depend on saved state come first, before any file
    # is created.
    host = _checked_option(options.host, _check_host, "--host") or DEFAULT_HOST
    if options.port is not None and not 0 <= options.port <= 65535:
        raise SetupError("--port: the port must be a number from 0 to 65535 (0 = any free port)")
    hub_only = (
        options.passcode,
        options.tls_cert,
        options.tls_key,
        options.index_budget,
        options.open_child_quota,
        options.cache_size,
    )
    if kind == "leaf" and hub_only != (None,) * len(hub_only):
        raise ValueError(
            "--passcode, --tls-cert, --tls-key, --index-budget, --open-child-quota and"
            " --cache-size are hub options"
        )
    cache_size_opt: int | None = None
    if options.cache_size is not None:
        try:
            cache_size_opt = parse_size(options.cache_size)
        except ValueError as exc:
            raise SetupError(f"--cache-size: {exc}") from None
    index_sizes: dict[str, int | None] = {}
    for option, typed in (
        ("--index-budget", options.index_budget),
        ("--open-child-quota", options.open_child_quota),
    ):
        index_sizes[option] = None if typed is None else parse_index_size(typed)
        if typed is not None and index_sizes[option] is None:
            raise SetupError(f"{option}: give {INDEX_SIZE_HELP}")
    if kind == "hub" and (options.confirm_share, options.max_upload_rate) != (None, None):
        raise ValueError("--confirm-share and --max-upload-rate are share options")
    upload_rate = _checked_rate(options.max_upload_rate)
    passcode_opt = _checked_option(options.passcode, _check_passcode, "--passcode")
    parent_passcode_opt = _checked_option(
        options.parent_hub_passcode, _check_passcode, "--parent-hub-passcode"
    )

    kbdir = kbucket_dir(root)
    config_path = kbdir / CONFIG_FILE_NAME
    saved = load_config(root, default_type=kind)
    if saved is not None and saved.node_type != kind:
        other = "kbucket-hub" if saved.node_type == "hub" else "kbucket-host"
        what = "a hub" if saved.node_type == "hub" else "a share"
        raise SetupError(f"{config_path}: this directory is {what}; run {other} here")
    command = "kbucket-hub" if kind == "hub" else "kbucket-host"
    prompter = _Prompter(stdin, stdout)
    created = saved is None
    if saved is None:
        # Nothing is written before the user has agreed: an interrupted or declined
        # first run leaves the directory as it was (the keys are made after the
        # questions; the node id appears in no question).
        noun = "share" if kind == "leaf" else "hub"
        prompter.write_line(f"Creating new kbucket {noun} configuration in {kbdir} ...")
    else:
        # A second node on this directory stops here, before asking anything.
        lock, signer = _take_directory(root, command, saved.node_id)

    answers = _answer_all(
        _questions(kind, root, env),
        kind=kind,
        directory=root,
        options=options,
        saved=saved,
        config_path=config_path,
        prompter=prompter,
    )
    if created:
        lock, signer = _take_directory(root, command, "")
    base = saved if saved is not None else NodeConfig(node_type=kind)
    if kind == "hub":
        port_value: int | None = int(answers.pop("listen_port"))
    else:
        port_value = options.port if options.port is not None else base.listen_port
    for field_name, given, value in (
        ("passcode", passcode_opt, base.passcode),
        ("parent_hub_passcode", parent_passcode_opt, base.parent_hub_passcode),
    ):
        try:
            if given is None:  # a saved (maybe hand-edited) passcode that will be used
                _check_passcode(value)
        except _Invalid as exc:
            raise SetupError(f"{config_path}: {field_name}: {exc}") from None
    config = base.with_answers(
        node_id=signer.node_id,  # the key is the identity; a hand-edited id is corrected
        listen_port=port_value,
        index_budget=(
            index_sizes["--index-budget"]
            if index_sizes["--index-budget"] is not None
            else base.index_budget
        ),
        open_child_quota=(
            index_sizes["--open-child-quota"]
            if index_sizes["--open-child-quota"] is not None
            else base.open_child_quota
        ),
        cache_size=(
            None
            if kind != "hub"
            else cache_size_opt
            if cache_size_opt is not None
            else base.cache_size
            if base.cache_size is not None
            else DEFAULT_CACHE_SIZE
        ),
        max_upload_rate=upload_rate if upload_rate is not None else base.max_upload_rate,
        passcode=passcode_opt if passcode_opt is not None else base.passcode,
        parent_hub_passcode=(
            parent_passcode_opt if parent_passcode_opt is not None else base.parent_hub_passcode
        ),
        **answers,
    )
    if port_value is None:
        port = PortPolicy(*SHARE_PORT_RANGE)
    else:
        port = PortPolicy(port_value, port_value)
    # Saved before the TLS check: answers stay valid while a certificate is fixed.
    save_config(root, config)
    tls = _tls_files(port_value or 0, options, kbdir) if kind == "hub" else None
    parent = config.parent_hub_url
    return NodeSetup(
        kind=kind,
        directory=root,
        kbucket_dir=kbdir,
        config=config,
        signer=signer,
        node_id=signer.node_id,
        host=host,
        port=port,
        tls=tls,
        parent_url=None if parent in ("", ".") else parent,
        parent_passcode=config.parent_hub_passcode,
        passcode=config.passcode if kind == "hub" else "",
        created=created,
        lock=lock,
        limits=_limits(config) if kind == "hub" else Limits(),
    )


def _checked_rate(text: str | None) -> int | None:
    """``--max-upload-rate`` in bytes per second (None: not given).

    Raises:
        SetupError: not a rate from 0 to ``MAX_UPLOAD_RATE`` (exit 2).
    """
    if text is None:
        return None
    rate = size_in_bytes(text)
    if rate is None or rate > MAX_UPLOAD_RATE:
        raise SetupError(
            f"--max-upload-rate: not a rate: {text!r} (bytes per second up to 1T, or with"
            " K, M, G: 500K, 20M, 1G; 0 = no limit)"
        )
    return rate


def _limits(config: NodeConfig) -> Limits:
    """kbproto ``Limits`` with a hub's saved index budget and open children's quota."""
    defaults = Limits()
    return replace(
        defaults,
        index_budget=(
            config.index_budget if config.index_budget is not None else defaults.index_budget
        ),
        open_child_quota=(
            config.open_child_quota
            if config.open_child_quota is not None
            else defaults.open_child_quota
        ),
    )
