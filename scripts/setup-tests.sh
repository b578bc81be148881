#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine with Python 3.11+:
# the package with its test extras (editable, so coverage maps to the source tree) and,
# for the browser tests, Debian's chromium (root, or sudo, is needed for that one).
# Safe to run again: it skips what is there. Says what it does, since pip and apt are quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "setup-tests: installing kbucket (editable) with its test tools: pytest, hypothesis, playwright, ruff, mypy..."
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

if command -v chromium >/dev/null 2>&1; then
    echo "setup-tests: chromium is installed ($(command -v chromium))"
else
    echo "setup-tests: installing Debian's chromium for the browser tests (apt-get; about a minute)..."
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
fi
echo "setup-tests: done"
