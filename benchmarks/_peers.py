"""What the network benchmarks share: the nginx peer's config, ports, CPU and medians.

Imported by the network benchmarks (run as scripts, so this folder is on
``sys.path``).
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import time
from pathlib import Path

__all__ = (
    "NGINX_CONF",
    "cpu_seconds",
    "fmt",
    "free_port",
    "print_machine",
    "process_env",
    "wait_port",
)

#: nginx serving ``root`` on 127.0.0.1:``port`` with sendfile, one worker, no logs;
#: ``dir`` holds its pid, error log and temp files.
NGINX_CONF = """
worker_processes 1;
daemon off;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def cpu_seconds(pid: int, *, main_thread: bool = False) -> float:
    """User + system CPU seconds of process ``pid`` so far (from /proc): all its threads,
    or with ``main_thread`` only the thread that runs its event loop."""
    path = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, not ending in 443 (a node on such a port
    turns HTTPS on and would need a certificate)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port % 1000 != 443:
            return port


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def fmt(values: list[float], digits: int = 0) -> str:
    """``median [min-max]`` of ``values``."""
    med = statistics.median(values)
    return f"{med:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def process_env(work: Path, code: Path) -> dict[str, str]:
    """The environment of every process a benchmark starts: the code in ``code``, a
    bytecode cache and a user cache of its own under ``work``, no ``KBUCKET_URL``.

    The environment may set ``PYTHONDONTWRITEBYTECODE=1``: every Python process gets a
    bytecode cache, so a command's start-up is what a user sees."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "KBUCKET_URL")
    }
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env["PYTHONPATH"] = str(code)
    env["KBUCKET_CACHE_DIR"] = str(work / "user-cache")
    return env


def print_machine() -> None:
    """The line every benchmark starts with: CPUs, Python and the load average."""
    load = os.getloadavg()
    print(
        f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
