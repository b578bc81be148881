"""``kbucket-host``/``kbucket-hub`` option parsing and exit codes (no network traffic)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from kbapps.cli import host, hub
from kbapps.noderun import heartbeat_timeouts, rate_text
from kbapps.output import UsageError
from kbproto.config import Timeouts
from tests.e2e.procs import free_port


def run(main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    assert callable(main)
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("main", "only"),
    [
        (host.main, "--confirm-share"),
        (host.main, "--max-upload-rate"),
        (hub.main, "--passcode"),
        (hub.main, "--index-budget"),
        (hub.main, "--open-child-quota"),
    ],
)
def test_help_lists_every_prompt_option(
    main: object, only: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(main, ["--help"], capsys)
    assert code == 0
    for option in (
        "--name",
        "--scientific-research",
        "--description",
        "--owner",
        "--owner-email",
        "--listen-url",
        "--parent-hub",
        "--parent-hub-passcode",
        "--port",
        "--host",
        "--auto",
        "--heartbeat-timeout",
        only,
    ):
        assert option in out, option


def test_hub_options_are_not_share_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(host.main, [str(tmp_path), "--passcode", "x"], capsys)
    assert code == 2
    assert "--passcode" in one_error(err)
    code, _, err = run(hub.main, [str(tmp_path), "--confirm-share", "yes"], capsys)
    assert code == 2
    assert "--confirm-share" in one_error(err)
    code, _, err = run(host.main, [str(tmp_path), "--index-budget", "5"], capsys)
    assert code == 2
    assert "--index-budget" in one_error(err)
    code, _, err = run(hub.main, [str(tmp_path), "--max-upload-rate", "2M"], capsys)
    assert code == 2
    assert "--max-upload-rate" in one_error(err)
    assert not (tmp_path / ".kbucket").exists()


def test_auto_on_a_new_share_needs_both_yes_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(host.main, [str(tmp_path), "--auto", "--port", "0"], capsys)
    assert code == 2
    line = one_error(err)
    assert "--scientific-research" in line
    assert "--confirm-share" in line


def test_missing_directory_and_bad_values_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    yes = ["--auto", "--scientific-research", "yes", "--confirm-share", "yes"]
    code, _, err = run(host.main, [str(tmp_path / "nope"), *yes], capsys)
    assert code == 2
    assert "no such directory" in one_error(err)
    code, _, err = run(host.main, [str(tmp_path), *yes, "--port", "70000"], capsys)
    assert code == 2
    assert "--port" in one_error(err)
    code, _, err = run(host.main, [str(tmp_path), *yes, "--port", "abc"], capsys)
    assert code == 2
    one_error(err)
    code, _, err = run(host.main, [str(tmp_path), *yes, "--heartbeat-timeout", "0"], capsys)
    assert code == 2
    assert "--heartbeat-timeout" in one_error(err)
    code, _, err = run(host.main, [str(tmp_path), *yes, "--owner-email", "nope"], capsys)
    assert code == 2
    assert "--owner-email" in one_error(err)
    for rate in ("fast", "-1M", "2X", "", "2T"):
        code, _, err = run(host.main, [str(tmp_path), *yes, "--max-upload-rate", rate], capsys)
        assert code == 2, rate
        assert "--max-upload-rate: not a rate" in one_error(err)
    # Nothing was written for a refused option.
    assert not (tmp_path / ".kbucket").exists()


def test_tls_key_without_certificate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path), "--auto", "--scientific-research", "yes", "--port", "0"]
    code, _, err = run(hub.main, [*argv, "--tls-key", str(tmp_path / "k.pem")], capsys)
    assert code == 2
    assert "--tls-key" in one_error(err)
    code, _, err = run(hub.main, [*argv, "--tls-cert", str(tmp_path / "missing.pem")], capsys)
    assert code == 2
    assert "missing" in one_error(err)


def test_a_share_directory_is_not_a_hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".kbucket").mkdir(mode=0o700)
    (tmp_path / ".kbucket" / "kbnode.json").write_text(
        json.dumps({"node_type": "leaf", "name": "s"}, indent=4)
    )
    code, _, err = run(hub.main, [str(tmp_path), "--auto", "--scientific-research", "yes"], capsys)
    assert code == 2
    assert "kbucket-host" in one_error(err)


def test_a_taken_port_is_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        code, out, err = run(
            hub.main,
            [
                str(tmp_path),
                "--auto",
                "--scientific-research",
                "yes",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            capsys,
        )
    assert code == 3  # the network: the port cannot be had
    assert str(port) in one_error(err)
    assert "is running" not in out


def test_heartbeat_timeouts() -> None:
    assert heartbeat_timeouts(None) == Timeouts()
    short = heartbeat_timeouts(3.0)
    assert short.heartbeat_timeout == 3.0
    assert short.heartbeat_interval == 1.0
    assert short.reconnect_max <= Timeouts().reconnect_max
    long = heartbeat_timeouts(120.0)
    assert long.heartbeat_timeout == 120.0
    assert long.request_timeout == Timeouts().request_timeout
    for bad in (0.0, -1.0, 4000.0, float("nan")):
        with pytest.raises(UsageError):
            heartbeat_timeouts(bad)


def test_rate_text_speaks_the_units_of_the_option() -> None:
    assert rate_text(2 * 1024 * 1024) == "2 MiB/s"
    assert rate_text(500 * 1024) == "500 KiB/s"
    assert rate_text(3 * 1024**3 // 2) == "1.5 GiB/s"
    assert rate_text(1024**4) == "1 TiB/s"
    assert rate_text(100) == "100 B/s"
