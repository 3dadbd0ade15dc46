#!/usr/bin/env bash
# System packages the test suite needs beyond .venv: Debian's chromium for the demo-page browser test.
# Idempotent: does nothing when chromium is already there; never fails the test run when apt is
# unavailable (the browser test then skips with its reason).
set -u

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_system: no apt-get; the browser test will skip (no chromium)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "setup_system: not root and no sudo; the browser test will skip (no chromium)" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium; }; then
    echo "setup_system: installing chromium failed; the browser test will skip" >&2
fi
exit 0
