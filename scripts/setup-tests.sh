#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine with Python 3.11+:
# the package with its test extras (editable, so coverage maps to the source tree) and,
# for the browser tests, Debian's chromium. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
fi
