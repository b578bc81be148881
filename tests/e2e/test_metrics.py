"""``metrics`` in nodeinfo, with real processes (issue 16 item 12).

A hub and a share; each counter must grow by what the test did, exactly for bytes:
a direct download counts at the share only, a proxied one at the share (sent into the
tree) and at the hub (passed on), finds at the node asked.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.procs import LINE_TIMEOUT, Node, Procs, sha1_of, wait_for, write_pattern

SIZE = 2 * 1024 * 1024 + 5
KEYS = {
    "uptime_seconds",
    "http_requests",
    "network_requests",
    "finds",
    "bytes_served_direct",
    "bytes_served_to_network",
    "bytes_proxied",
}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        data: bytes = response.read()
        assert response.status == 200, (url, response.status)
        return data


def _metrics(base: str, node: Node) -> dict[str, int]:
    body = json.loads(_get(f"{base}/{node.node_id}/api/nodeinfo"))
    assert body["success"] is True
    metrics = body["metrics"]
    assert isinstance(metrics, dict)
    assert set(metrics) == KEYS, metrics
    assert all(type(v) is int and v >= 0 for v in metrics.values()), metrics
    return metrics


def _grew(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in KEYS}


def test_metrics_grow_with_the_work_done(procs: Procs, tmp_path: Path) -> None:
    data = write_pattern(tmp_path / "share" / "data.bin", SIZE, seed=3)
    hub = procs.node("kbucket-hub", tmp_path / "hub", name="metrics-hub")
    share = procs.node("kbucket-host", tmp_path / "share", name="metrics-share", parent=hub)
    sid = share.node_id
    wait_for(
        lambda: json.loads(_get(f"{hub.url}/find/{sha1_of(data)}"))["found"] is True,
        LINE_TIMEOUT,
        "the hub to know the share's file",
    )

    share0, hub0 = _metrics(share.url, share), _metrics(hub.url, hub)
    assert _get(f"{share.url}/{sid}/download/data.bin") == data
    share1, hub1 = _metrics(share.url, share), _metrics(hub.url, hub)
    direct = _grew(share0, share1)
    assert direct["bytes_served_direct"] == SIZE
    assert direct["bytes_served_to_network"] == 0
    assert direct["http_requests"] >= 2  # the download and the first nodeinfo
    assert _grew(hub0, hub1)["bytes_proxied"] == 0

    assert _get(f"{hub.url}/{sid}/download/data.bin") == data
    for _ in range(3):
        assert json.loads(_get(f"{hub.url}/find/{sha1_of(data)}"))["found"] is True
    share2, hub2 = _metrics(share.url, share), _metrics(hub.url, hub)
    proxied = _grew(share1, share2)
    assert proxied["bytes_served_to_network"] == SIZE
    assert proxied["bytes_served_direct"] == 0
    assert proxied["network_requests"] >= 1
    at_hub = _grew(hub1, hub2)
    assert at_hub["bytes_proxied"] == SIZE
    assert at_hub["finds"] == 3
    assert at_hub["http_requests"] >= 5  # the download, three finds, a nodeinfo

    # The share's metrics reach a client through the hub too, and uptime moves on.
    first = _metrics(hub.url, share)["uptime_seconds"]
    deadline = time.monotonic() + 10
    while _metrics(hub.url, share)["uptime_seconds"] <= first:
        assert time.monotonic() < deadline, "uptime_seconds did not grow"
        time.sleep(0.2)
