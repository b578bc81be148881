"""The order in which the suite's modules are handed to the xdist workers.

pyproject's addopts run two workers with ``--dist loadscope`` (a module's tests stay
together on one worker) and ``--no-loadscope-reorder``, so modules go out in
collection order, the next to whichever worker is free. xdist's own reorder (most
tests first) handed out last the modules of few but long tests (the benchmark
smoke runs, real-process hubs): one worker then ran them alone for minutes while
the other had finished. Here the longest modules go first, longest first; the many
short ones, in their usual order, fill in around them and end the run on both
workers at about the same time. A module that becomes long belongs in the list
(``--durations`` and the timestamps of ``-v`` show it); ``tests/test_suite_hygiene.py``
checks that every module named here exists.
"""

from __future__ import annotations

import pytest

#: The modules that took 25 s or more in a CI run (two workers, coverage on, a loaded
#: machine: 2026-12-08), longest first.
LONGEST_FIRST = (
    "tests/sim/test_lookup.py",
    "tests/test_benchmarks_smoke.py",
    "tests/apps/test_hashing_pool.py",
    "tests/apps/test_prvbuild_stream.py",
    "tests/hostile/test_index_budget.py",
    "tests/hostile/test_client_files.py",
    "tests/apps/test_prvbuild_fast.py",
    "tests/apps/test_prv_download.py",
    "tests/faults/test_faults.py",
    "tests/web/test_web_server_rendered.py",
    "tests/e2e/test_first_hour.py",
    "tests/web/test_web_browser.py",
    "tests/hostile/test_client_cache.py",
    "tests/sim/test_proxy_e2e.py",
    "tests/e2e/test_parallel_download.py",
    "tests/e2e/test_network.py",
    "tests/sim/test_faults.py",
    "tests/hostile/test_proxied_streams.py",
    "tests/e2e/test_relay_cache.py",
    "tests/e2e/test_python_api.py",
    "tests/sim/test_determinism.py",
    "tests/e2e/test_https_and_prompts.py",
    "tests/hostile/test_identity.py",
    "tests/apps/test_hashing.py",
    "tests/hostile/test_client_slow.py",
    "tests/e2e/test_cli_commands.py",
    "tests/e2e/test_trio.py",
    "tests/hostile/test_connection_slots.py",
    "tests/apps/test_fork_safety.py",
    "tests/apps/test_download_parallel.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    # A stable sort: within a module, and among the modules not listed, the order stays.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
