"""Untrusted text printed inert (``kbapps.output``), and nothing in ``kbapps`` prints
around it (issue 11, class 10)."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
from pathlib import Path

import pytest

from kbapps import output

ROOT = Path(__file__).resolve().parent.parent.parent
#: The one module allowed to write to the console.
OUTPUT = ROOT / "kbapps" / "output.py"
#: Receivers that are console streams (``sys.stdout``, ``self._out``, ``stream``...).
_CONSOLE = re.compile(r"(^|\.)(sys\.std(out|err)(\.buffer)?|_?(out|stdout|stderr|stream|console))$")

#: What a terminal may act on, one of each kind: ESC (CSI, OSC), BEL, BS, CR, DEL, a C1
#: CSI, NEL, the line separator, LRM, RLO, an isolate.
NASTY = "a\x1b[2J\x1b]0;t\x07\x08\r\x7f\x9b\x85\u2028\u200e\u202e\u2066z"


def _console_writes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "print":
            found.append(f"{path.name}:{node.lineno}: print()")
        elif isinstance(func, ast.Attribute) and func.attr in ("write", "writelines"):
            receiver = ast.unparse(func.value)
            if _CONSOLE.search(receiver):
                found.append(f"{path.name}:{node.lineno}: {receiver}.{func.attr}()")
        elif isinstance(func, ast.Attribute) and ast.unparse(func) == "anyio.run":
            # An event loop whose log records would print raw: use output.run_async.
            found.append(f"{path.name}:{node.lineno}: anyio.run()")
    return found


def test_nothing_in_kbapps_prints_around_the_output_layer() -> None:
    modules = [p for p in sorted((ROOT / "kbapps").rglob("*.py")) if p != OUTPUT]
    assert len(modules) > 20
    offenders = [hit for path in modules for hit in _console_writes(path)]
    assert offenders == []


def test_the_meta_test_sees_a_console_write() -> None:
    sample = ROOT / "kbapps" / "output.py"
    assert _console_writes(sample)  # output.py itself writes (that is its job)


def test_inert_shows_every_dangerous_character_and_keeps_the_rest() -> None:
    shown = output.inert(NASTY + "é中\t")
    assert shown == (
        "a\\u001b[2J\\u001b]0;t\\u0007\\u0008\\u000d\\u007f\\u009b\\u0085\\u2028"
        "\\u200e\\u202e\\u2066zé中\\u0009"
    )
    assert output.inert("plain text: ok") == "plain text: ok"


def test_lines_stay_one_line_and_inert() -> None:
    stream = io.StringIO()
    output.line("name\nChild share joined: forged\r" + NASTY, stream=stream)
    output.error("bad\x1b[31m", stream=stream)
    output.warning("odd\u202e", stream=stream)
    output.prompt("? Name [\x1b]0;x\x07] ", stream=stream)
    text = stream.getvalue()
    assert text.splitlines() == [
        "name Child share joined: forged a\\u001b[2J\\u001b]0;t\\u0007\\u0008 \\u007f"
        "\\u009b\\u0085\\u2028\\u200e\\u202e\\u2066z",
        "Error: bad\\u001b[31m",
        "Warning: odd\\u202e",
        "? Name [\\u001b]0;x\\u0007] ",
    ]


def test_json_output_is_inert_and_means_the_same() -> None:
    value = {"path": NASTY, "n": [1, 2], "ok": "é"}
    for indent in (None, 4):
        text = output.json_text(value, indent=indent)
        assert not any(c in text for c in NASTY if not c.isprintable())
        assert json.loads(text) == value
    stream = io.StringIO()
    output.print_json(value, stream=stream)
    assert stream.getvalue().endswith("}\n")
    assert stream.getvalue().count("\n") == 1


def test_print_json_bytes_keeps_a_prv_byte_for_byte_unless_it_must_not(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    plain = b'{\n    "original_path": "d\xc3\xa9j\xc3\xa0/vu.dat"\n}\n'
    output.print_json_bytes(plain)
    assert capsysbinary.readouterr().out == plain
    nasty = json.dumps({"original_path": NASTY}, ensure_ascii=False).encode()
    output.print_json_bytes(nasty)
    printed = capsysbinary.readouterr().out
    assert json.loads(printed) == {"original_path": NASTY}
    assert b"\xc2\x9b" not in printed
    assert b"\x1b" not in printed


def test_log_records_print_inert_while_an_event_loop_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = logging.getLogger("kbtransport.test")

    async def body(answer: int) -> int:
        log.warning("peer sent %s", "x\x1b[2Jy\nforged line")
        try:
            raise ValueError("bad \x1b]0;t\x07")
        except ValueError:
            log.exception("handler failed on %r", "\u202e")
        log.info("not shown: below WARNING")
        return answer

    assert output.run_async(body, 7) == 7
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "peer sent x\\u001b[2Jy forged line"
    assert lines[1] == "handler failed on '\\u202e'"
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad \\u001b]0;t\\u0007"
    assert "not shown" not in err
    assert "\x1b" not in err
    # The handler is gone once the command ended.
    assert not any(type(h).__name__ == "_InertLogHandler" for h in logging.getLogger().handlers)
