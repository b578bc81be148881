"""A short, deterministic run of every ``fuzz/`` harness (issue 3: part of the suite).

Each harness runs on its committed seed corpus, on deterministic mutations of it
(bit flips, truncations, splices) and on seeded random inputs; plus every saved crash
in ``fuzz/crashes/`` (named ``<harness>-<what>.bin``) as a regression. Longer,
coverage-guided runs are done by hand with atheris (``fuzz/README.md``). Every
harness raises on a violated invariant, so a passing run here means each invariant
held for every input.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fuzz import fuzz_codec, fuzz_framing, fuzz_http, fuzz_hub, fuzz_prv, fuzz_sim
from fuzz._reader import ByteReader
from kbproto import codec
from kbproto.errors import ProtocolError
from kbproto.messages import Message

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"

HARNESSES: dict[str, tuple[Callable[[bytes], None], int, int]] = {
    # name: (TestOneInput, random inputs, max random length)
    "codec": (fuzz_codec.TestOneInput, 600, 300),
    "framing": (fuzz_framing.TestOneInput, 300, 600),
    "hub": (fuzz_hub.TestOneInput, 150, 500),
    "sim": (fuzz_sim.TestOneInput, 6, 80),
    "http": (fuzz_http.TestOneInput, 240, 300),
    "prv": (fuzz_prv.TestOneInput, 600, 300),
}


def _corpus(name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((FUZZ / "corpus" / name).iterdir())]


def _mutations(seeds: list[bytes], rng: random.Random, count: int) -> Iterator[bytes]:
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        how = rng.randrange(3)
        if how == 0 and data:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how == 1:
            del data[rng.randrange(len(data) + 1) :]
        else:
            other = rng.choice(seeds)
            data[rng.randrange(len(data) + 1) :] = other[rng.randrange(len(other) + 1) :]
        yield bytes(data)


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_corpus_and_mutations(name: str) -> None:
    run, count, _size = HARNESSES[name]
    seeds = _corpus(name)
    assert seeds, f"fuzz/corpus/{name} is empty"
    for data in seeds:
        run(data)
    for data in _mutations(seeds, random.Random(name), max(4, count // 3)):
        run(data)


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_random_inputs(name: str) -> None:
    run, count, size = HARNESSES[name]
    rng = random.Random(f"smoke/{name}")
    for _ in range(count):
        run(rng.randbytes(rng.randint(0, size)))


@pytest.mark.parametrize("path", sorted((FUZZ / "crashes").glob("*.bin")), ids=lambda p: p.stem)
def test_saved_crashes_stay_fixed(path: Path) -> None:
    run = HARNESSES[path.stem.split("-")[0]][0]
    run(path.read_bytes())


def test_harnesses_catch_violations(monkeypatch: pytest.MonkeyPatch) -> None:
    # The codec harness must notice a codec that does not round-trip: break the
    # encoder it uses and check that it raises.
    def broken(message: Message) -> bytes:
        return codec.encode(message)[:-1]

    monkeypatch.setattr(fuzz_codec, "encode", broken)
    with pytest.raises((AssertionError, ProtocolError)):
        fuzz_codec.TestOneInput(_corpus("codec")[0])


def test_http_harness_catches_violations() -> None:
    # The HTTP harness must notice a leaked secret, a 500 and a garbled response.
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
    fuzz_http.check_output(b"GET / HTTP/1.1", ok, (b"SECRET",))
    for out in (ok + b"SECRET", ok.replace(b"200 OK", b"500 Oops"), b"garbage"):
        with pytest.raises(AssertionError):
            fuzz_http.check_output(b"GET / HTTP/1.1", out, (b"SECRET",))


def test_byte_reader_is_total() -> None:
    reader = ByteReader(b"\x05\x01\x02")
    assert reader.byte() == 5
    assert reader.below(300) == (1 << 8 | 2) % 300
    assert reader.byte() == 0  # past the end: zeros, never an error
    assert reader.take(4) == b""
    assert reader.chunks(b"abc") == [b"abc"]
