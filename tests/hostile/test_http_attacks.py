"""Raw-HTTP attacks on a running hub and share (issue 6 "Hostile input", docs/security.md).

Every test sends its attack over a raw socket to the real processes, checks that the
answer is a clear 4xx error or a closed connection that leaks nothing, and then, in
the same test, that a normal client is still served and both processes are alive.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from tests.hostile.conftest import Net
from tests.hostile.helpers import http_get, raw_exchange, status_of

#: Paths that try to leave the share or reach a dot-path, in every encoding we know.
#: ``{s}`` is the share's id. Each must be refused (400/404), never served.
TRAVERSALS = (
    "../outside/secret.txt",
    "../../outside/secret.txt",
    "%2e%2e/outside/secret.txt",
    "%2E%2E/outside/secret.txt",
    ".%2e/outside/secret.txt",
    "%252e%252e/outside/secret.txt",
    "%252e%252e%252foutside%252fsecret.txt",
    "sub%2f..%2f..%2foutside%2fsecret.txt",
    "sub/..%2f..%2foutside/secret.txt",
    "..%5coutside%5csecret.txt",
    "..\\outside\\secret.txt",
    "sub\\..\\..\\outside\\secret.txt",
    "%c0%ae%c0%ae/outside/secret.txt",
    "%e0%80%ae%e0%80%ae/outside/secret.txt",
    "%c0%af..%c0%afoutside/secret.txt",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "{abs}/outside/secret.txt",
    "normal.txt%00.png",
    "normal.txt%00/../../outside/secret.txt",
    ".env",
    "%2eenv",
    "sub/.git/config",
    "sub/%2egit/config",
    ".kbucket/private.pem",
    ".kbucket/kbnode.json",
    ".kbucket/index.sqlite",
    "%2ekbucket/private.pem",
    "%2Ekbucket%2Fprivate.pem",
    "sub/../.kbucket/private.pem",
    "escape.txt",
    "escdir/secret.txt",
    "sub/up/outside/secret.txt",
    "sub/up/share/.kbucket/private.pem",
)
ROUTES = ("download", "prv", "api/readdir")


def _targets(net: Net) -> list[str]:
    sid = net.share.node_id
    out = []
    for route in ROUTES:
        for bad in TRAVERSALS:
            out.append(f"/{sid}/{route}/" + bad.replace("{abs}", str(net.work).lstrip("/")))
    out += [f"/{sid}/api/readdir/escdir", f"/{sid}/api/readdir/.kbucket", f"/{sid}/api/readdir/.."]
    out += [f"/web/{p}" for p in ("../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "..%2f..%2f")]
    return out


def _get(port: int, target: str, extra: str = "") -> bytes:
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    return raw_exchange(port, request.encode("latin-1"))


def test_traversal_dot_paths_and_symlink_escapes_are_refused(net: Net) -> None:
    tried = 0
    for target in _targets(net):
        for node in (net.share, net.hub):
            response = _get(node.port, target)
            status = status_of(response)
            # readdir of a dot-free directory symlink that escapes is a 404 too.
            assert status in (400, 404), (node.proc.name, target, response[:300])
            body = response.partition(b"\r\n\r\n")[2]
            assert b'"success":false' in body.replace(b" ", b""), (target, body[:200])
            net.assert_clean(response)
            tried += 1
    assert tried >= 200
    # Absolute paths in the request line itself (not under a node id) are refused too.
    for node in (net.share, net.hub):
        response = _get(node.port, f"{net.work}/outside/secret.txt")
        assert status_of(response) in (400, 404)
        net.assert_clean(response)
    net.assert_serving()


def test_readdir_lists_no_dot_names_and_no_escaping_links(net: Net) -> None:
    sid = net.share.node_id
    for node in (net.share, net.hub):
        status, body = http_get(f"{node.url}/{sid}/api/readdir/")
        assert status == 200
        listing = json.loads(body)
        names = [f["name"] for f in listing["files"]] + [d["name"] for d in listing["dirs"]]
        assert "normal.txt" in names
        assert "sub" in names
        assert not [n for n in names if n.startswith(".")], names
        assert not {"escape.txt", "escdir"} & set(names), names
        status, body = http_get(f"{node.url}/{sid}/api/readdir/sub")
        assert status == 200
        sub = [f["name"] for f in json.loads(body)["files"]] + [
            d["name"] for d in json.loads(body)["dirs"]
        ]
        assert not {".git", "up"} & set(sub), sub
    net.assert_serving()


def test_one_megabyte_headers_are_refused(net: Net) -> None:
    for node in (net.share, net.hub):
        big = "X-Big: " + "a" * (1 << 20) + "\r\n"
        response = _get(node.port, f"/{net.share.node_id}/download/normal.txt", big)
        # 431 (the head grew past the limit) or a closed connection; never the file.
        assert status_of(response) in (431, 400, None), response[:300]
        assert b"a normal file" not in response
        many = "".join(f"X-H{i}: {'b' * 60}\r\n" for i in range(20000))
        response = _get(node.port, "/", many)
        assert status_of(response) in (431, 400, None), response[:300]
        net.assert_clean(response)
    net.assert_serving()


def _endless_chunked(port: int, target: str, budget: int) -> tuple[int, bytes]:
    """POST an endless chunked body; return (bytes sent before the server stopped
    us, what it answered)."""
    head = f"POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"10000\r\n" + b"z" * 0x10000 + b"\r\n"
    sent = 0
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        try:
            while sent < budget:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # reset or broken pipe: the server hung up on us
        sock.settimeout(5)
        try:
            while chunk_in := sock.recv(65536):
                answer += chunk_in
        except OSError:
            pass
    return sent, bytes(answer)


def test_endless_chunked_bodies_are_cut(net: Net) -> None:
    budget = 64 << 20
    for node in (net.share, net.hub):
        for target in ("/", f"/find/{'a' * 40}", f"/{net.share.node_id}/download/normal.txt"):
            sent, answer = _endless_chunked(node.port, target, budget)
            # The server stops reading after its body limit (1 MiB) plus socket buffers.
            assert sent < budget, f"{node.proc.name} {target}: swallowed {sent} bytes"
            assert status_of(answer) in (None, 400, 404, 405, 413), answer[:300]
            net.assert_clean(answer)
    net.assert_serving()


def test_slowloris_is_dropped_while_others_are_served(net: Net) -> None:
    # One byte a second on a request head that never ends. The node keeps serving
    # normal clients meanwhile, and drops the slow one after its header timeout
    # (10 s by default in kbtransport.http_server.ServerConfig).
    results: dict[str, float | None] = {}

    def drip(name: str, port: int) -> None:
        start = time.monotonic()
        dropped_after: float | None = None
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.settimeout(1.0)
            payload = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
            for byte in payload:
                try:
                    sock.sendall(bytes([byte]))
                    if sock.recv(4096) == b"":
                        dropped_after = time.monotonic() - start
                        break
                except TimeoutError:
                    continue  # nothing from the server yet: keep dripping
                except OSError:
                    dropped_after = time.monotonic() - start
                    break
                if time.monotonic() - start > 25:
                    break
        results[name] = dropped_after

    threads = [
        threading.Thread(target=drip, args=(node.proc.name, node.port))
        for node in (net.share, net.hub)
    ]
    for thread in threads:
        thread.start()
    served = 0
    while any(t.is_alive() for t in threads):
        net.assert_serving()  # normal clients, while the slow ones drip
        served += 1
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    assert served >= 5
    for name, after in results.items():
        assert after is not None, f"{name} kept a one-byte-a-second client for 25 s"
        assert after < 20, (name, after)
    net.assert_serving()


def test_find_flood_for_random_sha1s(net: Net) -> None:
    # Many finds for content nobody has, on keep-alive connections from 8 threads.
    errors: list[str] = []
    count = {"n": 0}

    def flood(port: int, n: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            reader = sock.makefile("rb")
            for _ in range(n):
                sha1 = os.urandom(20).hex()
                sock.sendall(f"GET /find/{sha1} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                status_line = reader.readline()
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = reader.read(length)
                if b" 200 " not in status_line or b'"found":false' not in body:
                    errors.append(f"{status_line!r} {body[:200]!r}")
                    return
                count["n"] += 1

    threads = [
        threading.Thread(target=flood, args=(node.port, 150))
        for node in (net.hub, net.share)
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert count["n"] == 8 * 150
    net.assert_serving()
