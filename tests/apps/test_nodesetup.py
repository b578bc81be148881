"""kbucket-host / kbucket-hub set-up (docs/commands.md): prompts, options, --auto, TLS, ports."""

from __future__ import annotations

import io
import json
import shutil
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trustme

from kbapps.config import NodeType, SetupError
from kbapps.nodesetup import (
    MAX_DESCRIPTION,
    NodeSetup,
    PortPolicy,
    SetupOptions,
    first_free_port,
    setup_node,
    wants_tls,
)
from kbproto.budget import LEGACY_ENTRY_BYTES
from kbproto.config import Limits
from kbtransport.relaycache import DEFAULT_CACHE_SIZE

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "legacy_node" / "dot-kbucket"

SHARE_ANSWERS = "\n".join(
    [
        "My data",  # name
        "yes",  # scientific research
        "Spike sorting recordings",  # description
        "Ada Lovelace",  # owner
        "ada@example.org",  # email
        "yes",  # confirm share
        "",  # listen url: default "."
        "",  # hub: default
        "",  # (so the last answer ends with a newline)
    ]
)
HUB_ANSWERS = "\n".join(
    ["Lab hub", "yes", "A hub", "Grace Hopper", "grace@example.org", "", "", "", ""]
)


class _NoInput(io.StringIO):
    """Stdin for --auto runs: reading from it is a test failure."""

    def readline(self, size: int | None = -1, /) -> str:  # type: ignore[override]
        raise AssertionError("--auto must not read stdin")


def run(
    directory: Path,
    kind: NodeType = "leaf",
    answers: str | None = None,
    env: dict[str, str] | None = None,
    **options: Any,
) -> tuple[NodeSetup, list[str]]:
    out = io.StringIO()
    stdin: io.StringIO = _NoInput() if answers is None else io.StringIO(answers)
    setup = setup_node(
        directory,
        kind,
        SetupOptions(**options),
        stdin=stdin,
        stdout=out,
        environ={} if env is None else env,
    )
    return setup, [line.rstrip() for line in out.getvalue().splitlines()]


def fails(
    directory: Path,
    kind: NodeType = "leaf",
    answers: str | None = None,
    env: dict[str, str] | None = None,
    **options: Any,
) -> SetupError:
    with pytest.raises(SetupError) as info:
        run(directory, kind, answers, env, **options)
    assert "\n" not in info.value.message
    return info.value


def saved(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / ".kbucket" / "kbnode.json").read_text())
    return data


@pytest.fixture
def share_dir(tmp_path: Path) -> Path:
    d = tmp_path / "dataset_01"
    d.mkdir()
    return d


# --- share prompts -------------------------------------------------------------------


def test_share_first_run_prompts_in_order_with_exact_texts(share_dir: Path) -> None:
    setup, lines = run(share_dir, answers=SHARE_ANSWERS)
    assert lines == [
        f"Creating new kbucket share configuration in {share_dir}/.kbucket ...",
        "? Name for this KBucket share: [dataset_01]",
        "? Are you sharing this data for scientific research purposes (yes/no)?",
        "? Brief description of this KBucket share:",
        "? Owner's name (i.e., your full name):",
        "? Owner's email (i.e., your email):",
        f"? Share all data recursively contained in the directory {share_dir}? (yes/no)",
        "? Listen url for this share (use . for http://localhost:[port]): [.]",
        "? Connect to hub (use . for none): [.]",
    ]
    data = saved(share_dir)
    assert data["node_type"] == "leaf"
    assert data["node_id"] == setup.node_id == setup.signer.node_id
    assert data["name"] == "My data"
    assert data["scientific_research"] == "yes"
    assert data["description"] == "Spike sorting recordings"
    assert data["owner"] == "Ada Lovelace"
    assert data["owner_email"] == "ada@example.org"
    assert data["confirm_share"] == "yes"
    assert data["listen_url"] == "."
    assert data["parent_hub_url"] == "."
    assert "listen_port" not in data
    assert setup.kind == "leaf"
    assert setup.created is True
    assert setup.directory == share_dir
    assert setup.kbucket_dir == share_dir / ".kbucket"
    assert setup.port == PortPolicy(2000, 2999)
    assert setup.port.candidates() == range(2000, 3000)
    assert setup.host == "0.0.0.0"
    assert setup.tls is None
    assert setup.parent_url is None
    assert setup.listen_url_for(2001) == "http://localhost:2001"
    kb = share_dir / ".kbucket"
    assert stat.S_IMODE(kb.stat().st_mode) == 0o700
    assert stat.S_IMODE((kb / "private.pem").stat().st_mode) == 0o600


def test_second_run_shows_saved_answers_as_defaults(share_dir: Path) -> None:
    first, _ = run(share_dir, answers=SHARE_ANSWERS)
    second, lines = run(share_dir, answers="\n" * 8)
    assert lines == [
        "? Name for this KBucket share: [My data]",
        "? Are you sharing this data for scientific research purposes (yes/no)? [yes]",
        "? Brief description of this KBucket share: [Spike sorting recordings]",
        "? Owner's name (i.e., your full name): [Ada Lovelace]",
        "? Owner's email (i.e., your email): [ada@example.org]",
        f"? Share all data recursively contained in the directory {share_dir}? (yes/no) [yes]",
        "? Listen url for this share (use . for http://localhost:[port]): [.]",
        "? Connect to hub (use . for none): [.]",
    ]
    assert second.created is False
    assert second.node_id == first.node_id
    assert second.config == first.config


def test_hub_default_comes_from_kbucket_url(share_dir: Path) -> None:
    env = {"KBUCKET_URL": "http://hub.example.org:3240"}
    setup, lines = run(share_dir, answers=SHARE_ANSWERS, env=env)
    assert lines[-1] == "? Connect to hub (use . for none): [http://hub.example.org:3240]"
    assert setup.parent_url == "http://hub.example.org:3240"
    # A saved "." (none) wins over the environment on the next run.
    setup2, _ = run(share_dir, answers="\n" * 7 + ".\n", env=env)
    assert setup2.parent_url is None
    setup3, lines3 = run(share_dir, answers="\n" * 8, env=env)
    assert lines3[-1] == "? Connect to hub (use . for none): [.]"
    assert setup3.parent_url is None


def test_invalid_kbucket_url_default_is_named_under_auto(share_dir: Path) -> None:
    error = fails(
        share_dir,
        env={"KBUCKET_URL": "not a url"},
        auto=True,
        scientific_research="yes",
        confirm_share="yes",
    )
    assert error.message.startswith("--auto: $KBUCKET_URL: the hub url must not contain spaces")
    assert error.message.endswith("pass --parent-hub")


def test_given_options_answer_their_prompts(share_dir: Path) -> None:
    setup, lines = run(
        share_dir,
        answers="yes\n\n\n\nyes\n",  # research, description, owner, email, confirm
        name="Named by option",
        listen_url="https://data.example.org/",
        parent_hub="http://127.0.0.1:3240",
        parent_hub_passcode="pw",
        port=2500,
        host="127.0.0.1",
    )
    assert lines == [
        f"Creating new kbucket share configuration in {share_dir}/.kbucket ...",
        "? Are you sharing this data for scientific research purposes (yes/no)?",
        "? Brief description of this KBucket share:",
        "? Owner's name (i.e., your full name):",
        "? Owner's email (i.e., your email):",
        f"? Share all data recursively contained in the directory {share_dir}? (yes/no)",
    ]
    assert setup.config.name == "Named by option"
    assert setup.listen_url_for(2500) == "https://data.example.org"
    assert setup.parent_url == "http://127.0.0.1:3240"
    assert setup.parent_passcode == "pw"
    assert setup.port == PortPolicy(2500, 2500)
    assert setup.host == "127.0.0.1"
    data = saved(share_dir)
    assert data["listen_port"] == 2500
    assert data["parent_hub_passcode"] == "pw"
    assert data["description"] == ""
    assert data["owner_email"] == ""


# --- yes/no, validation and re-asking ------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ("d\nno\n", "only for sharing data for scientific research purposes; not sharing"),
        ("d\nyes\n\n\n\nno\n", "needs your confirmation; not sharing"),
        ("d\nNO\n", "scientific research"),
    ],
)
def test_no_exits_1_without_sharing(share_dir: Path, answers: str, message: str) -> None:
    error = fails(share_dir, answers=answers)
    assert error.exit_code == 1
    assert message in error.message
    assert not (share_dir / ".kbucket").exists()  # nothing written: no answers, no keys


def test_no_by_option_exits_1(share_dir: Path) -> None:
    error = fails(share_dir, auto=True, scientific_research="no", confirm_share="yes")
    assert error.exit_code == 1
    error = fails(share_dir, auto=True, scientific_research="yes", confirm_share="no")
    assert error.exit_code == 1
    assert str(share_dir) in error.message


def test_yes_no_reasked_until_yes_or_no(share_dir: Path) -> None:
    answers = "d\nmaybe\n\ny\nYes\n" + "\n\n\nyes\n\n\n"
    setup, lines = run(share_dir, answers=answers)
    research = "? Are you sharing this data for scientific research purposes (yes/no)?"
    assert lines.count(research) == 4
    assert lines.count("  please answer yes or no") == 3
    assert setup.config.scientific_research == "yes"


@pytest.mark.parametrize("bad", ["not-an-email", "a@b", "a b@c.org", "@example.org", "x@.org"])
def test_invalid_email_reasked(share_dir: Path, bad: str) -> None:
    answers = f"d\nyes\n\n\n{bad}\nok@example.org\nyes\n\n\n"
    setup, lines = run(share_dir, answers=answers)
    email = "? Owner's email (i.e., your email):"
    assert lines.count(email) == 2
    assert "  that is not a valid email address (like name@example.org)" in lines
    assert setup.config.owner_email == "ok@example.org"


def test_text_limits_reasked(share_dir: Path) -> None:
    long_name = "n" * 101
    long_description = "d" * (MAX_DESCRIPTION + 1)
    answers = "\n".join(
        [long_name, "n" * 100, "yes", long_description, "short", "", "", "yes", "", "", ""]
    )
    setup, lines = run(share_dir, answers=answers)
    assert "  the name must be 1 to 100 characters" in lines
    assert f"  the description must be at most {MAX_DESCRIPTION} characters" in lines
    assert setup.config.name == "n" * 100
    assert setup.config.description == "short"


def test_control_characters_and_overlong_lines_reasked(share_dir: Path) -> None:
    answers = "bad\x1bname\n" + "x" * 10_000 + "\nok\nyes\n\n\n\nyes\n\n\n"
    setup, lines = run(share_dir, answers=answers)
    assert "  the name must not contain control characters" in lines
    assert "  that answer is longer than 4096 characters" in lines
    assert setup.config.name == "ok"


def test_bidi_override_refused_but_joiners_allowed(share_dir: Path) -> None:
    answers = "evil\u202egnp.exe\nمی\u200cخواهم\nyes\n\n\n\nyes\n\n\n"
    setup, lines = run(share_dir, answers=answers)
    assert "  the name must not contain control characters" in lines
    assert setup.config.name == "می\u200cخواهم"


def test_listen_url_and_hub_url_reasked(share_dir: Path) -> None:
    answers = (
        "d\nyes\n\n\n\nyes\nftp://x\nhttp://\nhttp://x:99999\nhttp://a b\n"
        "http://me.example.org:8080\nnonsense\n.\n"
    )
    setup, lines = run(share_dir, answers=answers)
    listen_hint = "  the listen url must be . or a URL starting http:// or https://"
    assert lines.count(listen_hint) == 2
    assert "  the listen url is not a valid URL" in lines
    assert "  the listen url must not contain spaces" in lines
    hub_hint = "  the hub url must be . or a URL starting http:// or https:// or ws:// or wss://"
    assert hub_hint in lines
    assert setup.config.listen_url == "http://me.example.org:8080"
    assert setup.parent_url is None


def test_endless_invalid_answers_stop(share_dir: Path) -> None:
    error = fails(share_dir, answers="d\n" + "maybe\n" * 50)
    assert error.exit_code == 2
    assert "too many invalid answers" in error.message


def test_eof_while_prompting_is_exit_2(share_dir: Path) -> None:
    error = fails(share_dir, answers="d\nyes\n")
    assert error.exit_code == 2
    assert "input closed while asking" in error.message
    assert "Brief description" in error.message
    # The interrupted first run wrote nothing: the next run is a first run again.
    assert not (share_dir / ".kbucket").exists()
    again, lines = run(share_dir, answers=SHARE_ANSWERS)
    assert lines[0].startswith("Creating new")
    assert again.created is True


# --- --auto ----------------------------------------------------------------------------


def test_auto_new_share_needs_both_yes_options(share_dir: Path) -> None:
    error = fails(share_dir, auto=True)
    assert error.exit_code == 2
    assert "--scientific-research yes" in error.message
    assert "--confirm-share yes" in error.message
    error = fails(share_dir, auto=True, scientific_research="yes")
    assert "--confirm-share yes" in error.message
    assert "--scientific-research" not in error.message


def test_auto_new_share_with_options_asks_nothing(share_dir: Path) -> None:
    setup, lines = run(share_dir, auto=True, scientific_research="yes", confirm_share="yes", port=0)
    assert lines == [f"Creating new kbucket share configuration in {share_dir}/.kbucket ..."]
    assert setup.config.name == "dataset_01"
    assert setup.config.listen_url == "."
    assert setup.parent_url is None
    assert setup.port == PortPolicy(0, 0)
    assert setup.port.is_any
    assert setup.port.candidates() == range(1)
    data = saved(share_dir)
    assert (data["scientific_research"], data["confirm_share"]) == ("yes", "yes")


def test_auto_uses_saved_answers_then_defaults(share_dir: Path) -> None:
    first, _ = run(share_dir, answers=SHARE_ANSWERS, env={"KBUCKET_URL": "http://h:1"})
    second, lines = run(share_dir, auto=True, description="new description")
    assert lines == []
    assert second.config == first.config.with_answers(description="new description")
    assert second.parent_url == "http://h:1"


def test_auto_validates_options_and_saved_answers(share_dir: Path) -> None:
    error = fails(
        share_dir, auto=True, scientific_research="yes", confirm_share="yes", owner_email="nope"
    )
    assert error.exit_code == 2
    assert error.message.startswith("--owner-email: that is not a valid email")
    run(share_dir, answers=SHARE_ANSWERS)
    path = share_dir / ".kbucket" / "kbnode.json"
    data = saved(share_dir)
    data["owner_email"] = "broken"
    path.write_text(json.dumps(data))
    error = fails(share_dir, auto=True)
    assert f"owner_email in {path}" in error.message
    assert "--owner-email" in error.message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": ""}, "--name: the name must be 1 to 100 characters"),
        ({"scientific_research": "sure"}, "--scientific-research: please answer yes or no"),
        ({"listen_url": "ftp://x"}, "--listen-url: the listen url must be"),
        ({"parent_hub": "nonsense"}, "--parent-hub: the hub url must be"),
        ({"host": "a b"}, "--host: the bind address"),
        ({"host": "bad_host!"}, "--host: the bind address"),
        ({"port": 70000}, "--port: the port must be"),
        ({"parent_hub_passcode": "p" * 201}, "--parent-hub-passcode: the passcode"),
    ],
)
def test_invalid_options_exit_2(share_dir: Path, options: dict[str, Any], message: str) -> None:
    base = {"auto": True, "scientific_research": "yes", "confirm_share": "yes"}
    error = fails(share_dir, **{**base, **options})
    assert error.exit_code == 2
    assert error.message.startswith(message)


def test_ipv6_host_is_accepted(share_dir: Path) -> None:
    setup, _ = run(share_dir, auto=True, scientific_research="yes", confirm_share="yes", host="::1")
    assert setup.host == "::1"


# --- the file: unknown fields, hand edits, kinds ---------------------------------------


def test_unknown_fields_kept_and_hand_edits_take_effect(share_dir: Path) -> None:
    run(share_dir, answers=SHARE_ANSWERS)
    path = share_dir / ".kbucket" / "kbnode.json"
    data = saved(share_dir)
    data["name"] = "edited by hand"
    data["future_field"] = {"keep": ["me"]}
    data["listen_port"] = "2345"
    path.write_text(json.dumps(data, indent=2))
    setup, _ = run(share_dir, auto=True)
    assert setup.config.name == "edited by hand"
    assert setup.port == PortPolicy(2345, 2345)
    after = saved(share_dir)
    assert after["future_field"] == {"keep": ["me"]}
    assert after["name"] == "edited by hand"
    assert after["listen_port"] == 2345


def test_hand_edited_node_id_is_corrected_from_the_key(share_dir: Path) -> None:
    first, _ = run(share_dir, answers=SHARE_ANSWERS)
    path = share_dir / ".kbucket" / "kbnode.json"
    data = saved(share_dir)
    data["node_id"] = "ffffffffffff"
    path.write_text(json.dumps(data))
    setup, _ = run(share_dir, auto=True)
    assert setup.node_id == first.node_id
    assert saved(share_dir)["node_id"] == first.node_id


def test_corrupt_config_and_wrong_kind_exit_2(share_dir: Path) -> None:
    run(share_dir, answers=SHARE_ANSWERS)
    error = fails(share_dir, "hub", auto=True)
    assert "this directory is a share; run kbucket-host here" in error.message
    (share_dir / ".kbucket" / "kbnode.json").write_text("{oops")
    error = fails(share_dir, auto=True)
    assert error.exit_code == 2
    assert "kbnode.json: not valid JSON" in error.message


def test_saved_passcode_too_long_is_reported(share_dir: Path) -> None:
    run(share_dir, answers=SHARE_ANSWERS)
    data = saved(share_dir)
    data["parent_hub_passcode"] = "p" * 500
    (share_dir / ".kbucket" / "kbnode.json").write_text(json.dumps(data))
    error = fails(share_dir, auto=True)
    assert "parent_hub_passcode: the passcode must be at most 200" in error.message
    setup, _ = run(share_dir, auto=True, parent_hub_passcode="fixed")  # an option replaces it
    assert setup.parent_passcode == "fixed"


def test_missing_directory_exit_2(tmp_path: Path) -> None:
    error = fails(tmp_path / "nope", auto=True)
    assert error.exit_code == 2
    assert "no such directory" in error.message


def test_legacy_node_keeps_its_id(share_dir: Path) -> None:
    shutil.copytree(FIXTURE, share_dir / ".kbucket")
    setup, lines = run(share_dir, answers="\n" * 8)
    assert lines[0] == "? Name for this KBucket share: [legacy share]"
    assert lines[-1] == "? Connect to hub (use . for none): [http://localhost:63240]"
    assert setup.node_id == "a6d46d66a159"
    assert setup.signer.scheme.value == "rsa-pkcs1v15-sha256"
    assert setup.created is False
    assert setup.parent_url == "http://localhost:63240"
    assert setup.parent_passcode == "passcode_test_kbhub1"
    data = saved(share_dir)
    assert data["node_type"] == "leaf"
    assert data["node_id"] == "a6d46d66a159"
    assert "kbnode_id" not in data
    assert "kbnode_type" not in data
    assert data["network_type"] == "kbucket"
    assert data["cas_upload_url"] == "https://cas.example.org/upload"
    again, _ = run(share_dir, auto=True)
    assert again.node_id == "a6d46d66a159"


# --- hubs ------------------------------------------------------------------------------


def test_hub_prompts_in_order_with_exact_texts(tmp_path: Path) -> None:
    setup, lines = run(tmp_path, "hub", answers=HUB_ANSWERS, passcode="letmein")
    assert lines == [
        f"Creating new kbucket hub configuration in {tmp_path}/.kbucket ...",
        f"? Name for this KBucket hub: [{tmp_path.name}]",
        "? Are you hosting this hub for scientific research purposes (yes/no)?",
        "? Brief description of this KBucket hub:",
        "? Owner's name (i.e., your full name):",
        "? Owner's email (i.e., your email):",
        "? Listen port for this hub: [3240]",
        "? Listen url for this hub (use . for http://localhost:[port]): [.]",
        "? Parent hub url (use . for none): [.]",
    ]
    assert setup.kind == "hub"
    assert setup.port == PortPolicy(3240, 3240)
    assert setup.tls is None
    assert setup.url_scheme == "http"
    assert setup.passcode == "letmein"
    assert setup.parent_url is None
    data = saved(tmp_path)
    assert data["node_type"] == "hub"
    assert data["listen_port"] == 3240
    assert data["passcode"] == "letmein"
    assert "confirm_share" not in data
    # Second run: the saved port is the default, the passcode is kept without the option.
    again, lines2 = run(tmp_path, "hub", answers="\n\n\n\n\n7000\n\nhttp://top:3240\n")
    assert lines2[5] == "? Listen port for this hub: [3240]"
    assert again.port == PortPolicy(7000, 7000)
    assert again.passcode == "letmein"
    assert again.parent_url == "http://top:3240"


def test_hub_port_reasked_and_option(tmp_path: Path) -> None:
    answers = "\n".join(["h", "yes", "", "", "", "http", "99999", "0", "", "", ""])
    setup, lines = run(tmp_path, "hub", answers=answers)
    assert lines.count("  the port must be a number from 0 to 65535 (0 = any free port)") == 2
    assert setup.port.is_any
    hub2 = tmp_path / "two"
    hub2.mkdir()
    setup2, lines2 = run(hub2, "hub", auto=True, scientific_research="yes", port=4000)
    assert lines2 == [f"Creating new kbucket hub configuration in {hub2}/.kbucket ..."]
    assert setup2.port == PortPolicy(4000, 4000)
    assert saved(hub2)["listen_port"] == 4000


def test_hub_auto_needs_scientific_research(tmp_path: Path) -> None:
    error = fails(tmp_path, "hub", auto=True)
    assert error.exit_code == 2
    assert (
        error.message
        == "--auto cannot answer yes for you on this hub: pass --scientific-research yes"
    )
    error = fails(tmp_path, "hub", auto=True, scientific_research="no")
    assert error.exit_code == 1
    assert "not starting the hub" in error.message


# --- HTTPS -----------------------------------------------------------------------------


def test_wants_tls_rule() -> None:
    assert [wants_tls(p, None) for p in (443, 1443, 10443, 3240, 4430, 0)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert wants_tls(3240, Path("cert.pem")) is True


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _hub_auto(directory: Path, **options: Any) -> tuple[NodeSetup, list[str]]:
    return run(directory, "hub", auto=True, scientific_research="yes", **options)


def test_https_port_without_certificate_is_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SetupError) as info:
        _hub_auto(tmp_path, port=10443)
    assert info.value.exit_code == 2
    assert "HTTPS is on (port 10443 ends in 443)" in info.value.message
    assert "cert.pem is missing" in info.value.message
    assert saved(tmp_path)["listen_port"] == 10443  # answers kept while the cert is fixed


def test_https_port_with_certificate_in_kbucket_tls(tmp_path: Path, ca: trustme.CA) -> None:
    cert = ca.issue_cert("localhost")
    tls_dir = tmp_path / ".kbucket" / "tls"
    tls_dir.mkdir(parents=True)
    cert.cert_chain_pems[0].write_to_path(str(tls_dir / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tls_dir / "key.pem"))
    setup, _ = _hub_auto(tmp_path, port=10443)
    assert setup.tls is not None
    assert setup.tls.cert == tls_dir / "cert.pem"
    assert setup.tls.key == tls_dir / "key.pem"
    assert setup.url_scheme == "https"
    assert setup.listen_url_for(10443) == "https://localhost:10443"
    setup.tls.server_context()


def test_tls_cert_option_turns_https_on(tmp_path: Path, ca: trustme.CA) -> None:
    cert = ca.issue_cert("localhost")
    combined = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(combined))
    setup, _ = _hub_auto(tmp_path, port=3240, tls_cert=combined)
    assert setup.tls is not None
    assert setup.tls.cert == setup.tls.key == combined  # one PEM holding both
    key_file = tmp_path / "key.pem"
    cert_file = tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    setup2, _ = _hub_auto(tmp_path, port=3240, tls_cert=cert_file, tls_key=key_file)
    assert setup2.tls is not None
    assert (setup2.tls.cert, setup2.tls.key) == (cert_file, key_file)


def test_bad_tls_files_exit_2(tmp_path: Path, ca: trustme.CA) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(SetupError) as info:
        _hub_auto(tmp_path, port=3240, tls_cert=junk, tls_key=junk)
    assert info.value.exit_code == 2
    assert "cannot load the TLS certificate" in info.value.message
    with pytest.raises(SetupError, match=r"TLS key .*missing"):
        _hub_auto(tmp_path, port=3240, tls_cert=junk, tls_key=tmp_path / "nokey.pem")
    with pytest.raises(SetupError, match="--tls-key needs --tls-cert"):
        _hub_auto(tmp_path, port=3240, tls_key=junk)
    cert_only = tmp_path / "cert_only.pem"
    ca.issue_cert("localhost").cert_chain_pems[0].write_to_path(str(cert_only))
    with pytest.raises(SetupError, match="cannot load the TLS certificate"):
        _hub_auto(tmp_path, port=3240, tls_cert=cert_only)


def test_share_options_of_the_wrong_kind_are_a_programming_error(share_dir: Path) -> None:
    with pytest.raises(ValueError, match="hub options"):
        run(share_dir, auto=True, passcode="x")
    with pytest.raises(ValueError, match="share option"):
        run(share_dir, "hub", auto=True, confirm_share="yes")
    with pytest.raises(ValueError, match="kind"):
        run(share_dir, "share", auto=True)  # type: ignore[arg-type]


# --- ports -----------------------------------------------------------------------------


def test_port_policy_validation() -> None:
    with pytest.raises(ValueError, match="first <= last"):
        PortPolicy(10, 5)
    with pytest.raises(ValueError, match="cannot be part of a range"):
        PortPolicy(0, 5)
    with pytest.raises(ValueError, match="first <= last"):
        PortPolicy(1, 70000)


def test_first_free_port_skips_taken_ports() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(SetupError, match=f"no free port from {taken} to {taken}"):
            first_free_port("127.0.0.1", PortPolicy(taken, taken))
        assert first_free_port("127.0.0.1", PortPolicy(0, 0)) == 0
    # Once released the same port is free again (SO_REUSEADDR, as the listener uses).
    assert first_free_port("127.0.0.1", PortPolicy(taken, taken)) == taken


# --- handing over to the core ----------------------------------------------------------


def test_core_config_for_a_share_and_a_hub(share_dir: Path, tmp_path: Path) -> None:
    from kbproto.config import HubConfig, ShareConfig, Timeouts

    share, _ = run(share_dir, answers=SHARE_ANSWERS, parent_hub_passcode="pw")
    config = share.core_config(2004)
    assert isinstance(config, ShareConfig)
    assert (config.name, config.description, config.owner, config.owner_email) == (
        "My data",
        "Spike sorting recordings",
        "Ada Lovelace",
        "ada@example.org",
    )
    assert config.listen_url == "http://localhost:2004"
    assert (config.parent_url, config.parent_passcode) == (None, "pw")
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    hub, _ = run(
        hub_dir,
        "hub",
        auto=True,
        scientific_research="yes",
        passcode="sesame",
        parent_hub="http://top.example.org",
        listen_url="http://me.example.org:3240",
    )
    short = Timeouts(heartbeat_interval=1.0, heartbeat_timeout=3.0)
    hub_config = hub.core_config(3240, timeouts=short)
    assert isinstance(hub_config, HubConfig)
    assert hub_config.passcode == "sesame"
    assert hub_config.parent_url == "http://top.example.org"
    assert hub_config.listen_url == "http://me.example.org:3240"
    assert hub_config.timeouts == short


def test_kbucket_dir_may_be_a_symlink_to_a_directory(share_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "keys-elsewhere"
    elsewhere.mkdir()
    (share_dir / ".kbucket").symlink_to(elsewhere)
    setup, _ = run(share_dir, auto=True, scientific_research="yes", confirm_share="yes")
    assert (elsewhere / "private.pem").is_file()
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700
    assert setup.node_id == run(share_dir, auto=True)[0].node_id


# --- the index budget (docs/security.md §3) ----------------------------------------------


def test_index_budget_options_are_saved_and_reach_the_core(tmp_path: Path) -> None:
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    setup, _ = run(hub_dir, "hub", auto=True, scientific_research="yes")
    assert "index_budget" not in saved(hub_dir)  # unset: the release's default applies
    assert setup.core_config(3240).limits.index_budget == Limits().index_budget
    setup, _ = run(hub_dir, "hub", auto=True, index_budget="2G", open_child_quota="50MiB")
    assert (saved(hub_dir)["index_budget"], saved(hub_dir)["open_child_quota"]) == ("2G", "50M")
    limits = setup.core_config(3240).limits
    assert (limits.index_budget, limits.open_child_quota) == (2 * 1024**3, 50 * 1024**2)
    # Saved answers stay; a hand edit takes effect at the next start.
    again, _ = run(hub_dir, "hub", auto=True)
    assert again.limits.open_child_quota == 50 * 1024**2
    config = json.loads((hub_dir / ".kbucket" / "kbnode.json").read_text())
    config["open_child_quota"] = "1000B"
    (hub_dir / ".kbucket" / "kbnode.json").write_text(json.dumps(config))
    assert run(hub_dir, "hub", auto=True)[0].limits.open_child_quota == 1000


def test_an_old_entry_count_is_read_as_80_bytes_an_entry(tmp_path: Path) -> None:
    """Budgets were counts of entries before they were bytes: a kbnode.json or a
    command line from then keeps working, at ``LEGACY_ENTRY_BYTES`` an entry."""
    assert LEGACY_ENTRY_BYTES == 80
    run(tmp_path, "hub", auto=True, scientific_research="yes")
    path = tmp_path / ".kbucket" / "kbnode.json"
    config = json.loads(path.read_text())
    config["index_budget"] = 4_000_000
    path.write_text(json.dumps(config))
    setup, _ = run(tmp_path, "hub", auto=True)
    assert setup.core_config(3240).limits.index_budget == 320_000_000
    assert saved(tmp_path)["index_budget"] == "312500K"  # rewritten as a size, same bytes
    setup, _ = run(tmp_path, "hub", auto=True, open_child_quota="1000")
    assert setup.core_config(3240).limits.open_child_quota == 80_000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"index_budget": "0"}, "--index-budget: give a size of index in bytes with a unit"),
        ({"open_child_quota": "2T"}, "--open-child-quota: give a size of index in bytes"),
        ({"open_child_quota": "lots"}, "--open-child-quota: give a size of index in bytes"),
    ],
)
def test_bad_index_budget_options_exit_2(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    error = fails(tmp_path, "hub", auto=True, scientific_research="yes", **options)
    assert message in str(error)
    assert error.exit_code == 2


def test_a_bad_saved_index_budget_is_one_line_naming_the_file(tmp_path: Path) -> None:
    run(tmp_path, "hub", auto=True, scientific_research="yes")
    path = tmp_path / ".kbucket" / "kbnode.json"
    config = json.loads(path.read_text())
    config["index_budget"] = "lots"
    path.write_text(json.dumps(config))
    error = fails(tmp_path, "hub", auto=True)
    assert str(error) == (
        f"{path}: field 'index_budget' must be a size of index in bytes with a unit"
        " (512M, 2G) up to 1T, or an old count of index entries (80 bytes each)"
    )


def test_index_budget_options_are_hub_options(share_dir: Path) -> None:
    with pytest.raises(ValueError, match="hub options"):
        run(share_dir, auto=True, index_budget="5M")


# --- the relay cache's bound (docs/protocol.md, "Relay cache") ----------------------------


def test_cache_size_is_saved_with_its_default_and_the_option_wins(tmp_path: Path) -> None:
    run(tmp_path, "hub", auto=True, scientific_research="yes")
    assert saved(tmp_path)["cache_size"] == DEFAULT_CACHE_SIZE
    setup, _ = run(tmp_path, "hub", auto=True, cache_size="500M")
    assert (saved(tmp_path)["cache_size"], setup.config.cache_size) == (500 << 20, 500 << 20)
    assert run(tmp_path, "hub", auto=True)[0].config.cache_size == 500 << 20
    run(tmp_path, "hub", auto=True, cache_size="0")
    assert saved(tmp_path)["cache_size"] == 0
    # A hand edit may give a unit.
    path = tmp_path / ".kbucket" / "kbnode.json"
    config = json.loads(path.read_text())
    config["cache_size"] = "20G"
    path.write_text(json.dumps(config))
    assert run(tmp_path, "hub", auto=True)[0].config.cache_size == 20 << 30


def test_a_bad_cache_size_is_one_line(tmp_path: Path) -> None:
    error = fails(tmp_path, "hub", auto=True, scientific_research="yes", cache_size="lots")
    assert (
        str(error) == "--cache-size: not a size: 'lots' (bytes, or with K, M, G or T: 500M, 20G, 0)"
    )
    assert error.exit_code == 2
    run(tmp_path, "hub", auto=True, scientific_research="yes")
    path = tmp_path / ".kbucket" / "kbnode.json"
    config = json.loads(path.read_text())
    config["cache_size"] = -1
    path.write_text(json.dumps(config))
    error = fails(tmp_path, "hub", auto=True)
    assert str(error).startswith(f"{path}: field 'cache_size' must be a size in bytes")


def test_cache_size_is_a_hub_option(share_dir: Path) -> None:
    with pytest.raises(ValueError, match="hub options"):
        run(share_dir, auto=True, cache_size="1G")
    run(share_dir, auto=True, scientific_research="yes", confirm_share="yes")
    assert "cache_size" not in saved(share_dir)


# --- the upload rate limit (kbucket-host --max-upload-rate) --------------------------------


def test_upload_rate_is_saved_kept_and_hand_editable(share_dir: Path) -> None:
    setup, _ = run(share_dir, auto=True, scientific_research="yes", confirm_share="yes")
    assert "max_upload_rate" not in saved(share_dir)  # unset: no limit
    assert setup.upload_rate == 0
    for typed, rate in (("500K", 500 * 1024), ("20M", 20 * 1024**2), ("1G", 1024**3)):
        setup, _ = run(share_dir, auto=True, max_upload_rate=typed)
        assert (setup.upload_rate, saved(share_dir)["max_upload_rate"]) == (rate, rate)
    setup, _ = run(share_dir, auto=True, max_upload_rate=" 4096 ")
    assert setup.upload_rate == 4096
    # Kept without the option; 0 turns it off and is saved as such.
    assert run(share_dir, auto=True)[0].upload_rate == 4096
    setup, _ = run(share_dir, auto=True, max_upload_rate="0")
    assert (setup.upload_rate, saved(share_dir)["max_upload_rate"]) == (0, 0)
    config = saved(share_dir)
    config["max_upload_rate"] = 123_456
    (share_dir / ".kbucket" / "kbnode.json").write_text(json.dumps(config))
    assert run(share_dir, auto=True)[0].upload_rate == 123_456


@pytest.mark.parametrize("value", ["fast", -1, 1.5, True, 2 * 1024**4])
def test_a_bad_saved_upload_rate_is_one_line_naming_the_file(share_dir: Path, value: Any) -> None:
    run(share_dir, auto=True, scientific_research="yes", confirm_share="yes")
    path = share_dir / ".kbucket" / "kbnode.json"
    config = json.loads(path.read_text())
    config["max_upload_rate"] = value
    path.write_text(json.dumps(config))
    error = fails(share_dir, auto=True)
    assert str(error) == (
        f"{path}: field 'max_upload_rate' must be a number of bytes per second"
        " from 0 (no limit) to 1099511627776"
    )
    assert error.exit_code == 2


def test_upload_rate_is_a_share_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="share options"):
        run(tmp_path, "hub", auto=True, max_upload_rate="1M")
