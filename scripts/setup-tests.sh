#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine with Python 3.11+:
# the package with its test extras (editable, so coverage maps to the source tree) and, from
# Debian's packages, chromium for the browser tests and the peer tools the benchmarks'
# smoke runs compare against (nginx, wrk, openssl); apt needs root, or sudo.
# Safe to run again: it skips what is there. Says what it does, since pip and apt are quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "setup-tests: installing kbucket (editable) with its test tools: pytest, hypothesis, playwright, ruff, mypy..."
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# command -> Debian package
missing=()
for pair in chromium:chromium nginx:nginx-light wrk:wrk openssl:openssl; do
    tool=${pair%%:*}
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        missing+=("${pair#*:}")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup-tests: chromium, nginx, wrk and openssl are installed"
else
    echo "setup-tests: installing Debian's ${missing[*]} (chromium: the browser tests; nginx, wrk, openssl: the benchmarks' smoke runs; about a minute)..."
    sudo_=()
    [ "$(id -u)" -eq 0 ] || sudo_=(sudo)
    "${sudo_[@]}" apt-get update -qq
    "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "setup-tests: done"
